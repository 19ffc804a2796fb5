//! The observe migrations: triage, the counters behind the dashboard and the indexes behind the
//! inbox ([`MIGRATION`], the third), and the move of counter maintenance out of triggers
//! ([`MIGRATION_DELTAS`], the seventh).
//!
//! The counter tables (bucket formulas: `tasklane_core::observe::counters`):
//! - `obs_task_counts`: tasks per (task dimensions, status, approval state, has-dependencies,
//!   approval policy, latest-run-failed): the dashboard's totals and the inbox's base lane counts;
//! - `obs_run_counts`: runs per (task dimensions, run channel, run origin, status), with the
//!   claim/start latency sums. A task whose dimensions change moves its runs' contributions.
//!
//! Dimensions that may be NULL are stored as '' because a NULL key would never match on upsert.
//! Latency maxima never decrease: deleting a task leaves its runs' maxima in place (documented).
//!
//! The first version kept them with triggers, row by row. Since migration 7 the write primitives
//! report their changes as deltas and the writer applies the net sum once per batch
//! (`counter_deltas.rs`, `sqlite/counters.rs`): a trigger costs two upserts per changed row, and
//! the run triggers also rewrote the task row on every run status change to keep
//! `latest_run_status`, of which the inbox only ever asks "failed?". That column became the flag
//! `latest_run_failed`, written only when it flips.

use crate::sqlite::status_sets::not_open_work;

pub(crate) const MIGRATION: &str = r#"
ALTER TABLE tasks ADD COLUMN dependency_count INTEGER NOT NULL DEFAULT 0;
-- Status of the latest run (highest attempt, then queued_at, then id): the failed_runs lane.
ALTER TABLE tasks ADD COLUMN latest_run_status TEXT;
UPDATE tasks SET dependency_count = (SELECT COUNT(*) FROM task_dependencies d WHERE d.task_id = tasks.id);
UPDATE tasks SET latest_run_status = (SELECT r.status FROM task_runs r WHERE r.task_id = tasks.id
    ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1);

-- The inbox lanes' base sets (tasks without the caller's triage row or claim), newest activity
-- first: a page of a lane is an index range. The predicates mirror `core::observe::inbox::lane_of`
-- (see `inbox_lane_page`); the activity expression is the inbox's `latest_activity_at`.
CREATE INDEX tasks_inbox_approvals ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)) DESC, id)
    WHERE status = 'blocked' AND approval_policy = 'manual' AND approval_state = 'pending';
CREATE INDEX tasks_inbox_failed ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)) DESC, id)
    WHERE latest_run_status = 'failed';
CREATE INDEX tasks_inbox_blocked ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)) DESC, id)
    WHERE status = 'blocked' AND latest_run_status IS NOT 'failed'
      AND NOT (approval_policy = 'manual' AND approval_state = 'pending');
CREATE INDEX tasks_inbox_open ON tasks (owner_kind, owner_ref, MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)) DESC, id)
    WHERE status NOT IN ('draft', 'completed', 'failed', 'canceled', 'blocked')
      AND latest_run_status IS NOT 'failed';
CREATE INDEX tasks_owner_status ON tasks (owner_kind, owner_ref, status);
CREATE INDEX task_runs_open_claimer ON task_runs (claimed_by_kind, claimed_by_ref)
    WHERE status IN ('queued', 'claimed', 'starting', 'running');
CREATE INDEX task_runs_queue_channel ON task_runs (network_channel, queued_at) WHERE status = 'queued';
CREATE INDEX task_runs_queue_recent ON task_runs (queued_at, id) WHERE status = 'queued';
CREATE INDEX task_runs_live ON task_runs (status) WHERE status IN ('claimed', 'starting', 'running');
CREATE INDEX task_events_force_stopped ON task_events (timestamp) WHERE event_type = 'task.run_force_stopped';

CREATE TABLE task_triage (
    actor_kind            TEXT NOT NULL,
    actor_ref             TEXT NOT NULL,
    task_id               TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    read                  INTEGER NOT NULL,
    dismissed             INTEGER NOT NULL,
    archived              INTEGER NOT NULL,
    last_seen_activity_at INTEGER,
    updated_at            INTEGER NOT NULL,
    PRIMARY KEY (actor_kind, actor_ref, task_id)
) WITHOUT ROWID;
CREATE INDEX task_triage_task ON task_triage (task_id);
CREATE INDEX task_triage_archived ON task_triage (actor_kind, actor_ref, task_id) WHERE archived = 1;

CREATE TABLE obs_task_counts (
    scope           TEXT NOT NULL,
    workspace_id    TEXT NOT NULL,
    owner_kind      TEXT NOT NULL,
    owner_ref       TEXT NOT NULL,
    network_channel TEXT NOT NULL,
    origin_kind     TEXT NOT NULL,
    status          TEXT NOT NULL,
    approval_state  TEXT NOT NULL,
    has_deps        INTEGER NOT NULL,
    approval_policy TEXT NOT NULL,
    latest_failed   INTEGER NOT NULL,
    n               INTEGER NOT NULL,
    PRIMARY KEY (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, status, approval_state,
                 has_deps, approval_policy, latest_failed)
) WITHOUT ROWID;

CREATE TABLE obs_run_counts (
    scope           TEXT NOT NULL,
    workspace_id    TEXT NOT NULL,
    owner_kind      TEXT NOT NULL,
    owner_ref       TEXT NOT NULL,
    network_channel TEXT NOT NULL,
    origin_kind     TEXT NOT NULL,
    run_channel     TEXT NOT NULL,
    run_origin_kind TEXT NOT NULL,
    status          TEXT NOT NULL,
    n               INTEGER NOT NULL,
    claim_n         INTEGER NOT NULL,
    claim_sum       INTEGER NOT NULL,
    claim_max       INTEGER NOT NULL,
    start_n         INTEGER NOT NULL,
    start_sum       INTEGER NOT NULL,
    start_max       INTEGER NOT NULL,
    PRIMARY KEY (scope, workspace_id, owner_kind, owner_ref, network_channel, origin_kind, run_channel, run_origin_kind, status)
) WITHOUT ROWID;

INSERT INTO obs_task_counts
SELECT scope, COALESCE(workspace_id, ''), COALESCE(owner_kind, ''), COALESCE(owner_ref, ''),
       COALESCE(network_channel, ''), origin_kind, status, approval_state, dependency_count > 0,
       approval_policy, latest_run_status IS 'failed', COUNT(*)
FROM tasks GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11;

INSERT INTO obs_run_counts
SELECT t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), COALESCE(t.owner_ref, ''),
       COALESCE(t.network_channel, ''), t.origin_kind, COALESCE(r.network_channel, ''), r.origin_kind, r.status,
       COUNT(*),
       SUM(r.claimed_at IS NOT NULL), COALESCE(SUM(MAX(r.claimed_at - r.queued_at, 0)), 0), COALESCE(MAX(MAX(r.claimed_at - r.queued_at, 0)), 0),
       SUM(r.started_at IS NOT NULL), COALESCE(SUM(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0),
       COALESCE(MAX(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0)
FROM task_runs r JOIN tasks t ON t.id = r.task_id GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

-- ---- task counters ----
CREATE TRIGGER obs_tasks_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO obs_task_counts VALUES (NEW.scope, COALESCE(NEW.workspace_id, ''), COALESCE(NEW.owner_kind, ''),
        COALESCE(NEW.owner_ref, ''), COALESCE(NEW.network_channel, ''), NEW.origin_kind, NEW.status,
        NEW.approval_state, NEW.dependency_count > 0, NEW.approval_policy, NEW.latest_run_status IS 'failed', 1)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER obs_tasks_delete AFTER DELETE ON tasks BEGIN
    INSERT INTO obs_task_counts VALUES (OLD.scope, COALESCE(OLD.workspace_id, ''), COALESCE(OLD.owner_kind, ''),
        COALESCE(OLD.owner_ref, ''), COALESCE(OLD.network_channel, ''), OLD.origin_kind, OLD.status,
        OLD.approval_state, OLD.dependency_count > 0, OLD.approval_policy, OLD.latest_run_status IS 'failed', -1)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;

CREATE TRIGGER obs_tasks_update AFTER UPDATE ON tasks
WHEN OLD.scope IS NOT NEW.scope OR OLD.workspace_id IS NOT NEW.workspace_id
  OR OLD.owner_kind IS NOT NEW.owner_kind OR OLD.owner_ref IS NOT NEW.owner_ref
  OR OLD.network_channel IS NOT NEW.network_channel OR OLD.origin_kind IS NOT NEW.origin_kind
  OR OLD.status IS NOT NEW.status OR OLD.approval_state IS NOT NEW.approval_state
  OR (OLD.dependency_count > 0) IS NOT (NEW.dependency_count > 0)
  OR OLD.approval_policy IS NOT NEW.approval_policy
  OR (OLD.latest_run_status IS 'failed') IS NOT (NEW.latest_run_status IS 'failed')
BEGIN
    INSERT INTO obs_task_counts VALUES (OLD.scope, COALESCE(OLD.workspace_id, ''), COALESCE(OLD.owner_kind, ''),
        COALESCE(OLD.owner_ref, ''), COALESCE(OLD.network_channel, ''), OLD.origin_kind, OLD.status,
        OLD.approval_state, OLD.dependency_count > 0, OLD.approval_policy, OLD.latest_run_status IS 'failed', -1)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
    INSERT INTO obs_task_counts VALUES (NEW.scope, COALESCE(NEW.workspace_id, ''), COALESCE(NEW.owner_kind, ''),
        COALESCE(NEW.owner_ref, ''), COALESCE(NEW.network_channel, ''), NEW.origin_kind, NEW.status,
        NEW.approval_state, NEW.dependency_count > 0, NEW.approval_policy, NEW.latest_run_status IS 'failed', 1)
    ON CONFLICT DO UPDATE SET n = n + excluded.n;
END;

-- A task whose dimensions change carries its runs' contributions to its new key.
CREATE TRIGGER obs_tasks_move_runs AFTER UPDATE ON tasks
WHEN OLD.scope IS NOT NEW.scope OR OLD.workspace_id IS NOT NEW.workspace_id
  OR OLD.owner_kind IS NOT NEW.owner_kind OR OLD.owner_ref IS NOT NEW.owner_ref
  OR OLD.network_channel IS NOT NEW.network_channel OR OLD.origin_kind IS NOT NEW.origin_kind
BEGIN
    INSERT INTO obs_run_counts
    SELECT OLD.scope, COALESCE(OLD.workspace_id, ''), COALESCE(OLD.owner_kind, ''), COALESCE(OLD.owner_ref, ''),
           COALESCE(OLD.network_channel, ''), OLD.origin_kind, COALESCE(r.network_channel, ''), r.origin_kind, r.status,
           -COUNT(*), -SUM(r.claimed_at IS NOT NULL), -COALESCE(SUM(MAX(r.claimed_at - r.queued_at, 0)), 0), 0,
           -SUM(r.started_at IS NOT NULL), -COALESCE(SUM(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0), 0
    FROM task_runs r WHERE r.task_id = OLD.id GROUP BY 7, 8, 9
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, start_n = start_n + excluded.start_n,
        start_sum = start_sum + excluded.start_sum;
    INSERT INTO obs_run_counts
    SELECT NEW.scope, COALESCE(NEW.workspace_id, ''), COALESCE(NEW.owner_kind, ''), COALESCE(NEW.owner_ref, ''),
           COALESCE(NEW.network_channel, ''), NEW.origin_kind, COALESCE(r.network_channel, ''), r.origin_kind, r.status,
           COUNT(*), SUM(r.claimed_at IS NOT NULL), COALESCE(SUM(MAX(r.claimed_at - r.queued_at, 0)), 0),
           COALESCE(MAX(MAX(r.claimed_at - r.queued_at, 0)), 0),
           SUM(r.started_at IS NOT NULL), COALESCE(SUM(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0),
           COALESCE(MAX(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0)
    FROM task_runs r WHERE r.task_id = NEW.id GROUP BY 7, 8, 9
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, claim_max = MAX(claim_max, excluded.claim_max),
        start_n = start_n + excluded.start_n, start_sum = start_sum + excluded.start_sum,
        start_max = MAX(start_max, excluded.start_max);
END;

-- Deleting a task cascades to its runs after the task row is gone, when the runs' own trigger can
-- no longer find the task's dimensions: subtract them here, before.
CREATE TRIGGER obs_tasks_delete_runs BEFORE DELETE ON tasks BEGIN
    INSERT INTO obs_run_counts
    SELECT OLD.scope, COALESCE(OLD.workspace_id, ''), COALESCE(OLD.owner_kind, ''), COALESCE(OLD.owner_ref, ''),
           COALESCE(OLD.network_channel, ''), OLD.origin_kind, COALESCE(r.network_channel, ''), r.origin_kind, r.status,
           -COUNT(*), -SUM(r.claimed_at IS NOT NULL), -COALESCE(SUM(MAX(r.claimed_at - r.queued_at, 0)), 0), 0,
           -SUM(r.started_at IS NOT NULL), -COALESCE(SUM(MAX(r.started_at - COALESCE(r.claimed_at, r.queued_at), 0)), 0), 0
    FROM task_runs r WHERE r.task_id = OLD.id GROUP BY 7, 8, 9
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, start_n = start_n + excluded.start_n,
        start_sum = start_sum + excluded.start_sum;
END;

-- ---- dependency count (has_deps) ----
CREATE TRIGGER obs_deps_insert AFTER INSERT ON task_dependencies BEGIN
    UPDATE tasks SET dependency_count = dependency_count + 1 WHERE id = NEW.task_id;
END;
CREATE TRIGGER obs_deps_delete AFTER DELETE ON task_dependencies BEGIN
    UPDATE tasks SET dependency_count = dependency_count - 1 WHERE id = OLD.task_id;
END;

-- ---- run counters and the latest run's status ----
CREATE TRIGGER obs_runs_insert AFTER INSERT ON task_runs BEGIN
    INSERT INTO obs_run_counts
    SELECT t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), COALESCE(t.owner_ref, ''),
           COALESCE(t.network_channel, ''), t.origin_kind, COALESCE(NEW.network_channel, ''), NEW.origin_kind, NEW.status,
           1, NEW.claimed_at IS NOT NULL, COALESCE(MAX(NEW.claimed_at - NEW.queued_at, 0), 0),
           COALESCE(MAX(NEW.claimed_at - NEW.queued_at, 0), 0),
           NEW.started_at IS NOT NULL, COALESCE(MAX(NEW.started_at - COALESCE(NEW.claimed_at, NEW.queued_at), 0), 0),
           COALESCE(MAX(NEW.started_at - COALESCE(NEW.claimed_at, NEW.queued_at), 0), 0)
    FROM tasks t WHERE t.id = NEW.task_id
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, claim_max = MAX(claim_max, excluded.claim_max),
        start_n = start_n + excluded.start_n, start_sum = start_sum + excluded.start_sum,
        start_max = MAX(start_max, excluded.start_max);
    UPDATE tasks SET latest_run_status = (SELECT r.status FROM task_runs r WHERE r.task_id = NEW.task_id
        ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1) WHERE id = NEW.task_id;
END;

CREATE TRIGGER obs_runs_update AFTER UPDATE ON task_runs
WHEN OLD.status IS NOT NEW.status OR OLD.network_channel IS NOT NEW.network_channel
  OR OLD.origin_kind IS NOT NEW.origin_kind OR OLD.claimed_at IS NOT NEW.claimed_at
  OR OLD.started_at IS NOT NEW.started_at OR OLD.queued_at IS NOT NEW.queued_at
  OR OLD.attempt IS NOT NEW.attempt OR OLD.task_id IS NOT NEW.task_id
BEGIN
    INSERT INTO obs_run_counts
    SELECT t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), COALESCE(t.owner_ref, ''),
           COALESCE(t.network_channel, ''), t.origin_kind, COALESCE(OLD.network_channel, ''), OLD.origin_kind, OLD.status,
           -1, -(OLD.claimed_at IS NOT NULL), -COALESCE(MAX(OLD.claimed_at - OLD.queued_at, 0), 0), 0,
           -(OLD.started_at IS NOT NULL), -COALESCE(MAX(OLD.started_at - COALESCE(OLD.claimed_at, OLD.queued_at), 0), 0), 0
    FROM tasks t WHERE t.id = OLD.task_id
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, start_n = start_n + excluded.start_n,
        start_sum = start_sum + excluded.start_sum;
    INSERT INTO obs_run_counts
    SELECT t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), COALESCE(t.owner_ref, ''),
           COALESCE(t.network_channel, ''), t.origin_kind, COALESCE(NEW.network_channel, ''), NEW.origin_kind, NEW.status,
           1, NEW.claimed_at IS NOT NULL, COALESCE(MAX(NEW.claimed_at - NEW.queued_at, 0), 0),
           COALESCE(MAX(NEW.claimed_at - NEW.queued_at, 0), 0),
           NEW.started_at IS NOT NULL, COALESCE(MAX(NEW.started_at - COALESCE(NEW.claimed_at, NEW.queued_at), 0), 0),
           COALESCE(MAX(NEW.started_at - COALESCE(NEW.claimed_at, NEW.queued_at), 0), 0)
    FROM tasks t WHERE t.id = NEW.task_id
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, claim_max = MAX(claim_max, excluded.claim_max),
        start_n = start_n + excluded.start_n, start_sum = start_sum + excluded.start_sum,
        start_max = MAX(start_max, excluded.start_max);
    UPDATE tasks SET latest_run_status = (SELECT r.status FROM task_runs r WHERE r.task_id = NEW.task_id
        ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1) WHERE id = NEW.task_id;
END;

-- Skipped while the task itself is being deleted (the row is already gone then; see above).
CREATE TRIGGER obs_runs_delete AFTER DELETE ON task_runs
WHEN EXISTS (SELECT 1 FROM tasks WHERE id = OLD.task_id)
BEGIN
    INSERT INTO obs_run_counts
    SELECT t.scope, COALESCE(t.workspace_id, ''), COALESCE(t.owner_kind, ''), COALESCE(t.owner_ref, ''),
           COALESCE(t.network_channel, ''), t.origin_kind, COALESCE(OLD.network_channel, ''), OLD.origin_kind, OLD.status,
           -1, -(OLD.claimed_at IS NOT NULL), -COALESCE(MAX(OLD.claimed_at - OLD.queued_at, 0), 0), 0,
           -(OLD.started_at IS NOT NULL), -COALESCE(MAX(OLD.started_at - COALESCE(OLD.claimed_at, OLD.queued_at), 0), 0), 0
    FROM tasks t WHERE t.id = OLD.task_id
    ON CONFLICT DO UPDATE SET n = n + excluded.n, claim_n = claim_n + excluded.claim_n,
        claim_sum = claim_sum + excluded.claim_sum, start_n = start_n + excluded.start_n,
        start_sum = start_sum + excluded.start_sum;
    UPDATE tasks SET latest_run_status = (SELECT r.status FROM task_runs r WHERE r.task_id = OLD.task_id
        ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1) WHERE id = OLD.task_id;
END;
"#;

/// Counters by deltas instead of triggers, and `latest_run_status` reduced to the flag the inbox
/// reads. The three inbox indexes that mention it are rebuilt on the flag.
pub(crate) const MIGRATION_DELTAS: &str = concat!(
    r#"
DROP TRIGGER obs_tasks_insert;
DROP TRIGGER obs_tasks_delete;
DROP TRIGGER obs_tasks_update;
DROP TRIGGER obs_tasks_move_runs;
DROP TRIGGER obs_tasks_delete_runs;
DROP TRIGGER obs_deps_insert;
DROP TRIGGER obs_deps_delete;
DROP TRIGGER obs_runs_insert;
DROP TRIGGER obs_runs_update;
DROP TRIGGER obs_runs_delete;
DROP INDEX tasks_inbox_failed;
DROP INDEX tasks_inbox_blocked;
DROP INDEX tasks_inbox_open;
ALTER TABLE tasks ADD COLUMN latest_run_failed INTEGER NOT NULL DEFAULT 0;
UPDATE tasks SET latest_run_failed = 1 WHERE latest_run_status = 'failed';
ALTER TABLE tasks DROP COLUMN latest_run_status;
CREATE INDEX tasks_inbox_failed ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE latest_run_failed = 1;
CREATE INDEX tasks_inbox_blocked ON tasks (MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE status = 'blocked' AND latest_run_failed = 0
      AND NOT (approval_policy = 'manual' AND approval_state = 'pending');
CREATE INDEX tasks_inbox_open ON tasks (owner_kind, owner_ref, MAX(last_activity_at, updated_at, COALESCE(closed_at, 0)), id)
    WHERE owner_kind IS NOT NULL AND NOT "#,
    not_open_work!("status"),
    r#" AND latest_run_failed = 0;
"#
);
