//! Time as Tasklane sees it: microseconds since the Unix epoch, taken from one injectable clock.
//!
//! Every timestamp a write records comes from [`Clock::now`] inside the writer's critical section, so
//! event timestamps never disagree with event sequence numbers. The clock is injectable so tests can
//! move time forward (to expire a lease, say) without sleeping.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A UTC instant with microsecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ts(pub i64);

/// The RFC 3339 rendering of the zero time, sent where the contract requires a timestamp that has no value.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

impl Ts {
    pub fn micros(self) -> i64 {
        self.0
    }

    pub fn plus_seconds(self, seconds: i64) -> Ts {
        Ts(self.0.saturating_add(seconds.saturating_mul(1_000_000)))
    }

    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_micros(self.0) {
            Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            None => ZERO_TIME.to_string(),
        }
    }
}

impl fmt::Display for Ts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// On the wire a timestamp is an RFC 3339 string in UTC with microseconds.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Ts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .examples(["2026-01-02T03:04:05.123456Z"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Ts {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Timestamp")
    }
}

/// Serializes a missing timestamp as the zero time, for fields the contract marks as always present.
pub fn serialize_or_zero<S: Serializer>(ts: &Option<Ts>, s: S) -> Result<S::Ok, S::Error> {
    match ts {
        Some(ts) => ts.serialize(s),
        None => s.serialize_str(ZERO_TIME),
    }
}

/// The source of "now" for the whole server.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Ts;
}

/// Wall-clock time, made monotonic: it never returns an instant earlier than one it returned before,
/// so a clock step backwards cannot reorder timestamps against sequence numbers.
#[derive(Default)]
pub struct SystemClock {
    last: AtomicI64,
}

impl Clock for SystemClock {
    fn now(&self) -> Ts {
        let wall = chrono::Utc::now().timestamp_micros();
        let prev = self.last.fetch_max(wall, Ordering::SeqCst);
        Ts(prev.max(wall))
    }
}

/// A clock that starts at a given instant (the wall-clock time, or the test time of the service it
/// joins) and then moves only when told to, and only forwards. Used by tests (through the server's
/// test-clock mode) to make leases expire and dashboards age without sleeping.
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    pub fn starting_now() -> Self {
        Self::starting_at(Ts(chrono::Utc::now().timestamp_micros()))
    }

    pub fn starting_at(start: Ts) -> Self {
        ManualClock {
            now: AtomicI64::new(start.0),
        }
    }

    pub fn advance_micros(&self, micros: i64) -> Ts {
        Ts(self.now.fetch_add(micros.max(0), Ordering::SeqCst) + micros.max(0))
    }

    /// Brings the clock up to `at` if it is behind; never moves it back, so a reading taken
    /// elsewhere (another server's advance) cannot make `now` go backwards here. Returns `now`.
    pub fn set_at_least(&self, at: Ts) -> Ts {
        Ts(self.now.fetch_max(at.0, Ordering::SeqCst).max(at.0))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Ts {
        Ts(self.now.load(Ordering::SeqCst))
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_with_micros() {
        assert_eq!(Ts(0).to_rfc3339(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Ts(1_500_000).to_rfc3339(), "1970-01-01T00:00:01.500000Z");
    }

    #[test]
    fn system_clock_never_goes_backwards() {
        let c = SystemClock::default();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::starting_now();
        let a = c.now();
        assert_eq!(c.now(), a);
        let b = c.advance_micros(2_000_000);
        assert_eq!(b, Ts(a.0 + 2_000_000));
        assert_eq!(c.now(), b);
    }

    #[test]
    fn manual_clock_is_raised_but_never_lowered() {
        let c = ManualClock::starting_at(Ts(1_000));
        assert_eq!(c.set_at_least(Ts(5_000)), Ts(5_000));
        assert_eq!(c.now(), Ts(5_000));
        assert_eq!(c.set_at_least(Ts(2_000)), Ts(5_000));
        assert_eq!(c.now(), Ts(5_000));
    }
}
