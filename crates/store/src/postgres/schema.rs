//! Schema migrations on PostgreSQL, versioned in `tasklane_schema`.
//!
//! The tables, columns and indexes are the SQLite backend's, column for column (times are
//! microseconds since the epoch in BIGINT, flags 0/1 in BIGINT, JSON as the exact text the API
//! was sent), so both backends answer every request byte for byte alike. Text compares by byte
//! (`COLLATE "C"`, SQLite's order) whatever locale the database was created with: ids and names
//! are ordered and paged by keyset, and a locale order would differ from SQLite's. Migration `n` (1-based)
//! is `MIGRATIONS[n - 1]`; migrations are only ever appended.

use tasklane_core::{Error, Result};

use super::conn::Conn;
use super::MIGRATE_LOCK;
use crate::sqlite::status_sets::{active_run, not_open_work, open_run};

/// The inbox lanes' sort key: a task's latest activity of any kind.
macro_rules! inbox_activity {
    () => {
        "GREATEST(last_activity_at, updated_at, COALESCE(closed_at, 0))"
    };
}
pub(crate) use inbox_activity;

const MIGRATION_1: &str = concat!(
    r#"
CREATE TABLE tasks (
    id                     TEXT COLLATE "C" PRIMARY KEY,
    identifier             TEXT COLLATE "C",
    scope                  TEXT COLLATE "C" NOT NULL,
    workspace_id           TEXT COLLATE "C",
    parent_task_id         TEXT COLLATE "C" REFERENCES tasks(id) ON DELETE RESTRICT,
    network_channel        TEXT COLLATE "C",
    title                  TEXT COLLATE "C" NOT NULL,
    description            TEXT COLLATE "C",
    priority               TEXT COLLATE "C" NOT NULL,
    max_attempts           BIGINT NOT NULL,
    auto_enqueue_on_ready  BOOLEAN NOT NULL,
    status                 TEXT COLLATE "C" NOT NULL,
    approval_policy        TEXT COLLATE "C" NOT NULL,
    approval_state         TEXT COLLATE "C" NOT NULL,
    owner_kind             TEXT COLLATE "C",
    owner_ref              TEXT COLLATE "C",
    current_run_id         TEXT COLLATE "C",
    latest_event_seq       BIGINT NOT NULL DEFAULT 0,
    created_by_kind        TEXT COLLATE "C" NOT NULL,
    created_by_ref         TEXT COLLATE "C" NOT NULL,
    origin_kind            TEXT COLLATE "C" NOT NULL,
    origin_ref             TEXT COLLATE "C" NOT NULL,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    closed_at              BIGINT,
    last_activity_at       BIGINT NOT NULL,
    metadata               TEXT COLLATE "C",
    required_capabilities  TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    preferred_capabilities TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    dependency_count       BIGINT NOT NULL DEFAULT 0,
    latest_run_failed      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_status ON tasks (status);
CREATE INDEX tasks_list_order ON tasks (last_activity_at, updated_at, created_at, id);
CREATE INDEX tasks_parent ON tasks (parent_task_id, last_activity_at, updated_at, created_at, id)
    WHERE parent_task_id IS NOT NULL;
CREATE INDEX tasks_workspace ON tasks (workspace_id) WHERE workspace_id IS NOT NULL;
CREATE INDEX tasks_owner_status ON tasks (owner_kind, owner_ref, status) WHERE owner_kind IS NOT NULL;
CREATE INDEX tasks_inbox_approvals ON tasks ("#,
    inbox_activity!(),
    r#", id)
    WHERE status = 'blocked' AND approval_policy = 'manual' AND approval_state = 'pending';
CREATE INDEX tasks_inbox_failed ON tasks ("#,
    inbox_activity!(),
    r#", id) WHERE latest_run_failed = 1;
CREATE INDEX tasks_inbox_blocked ON tasks ("#,
    inbox_activity!(),
    r#", id)
    WHERE status = 'blocked' AND latest_run_failed = 0
      AND NOT (approval_policy = 'manual' AND approval_state = 'pending');
CREATE INDEX tasks_inbox_open ON tasks (owner_kind, owner_ref, "#,
    inbox_activity!(),
    r#", id)
    WHERE owner_kind IS NOT NULL AND NOT "#,
    not_open_work!("status"),
    r#" AND latest_run_failed = 0;

CREATE TABLE task_runs (
    id                      TEXT COLLATE "C" PRIMARY KEY,
    task_id                 TEXT COLLATE "C" NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    status                  TEXT COLLATE "C" NOT NULL,
    attempt                 BIGINT NOT NULL,
    claimed_by_kind         TEXT COLLATE "C",
    claimed_by_ref          TEXT COLLATE "C",
    session_id              TEXT COLLATE "C",
    origin_kind             TEXT COLLATE "C" NOT NULL,
    origin_ref              TEXT COLLATE "C" NOT NULL,
    idempotency_key         TEXT COLLATE "C",
    network_channel         TEXT COLLATE "C",
    coordination_channel_id TEXT COLLATE "C",
    claim_token_hash        TEXT COLLATE "C",
    lease_until             BIGINT,
    heartbeat_at            BIGINT,
    lease_expirations       BIGINT NOT NULL DEFAULT 0,
    queued_at               BIGINT NOT NULL,
    claimed_at              BIGINT,
    started_at              BIGINT,
    ended_at                BIGINT,
    error                   TEXT COLLATE "C",
    metadata                TEXT COLLATE "C",
    result                  TEXT COLLATE "C",
    required_capabilities   TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    preferred_capabilities  TEXT COLLATE "C" NOT NULL DEFAULT '[]',
    priority_rank           BIGINT NOT NULL DEFAULT 1,
    claim_idempotency_key   TEXT COLLATE "C",
    session_token           TEXT COLLATE "C",
    claim_audience          TEXT COLLATE "C",
    claim_caps              TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX task_runs_task ON task_runs (task_id, queued_at DESC, id DESC);
CREATE INDEX task_runs_session ON task_runs (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX task_runs_queue_channel ON task_runs (network_channel, queued_at) WHERE status = 'queued';
CREATE INDEX task_runs_latest ON task_runs (task_id, attempt DESC, queued_at DESC, id DESC);
CREATE INDEX task_runs_active_lease ON task_runs (lease_until) WHERE "#,
    active_run!("status"),
    r#";
CREATE INDEX task_runs_session_active ON task_runs (session_id) WHERE "#,
    active_run!("status"),
    r#";
-- The schema's backstop for one open run per task, the rule core checks before every enqueue.
CREATE UNIQUE INDEX task_runs_one_open ON task_runs (task_id) WHERE "#,
    open_run!("status"),
    r#";
CREATE INDEX task_runs_open_claimer ON task_runs (claimed_by_kind, claimed_by_ref) WHERE "#,
    open_run!("status"),
    r#";
CREATE INDEX task_runs_claim_class ON task_runs (claim_audience, priority_rank, claim_caps, queued_at, id)
    WHERE status = 'queued' AND claim_audience IS NOT NULL;
CREATE INDEX task_runs_queue_recent ON task_runs (queued_at, id, priority_rank) WHERE status = 'queued';

CREATE TABLE task_dependencies (
    task_id            TEXT COLLATE "C" NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    depends_on_task_id TEXT COLLATE "C" NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind               TEXT COLLATE "C" NOT NULL,
    created_at         BIGINT NOT NULL,
    PRIMARY KEY (task_id, depends_on_task_id, kind)
);
CREATE INDEX task_dependencies_depends_on ON task_dependencies (depends_on_task_id);

-- Handed out only under the cluster's write lock, so sequence order is commit order; a value
-- is never handed out twice, even after the newest events are deleted with their task.
CREATE SEQUENCE task_events_sequence;
CREATE TABLE task_events (
    sequence    BIGINT PRIMARY KEY DEFAULT nextval('task_events_sequence'),
    id          TEXT COLLATE "C" NOT NULL UNIQUE,
    task_id     TEXT COLLATE "C" NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    run_id      TEXT COLLATE "C",
    event_type  TEXT COLLATE "C" NOT NULL,
    actor_kind  TEXT COLLATE "C" NOT NULL,
    actor_ref   TEXT COLLATE "C" NOT NULL,
    origin_kind TEXT COLLATE "C" NOT NULL,
    origin_ref  TEXT COLLATE "C" NOT NULL,
    payload     TEXT COLLATE "C" NOT NULL,
    timestamp   BIGINT NOT NULL
);
ALTER SEQUENCE task_events_sequence OWNED BY task_events.sequence;
CREATE INDEX task_events_task ON task_events (task_id, sequence);
CREATE INDEX task_events_force_stopped ON task_events (timestamp) WHERE event_type = 'task.run_force_stopped';

CREATE TABLE run_idempotency (
    key         TEXT COLLATE "C" NOT NULL,
    origin_kind TEXT COLLATE "C" NOT NULL,
    origin_ref  TEXT COLLATE "C" NOT NULL,
    task_id     TEXT COLLATE "C" NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    run_id      TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (key, origin_kind, origin_ref)
);
CREATE INDEX run_idempotency_task ON run_idempotency (task_id);

CREATE TABLE agent_sessions (
    token_name    TEXT COLLATE "C" NOT NULL,
    session_id    TEXT COLLATE "C" NOT NULL,
    agent_name    TEXT COLLATE "C",
    first_seen_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    PRIMARY KEY (token_name, session_id)
);

CREATE TABLE api_tokens (
    name         TEXT COLLATE "C" PRIMARY KEY,
    role         TEXT COLLATE "C" NOT NULL,
    token_hash   TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at   BIGINT
);

CREATE TABLE task_triage (
    actor_kind            TEXT COLLATE "C" NOT NULL,
    actor_ref             TEXT COLLATE "C" NOT NULL,
    task_id               TEXT COLLATE "C" NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    read                  BIGINT NOT NULL,
    dismissed             BIGINT NOT NULL,
    archived              BIGINT NOT NULL,
    last_seen_activity_at BIGINT,
    updated_at            BIGINT NOT NULL,
    PRIMARY KEY (actor_kind, actor_ref, task_id)
);
CREATE INDEX task_triage_task ON task_triage (task_id);
CREATE INDEX task_triage_archived ON task_triage (actor_kind, actor_ref, task_id) WHERE archived = 1;

-- The servers sharing the database (nodes.rs).
CREATE TABLE tasklane_nodes (
    node_id    BIGINT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL
);

-- Dashboard and inbox counters, kept exact by the writer (see counters.rs).
CREATE TABLE obs_task_counts (
    scope           TEXT COLLATE "C" NOT NULL,
    workspace_id    TEXT COLLATE "C" NOT NULL,
    owner_kind      TEXT COLLATE "C" NOT NULL,
    owner_ref       TEXT COLLATE "C" NOT NULL,
    network_channel TEXT COLLATE "C" NOT NULL,
    origin_kind     TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    approval_state  TEXT COLLATE "C" NOT NULL,
    has_deps        BIGINT NOT NULL,
    approval_policy TEXT COLLATE "C" NOT NULL,
    latest_failed   BIGINT NOT NULL,
    n               BIGINT NOT NULL,
    PRIMARY KEY (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, status,
                 approval_state, has_deps, approval_policy, latest_failed)
);
CREATE TABLE obs_run_counts (
    scope           TEXT COLLATE "C" NOT NULL,
    workspace_id    TEXT COLLATE "C" NOT NULL,
    owner_kind      TEXT COLLATE "C" NOT NULL,
    owner_ref       TEXT COLLATE "C" NOT NULL,
    network_channel TEXT COLLATE "C" NOT NULL,
    origin_kind     TEXT COLLATE "C" NOT NULL,
    run_channel     TEXT COLLATE "C" NOT NULL,
    run_origin_kind TEXT COLLATE "C" NOT NULL,
    status          TEXT COLLATE "C" NOT NULL,
    n               BIGINT NOT NULL,
    claim_n         BIGINT NOT NULL,
    claim_sum       BIGINT NOT NULL,
    claim_max       BIGINT NOT NULL,
    start_n         BIGINT NOT NULL,
    start_sum       BIGINT NOT NULL,
    start_max       BIGINT NOT NULL,
    PRIMARY KEY (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind,
                 run_channel, run_origin_kind, status)
);
"#
);

/// The service's time in test-clock mode, one row (`test_clock.rs`). Servers on the real clock
/// never read or write it.
const MIGRATION_2: &str = r#"
CREATE TABLE tasklane_test_clock (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    now_us    BIGINT NOT NULL
);
"#;

/// `task_runs_session` served no query (every read by session is of its active runs, which
/// `task_runs_session_active` serves), yet every claim wrote an entry to it.
const MIGRATION_3: &str = "DROP INDEX IF EXISTS task_runs_session;";

/// Settings the database keeps about itself. `event_ids = sequence`: events are named by their
/// sequence (`ids::event_id_of`), which puts each new id at the end of `task_events`' unique
/// index on `id` instead of on a random leaf of it. Set only for a log that has never held an
/// event, since a random id already stored could be one that a later sequence names. The same
/// rule as SQLite's migration 11.
const MIGRATION_4: &str = r#"
CREATE TABLE tasklane_settings (name TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO tasklane_settings (name, value) SELECT 'event_ids', 'sequence'
    WHERE NOT (SELECT is_called FROM task_events_sequence);
"#;

/// The claim queue: one row per queued run that agents may claim (a claim audience set), keyed
/// and ordered as claims look for runs. A claim used to seek the head of each claim class in a
/// partial index of `task_runs` (status queued). A claimed run's entry there stays until
/// `task_runs` is vacuumed, and every seek steps over the entries of every run claimed since:
/// 30 index pages read for a claim's heads after 5,000 claims, 197 after 40,000, and
/// autovacuum waits for a fifth of `task_runs`, history included, to be dead. This table holds
/// queued runs only, so each node vacuums it as soon as a thousand of its rows are dead
/// (`queue_vacuum`), at a cost that follows the queue, not the history.
///
/// Triggers keep it in step with `task_runs` on every write path, migrations and operator
/// SQL included; each fires only for a row that is or was claimable. Its one index is the
/// claims' order; a row is found by its whole key, which the trigger knows from the old run.
/// They run before the row is written, which spares PostgreSQL the queue of after-row events
/// and a second read of the row; a write refused after them takes their changes with it.
const MIGRATION_5: &str = r#"
CREATE TABLE run_queue (
    run_id         TEXT COLLATE "C" NOT NULL,
    claim_audience TEXT COLLATE "C" NOT NULL,
    priority_rank  BIGINT NOT NULL,
    claim_caps     TEXT COLLATE "C" NOT NULL,
    queued_at      BIGINT NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
CREATE INDEX run_queue_class ON run_queue (claim_audience, priority_rank, claim_caps, queued_at, run_id);
INSERT INTO run_queue
    SELECT id, claim_audience, priority_rank, claim_caps, queued_at FROM task_runs
    WHERE status = 'queued' AND claim_audience IS NOT NULL;
CREATE FUNCTION tasklane_run_queue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        DELETE FROM run_queue
        WHERE (claim_audience, priority_rank, claim_caps, queued_at, run_id)
            = (OLD.claim_audience, OLD.priority_rank, OLD.claim_caps, OLD.queued_at, OLD.id);
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.status = 'queued' AND NEW.claim_audience IS NOT NULL THEN
        INSERT INTO run_queue (run_id, claim_audience, priority_rank, claim_caps, queued_at)
        VALUES (NEW.id, NEW.claim_audience, NEW.priority_rank, NEW.claim_caps, NEW.queued_at);
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END
$$;
CREATE TRIGGER run_queue_insert BEFORE INSERT ON task_runs FOR EACH ROW
    WHEN (NEW.status = 'queued' AND NEW.claim_audience IS NOT NULL)
    EXECUTE FUNCTION tasklane_run_queue();
CREATE TRIGGER run_queue_update
    BEFORE UPDATE OF status, claim_audience, priority_rank, claim_caps, queued_at ON task_runs
    FOR EACH ROW
    WHEN ((OLD.status = 'queued' AND OLD.claim_audience IS NOT NULL)
       OR (NEW.status = 'queued' AND NEW.claim_audience IS NOT NULL))
    EXECUTE FUNCTION tasklane_run_queue();
CREATE TRIGGER run_queue_delete BEFORE DELETE ON task_runs FOR EACH ROW
    WHEN (OLD.status = 'queued' AND OLD.claim_audience IS NOT NULL)
    EXECUTE FUNCTION tasklane_run_queue();
DROP INDEX task_runs_claim_class;
"#;

const MIGRATIONS: &[&str] = &[
    MIGRATION_1,
    MIGRATION_2,
    MIGRATION_3,
    MIGRATION_4,
    MIGRATION_5,
];

/// The schema version this binary migrates to.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`SCHEMA_VERSION`], holding the migration lock so that nodes starting
/// together migrate one after another (the later ones find nothing left to do). A database
/// migrated by a newer Tasklane is refused before anything is written.
pub(crate) fn migrate(conn: &mut Conn) -> Result<()> {
    conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])?;
    let outcome = migrate_locked(conn);
    let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK]);
    outcome.and(unlocked.map(drop))
}

fn migrate_locked(conn: &mut Conn) -> Result<()> {
    conn.batch(
        "CREATE TABLE IF NOT EXISTS tasklane_schema (
             singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
             version   BIGINT NOT NULL
         );
         INSERT INTO tasklane_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )?;
    let current = version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(Error::Storage(format!(
            "database schema version {current} is newer than this tasklane understands \
             ({SCHEMA_VERSION}); upgrade tasklane"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let next = i as i64 + 1;
        conn.batch("BEGIN")?;
        let step = conn
            .batch(sql)
            .and_then(|()| conn.execute("UPDATE tasklane_schema SET version = $1", &[&next]))
            .and_then(|_| conn.batch("COMMIT"));
        if let Err(e) = step {
            let _ = conn.batch("ROLLBACK");
            return Err(Error::Storage(format!("migration {next} failed: {e}")));
        }
        tracing::info!(version = next, "migrated the database");
    }
    Ok(())
}

/// The schema version the database is at.
pub(crate) fn version(conn: &mut Conn) -> Result<i64> {
    Ok(conn
        .query_one("SELECT version FROM tasklane_schema", &[])?
        .get(0))
}

/// Whether the database names its events by sequence (see `MIGRATION_4`).
pub(crate) fn events_named_by_sequence(conn: &mut Conn) -> Result<bool> {
    Ok(conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM tasklane_settings \
             WHERE name = 'event_ids' AND value = 'sequence')",
            &[],
        )?
        .get(0))
}

/// The highest sequence ever handed out, so the watch starts where the log is.
pub(crate) fn last_sequence(conn: &mut Conn) -> Result<i64> {
    Ok(conn.query_one(LAST_SEQUENCE_SQL, &[])?.get(0))
}

/// The last event sequence handed out (0 before the first).
pub(crate) const LAST_SEQUENCE_SQL: &str =
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM task_events_sequence";

/// The highest sequence of a committed event still in the log.
pub(crate) fn max_committed_sequence(conn: &mut Conn) -> Result<i64> {
    Ok(conn
        .query_one("SELECT COALESCE(MAX(sequence), 0) FROM task_events", &[])?
        .get(0))
}
