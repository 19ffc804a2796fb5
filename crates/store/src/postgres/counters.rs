//! The dashboard and inbox counters on PostgreSQL (STUB: to be ported from `sqlite/counters.rs`).

use tasklane_core::observe::counters::CounterDeltas;
use tasklane_core::Result;

use super::Conn;

/// Applies a batch's net counter changes inside its transaction, before COMMIT.
pub(crate) fn apply(conn: &mut Conn, deltas: &CounterDeltas) -> Result<()> {
    let _ = (conn, deltas);
    unimplemented!()
}
