//! `ObserveStore` on SQLite: counters read from the tables of the observe migration ([`schema`]),
//! live sets read through partial indexes, and triage writes. The entry points that run observe
//! reads and triage writes are the shared ones (`write_queue::store_entry_points`), and so is the
//! Rust around the statements that both backends need (`observe_common`).

pub(super) mod schema;

use std::fmt::Write as _;

use rusqlite::types::ToSql;
use tasklane_core::model::{
    ApprovalPolicy, ApprovalState, Event, OwnerKind, Ref, Run, RunStatus, Task, TaskStatus,
};
use tasklane_core::observe::{
    InboxCandidate, InboxClassCount, Lane, ObserveFilter, ObserveStore, ObserveWriteStore,
    QueueGroup, RunTotals, TaskCount, TriageRecord,
};
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::error::sql_err;
use super::read::id_chunks;
use super::rows::{
    collect, event_columns, event_from_row, first, run_columns, run_from_row, task_columns,
    task_from_row,
};
use super::status_sets::{active_run, not_open_work, open_run};
use super::Db;
use crate::observe_common::{add_latency, with_tie_group, FilterParams};
use crate::rows_common::like_pattern;

/// The observe filter in this dialect: its parameters and clauses.
trait FilterSql {
    fn counter_params(&self) -> [&dyn ToSql; 6];
    fn task_clauses<'p>(
        &'p self,
        alias: &str,
        driven: bool,
        sql: &mut String,
        params: &mut Vec<&'p dyn ToSql>,
    );
    fn run_clauses<'p>(&'p self, sql: &mut String, params: &mut Vec<&'p dyn ToSql>);
}

impl FilterSql for FilterParams {
    /// `?1`..`?6` of the counter-table statements (`COUNTER_FILTER`).
    fn counter_params(&self) -> [&dyn ToSql; 6] {
        [
            &self.scope,
            &self.workspace_id,
            &self.owner_kind,
            &self.owner_ref,
            &self.network_channel,
            &self.origin_kind,
        ]
    }

    /// Appends ` AND <alias>.<col> = ?n` for each present task filter; on large tables only
    /// present filters become clauses so the planner can use the indexes they allow.
    ///
    /// `driven` marks statements driven by another index (`+col` keeps the planner from
    /// switching to a filter column's index and sorting or joining from there).
    fn task_clauses<'p>(
        &'p self,
        alias: &str,
        driven: bool,
        sql: &mut String,
        params: &mut Vec<&'p dyn ToSql>,
    ) {
        let plus = if driven { "+" } else { "" };
        let cols: [(&str, Option<&dyn ToSql>); 6] = [
            ("scope", self.scope.as_ref().map(|v| v as &dyn ToSql)),
            (
                "workspace_id",
                self.workspace_id.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                "owner_kind",
                self.owner_kind.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                "owner_ref",
                self.owner_ref.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                "network_channel",
                self.network_channel.as_ref().map(|v| v as &dyn ToSql),
            ),
            (
                "origin_kind",
                self.origin_kind.as_ref().map(|v| v as &dyn ToSql),
            ),
        ];
        for (col, value) in cols {
            if let Some(value) = value {
                params.push(value);
                let _ = write!(sql, " AND {plus}{alias}.{col} = ?{}", params.len());
            }
        }
    }

    /// Clauses on `task_runs` (unaliased): the run's own channel/origin, and its task's filters
    /// through a correlated primary-key lookup (never a scan of all tasks).
    fn run_clauses<'p>(&'p self, sql: &mut String, params: &mut Vec<&'p dyn ToSql>) {
        if let Some(ch) = &self.network_channel {
            params.push(ch);
            let _ = write!(sql, " AND task_runs.network_channel = ?{}", params.len());
        }
        if let Some(o) = &self.origin_kind {
            params.push(o);
            let _ = write!(sql, " AND task_runs.origin_kind = ?{}", params.len());
        }
        if !self.is_empty() {
            sql.push_str(" AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = task_runs.task_id");
            self.task_clauses("t", false, sql, params);
            sql.push(')');
        }
    }
}

const COUNTER_FILTER: &str = "(?1 IS NULL OR scope = ?1) AND (?2 IS NULL OR workspace_id = ?2) \
     AND (?3 IS NULL OR owner_kind = ?3) AND (?4 IS NULL OR owner_ref = ?4) \
     AND (?5 IS NULL OR network_channel = ?5) AND (?6 IS NULL OR origin_kind = ?6)";

/// The inbox's `latest_activity_at`; the lane indexes are ordered by this exact expression.
const ACTIVITY: &str = "MAX(t.last_activity_at, t.updated_at, COALESCE(t.closed_at, 0))";

/// The compact candidate row (see [`candidate_from_row`]); ?1/?2 are the actor's kind and ref.
const CANDIDATE_SELECT: &str = concat!(
    "SELECT t.id, t.status, t.approval_policy, t.approval_state, \
     t.owner_kind, t.owner_ref, t.priority, \
     MAX(t.last_activity_at, t.updated_at, COALESCE(t.closed_at, 0)), t.latest_run_failed, \
     t.id IN (SELECT r.task_id FROM task_runs r WHERE r.claimed_by_kind = ?1 \
             AND r.claimed_by_ref = ?2 AND ",
    open_run!("r.status"),
    "), g.read, g.archived, g.dismissed, g.last_seen_activity_at, g.updated_at \
     FROM tasks t LEFT JOIN task_triage g \
       ON g.actor_kind = ?1 AND g.actor_ref = ?2 AND g.task_id = t.id"
);

/// Open runs, as the claimer index `task_runs_open_claimer` states them.
const OPEN_RUN: &str = open_run!("status");

fn parse_run_status(s: &str) -> Result<RunStatus> {
    RunStatus::parse(s).map_err(|_| Error::Storage(format!("unknown run status {s:?} in database")))
}

impl Db<'_> {
    fn query_runs(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<Run>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        collect(&mut stmt, params, run_from_row)
    }

    fn candidates(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        actor: &Ref,
    ) -> Result<Vec<InboxCandidate>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        let mut rows = stmt.query(params).map_err(sql_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_err)? {
            out.push(candidate_from_row(row, actor)?);
        }
        Ok(out)
    }

    fn events(&self, sql: &str, params: &[&dyn ToSql]) -> Result<Vec<Event>> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        collect(&mut stmt, params, event_from_row)
    }
}

impl ObserveStore for Db<'_> {
    fn task_counts(&mut self, filter: &ObserveFilter) -> Result<Vec<TaskCount>> {
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT status, approval_state, has_deps, SUM(n) FROM obs_task_counts \
             WHERE {COUNTER_FILTER} GROUP BY 1, 2, 3 HAVING SUM(n) <> 0"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt.query(&p.counter_params()[..]).map_err(sql_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_err)? {
            let status: String = row.get(0).map_err(sql_err)?;
            let approval: String = row.get(1).map_err(sql_err)?;
            out.push(TaskCount {
                status: TaskStatus::parse(&status)?,
                approval_state: ApprovalState::parse(&approval)?,
                has_dependencies: row.get::<_, i64>(2).map_err(sql_err)? != 0,
                count: row.get(3).map_err(sql_err)?,
            });
        }
        Ok(out)
    }

    fn run_totals(&mut self, filter: &ObserveFilter) -> Result<RunTotals> {
        let p = FilterParams::of(filter);
        // Channel and origin filters hold for the task and for the run itself.
        let sql = format!(
            "SELECT status, SUM(n), SUM(claim_n), SUM(claim_sum), \
             MAX(CASE WHEN claim_n > 0 THEN claim_max END), SUM(start_n), SUM(start_sum), \
             MAX(CASE WHEN start_n > 0 THEN start_max END) FROM obs_run_counts \
             WHERE {COUNTER_FILTER} AND (?5 IS NULL OR run_channel = ?5) \
             AND (?6 IS NULL OR run_origin_kind = ?6) GROUP BY status"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt.query(&p.counter_params()[..]).map_err(sql_err)?;
        let mut out = RunTotals::default();
        while let Some(row) = rows.next().map_err(sql_err)? {
            let get = |i: usize| -> Result<i64> {
                Ok(row.get::<_, Option<i64>>(i).map_err(sql_err)?.unwrap_or(0))
            };
            let status: String = row.get(0).map_err(sql_err)?;
            let n = get(1)?;
            if n != 0 {
                out.by_status.push((parse_run_status(&status)?, n));
            }
            add_latency(&mut out.claim, get(2)?, get(3)?, get(4)?);
            add_latency(&mut out.start, get(5)?, get(6)?, get(7)?);
        }
        Ok(out)
    }

    fn queue_groups(&mut self, filter: &ObserveFilter) -> Result<Vec<QueueGroup>> {
        let p = FilterParams::of(filter);
        let sql = format!(
            "SELECT run_channel, SUM(n) FROM obs_run_counts \
             WHERE status = 'queued' AND {COUNTER_FILTER} AND (?5 IS NULL OR run_channel = ?5) \
             AND (?6 IS NULL OR run_origin_kind = ?6) GROUP BY run_channel HAVING SUM(n) > 0 \
             ORDER BY run_channel"
        );
        let counts: Vec<(String, i64)> = {
            let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
            let rows = stmt
                .query_map(&p.counter_params()[..], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        let mut out = Vec::with_capacity(counts.len());
        for (channel, count) in counts {
            // The oldest queued run of the channel among the filter: walks the channel's queue
            // index from its oldest entry to the first run that passes the filter.
            let channel_param: Option<&str> = (!channel.is_empty()).then_some(channel.as_str());
            let mut sql = String::from(
                "SELECT queued_at FROM task_runs WHERE status = 'queued' AND network_channel IS ?1",
            );
            let mut params: Vec<&dyn ToSql> = vec![&channel_param];
            p.run_clauses(&mut sql, &mut params);
            sql.push_str(" ORDER BY network_channel, queued_at LIMIT 1");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
            let oldest: Option<i64> =
                first(&mut stmt, params.as_slice(), |r| r.get(0).map_err(sql_err))?;
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
        let mut params: Vec<&dyn ToSql> = Vec::new();
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
        let mut params: Vec<&dyn ToSql> = Vec::new();
        p.run_clauses(&mut sql, &mut params);
        params.push(&limit);
        let _ = write!(
            sql,
            " ORDER BY queued_at DESC, id DESC LIMIT ?{}",
            params.len()
        );
        self.query_runs(&sql, &params)
    }

    fn count_forced_stops_since(&mut self, filter: &ObserveFilter, since: Ts) -> Result<i64> {
        let p = FilterParams::of(filter);
        // The event type is a literal so the partial index over that type serves the scan.
        let mut sql = String::from(
            "SELECT COUNT(*) FROM task_events e JOIN tasks t ON t.id = e.task_id \
             WHERE e.event_type = 'task.run_force_stopped' AND e.timestamp >= ?1",
        );
        let mut params: Vec<&dyn ToSql> = vec![&since.0];
        let task_only = FilterParams::task_only(filter);
        task_only.task_clauses("t", true, &mut sql, &mut params);
        if let Some(o) = &p.origin_kind {
            params.push(o);
            let n = params.len();
            let _ = write!(sql, " AND +t.origin_kind = ?{n} AND e.origin_kind = ?{n}");
        }
        if let Some(ch) = &p.network_channel {
            params.push(ch);
            let n = params.len();
            let _ = write!(
                sql,
                " AND +t.network_channel = ?{n} AND COALESCE((SELECT r.network_channel FROM \
                 task_runs r WHERE r.id = e.run_id), t.network_channel) = ?{n}"
            );
        }
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        stmt.query_row(params.as_slice(), |r| r.get(0))
            .map_err(sql_err)
    }

    fn latest_activity(&mut self, filter: &ObserveFilter) -> Result<Option<Ts>> {
        let p = FilterParams::of(filter);
        // last_activity_at is the newest of updated_at (>= created_at, closed_at), run times and
        // event times; the list-order index yields the newest first.
        let mut sql = String::from("SELECT last_activity_at FROM tasks WHERE 1");
        let mut params: Vec<&dyn ToSql> = Vec::new();
        // Driven by the list-order index: the first row that passes the filter is the newest.
        p.task_clauses("tasks", true, &mut sql, &mut params);
        sql.push_str(" ORDER BY last_activity_at DESC LIMIT 1");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        let at: Option<i64> = first(&mut stmt, params.as_slice(), |r| r.get(0).map_err(sql_err))?;
        Ok(at.map(Ts))
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
               UNION ALL SELECT id FROM tasks WHERE owner_kind = ?3 AND owner_ref = ?2 \
                 AND status IN ('pending', 'ready', 'in_progress', 'blocked') \
               UNION ALL SELECT task_id FROM task_runs WHERE claimed_by_kind = ?1 AND claimed_by_ref = ?2 \
                 AND {OPEN_RUN} \
               UNION ALL SELECT task_id FROM task_triage WHERE actor_kind = ?1 AND actor_ref = ?2 \
                 AND archived = 1)"
        );
        let mut params: Vec<&dyn ToSql> = vec![&actor.kind, &actor.reference, &owner_kind];
        p.task_clauses("t", false, &mut sql, &mut params);
        if let Some(pattern) = &pattern {
            params.push(pattern);
            let n = params.len();
            let _ = write!(
                sql,
                r" AND (t.title LIKE ?{n} ESCAPE '\' OR t.identifier LIKE ?{n} ESCAPE '\')"
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
             COALESCE(owner_kind = ?7 AND owner_ref = ?8, 0), SUM(n) FROM obs_task_counts \
             WHERE {COUNTER_FILTER} GROUP BY 1, 2, 3, 4, 5 HAVING SUM(n) <> 0"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        let mut rows = stmt
            .query(
                &[
                    &p.counter_params()[..],
                    &[&owner_kind as &dyn ToSql, &owner_ref],
                ]
                .concat()[..],
            )
            .map_err(sql_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(sql_err)? {
            let text = |i: usize| -> Result<String> { row.get(i).map_err(sql_err) };
            out.push(InboxClassCount {
                status: TaskStatus::parse(&text(0)?)?,
                approval_policy: ApprovalPolicy::parse(&text(1)?)?,
                approval_state: ApprovalState::parse(&text(2)?)?,
                latest_run_failed: row.get::<_, i64>(3).map_err(sql_err)? != 0,
                owned: row.get::<_, i64>(4).map_err(sql_err)? != 0,
                count: row.get(5).map_err(sql_err)?,
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
               SELECT task_id FROM task_triage WHERE actor_kind = ?1 AND actor_ref = ?2 \
               UNION SELECT task_id FROM task_runs WHERE claimed_by_kind = ?1 AND claimed_by_ref = ?2 \
                 AND {OPEN_RUN})"
        );
        let mut params: Vec<&dyn ToSql> = vec![&actor.kind, &actor.reference];
        // Driven by the actor's rows: a filter column's index would read the whole filter set.
        p.task_clauses("t", true, &mut sql, &mut params);
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
        // The index and predicate of each lane's base set; the predicate repeats the index's
        // WHERE terms so that `INDEXED BY` is always satisfiable (an error otherwise, never a
        // silent scan).
        let (index, predicate) = match lane {
            Lane::Approvals => (
                "tasks_inbox_approvals",
                "t.status = 'blocked' AND t.approval_policy = 'manual' AND t.approval_state = 'pending'",
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
                    "t.owner_kind = ?3 AND t.owner_ref = ?4 AND NOT ",
                    not_open_work!("t.status"),
                    " AND t.latest_run_failed = 0"
                ),
            ),
            // Only triage rows put a task there: the corrections carry every archived item.
            Lane::Archived => return Ok(Vec::new()),
        };
        // ?3/?4 are only read by my_work; an actor that owns nothing has no base my_work.
        let (owner_kind, owner_ref) = match owner {
            Some(o) => (o.kind.as_str(), o.reference.as_str()),
            None if lane == Lane::MyWork => return Ok(Vec::new()),
            None => ("", ""),
        };
        let p = FilterParams::task_only(filter);
        let excluded: String =
            serde_json::Value::from(exclude.iter().map(String::as_str).collect::<Vec<_>>())
                .to_string();
        let limit: i64 = min_rows.map_or(-1, |n| n as i64);
        let mut params: Vec<&dyn ToSql> = vec![
            &actor.kind,
            &actor.reference,
            &owner_kind,
            &owner_ref,
            &excluded,
        ];
        let mut clauses = String::new();
        p.task_clauses("t", true, &mut clauses, &mut params);
        let head = CANDIDATE_SELECT.replace(
            "FROM tasks t ",
            &format!("FROM tasks t INDEXED BY {index} "),
        );
        let base = format!(
            "{head} WHERE {predicate} AND t.id NOT IN (SELECT value FROM json_each(?5)){clauses}"
        );
        params.push(&limit);
        let sql = format!("{base} ORDER BY {ACTIVITY} DESC LIMIT ?{}", params.len());
        let page = self.candidates(&sql, &params, actor)?;
        with_tie_group(page, min_rows, |last_at| {
            let mut tie_params = params[..params.len() - 1].to_vec();
            tie_params.push(&last_at);
            let sql = format!("{base} AND {ACTIVITY} = ?{}", tie_params.len());
            self.candidates(&sql, &tie_params, actor)
        })
    }

    fn latest_runs(&mut self, task_ids: &[String]) -> Result<Vec<Run>> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM task_runs WHERE id IN (SELECT (SELECT r.id FROM task_runs r WHERE r.task_id = j.value",
            " ORDER BY r.attempt DESC, r.queued_at DESC, r.id DESC LIMIT 1) FROM json_each(?1) j)"
        );
        let mut out = Vec::new();
        for chunk in id_chunks(task_ids) {
            out.extend(self.query_runs(sql, &[&chunk])?);
        }
        Ok(out)
    }

    fn runs_by_ids(&mut self, ids: &[String]) -> Result<Vec<Run>> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM task_runs WHERE id IN (SELECT value FROM json_each(?1))"
        );
        let mut out = Vec::new();
        for chunk in id_chunks(ids) {
            out.extend(self.query_runs(sql, &[&chunk])?);
        }
        Ok(out)
    }

    fn triage_record(&mut self, task_id: &str, actor: &Ref) -> Result<Option<TriageRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT read, archived, dismissed, last_seen_activity_at, updated_at \
                 FROM task_triage WHERE actor_kind = ?1 AND actor_ref = ?2 AND task_id = ?3",
            )
            .map_err(sql_err)?;
        let mut rows = stmt
            .query(rusqlite::params![actor.kind, actor.reference, task_id])
            .map_err(sql_err)?;
        let Some(row) = rows.next().map_err(sql_err)? else {
            return Ok(None);
        };
        Ok(Some(TriageRecord {
            task_id: task_id.to_string(),
            actor: actor.clone(),
            read: row.get(0).map_err(sql_err)?,
            archived: row.get(1).map_err(sql_err)?,
            dismissed: row.get(2).map_err(sql_err)?,
            last_seen_activity_at: row.get::<_, Option<i64>>(3).map_err(sql_err)?.map(Ts),
            updated_at: Some(Ts(row.get(4).map_err(sql_err)?)),
        }))
    }

    fn subtree_events_after(&mut self, root: &str, after: i64, limit: i64) -> Result<Vec<Event>> {
        let sql = concat!(
            "WITH RECURSIVE sub(id) AS (SELECT id FROM tasks WHERE id = ?1",
            " UNION ALL SELECT t.id FROM tasks t JOIN sub ON t.parent_task_id = sub.id)",
            " SELECT ",
            event_columns!(),
            " FROM task_events WHERE task_id IN (SELECT id FROM sub) AND sequence > ?2",
            " ORDER BY sequence LIMIT ?3"
        );
        self.events(sql, &[&root, &after, &limit])
    }

    fn events_after(&mut self, after: i64, limit: i64) -> Result<Vec<Event>> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM task_events WHERE sequence > ?1 ORDER BY sequence LIMIT ?2"
        );
        self.events(sql, &[&after, &limit])
    }

    fn ancestry(&mut self, task_id: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE up(id, parent, lvl) AS ( \
                   SELECT id, parent_task_id, 0 FROM tasks WHERE id = ?1 \
                   UNION ALL SELECT t.id, t.parent_task_id, up.lvl + 1 FROM tasks t \
                   JOIN up ON t.id = up.parent) \
                 SELECT id FROM up ORDER BY lvl",
            )
            .map_err(sql_err)?;
        collect(&mut stmt, [task_id], |r| r.get(0).map_err(sql_err))
    }

    fn subtree(&mut self, root: &str, limit: i64) -> Result<Vec<(Task, i64)>> {
        // The walk carries only ids, depths and activity; full rows are read for the kept nodes.
        let sql = concat!(
            "WITH RECURSIVE sub(sid, depth, activity) AS (",
            "SELECT id, 0, 0 FROM tasks WHERE id = ?1",
            " UNION ALL SELECT t.id, sub.depth + 1, MAX(t.last_activity_at, t.updated_at, t.created_at)",
            " FROM tasks t JOIN sub ON t.parent_task_id = sub.sid),",
            " kept(kid, kdepth, kactivity) AS (SELECT sid, depth, activity FROM sub",
            " ORDER BY depth, activity DESC, sid LIMIT ?2)",
            " SELECT ",
            task_columns!(),
            ", kdepth FROM kept JOIN tasks ON tasks.id = kept.kid",
            " ORDER BY kdepth, kactivity DESC, kid"
        );
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        let mut rows = stmt
            .query(rusqlite::params![root, limit])
            .map_err(sql_err)?;
        let mut out = Vec::new();
        let depth_col = rows.as_ref().map_or(0, |s| s.column_count()) - 1;
        while let Some(row) = rows.next().map_err(sql_err)? {
            out.push((task_from_row(row)?, row.get(depth_col).map_err(sql_err)?));
        }
        Ok(out)
    }
}

impl ObserveWriteStore for Db<'_> {
    fn put_triage(&mut self, t: &TriageRecord) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO task_triage (actor_kind, actor_ref, task_id, read, dismissed, archived, \
                 last_seen_activity_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (actor_kind, actor_ref, task_id) DO UPDATE SET read = excluded.read, \
                 dismissed = excluded.dismissed, archived = excluded.archived, \
                 last_seen_activity_at = excluded.last_seen_activity_at, updated_at = excluded.updated_at",
            )
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![
            t.actor.kind,
            t.actor.reference,
            t.task_id,
            t.read,
            t.dismissed,
            t.archived,
            t.last_seen_activity_at.map(|ts| ts.0),
            t.updated_at.unwrap_or_default().0,
        ])
        .map_err(sql_err)?;
        Ok(())
    }
}

fn candidate_from_row(row: &rusqlite::Row<'_>, actor: &Ref) -> Result<InboxCandidate> {
    use tasklane_core::model::Priority;
    let text = |i: usize| -> Result<String> { row.get(i).map_err(sql_err) };
    let task_id = text(0)?;
    let owner_kind: Option<String> = row.get(4).map_err(sql_err)?;
    let owner = owner_kind.map(|kind| Ref {
        kind,
        reference: row
            .get::<_, Option<String>>(5)
            .ok()
            .flatten()
            .unwrap_or_default(),
    });
    let triage = match row.get::<_, Option<bool>>(10).map_err(sql_err)? {
        None => None,
        Some(read) => Some(TriageRecord {
            task_id: task_id.clone(),
            actor: actor.clone(),
            read,
            archived: row.get(11).map_err(sql_err)?,
            dismissed: row.get(12).map_err(sql_err)?,
            last_seen_activity_at: row.get::<_, Option<i64>>(13).map_err(sql_err)?.map(Ts),
            updated_at: row.get::<_, Option<i64>>(14).map_err(sql_err)?.map(Ts),
        }),
    };
    Ok(InboxCandidate {
        status: TaskStatus::parse(&text(1)?)?,
        approval_policy: ApprovalPolicy::parse(&text(2)?)?,
        approval_state: ApprovalState::parse(&text(3)?)?,
        owner,
        priority: Priority::parse(&text(6)?)?,
        latest_activity_at: Ts(row.get(7).map_err(sql_err)?),
        latest_run_failed: row.get(8).map_err(sql_err)?,
        claimed_by_caller: row.get(9).map_err(sql_err)?,
        triage,
        task_id,
    })
}
