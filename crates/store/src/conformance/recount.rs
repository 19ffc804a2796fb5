//! The maintained counters and flags recounted from the tasks, runs and edges: one SQL per
//! backend (the dialects differ), each asked through a `rows` function that returns every row of
//! a statement as `|`-joined text, sorted.

use rusqlite::Connection;

/// Every row of `sql` on SQLite, as text, sorted.
pub(crate) fn sqlite_rows(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    let mut rows = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>();
    rows.sort();
    rows
}

/// A backend's recount statements, each compared with what it maintains.
struct Recount {
    /// The tasks whose kept `dependency_count` or `latest_run_failed` differ from a recount.
    differing_flags: String,
    /// `obs_task_counts` recounted from the tasks, in [`KEPT_TASK_COUNTS`]' columns.
    task_counts: String,
    /// `obs_run_counts` recounted from the runs, in [`KEPT_RUN_COUNTS`]' columns.
    run_counts: String,
    /// The run groups whose claim latency maximum exceeds the kept one.
    claim_maxima_above: String,
}

const KEPT_TASK_COUNTS: &str =
    "SELECT scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, status, \
     approval_state, has_deps, approval_policy, latest_failed, n FROM obs_task_counts WHERE n != 0";

const KEPT_RUN_COUNTS: &str =
    "SELECT scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, run_channel, \
     run_origin_kind, status, n, claim_n, claim_sum, start_n, start_sum FROM obs_run_counts \
     WHERE n != 0 OR claim_n != 0 OR claim_sum != 0 OR start_n != 0 OR start_sum != 0";

/// The task columns of a counter bucket, over tasks `t`.
const DIMS: &str = "t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), \
                    COALESCE(t.owner_ref, ''), COALESCE(t.network_channel, ''), t.origin_kind";

/// The maintained counters and flags equal `recount`, asked through `rows`.
fn assert_counters_match(rows: &dyn Fn(&str) -> Vec<String>, recount: &Recount) {
    assert_eq!(
        rows(&recount.differing_flags),
        Vec::<String>::new(),
        "flags kept on tasks differ from their recount"
    );
    assert_eq!(
        rows(KEPT_TASK_COUNTS),
        rows(&recount.task_counts),
        "task counters"
    );
    assert_eq!(
        rows(KEPT_RUN_COUNTS),
        rows(&recount.run_counts),
        "run counters"
    );
    // Maxima never decrease, so they are at least the recount's.
    assert_eq!(
        rows(&recount.claim_maxima_above),
        Vec::<String>::new(),
        "claim latency maxima"
    );
}

/// The maintained counters and flags of a SQLite database equal a recount.
pub(crate) fn assert_sqlite_counters_match_a_recount(conn: &Connection) {
    let latest_failed =
        "COALESCE((SELECT r.status = 'failed' FROM task_runs r WHERE r.task_id = t.id \
                         ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1), 0)";
    let has_deps = "EXISTS (SELECT 1 FROM task_dependencies d WHERE d.task_id = t.id)";
    let claim = "MAX(r.claimed_at - r.queued_at, 0)";
    let start = "MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)";
    let recount = Recount {
        differing_flags: format!(
            "SELECT id, dependency_count > 0, latest_run_failed FROM tasks t \
             WHERE dependency_count != (SELECT COUNT(*) FROM task_dependencies d WHERE d.task_id = t.id) \
                OR latest_run_failed != {latest_failed}"
        ),
        task_counts: format!(
            "SELECT {DIMS}, t.status, t.approval_state, {has_deps}, t.approval_policy, {latest_failed}, \
             COUNT(*) FROM tasks t GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
        ),
        run_counts: format!(
            "SELECT {DIMS}, COALESCE(r.network_channel, ''), r.origin_kind, r.status, COUNT(*), \
             SUM(r.claimed_at IS NOT NULL), COALESCE(SUM({claim}), 0), SUM(r.started_at IS NOT NULL), \
             COALESCE(SUM({start}), 0) FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
        ),
        claim_maxima_above: format!(
            "SELECT {DIMS}, COALESCE(r.network_channel, ''), r.origin_kind, r.status \
             FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9 \
             HAVING COALESCE(MAX({claim}), 0) > COALESCE((SELECT c.claim_max FROM obs_run_counts c \
               WHERE (c.scope, c.workspace_id, c.owner_kind, c.owner_ref, c.network_channel, \
                      c.origin_kind, c.run_channel, c.run_origin_kind, c.status) = \
                     ({DIMS}, COALESCE(r.network_channel, ''), r.origin_kind, r.status)), 0)"
        ),
    };
    assert_counters_match(&|sql: &str| sqlite_rows(conn, sql), &recount);
}

/// The maintained counters and flags of a PostgreSQL database, and its claim queue
/// (`run_queue`), equal a recount.
pub(crate) fn assert_postgres_counters_match_a_recount(rows: &dyn Fn(&str) -> Vec<String>) {
    let latest_failed = "COALESCE((SELECT CASE WHEN r.status = 'failed' THEN 1 ELSE 0 END \
                         FROM task_runs r WHERE r.task_id = t.id \
                         ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1), 0)";
    let has_deps =
        "CASE WHEN EXISTS (SELECT 1 FROM task_dependencies d WHERE d.task_id = t.id) THEN 1 ELSE 0 END";
    // SQLite's MAX(NULL, 0) is NULL where GREATEST is 0: the same sums and maxima.
    let claim = "GREATEST(r.claimed_at - r.queued_at, 0)";
    let start = "GREATEST(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)";
    let recount = Recount {
        differing_flags: format!(
            "SELECT id, dependency_count, latest_run_failed FROM tasks t \
             WHERE dependency_count != (SELECT COUNT(*) FROM task_dependencies d WHERE d.task_id = t.id) \
                OR latest_run_failed != {latest_failed}"
        ),
        task_counts: format!(
            "SELECT {DIMS}, t.status, t.approval_state, {has_deps}, t.approval_policy, {latest_failed}, \
             COUNT(*) FROM tasks t GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11"
        ),
        run_counts: format!(
            "SELECT {DIMS}, COALESCE(r.network_channel, ''), r.origin_kind, r.status, COUNT(*), \
             COUNT(r.claimed_at), COALESCE(SUM(CASE WHEN r.claimed_at IS NOT NULL THEN {claim} END), 0), \
             COUNT(r.started_at), \
             COALESCE(SUM(CASE WHEN r.started_at IS NOT NULL THEN {start} END), 0) \
             FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
        ),
        claim_maxima_above: format!(
            "SELECT g.* FROM (SELECT {DIMS}, COALESCE(r.network_channel, '') AS rc, \
             r.origin_kind AS rok, r.status AS st, \
             COALESCE(MAX(CASE WHEN r.claimed_at IS NOT NULL THEN {claim} END), 0) AS m \
             FROM task_runs r JOIN tasks t ON t.id = r.task_id \
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9) \
             AS g (s, w, ok, orf, nc, ok2, rc, rok, st, m) \
             WHERE g.m > COALESCE((SELECT c.claim_max FROM obs_run_counts c \
               WHERE (c.scope, c.workspace_id, c.owner_kind, c.owner_ref, c.network_channel, \
                      c.origin_kind, c.run_channel, c.run_origin_kind, c.status) = \
                     (g.s, g.w, g.ok, g.orf, g.nc, g.ok2, g.rc, g.rok, g.st)), 0)"
        ),
    };
    assert_counters_match(rows, &recount);
    // The claim queue holds exactly the claimable queued runs, as they are.
    assert_eq!(
        rows("SELECT run_id, claim_audience, priority_rank, claim_caps, queued_at FROM run_queue"),
        rows(
            "SELECT id, claim_audience, priority_rank, claim_caps, queued_at FROM task_runs \
             WHERE status = 'queued' AND claim_audience IS NOT NULL"
        ),
        "the claim queue differs from the queued runs"
    );
}
