//! The page cache layer (`tasklane_store::sqlite::page_cache`) in a process of its own: SQLite
//! takes a page cache only before it is first used, which in the library's unit tests depends on
//! which test runs first.

use rusqlite::Connection;
use tasklane_store::sqlite::page_cache::{install, stats};

fn key(i: u64) -> String {
    // Scattered keys, so that inserts land all over the index and split its pages.
    format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn open(path: &std::path::Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;",
    )
    .unwrap();
    conn
}

fn keys_in(conn: &Connection) -> Vec<String> {
    let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
    let rows = stmt.query_map([], |r| r.get(0)).unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

fn integrity(conn: &Connection) -> String {
    conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn splits_leave_commits_alone_and_shrinking_still_drops_pages() {
    assert!(install(), "nothing used SQLite before this test");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.db");
    let conn = open(&path);
    conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)")
        .unwrap();

    // Commits of scattered inserts: b-tree pages split and are renumbered through the lock
    // page's number, yet no commit's truncation needs the default cache.
    let before = stats();
    let mut expected = Vec::new();
    for batch in 0..300u64 {
        let tx = conn.unchecked_transaction().unwrap();
        for i in batch * 10..batch * 10 + 10 {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(100))", [key(i)])
                .unwrap();
            expected.push(key(i));
        }
        tx.commit().unwrap();
    }
    let after = stats();
    assert!(
        after.parked > before.parked,
        "no page was parked: {after:?}"
    );
    assert!(
        after.skipped >= before.skipped + 300,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after.passed, before.passed,
        "a truncation went to the default cache"
    );

    // A savepoint rolled back after the database grew: the pages past the restored end must
    // leave the cache, so that truncation goes through.
    let before = stats();
    conn.execute_batch("BEGIN; SAVEPOINT grow;").unwrap();
    for i in 100_000..102_000u64 {
        conn.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(1500))", [key(i)])
            .unwrap();
    }
    conn.execute_batch("ROLLBACK TO grow; RELEASE grow; COMMIT;")
        .unwrap();
    assert!(
        stats().passed > before.passed,
        "{before:?} -> {:?}",
        stats()
    );
    expected.sort();
    assert_eq!(keys_in(&conn), expected);
    assert_eq!(integrity(&conn), "ok");

    // The cache still serves later commits correctly, and a second connection reads the same.
    for i in 3_000..3_500u64 {
        conn.execute("INSERT INTO t (k, v) VALUES (?1, zeroblob(100))", [key(i)])
            .unwrap();
        expected.push(key(i));
    }
    conn.execute("DELETE FROM t WHERE id % 3 = 0", []).unwrap();
    conn.execute_batch("VACUUM").unwrap();
    let mut kept = keys_in(&conn);
    kept.sort();
    let reader = Connection::open(&path).unwrap();
    assert_eq!(keys_in(&reader), kept);
    assert_eq!(kept.len(), expected.len() - expected.len() / 3);
    assert_eq!(integrity(&conn), "ok");
    assert_eq!(integrity(&reader), "ok");
}
