//! `ObserveStore` on PostgreSQL: counters read from the tables the writer keeps exact
//! (`counters.rs`), live sets read through partial indexes, and triage writes. The statements are
//! the SQLite backend's (`sqlite/observe`), in PostgreSQL's dialect; the entry points and the
//! Rust around the statements are shared (`write_queue::store_entry_points`, `observe_common`).
//!
//! Text sorted in memory (channel names, task ids breaking ties) is compared with `COLLATE "C"`,
//! byte for byte like SQLite's BINARY collation, whatever collation the database was created
//! with.

use std::fmt::Write as _;

use postgres::types::ToSql;
use postgres::Row;
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, Event, OwnerKind, Priority, Ref, Run, RunStatus, Task,
    TaskStatus,
};
use tasklane_core::observe::{
    InboxCandidate, InboxClassCount, Lane, ObserveFilter, ObserveStore, ObserveWriteStore,
    QueueGroup, RunTotals, TaskCount, TriageRecord,
};
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::rows::{
    event_columns, event_from_row, run_columns, run_from_row, task_columns, task_from_row,
};
use super::schema::inbox_activity;
use super::{Db, Params};
use crate::observe_common::{add_latency, with_tie_group, FilterParams};
use crate::rows_common::like_pattern;
use crate::sqlite::status_sets::{active_run, not_open_work, open_run};

type Param<'a> = &'a (dyn ToSql + Sync);

/// The observe filter in this dialect: its parameters and clauses.
trait FilterSql {
    fn counter_params(&self) -> [Param<'_>; 6];
    fn task_clauses<'p>(&'p self, alias: &str, sql: &mut String, params: &mut Vec<Param<'p>>);
    fn run_clauses<'p>(&'p self, sql: &mut String, params: &mut Vec<Param<'p>>);
}

impl FilterSql for FilterParams {
    /// `$1`..`$6` of the counter-table statements (`COUNTER_FILTER`).
    fn counter_params(&self) -> [Param<'_>; 6] {
        [
            &self.scope,
            &self.workspace_id,
            &self.owner_kind,
            &self.owner_ref,
            &self.network_channel,
            &self.origin_kind,
        ]
    }

    /// Appends ` AND <alias>.<col> = $n` for each present task filter; on large tables only
    /// present filters become clauses so the planner can use the indexes they allow.
    fn task_clauses<'p>(&'p self, alias: &str, sql: &mut String, params: &mut Vec<Param<'p>>) {
        let cols: [(&str, Option<Param<'p>>); 6] = [
            ("scope", self.scope.as_ref().map(|v| v as Param<'p>)),
            (
                "workspace_id",
                self.workspace_id.as_ref().map(|v| v as Param<'p>),
            ),
            (
                "owner_kind",
                self.owner_kind.as_ref().map(|v| v as Param<'p>),
            ),
            ("owner_ref", self.owner_ref.as_ref().map(|v| v as Param<'p>)),
            (
                "network_channel",
                self.network_channel.as_ref().map(|v| v as Param<'p>),
            ),
            (
                "origin_kind",
                self.origin_kind.as_ref().map(|v| v as Param<'p>),
            ),
        ];
        for (col, value) in cols {
            if let Some(value) = value {
                params.push(value);
                let _ = write!(sql, " AND {alias}.{col} = ${}", params.len());
            }
        }
    }

    /// Clauses on `task_runs` (unaliased): the run's own channel/origin, and its task's filters
    /// through a correlated primary-key lookup (never a scan of all tasks).
    fn run_clauses<'p>(&'p self, sql: &mut String, params: &mut Vec<Param<'p>>) {
        if let Some(ch) = &self.network_channel {
            params.push(ch);
            let _ = write!(sql, " AND task_runs.network_channel = ${}", params.len());
        }
        if let Some(o) = &self.origin_kind {
            params.push(o);
            let _ = write!(sql, " AND task_runs.origin_kind = ${}", params.len());
        }
        if !self.is_empty() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_runs.task_id");
            self.task_clauses("t", sql, params);
            sql.push(')');
        }
    }
}

const COUNTER_FILTER: &str = "($1::TEXT IS NULL OR scope = $1) \
     AND ($2::TEXT IS NULL OR workspace_id = $2) \
     AND ($3::TEXT IS NULL OR owner_kind = $3) AND ($4::TEXT IS NULL OR owner_ref = $4) \
     AND ($5::TEXT IS NULL OR network_channel = $5) AND ($6::TEXT IS NULL OR origin_kind = $6)";

/// The tasks with their inbox activity (`activity`), as `t`. PostgreSQL flattens this subquery,
/// so `t.activity` is the very expression the lane indexes are ordered by and they serve
/// `ORDER BY t.activity`.
macro_rules! tasks_with_activity {
    () => {
        concat!(
            "(SELECT *, ",
            inbox_activity!(),
            " AS activity FROM tasks) t"
        )
    };
}

/// The compact candidate row (see [`candidate_from_row`]); $1/$2 are the actor's kind and ref.
const CANDIDATE_SELECT: &str = concat!(
    "SELECT t.id, t.status, t.approval_policy, t.approval_state, \
     t.owner_kind, t.owner_ref, t.priority, t.activity, t.latest_run_failed, \
     t.id IN (SELECT r.task_id FROM task_runs r WHERE r.claimed_by_kind = $1 \
             AND r.claimed_by_ref = $2 AND ",
    open_run!("r.status"),
    "), g.read, g.archived, g.dismissed, g.last_seen_activity_at, g.updated_at FROM ",
    tasks_with_activity!(),
    " LEFT JOIN task_triage g ON g.actor_kind = $1 AND g.actor_ref = $2 AND g.task_id = t.id"
);

/// Open runs, as the claimer index `task_runs_open_claimer` states them.
const OPEN_RUN: &str = open_run!("status");

fn get<'r, T: postgres::types::FromSql<'r>>(row: &'r Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| Error::Storage(format!("column {idx}: {e}")))
}

/// The partial index and the predicate of a lane's base set; the predicate repeats the index's
/// WHERE terms, so that index serves the lane page in `activity` order. In my_work, $3/$4 are the
/// owner's kind and ref.
fn lane_base(lane: Lane) -> Option<(&'static str, &'static str)> {
    Some(match lane {
        Lane::Approvals => (
            "tasks_inbox_approvals",
            "t.status = 'blocked' AND t.approval_policy = 'manual' \
             AND t.approval_state = 'pending'",
        ),
        Lane::FailedRuns => (
            "tasks_inbox_failed",
            "t.latest_run_failed = 1 AND NOT (t.status = 'blocked' \
             AND t.approval_policy = 'manual' AND t.approval_state = 'pending')",
        ),
        Lane::Blocked => (
            "tasks_inbox_blocked",
            "t.status = 'blocked' AND t.latest_run_failed = 0 \
             AND NOT (t.approval_policy = 'manual' AND t.approval_state = 'pending')",
        ),
        Lane::MyWork => (
            "tasks_inbox_open",
            concat!(
                "t.owner_kind = $3 AND t.owner_ref = $4 AND NOT ",
                not_open_work!("t.status"),
                " AND t.latest_run_failed = 0"
            ),
        ),
        // Only triage rows put a task there: the corrections carry every archived item.
        Lane::Archived => return None,
    })
}

fn parse_run_status(s: &str) -> Result<RunStatus> {
    RunStatus::parse(s).map_err(|_| Error::Storage(format!("unknown run status {s:?} in database")))
}

impl Db<'_> {
    fn query_runs(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Run>> {
        self.conn
            .query(sql, params)?
            .iter()
            .map(run_from_row)
            .collect()
    }

    fn candidates(
        &mut self,
        sql: &str,
        params: Params<'_>,
        actor: &Ref,
    ) -> Result<Vec<InboxCandidate>> {
        self.conn
            .query(sql, params)?
            .iter()
            .map(|row| candidate_from_row(row, actor))
            .collect()
    }

    fn events(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Event>> {
        self.conn
            .query(sql, params)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}

impl ObserveStore for Db<'_> {
    fn task_counts(&mut self, filter: &ObserveFilter) -> Result<Vec<TaskCount>> {
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT status, approval_state, has_deps, SUM(n)::BIGINT FROM obs_task_counts \
             WHERE {COUNTER_FILTER} GROUP BY 1, 2, 3 HAVING SUM(n) <> 0 \
             ORDER BY status COLLATE \"C\", approval_state COLLATE \"C\", has_deps"
        );
        let rows = self.conn.query(&sql, &p.counter_params())?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(TaskCount {
                status: TaskStatus::parse(get(row, 0)?)?,
                approval_state: ApprovalState::parse(get(row, 1)?)?,
                has_dependencies: get::<i64>(row, 2)? != 0,
                count: get(row, 3)?,
            });
        }
        Ok(out)
    }

    fn run_totals(&mut self, filter: &ObserveFilter) -> Result<RunTotals> {
        let p = FilterParams::of(filter);
        // Channel and origin filters hold for the task and for the run itself.
        let sql = format!(
            "SELECT status, SUM(n)::BIGINT, SUM(claim_n)::BIGINT, SUM(claim_sum)::BIGINT, \
             MAX(CASE WHEN claim_n > 0 THEN claim_max END), SUM(start_n)::BIGINT, \
             SUM(start_sum)::BIGINT, MAX(CASE WHEN start_n > 0 THEN start_max END) \
             FROM obs_run_counts \
             WHERE {COUNTER_FILTER} AND ($5::TEXT IS NULL OR run_channel = $5) \
             AND ($6::TEXT IS NULL OR run_origin_kind = $6) GROUP BY status \
             ORDER BY status COLLATE \"C\""
        );
        let rows = self.conn.query(&sql, &p.counter_params())?;
        let mut out = RunTotals::default();
        for row in &rows {
            let get0 = |i: usize| -> Result<i64> { Ok(get::<Option<i64>>(row, i)?.unwrap_or(0)) };
            let n = get0(1)?;
            if n != 0 {
                out.by_status.push((parse_run_status(get(row, 0)?)?, n));
            }
            add_latency(&mut out.claim, get0(2)?, get0(3)?, get0(4)?);
            add_latency(&mut out.start, get0(5)?, get0(6)?, get0(7)?);
        }
        Ok(out)
    }

    fn queue_groups(&mut self, filter: &ObserveFilter) -> Result<Vec<QueueGroup>> {
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT run_channel, SUM(n)::BIGINT FROM obs_run_counts \
             WHERE status = 'queued' AND {COUNTER_FILTER} AND ($5::TEXT IS NULL OR run_channel = $5) \
             AND ($6::TEXT IS NULL OR run_origin_kind = $6) GROUP BY run_channel HAVING SUM(n) > 0 \
             ORDER BY run_channel COLLATE \"C\""
        );
        let counts: Vec<(String, i64)> = self
            .conn
            .query(&sql, &p.counter_params())?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(counts.len());
        for (channel, count) in counts {
            // The oldest queued run of the channel among the filter: walks the channel's queue
            // index from its oldest entry to the first run that passes the filter. No channel is
            // `IS NULL` (not `IS NOT DISTINCT FROM`, which no index serves).
            let channel_param: Option<&str> = (!channel.is_empty()).then_some(channel.as_str());
            let mut params: Vec<Param<'_>> = Vec::new();
            let mut sql = String::from("SELECT queued_at FROM task_runs WHERE status = 'queued'");
            match &channel_param {
                Some(ch) => {
                    params.push(ch);
                    sql.push_str(" AND network_channel = $1");
                }
                None => sql.push_str(" AND network_channel IS NULL"),
            }
            p.run_clauses(&mut sql, &mut params);
            sql.push_str(" ORDER BY network_channel, queued_at LIMIT 1");
            let oldest: Option<i64> = match self.conn.query_opt(&sql, &params)? {
                Some(row) => Some(get(&row, 0)?),
                None => None,
            };
            if let Some(oldest) = oldest {
                out.push(QueueGroup {
                    network_channel: channel_param.map(str::to_string),
                    count,
                    oldest_queued_at: Ts(oldest),
                });
            }
        }
        Ok(out)
    }

    fn live_runs(&mut self, filter: &ObserveFilter) -> Result<Vec<Run>> {
        let p = FilterParams::of(filter);
        let mut sql = String::from(concat!(
            "SELECT ",
            run_columns!(),
            " FROM task_runs WHERE ",
            active_run!("status")
        ));
        let mut params: Vec<Param<'_>> = Vec::new();
        p.run_clauses(&mut sql, &mut params);
        self.query_runs(&sql, &params)
    }

    fn newest_queued_runs(&mut self, filter: &ObserveFilter, limit: i64) -> Result<Vec<Run>> {
        let p = FilterParams::of(filter);
        let mut sql = String::from(concat!(
            "SELECT ",
            run_columns!(),
            " FROM task_runs WHERE status = 'queued'"
        ));
        let mut params: Vec<Param<'_>> = Vec::new();
        p.run_clauses(&mut sql, &mut params);
        params.push(&limit);
        let _ = write!(
            sql,
            " ORDER BY queued_at DESC, id DESC LIMIT ${}",
            params.len()
        );
        self.query_runs(&sql, &params)
    }

    fn count_forced_stops_since(&mut self, filter: &ObserveFilter, since: Ts) -> Result<i64> {
        let p = FilterParams::of(filter);
        // The event type is a literal so the partial index over that type serves the scan.
        let mut sql = String::from(
            "SELECT COUNT(*) FROM task_events e JOIN tasks t ON t.id = e.task_id \
             WHERE e.event_type = 'task.run_force_stopped' AND e.timestamp >= $1",
        );
        let mut params: Vec<Param<'_>> = vec![&since.0];
        let task_only = FilterParams::task_only(filter);
        task_only.task_clauses("t", &mut sql, &mut params);
        if let Some(o) = &p.origin_kind {
            params.push(o);
            let n = params.len();
            let _ = write!(sql, " AND t.origin_kind = ${n} AND e.origin_kind = ${n}");
        }
        if let Some(ch) = &p.network_channel {
            params.push(ch);
            let n = params.len();
            let _ = write!(
                sql,
                " AND t.network_channel = ${n} AND COALESCE((SELECT r.network_channel FROM \
                 task_runs r WHERE r.id = e.run_id), t.network_channel) = ${n}"
            );
        }
        get(&self.conn.query_one(&sql, &params)?, 0)
    }

    fn latest_activity(&mut self, filter: &ObserveFilter) -> Result<Option<Ts>> {
        let p = FilterParams::of(filter);
        // last_activity_at is the newest of updated_at (>= created_at, closed_at), run times and
        // event times; the list-order index yields the newest first, and the first row that
        // passes the filter is the newest.
        let mut sql = String::from("SELECT last_activity_at FROM tasks WHERE TRUE");
        let mut params: Vec<Param<'_>> = Vec::new();
        p.task_clauses("tasks", &mut sql, &mut params);
        sql.push_str(" ORDER BY last_activity_at DESC LIMIT 1");
        match self.conn.query_opt(&sql, &params)? {
            Some(row) => Ok(Some(Ts(get(&row, 0)?))),
            None => Ok(None),
        }
    }

    fn inbox_candidates(
        &mut self,
        actor: &Ref,
        owner_kind: Option<OwnerKind>,
        filter: &ObserveFilter,
        query: Option<&str>,
    ) -> Result<Vec<InboxCandidate>> {
        let owner_kind = owner_kind.map(|o| o.as_str());
        let pattern = query.map(like_pattern);
        let p = FilterParams::task_only(filter);
        // Each arm of the union is one indexed set; finished tasks in no lane are never read.
        let mut sql = format!(
            "{CANDIDATE_SELECT} WHERE t.id IN ( \
               SELECT id FROM tasks WHERE status = 'blocked' \
               UNION ALL SELECT id FROM tasks WHERE latest_run_failed = 1 \
               UNION ALL SELECT id FROM tasks WHERE owner_kind = $3 AND owner_ref = $2 \
                 AND status IN ('pending', 'ready', 'in_progress', 'blocked') \
               UNION ALL SELECT task_id FROM task_runs WHERE claimed_by_kind = $1 AND claimed_by_ref = $2 \
                 AND {OPEN_RUN} \
               UNION ALL SELECT task_id FROM task_triage WHERE actor_kind = $1 AND actor_ref = $2 \
                 AND archived = 1)"
        );
        let mut params: Vec<Param<'_>> = vec![&actor.kind, &actor.reference, &owner_kind];
        p.task_clauses("t", &mut sql, &mut params);
        if let Some(pattern) = &pattern {
            params.push(pattern);
            let n = params.len();
            // SQLite's LIKE folds ASCII letters only; so does lower() under the "C" collation.
            let _ = write!(
                sql,
                r#" AND (lower(t.title COLLATE "C") LIKE lower(${n}::TEXT COLLATE "C") ESCAPE '\' OR lower(t.identifier COLLATE "C") LIKE lower(${n}::TEXT COLLATE "C") ESCAPE '\')"#
            );
        }
        self.candidates(&sql, &params, actor)
    }

    fn inbox_class_counts(
        &mut self,
        owner: Option<&Ref>,
        filter: &ObserveFilter,
    ) -> Result<Vec<InboxClassCount>> {
        let p = FilterParams::task_only(filter);
        let (owner_kind, owner_ref) = match owner {
            Some(o) => (Some(o.kind.as_str()), Some(o.reference.as_str())),
            None => (None, None),
        };
        let sql = format!(
            "SELECT status, approval_policy, approval_state, latest_failed, \
             CASE WHEN owner_kind = $7 AND owner_ref = $8 THEN 1::BIGINT ELSE 0::BIGINT END, \
             SUM(n)::BIGINT FROM obs_task_counts \
             WHERE {COUNTER_FILTER} GROUP BY 1, 2, 3, 4, 5 HAVING SUM(n) <> 0 \
             ORDER BY status COLLATE \"C\", approval_policy COLLATE \"C\", \
             approval_state COLLATE \"C\", latest_failed, 5"
        );
        let mut params: Vec<Param<'_>> = p.counter_params().to_vec();
        params.push(&owner_kind);
        params.push(&owner_ref);
        let rows = self.conn.query(&sql, &params)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(InboxClassCount {
                status: TaskStatus::parse(get(row, 0)?)?,
                approval_policy: ApprovalPolicy::parse(get(row, 1)?)?,
                approval_state: ApprovalState::parse(get(row, 2)?)?,
                latest_run_failed: get::<i64>(row, 3)? != 0,
                owned: get::<i64>(row, 4)? != 0,
                count: get(row, 5)?,
            });
        }
        Ok(out)
    }

    fn inbox_corrections(
        &mut self,
        actor: &Ref,
        filter: &ObserveFilter,
    ) -> Result<Vec<InboxCandidate>> {
        let p = FilterParams::task_only(filter);
        let mut sql = format!(
            "{CANDIDATE_SELECT} WHERE t.id IN ( \
               SELECT task_id FROM task_triage WHERE actor_kind = $1 AND actor_ref = $2 \
               UNION SELECT task_id FROM task_runs WHERE claimed_by_kind = $1 AND claimed_by_ref = $2 \
                 AND {OPEN_RUN})"
        );
        let mut params: Vec<Param<'_>> = vec![&actor.kind, &actor.reference];
        p.task_clauses("t", &mut sql, &mut params);
        self.candidates(&sql, &params, actor)
    }

    fn inbox_lane_page(
        &mut self,
        actor: &Ref,
        lane: Lane,
        owner: Option<&Ref>,
        filter: &ObserveFilter,
        exclude: &[String],
        min_rows: Option<usize>,
    ) -> Result<Vec<InboxCandidate>> {
        let Some((_, predicate)) = lane_base(lane) else {
            return Ok(Vec::new());
        };
        let mut params: Vec<Param<'_>> = vec![&actor.kind, &actor.reference];
        // $3/$4 exist only for my_work (every parameter must be used); an actor that owns nothing
        // has no base my_work.
        let owner_params = owner.map(|o| (o.kind.as_str(), o.reference.as_str()));
        if lane == Lane::MyWork {
            let Some((kind, reference)) = &owner_params else {
                return Ok(Vec::new());
            };
            params.push(kind);
            params.push(reference);
        }
        let p = FilterParams::task_only(filter);
        params.push(&exclude);
        let mut base = format!(
            "{CANDIDATE_SELECT} WHERE {predicate} AND t.id <> ALL(${})",
            params.len()
        );
        p.task_clauses("t", &mut base, &mut params);
        // NULL: no limit.
        let limit: Option<i64> = min_rows.map(|n| n as i64);
        params.push(&limit);
        let sql = format!("{base} ORDER BY t.activity DESC LIMIT ${}", params.len());
        let page = self.candidates(&sql, &params, actor)?;
        with_tie_group(page, min_rows, |last_at| {
            let mut tie_params = params[..params.len() - 1].to_vec();
            tie_params.push(&last_at);
            let sql = format!("{base} AND t.activity = ${}", tie_params.len());
            self.candidates(&sql, &tie_params, actor)
        })
    }

    fn latest_runs(&mut self, task_ids: &[String]) -> Result<Vec<Run>> {
        // One probe of the latest-run index per distinct task.
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM (SELECT DISTINCT tid FROM unnest($1::TEXT[]) AS u(tid)) j",
            " CROSS JOIN LATERAL (SELECT * FROM task_runs r WHERE r.task_id = j.tid",
            " ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1) r"
        );
        self.query_runs(sql, &[&task_ids])
    }

    fn runs_by_ids(&mut self, ids: &[String]) -> Result<Vec<Run>> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM task_runs WHERE id = ANY($1)"
        );
        self.query_runs(sql, &[&ids])
    }

    fn triage_record(&mut self, task_id: &str, actor: &Ref) -> Result<Option<TriageRecord>> {
        let row = self.conn.query_opt(
            "SELECT read, archived, dismissed, last_seen_activity_at, updated_at \
             FROM task_triage WHERE actor_kind = $1 AND actor_ref = $2 AND task_id = $3",
            &[&actor.kind, &actor.reference, &task_id],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(TriageRecord {
            task_id: task_id.to_string(),
            actor: actor.clone(),
            read: get::<i64>(&row, 0)? != 0,
            archived: get::<i64>(&row, 1)? != 0,
            dismissed: get::<i64>(&row, 2)? != 0,
            last_seen_activity_at: get::<Option<i64>>(&row, 3)?.map(Ts),
            updated_at: Some(Ts(get(&row, 4)?)),
        }))
    }

    fn subtree_events_after(&mut self, root: &str, after: i64, limit: i64) -> Result<Vec<Event>> {
        let sql = concat!(
            "WITH RECURSIVE sub(id) AS (SELECT id FROM tasks WHERE id = $1",
            " UNION ALL SELECT t.id FROM tasks t JOIN sub ON t.parent_task_id = sub.id)",
            " SELECT ",
            event_columns!(),
            " FROM task_events WHERE task_id IN (SELECT id FROM sub) AND sequence > $2",
            " ORDER BY sequence LIMIT $3"
        );
        self.events(sql, &[&root, &after, &limit])
    }

    fn events_after(&mut self, after: i64, limit: i64) -> Result<Vec<Event>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM task_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        );
        self.events(sql, &[&after, &limit])
    }

    fn ancestry(&mut self, task_id: &str) -> Result<Vec<String>> {
        self.conn
            .query(
                "WITH RECURSIVE up(id, parent, lvl) AS ( \
                   SELECT id, parent_task_id, 0 FROM tasks WHERE id = $1 \
                   UNION ALL SELECT t.id, t.parent_task_id, up.lvl + 1 FROM tasks t \
                   JOIN up ON t.id = up.parent) \
                 SELECT id FROM up ORDER BY lvl",
                &[&task_id],
            )?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    }

    fn subtree(&mut self, root: &str, limit: i64) -> Result<Vec<(Task, i64)>> {
        // The walk carries only ids, depths and activity; full rows are read for the kept nodes.
        let sql = concat!(
            "WITH RECURSIVE sub(sid, depth, activity) AS (",
            "SELECT id, 0::BIGINT, 0::BIGINT FROM tasks WHERE id = $1",
            " UNION ALL SELECT t.id, sub.depth + 1,",
            " GREATEST(t.last_activity_at, t.updated_at, t.created_at)",
            " FROM tasks t JOIN sub ON t.parent_task_id = sub.sid),",
            " kept(kid, kdepth, kactivity) AS (SELECT sid, depth, activity FROM sub",
            " ORDER BY depth, activity DESC, sid COLLATE \"C\" LIMIT $2)",
            " SELECT ",
            task_columns!(),
            ", kdepth FROM kept JOIN tasks ON tasks.id = kept.kid",
            " ORDER BY kdepth, kactivity DESC, kid COLLATE \"C\""
        );
        let rows = self.conn.query(sql, &[&root, &limit])?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let depth_col = row.len() - 1;
            out.push((task_from_row(row)?, get(row, depth_col)?));
        }
        Ok(out)
    }
}

impl ObserveWriteStore for Db<'_> {
    fn put_triage(&mut self, t: &TriageRecord) -> Result<()> {
        self.conn.execute(
            "INSERT INTO task_triage (actor_kind, actor_ref, task_id, read, dismissed, archived, \
             last_seen_activity_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (actor_kind, actor_ref, task_id) DO UPDATE SET read = EXCLUDED.read, \
             dismissed = EXCLUDED.dismissed, archived = EXCLUDED.archived, \
             last_seen_activity_at = EXCLUDED.last_seen_activity_at, \
             updated_at = EXCLUDED.updated_at",
            &[
                &t.actor.kind,
                &t.actor.reference,
                &t.task_id,
                &i64::from(t.read),
                &i64::from(t.dismissed),
                &i64::from(t.archived),
                &t.last_seen_activity_at.map(|ts| ts.0),
                &t.updated_at.unwrap_or_default().0,
            ],
        )?;
        Ok(())
    }
}

fn candidate_from_row(row: &Row, actor: &Ref) -> Result<InboxCandidate> {
    let task_id: String = get(row, 0)?;
    let owner_kind: Option<String> = get(row, 4)?;
    let owner = match owner_kind {
        None => None,
        Some(kind) => Some(Ref {
            kind,
            reference: get::<Option<String>>(row, 5)?.unwrap_or_default(),
        }),
    };
    let triage = match get::<Option<i64>>(row, 10)? {
        None => None,
        Some(read) => Some(TriageRecord {
            task_id: task_id.clone(),
            actor: actor.clone(),
            read: read != 0,
            archived: get::<i64>(row, 11)? != 0,
            dismissed: get::<i64>(row, 12)? != 0,
            last_seen_activity_at: get::<Option<i64>>(row, 13)?.map(Ts),
            updated_at: get::<Option<i64>>(row, 14)?.map(Ts),
        }),
    };
    Ok(InboxCandidate {
        status: TaskStatus::parse(get(row, 1)?)?,
        approval_policy: ApprovalPolicy::parse(get(row, 2)?)?,
        approval_state: ApprovalState::parse(get(row, 3)?)?,
        owner,
        priority: Priority::parse(get(row, 6)?)?,
        latest_activity_at: Ts(get(row, 7)?),
        latest_run_failed: get::<i64>(row, 8)? != 0,
        claimed_by_caller: get(row, 9)?,
        triage,
        task_id,
    })
}

/// The observe primitives answer on PostgreSQL exactly as on SQLite: one data set is written
/// through the SQLite store (which keeps its counters), copied table by table into a scratch
/// PostgreSQL database, and every primitive is asked the same questions on both. Skipped unless
/// `TASKLANE_TEST_DATABASE_URL` names a server where databases may be created.
#[cfg(test)]
mod tests {
    use std::fmt::Debug;
    use std::path::Path;

    use serde_json::json;
    use tasklane_core::model::{Dependency, NewEvent, OriginKind, Scope};
    use tasklane_core::observe::{ObserveStore, TriageRecord};

    use super::super::{Conn, Db, PgOptions, PgStore};
    use super::*;
    use crate::conformance::fixtures::{self, run, task};
    use crate::conformance::{scratch_database, DATABASE_URL_VAR};
    use crate::monitor::{QueueGauges, QueueStat, Workspace};
    use crate::sqlite::{SqliteStore, StoreOptions};

    /// A `task.created` (or other) event of the shared fixture, with a payload of non-ASCII text.
    fn event(id: &str, task_id: &str, at: i64, event_type: &'static str) -> NewEvent {
        NewEvent {
            event_type,
            payload: json!({"n": at, "s": "ü"}),
            ..fixtures::event(id, task_id, at)
        }
    }

    fn alice() -> Ref {
        Ref::new("human", "alice")
    }

    fn bot() -> Ref {
        Ref::new("agent_session", "bot-1")
    }

    const STATUSES: [TaskStatus; 5] = [
        TaskStatus::Pending,
        TaskStatus::Ready,
        TaskStatus::InProgress,
        TaskStatus::Draft,
        TaskStatus::Completed,
    ];
    const CHANNELS: [Option<&str>; 5] = [
        None,
        Some("chan-a"),
        Some("Chan-B"),
        Some("alpha"),
        Some("Beta"),
    ];

    /// Tasks, runs, edges, events and triage rows covering every lane, filter and tie.
    async fn populate(store: &SqliteStore) {
        let mut tasks = Vec::new();
        let mut runs = Vec::new();
        let mut updates = Vec::new();
        let mut events = Vec::new();

        let mut root = task("t-root", 1_000);
        root.title = "Root Task".into();
        root.owner = Some(alice());
        root.status = TaskStatus::InProgress;
        tasks.push(root);
        let mut c1 = task("t-c1", 2_000);
        c1.parent_task_id = Some("t-root".into());
        c1.status = TaskStatus::Blocked;
        c1.approval_policy = ApprovalPolicy::Manual;
        c1.approval_state = ApprovalState::Pending;
        c1.scope = Scope::Workspace;
        c1.workspace_id = Some("ws-a".into());
        c1.identifier = Some("ENG-7".into());
        c1.title = "Deploy API Gateway".into();
        tasks.push(c1);
        let mut c2 = task("t-c2", 2_000);
        c2.parent_task_id = Some("t-root".into());
        c2.status = TaskStatus::Blocked;
        c2.scope = Scope::Workspace;
        c2.workspace_id = Some("ws-a".into());
        c2.network_channel = Some("Chan-B".into());
        c2.title = "deploy ÄPI".into();
        tasks.push(c2);
        let mut c3 = task("t-c3", 3_000);
        c3.parent_task_id = Some("t-root".into());
        c3.status = TaskStatus::InProgress;
        c3.owner = Some(alice());
        c3.network_channel = Some("Chan-B".into());
        c3.origin = Ref::new("automation", "rule-1");
        c3.title = r"100%_done\x".into();
        tasks.push(c3);
        let mut g1 = task("t-g1", 2_500);
        g1.parent_task_id = Some("t-c1".into());
        g1.owner = Some(bot());
        tasks.push(g1);

        for i in 0..30i64 {
            let mut t = task(&format!("t-b{i:02}"), 5_000 + (i / 4) * 10);
            t.status = TaskStatus::Blocked;
            t.scope = if i % 3 == 0 {
                Scope::Global
            } else {
                Scope::Workspace
            };
            t.workspace_id = (i % 3 != 0).then(|| format!("ws-{}", i % 3));
            t.priority = Priority::ALL[(i % 4) as usize];
            if i % 5 == 0 {
                t.owner = Some(alice());
            }
            if i % 7 == 0 {
                t.approval_policy = ApprovalPolicy::Manual;
                t.approval_state = ApprovalState::Pending;
            }
            t.title = format!("Blocked {i}");
            tasks.push(t);
        }
        for i in 0..15i64 {
            let mut t = task(&format!("t-o{i:02}"), 7_000 + (i / 3) * 10);
            t.owner = Some(if i % 4 == 3 { bot() } else { alice() });
            t.status = STATUSES[(i % 5) as usize];
            if t.status == TaskStatus::Completed {
                t.closed_at = Some(Ts(7_500 + i));
                t.updated_at = Ts(7_500 + i);
            }
            t.network_channel = CHANNELS[(i % 5) as usize].map(str::to_string);
            tasks.push(t);
        }
        for i in 0..25i64 {
            // A task has at most one open run: each further queued run is on a task of its own.
            for k in 0..(1 + i % 3) {
                let id = match k {
                    0 => format!("t-w{i:02}"),
                    _ => format!("t-w{i:02}-{k}"),
                };
                let mut t = task(&id, 9_000 + i);
                t.scope = Scope::Workspace;
                t.workspace_id = Some(format!("w{:02}", i % 23));
                tasks.push(t);
                let mut r = run(
                    &format!("r-w{i:02}-{k}"),
                    &id,
                    RunStatus::Queued,
                    9_100 + (i * 7 + k * 13) % 40,
                );
                r.network_channel = CHANNELS[((i + k) % 5) as usize].map(str::to_string);
                r.priority = Priority::ALL[((i + k) % 4) as usize];
                if k == 1 {
                    r.origin = Ref::new("automation", "rule-2");
                }
                runs.push(r);
            }
        }
        for i in 0..6i64 {
            let id = format!("t-f{i}");
            let mut t = task(&id, 8_000 + i / 2);
            t.status = [
                TaskStatus::InProgress,
                TaskStatus::Failed,
                TaskStatus::Ready,
            ][(i % 3) as usize];
            if i == 4 {
                t.owner = Some(alice());
            }
            tasks.push(t);
            let mut first = run(
                &format!("r-f{i}-1"),
                &id,
                if i == 0 {
                    RunStatus::Failed
                } else {
                    RunStatus::Completed
                },
                8_010,
            );
            first.claimed_at = Some(Ts(8_015));
            first.started_at = Some(Ts(8_030));
            first.ended_at = Some(Ts(8_040 + i));
            runs.push(first);
            if i != 0 {
                let mut second = run(
                    &format!("r-f{i}-2"),
                    &id,
                    if i % 2 == 1 {
                        RunStatus::Failed
                    } else {
                        RunStatus::NeedsAttention
                    },
                    8_050,
                );
                second.attempt = 2;
                second.claimed_at = Some(Ts(8_049)); // before queued: a latency of 0
                second.ended_at = Some(Ts(8_060));
                runs.push(second);
            }
        }

        // Runs of the tree: a failed one, live ones with leases, a finished one with latencies.
        let mut r = run("r-c2-1", "t-c2", RunStatus::Failed, 2_100);
        r.ended_at = Some(Ts(2_200));
        r.network_channel = Some("Chan-B".into());
        runs.push(r);
        let mut r = run("r-c3-1", "t-c3", RunStatus::Running, 3_100);
        r.claimed_by = Some(alice());
        r.claimed_at = Some(Ts(3_150));
        r.started_at = Some(Ts(3_170));
        r.lease_until = Some(Ts(99_999));
        r.network_channel = Some("Chan-B".into());
        r.origin = Ref::new("automation", "rule-1");
        runs.push(r);
        let mut r = run("r-g1-1", "t-g1", RunStatus::Claimed, 2_600);
        r.claimed_by = Some(bot());
        r.claimed_at = Some(Ts(2_700));
        r.lease_until = Some(Ts(50_000));
        runs.push(r);
        let mut r = run("r-root-1", "t-root", RunStatus::Completed, 1_100);
        r.claimed_at = Some(Ts(1_300));
        r.started_at = Some(Ts(1_350));
        r.ended_at = Some(Ts(1_400));
        runs.push(r);
        let mut r = run("r-root-2", "t-root", RunStatus::Queued, 1_500);
        r.attempt = 2;
        r.claimed_by = Some(alice());
        runs.push(r);
        let mut r = run("r-b01-1", "t-b01", RunStatus::Starting, 5_100);
        r.claimed_by = Some(alice());
        r.claimed_at = Some(Ts(5_150));
        runs.push(r);
        // Claimed then released: the update path of the counters.
        let mut r = run("r-o01-1", "t-o01", RunStatus::Claimed, 7_100);
        r.claimed_by = Some(alice());
        r.claimed_at = Some(Ts(7_120));
        r.lease_until = Some(Ts(8_000));
        let mut done = r.clone();
        runs.push(r);
        done.status = RunStatus::Completed;
        done.started_at = Some(Ts(7_130));
        done.ended_at = Some(Ts(7_200));
        updates.push(done);

        for (i, t) in ["t-root", "t-c1", "t-c2", "t-c3", "t-g1", "t-b00", "t-o02"]
            .iter()
            .enumerate()
        {
            events.push(event(
                &format!("e-{t}"),
                t,
                10_000 + i as i64,
                "task.created",
            ));
        }
        let mut stop = event("e-stop-c3", "t-c3", 4_000, "task.run_force_stopped");
        stop.run_id = Some("r-c3-1".into());
        stop.origin = Ref::new("automation", "rule-1");
        events.push(stop);
        events.push(event(
            "e-stop-b01",
            "t-b01",
            4_500,
            "task.run_force_stopped",
        ));
        let mut stop = event("e-stop-g1", "t-g1", 100, "task.run_force_stopped");
        stop.run_id = Some("r-g1-1".into());
        events.push(stop);
        let mut stop = event("e-stop-c2", "t-c2", 4_600, "task.run_force_stopped");
        stop.run_id = Some("r-c2-1".into());
        events.push(stop);

        store
            .write(move |w| {
                for t in &tasks {
                    w.insert_task(t)?;
                }
                for r in &runs {
                    w.insert_run(r)?;
                }
                for r in &updates {
                    w.update_run(r)?;
                }
                for (task_id, on) in [("t-c1", "t-root"), ("t-b00", "t-b01"), ("t-o00", "t-b02")] {
                    w.insert_dependency(&Dependency {
                        task_id: task_id.into(),
                        depends_on_task_id: on.into(),
                        kind: "blocks",
                        created_at: Ts(1),
                    })?;
                }
                for e in &events {
                    w.append_event(e)?;
                }
                Ok(())
            })
            .await
            .unwrap();

        let triage = [
            (alice(), "t-c1", true, false, false, Some(2_000)),
            (alice(), "t-b03", true, true, false, None),
            (alice(), "t-o01", false, false, true, Some(1)),
            (alice(), "t-f1", true, false, false, Some(9_999_999)),
            (bot(), "t-b05", true, false, false, None),
            (bot(), "t-b08", true, true, true, Some(5_020)),
        ];
        store
            .write_observe(move |w| {
                for (actor, task_id, read, archived, dismissed, seen) in &triage {
                    w.put_triage(&TriageRecord {
                        task_id: task_id.to_string(),
                        actor: actor.clone(),
                        read: *read,
                        archived: *archived,
                        dismissed: *dismissed,
                        last_seen_activity_at: seen.map(Ts),
                        updated_at: Some(Ts(20_000)),
                    })?;
                }
                Ok(())
            })
            .await
            .unwrap();
    }

    /// Copies the tables the observe primitives read, value for value, column by column.
    fn copy_tables(sqlite: &Path, pg: &mut Conn) {
        let lite = rusqlite::Connection::open(sqlite).unwrap();
        for table in [
            "tasks",
            "task_runs",
            "task_dependencies",
            "task_events",
            "task_triage",
            "obs_task_counts",
            "obs_run_counts",
        ] {
            let columns: Vec<(String, String)> = pg
                .query(
                    "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = $1 \
                     ORDER BY ordinal_position",
                    &[&table],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert!(!columns.is_empty(), "{table} missing on PostgreSQL");
            let names = columns
                .iter()
                .map(|c| c.0.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let values = columns
                .iter()
                .enumerate()
                .map(|(i, (_, ty))| format!("${}::TEXT::{ty}", i + 1))
                .collect::<Vec<_>>()
                .join(", ");
            let insert = format!("INSERT INTO {table} ({names}) VALUES ({values})");
            // Parents before children (tasks reference their parent).
            let order = if table == "tasks" {
                " ORDER BY rowid"
            } else {
                ""
            };
            let mut stmt = lite
                .prepare(&format!("SELECT {names} FROM {table}{order}"))
                .unwrap();
            let mut rows = stmt.query([]).unwrap();
            while let Some(row) = rows.next().unwrap() {
                let values: Vec<Option<String>> = (0..columns.len())
                    .map(|i| match row.get_ref(i).unwrap() {
                        rusqlite::types::ValueRef::Null => None,
                        rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                        rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                        rusqlite::types::ValueRef::Text(t) => {
                            Some(String::from_utf8(t.to_vec()).unwrap())
                        }
                        rusqlite::types::ValueRef::Blob(_) => panic!("blob in {table}"),
                    })
                    .collect();
                let params: Vec<Param<'_>> = values.iter().map(|v| v as Param<'_>).collect();
                pg.execute(&insert, &params).unwrap();
            }
        }
    }

    /// Asks both stores; both must answer alike.
    async fn same<R, F>(sqlite: &SqliteStore, pg: &PgStore, what: &str, f: F) -> R
    where
        R: PartialEq + Debug + Send + 'static,
        F: Fn(&mut dyn ObserveStore) -> Result<R> + Clone + Send + 'static,
    {
        let expected = sqlite.read_observe(f.clone()).await.unwrap();
        let actual = pg
            .read_observe(f)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(expected, actual, "{what}");
        expected
    }

    fn by_id<T, K: Ord>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
        v.sort_by_key(|x| key(x));
        v
    }

    fn gauges_tuple(g: QueueGauges) -> ([QueueStat; 4], Vec<(Workspace, QueueStat)>, i64) {
        (g.by_priority, g.by_workspace, g.active_leases)
    }

    #[test]
    fn observe_answers_match_sqlite() {
        // The PostgreSQL client blocks: it runs outside the runtime the stores' reads use.
        let Some(scratch) = scratch_database() else {
            eprintln!("{DATABASE_URL_VAR} is not set: skipping the PostgreSQL test");
            return;
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasklane.db");
        let sqlite = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        rt.block_on(populate(&sqlite));

        let pg = PgStore::open(PgOptions::new(scratch.url.clone())).unwrap();
        let mut conn = Conn::connect(&PgOptions::new(scratch.url.clone())).unwrap();
        copy_tables(&path, &mut conn);
        let mut all_ids: Vec<String> = conn
            .query("SELECT id FROM tasks", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        all_ids.push("t-missing".into());
        all_ids.push("t-root".into());
        rt.block_on(compare(&sqlite, &pg, all_ids));

        // Triage writes: an insert, then an update of the same row.
        conn.batch("BEGIN").unwrap();
        let mut db = Db::new(&mut conn);
        let mut record = TriageRecord {
            task_id: "t-b10".into(),
            actor: bot(),
            read: true,
            archived: false,
            dismissed: true,
            last_seen_activity_at: Some(Ts(5_021)),
            updated_at: Some(Ts(30_000)),
        };
        db.put_triage(&record).unwrap();
        assert_eq!(
            db.triage_record("t-b10", &bot()).unwrap(),
            Some(record.clone())
        );
        record.read = false;
        record.archived = true;
        record.last_seen_activity_at = None;
        record.updated_at = None;
        db.put_triage(&record).unwrap();
        record.updated_at = Some(Ts(0));
        assert_eq!(db.triage_record("t-b10", &bot()).unwrap(), Some(record));
        conn.batch("ROLLBACK").unwrap();

        // Each lane page is read from its lane's partial index, already in activity order.
        conn.batch("BEGIN; SET LOCAL enable_seqscan = off").unwrap();
        for lane in Lane::ALL {
            let Some((index, predicate)) = lane_base(lane) else {
                continue;
            };
            let (kind, reference) = ("human", "alice");
            let exclude: Vec<String> = vec!["t-c1".into()];
            let limit: Option<i64> = Some(5);
            let mut params: Vec<Param<'_>> = vec![&kind, &reference];
            if lane == Lane::MyWork {
                params.push(&kind);
                params.push(&reference);
            }
            params.push(&exclude);
            let sql = format!(
                "EXPLAIN {CANDIDATE_SELECT} WHERE {predicate} AND t.id <> ALL(${}) \
                 ORDER BY t.activity DESC LIMIT ${}",
                params.len(),
                params.len() + 1
            );
            params.push(&limit);
            let plan = conn
                .query(&sql, &params)
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                plan.contains(&format!("Index Scan Backward using {index} ")),
                "{lane:?}: {plan}"
            );
        }
        conn.batch("ROLLBACK").unwrap();

        pg.shutdown();
        sqlite.shutdown();
    }

    /// The walk for each workspace's oldest queued run spans several pages when a workspace's
    /// runs are all recent, and the gauges still match SQLite's single pass.
    #[test]
    fn queue_gauges_walk_pages_like_sqlite() {
        let Some(scratch) = scratch_database() else {
            eprintln!("{DATABASE_URL_VAR} is not set: skipping the PostgreSQL test");
            return;
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasklane.db");
        let sqlite = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        let mut tasks = Vec::new();
        let mut runs = Vec::new();
        // A task has at most one open run: each run is on a task of its own, in its workspace.
        let task_in = |id: &str, ws: &str| {
            let mut t = task(id, 1);
            if !ws.is_empty() {
                t.scope = Scope::Workspace;
                t.workspace_id = Some(ws.to_string());
            }
            t
        };
        for (ws, n, from) in [("busy", 700, 1_000), ("late", 1, 5_000), ("", 2, 1_500)] {
            for k in 0..n {
                let id = format!("t-{ws}-{k:04}");
                tasks.push(task_in(&id, ws));
                let mut r = run(
                    &format!("r-{ws}-{k:04}"),
                    &id,
                    RunStatus::Queued,
                    from + k / 3,
                );
                r.priority = Priority::ALL[(k % 4) as usize];
                runs.push(r);
            }
        }
        tasks.push(task_in("t-lease", "late"));
        let mut lease = run("r-lease", "t-lease", RunStatus::Running, 2);
        lease.lease_until = Some(Ts(10));
        runs.push(lease);
        rt.block_on(sqlite.write(move |w| {
            tasks.iter().try_for_each(|t| w.insert_task(t))?;
            runs.iter().try_for_each(|r| w.insert_run(r))
        }))
        .unwrap();

        let pg = PgStore::open(PgOptions::new(scratch.url.clone())).unwrap();
        let mut conn = Conn::connect(&PgOptions::new(scratch.url.clone())).unwrap();
        copy_tables(&path, &mut conn);
        let expected = gauges_tuple(rt.block_on(sqlite.queue_gauges()).unwrap());
        let actual = gauges_tuple(rt.block_on(pg.queue_gauges()).unwrap());
        assert_eq!(expected, actual);
        let late = Workspace::Named("late".into());
        assert!(
            expected
                .1
                .iter()
                .any(|(w, q)| *w == late && q.oldest_queued_at == Some(5_000)),
            "{expected:?}"
        );
        assert_eq!(expected.2, 1);
        pg.shutdown();
        sqlite.shutdown();
    }

    async fn compare(sqlite: &SqliteStore, pg: &PgStore, all_ids: Vec<String>) {
        let filters = [
            ObserveFilter::default(),
            ObserveFilter {
                scope: Some(Scope::Workspace),
                ..Default::default()
            },
            ObserveFilter {
                workspace_id: Some("ws-a".into()),
                ..Default::default()
            },
            ObserveFilter {
                workspace_id: Some("w03".into()),
                ..Default::default()
            },
            ObserveFilter {
                owner_kind: Some(OwnerKind::Human),
                owner_ref: Some("alice".into()),
                ..Default::default()
            },
            ObserveFilter {
                owner_kind: Some(OwnerKind::AgentSession),
                ..Default::default()
            },
            ObserveFilter {
                network_channel: Some("Chan-B".into()),
                ..Default::default()
            },
            ObserveFilter {
                origin_kind: Some(OriginKind::Automation),
                ..Default::default()
            },
            ObserveFilter {
                scope: Some(Scope::Global),
                network_channel: Some("Chan-B".into()),
                origin_kind: Some(OriginKind::Http),
                ..Default::default()
            },
            ObserveFilter {
                scope: Some(Scope::Workspace),
                workspace_id: Some("ws-2".into()),
                owner_kind: Some(OwnerKind::Human),
                owner_ref: Some("alice".into()),
                ..Default::default()
            },
        ];
        let actors = [alice(), bot(), Ref::new("human", "nobody")];

        let (mut pages, mut ties) = (0, 0);
        for (fi, filter) in filters.iter().enumerate() {
            let f = filter.clone();
            let counts = same(sqlite, pg, &format!("task_counts #{fi}"), move |s| {
                s.task_counts(&f)
            })
            .await;
            if fi == 0 {
                assert!(counts.len() > 5, "{counts:?}");
            }
            let f = filter.clone();
            same(sqlite, pg, &format!("run_totals #{fi}"), move |s| {
                s.run_totals(&f)
            })
            .await;
            let f = filter.clone();
            let groups = same(sqlite, pg, &format!("queue_groups #{fi}"), move |s| {
                s.queue_groups(&f)
            })
            .await;
            if fi == 0 {
                assert_eq!(groups.len(), 5, "{groups:?}");
            }
            let f = filter.clone();
            same(sqlite, pg, &format!("live_runs #{fi}"), move |s| {
                Ok(by_id(s.live_runs(&f)?, |r| r.id.clone()))
            })
            .await;
            for limit in [1, 5, 100] {
                let f = filter.clone();
                same(
                    sqlite,
                    pg,
                    &format!("newest_queued_runs #{fi} {limit}"),
                    move |s| s.newest_queued_runs(&f, limit),
                )
                .await;
            }
            for since in [0, 4_200, 4_600, 5_000] {
                let f = filter.clone();
                same(
                    sqlite,
                    pg,
                    &format!("forced stops #{fi} {since}"),
                    move |s| s.count_forced_stops_since(&f, Ts(since)),
                )
                .await;
            }
            let f = filter.clone();
            same(sqlite, pg, &format!("latest_activity #{fi}"), move |s| {
                s.latest_activity(&f)
            })
            .await;

            for actor in &actors {
                let owner_kind = OwnerKind::parse(&actor.kind).ok();
                for query in [
                    None,
                    Some("deploy"),
                    Some("ÄPI"),
                    Some("äpi"),
                    Some("api"),
                    Some("eng-"),
                    Some("%_d"),
                    Some(r"\x"),
                    Some("_"),
                ] {
                    let (f, a) = (filter.clone(), actor.clone());
                    let found = same(
                        sqlite,
                        pg,
                        &format!("inbox_candidates #{fi} {a:?} {query:?}"),
                        move |s| {
                            Ok(by_id(s.inbox_candidates(&a, owner_kind, &f, query)?, |c| {
                                c.task_id.clone()
                            }))
                        },
                    )
                    .await;
                    if fi == 0 && *actor == alice() {
                        let ids: Vec<&str> = found.iter().map(|c| c.task_id.as_str()).collect();
                        // ASCII letters fold, other letters do not: "api" finds "API" only.
                        match query {
                            Some("api") => assert_eq!(ids, ["t-c1"]),
                            Some("deploy") => assert_eq!(ids, ["t-c1", "t-c2"]),
                            Some("%_d") => assert_eq!(ids, ["t-c3"]),
                            None => assert!(ids.len() > 40, "{ids:?}"),
                            _ => {}
                        }
                    }
                }
                let owner = Some(actor.clone());
                for owner in [None, owner] {
                    let f = filter.clone();
                    same(
                        sqlite,
                        pg,
                        &format!("inbox_class_counts #{fi} {owner:?}"),
                        move |s| s.inbox_class_counts(owner.as_ref(), &f),
                    )
                    .await;
                }
                let (f, a) = (filter.clone(), actor.clone());
                let corrections = same(
                    sqlite,
                    pg,
                    &format!("inbox_corrections #{fi} {a:?}"),
                    move |s| Ok(by_id(s.inbox_corrections(&a, &f)?, |c| c.task_id.clone())),
                )
                .await;
                let corrected: Vec<String> = corrections.into_iter().map(|c| c.task_id).collect();
                for lane in Lane::ALL {
                    for owner in [None, Some(actor.clone())] {
                        for exclude in [vec![], corrected.clone()] {
                            for min_rows in
                                [None, Some(0), Some(1), Some(3), Some(4), Some(5), Some(100)]
                            {
                                let (f, a, o, x) = (
                                    filter.clone(),
                                    actor.clone(),
                                    owner.clone(),
                                    exclude.clone(),
                                );
                                let what = format!(
                                    "inbox_lane_page #{fi} {a:?} {lane:?} {o:?} {x:?} {min_rows:?}"
                                );
                                // Ties on activity may come in any order: the same set, in the
                                // same activity order.
                                let (_, page) = same(sqlite, pg, &what, move |s| {
                                    let page =
                                        s.inbox_lane_page(&a, lane, o.as_ref(), &f, &x, min_rows)?;
                                    let order: Vec<Ts> =
                                        page.iter().map(|c| c.latest_activity_at).collect();
                                    Ok((order, by_id(page, |c| c.task_id.clone())))
                                })
                                .await;
                                pages += usize::from(!page.is_empty());
                                ties +=
                                    usize::from(min_rows.is_some_and(|n| n > 0 && page.len() > n));
                            }
                        }
                    }
                }
            }
        }

        // Not vacuous: many pages had rows, and some held a tie group beyond `min_rows`.
        assert!(pages > 100 && ties > 0, "{pages} pages, {ties} with ties");

        let ids = all_ids.clone();
        let latest = same(sqlite, pg, "latest_runs", move |s| {
            Ok(by_id(s.latest_runs(&ids)?, |r| r.id.clone()))
        })
        .await;
        assert!(latest.iter().any(|r| r.id == "r-f1-2"));
        let ids: Vec<String> = ["r-f1-2", "r-c3-1", "r-nope", "r-c3-1", "r-w03-1"]
            .map(String::from)
            .to_vec();
        same(sqlite, pg, "runs_by_ids", move |s| {
            Ok(by_id(s.runs_by_ids(&ids)?, |r| r.id.clone()))
        })
        .await;
        same(sqlite, pg, "runs_by_ids (none)", move |s| {
            s.runs_by_ids(&[])
        })
        .await;
        same(sqlite, pg, "latest_runs (none)", move |s| {
            s.latest_runs(&[])
        })
        .await;
        for (task_id, actor) in [
            ("t-c1", alice()),
            ("t-b08", bot()),
            ("t-c1", bot()),
            ("t-o01", alice()),
        ] {
            same(sqlite, pg, &format!("triage_record {task_id}"), move |s| {
                s.triage_record(task_id, &actor)
            })
            .await;
        }
        for (after, limit) in [(0, 1_000), (3, 2), (1_000, 10)] {
            same(sqlite, pg, "subtree_events_after", move |s| {
                s.subtree_events_after("t-root", after, limit)
            })
            .await;
            same(sqlite, pg, "events_after", move |s| {
                s.events_after(after, limit)
            })
            .await;
        }
        for id in ["t-g1", "t-root", "t-missing"] {
            same(sqlite, pg, &format!("ancestry {id}"), move |s| {
                s.ancestry(id)
            })
            .await;
        }
        for (root, limit) in [
            ("t-root", 100),
            ("t-root", 3),
            ("t-root", 1),
            ("t-b00", 10),
            ("t-missing", 10),
        ] {
            same(sqlite, pg, &format!("subtree {root} {limit}"), move |s| {
                s.subtree(root, limit)
            })
            .await;
        }

        let expected = gauges_tuple(sqlite.queue_gauges().await.unwrap());
        let actual = gauges_tuple(pg.queue_gauges().await.unwrap());
        assert!(
            expected.1.iter().any(|(w, _)| *w == Workspace::Other),
            "{expected:?}"
        );
        assert_eq!(expected, actual, "queue_gauges");
    }
}
