//! Paging of list answers: one page size rule and one cursor format for every list.
//!
//! A list answers at most one page. `limit` absent or 0 means [`DEFAULT_LIMIT`]; a larger `limit`
//! is clamped to [`MAX_LIMIT`] (so clients written for the reference, which send any `limit` or
//! none, keep working); a negative one is refused. When more rows follow, the answer carries
//! `next_cursor`: an opaque token that resumes strictly after the last row returned. Cursors encode
//! the row's sort key (keyset paging), so page N costs what page 1 costs and rows inserted or
//! deleted elsewhere in the list never shift a walk.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::{Run, Task};
use crate::time::Ts;

/// Rows per page when the client sends no `limit` (or `limit=0`).
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page; a larger `limit` is clamped to it.
pub const MAX_LIMIT: usize = 1000;

/// The page size for a requested `limit`.
pub fn size(limit: Option<i64>) -> Result<usize> {
    match limit {
        Some(n) if n < 0 => Err(Error::validation(format!(
            "limit must not be negative; got {n}"
        ))),
        None | Some(0) => Ok(DEFAULT_LIMIT),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
    }
}

/// One page of a list, and the cursor of the next one (None on the last page).
#[derive(Clone, Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Cuts rows read with [`fetch`]`(size)` to one page: the extra row, when present, only proves
    /// that a next page exists, which then resumes after the page's last row.
    pub fn cut(mut rows: Vec<T>, size: usize, cursor_of: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > size;
        rows.truncate(size);
        let next_cursor = if more {
            rows.last().map(cursor_of)
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }

    pub fn with_items<U>(self, items: Vec<U>) -> Page<U> {
        Page {
            items,
            next_cursor: self.next_cursor,
        }
    }
}

impl<T: Serialize> Page<T> {
    /// The wire shape: `{<key>: [items], "next_cursor"?: "..."}`.
    pub fn to_json(&self, key: &str) -> Value {
        let mut body = Map::new();
        body.insert(
            key.to_string(),
            serde_json::to_value(&self.items).unwrap_or_else(|_| Value::Array(Vec::new())),
        );
        if let Some(c) = &self.next_cursor {
            body.insert("next_cursor".to_string(), Value::String(c.clone()));
        }
        Value::Object(body)
    }
}

/// Rows to read for a page of `size`: one more tells whether a next page exists.
pub fn fetch(size: usize) -> i64 {
    size as i64 + 1
}

/// Where a task list resumes: the list order is `last_activity_at`, `updated_at`, `created_at`,
/// `id`, all descending, and the next page holds the rows strictly after this key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskKey {
    pub last_activity_at: Ts,
    pub updated_at: Ts,
    pub created_at: Ts,
    pub id: String,
}

impl TaskKey {
    pub fn of(t: &Task) -> TaskKey {
        TaskKey {
            last_activity_at: t.last_activity_at,
            updated_at: t.updated_at,
            created_at: t.created_at,
            id: t.id.clone(),
        }
    }

    pub fn cursor(&self) -> String {
        encode(
            'T',
            &[
                &self.last_activity_at.0.to_string(),
                &self.updated_at.0.to_string(),
                &self.created_at.0.to_string(),
                &self.id,
            ],
        )
    }

    pub fn parse(cursor: &str) -> Result<TaskKey> {
        match decode('T', 4, cursor)?.as_slice() {
            [a, u, c, id] => Ok(TaskKey {
                last_activity_at: ts(cursor, a)?,
                updated_at: ts(cursor, u)?,
                created_at: ts(cursor, c)?,
                id: id.clone(),
            }),
            _ => Err(malformed(cursor)),
        }
    }
}

/// Where a run list resumes: the order is `queued_at`, `id`, both descending. Both are fixed at
/// enqueue, so a walk over a task's runs is exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunKey {
    pub queued_at: Ts,
    pub id: String,
}

impl RunKey {
    pub fn of(r: &Run) -> RunKey {
        RunKey {
            queued_at: r.queued_at,
            id: r.id.clone(),
        }
    }

    pub fn cursor(&self) -> String {
        encode('R', &[&self.queued_at.0.to_string(), &self.id])
    }

    pub fn parse(cursor: &str) -> Result<RunKey> {
        match decode('R', 2, cursor)?.as_slice() {
            [q, id] => Ok(RunKey {
                queued_at: ts(cursor, q)?,
                id: id.clone(),
            }),
            _ => Err(malformed(cursor)),
        }
    }
}

/// Where a timeline resumes: after this event sequence (what `after_sequence` also says).
pub fn sequence_cursor(sequence: i64) -> String {
    encode('S', &[&sequence.to_string()])
}

pub fn parse_sequence_cursor(cursor: &str) -> Result<i64> {
    match decode('S', 1, cursor)?.as_slice() {
        [s] => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| malformed(cursor)),
        _ => Err(malformed(cursor)),
    }
}

/// Field separator inside a cursor. Only the last field may be an id (client-chosen text), and it
/// takes the rest of the cursor, separators included.
const SEP: char = '\u{1f}';

/// `kind` then the fields, hex-encoded: opaque, URL-safe, and refused when used for another list.
fn encode(kind: char, fields: &[&str]) -> String {
    let mut raw = String::from(kind);
    for f in fields {
        raw.push(SEP);
        raw.push_str(f);
    }
    hex::encode(raw)
}

/// The `fields` fields of a cursor of `kind`.
fn decode(kind: char, fields: usize, cursor: &str) -> Result<Vec<String>> {
    let bytes = hex::decode(cursor.trim()).map_err(|_| malformed(cursor))?;
    let raw = String::from_utf8(bytes).map_err(|_| malformed(cursor))?;
    let mut parts = raw.splitn(fields + 1, SEP);
    if parts.next() != Some(kind.encode_utf8(&mut [0; 4])) {
        return Err(malformed(cursor));
    }
    Ok(parts.map(str::to_string).collect())
}

fn ts(cursor: &str, field: &str) -> Result<Ts> {
    field.parse::<i64>().map(Ts).map_err(|_| malformed(cursor))
}

fn malformed(cursor: &str) -> Error {
    Error::validation(format!(
        "cursor {cursor:?} is not a cursor of this list; pass the next_cursor of a previous page"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_clamp_and_refuse_negatives() {
        assert_eq!(size(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(size(Some(0)).unwrap(), DEFAULT_LIMIT);
        assert_eq!(size(Some(7)).unwrap(), 7);
        assert_eq!(size(Some(MAX_LIMIT as i64)).unwrap(), MAX_LIMIT);
        assert_eq!(size(Some(MAX_LIMIT as i64 + 1)).unwrap(), MAX_LIMIT);
        assert_eq!(size(Some(i64::MAX)).unwrap(), MAX_LIMIT);
        assert!(size(Some(-1)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_refuse_other_lists() {
        let t = TaskKey {
            last_activity_at: Ts(3),
            updated_at: Ts(2),
            created_at: Ts(1),
            id: "task-1".into(),
        };
        assert_eq!(TaskKey::parse(&t.cursor()).unwrap(), t);
        let r = RunKey {
            queued_at: Ts(-5),
            id: "run".into(),
        };
        assert_eq!(RunKey::parse(&r.cursor()).unwrap(), r);
        let odd = RunKey {
            queued_at: Ts(1),
            id: format!("a{SEP}b"),
        };
        assert_eq!(RunKey::parse(&odd.cursor()).unwrap(), odd);
        assert_eq!(parse_sequence_cursor(&sequence_cursor(42)).unwrap(), 42);

        assert!(RunKey::parse(&t.cursor()).is_err());
        assert!(TaskKey::parse(&sequence_cursor(1)).is_err());
        for bad in [
            "",
            "zz",
            "00",
            "abc",
            &hex::encode("T\u{1f}x\u{1f}1\u{1f}1\u{1f}id"),
        ] {
            assert!(TaskKey::parse(bad).is_err(), "{bad}");
        }
        assert!(parse_sequence_cursor(&encode('S', &["-1"])).is_err());
    }

    #[test]
    fn cut_keeps_one_page_and_points_after_its_last_row() {
        let p = Page::cut(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_cursor.as_deref(), Some("2"));
        let last = Page::cut(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(last.next_cursor, None);
        assert_eq!(
            last.to_json("n"),
            serde_json::json!({ "n": [1, 2] }),
            "no next_cursor key on the last page"
        );
    }
}
