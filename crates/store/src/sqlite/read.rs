//! `ReadStore` over one SQLite connection: a reader's snapshot or the writer's open transaction.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use rusqlite::types::ToSql;
use tasklane_core::model::{
    ApiToken, Dependency, Event, IdempotencyRecord, Priority, Ref, Run, Task,
};
use tasklane_core::store::{AgentSessionRecord, Neighbourhood, ReadStore, RunFilter, TaskFilter};
use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::error::sql_err;
use super::rows::{
    agent_session_from_row, collect, dependency_columns, dependency_from_row, event_columns,
    event_from_row, first, idempotency_from_row, run_and_claim_caps_from_row, run_columns,
    run_from_row, task_columns, task_from_row, token_columns, token_from_row,
};
use super::status_sets::{active_run, finished_run};
use super::Db;
use crate::known_rows::TaskFlags;
use crate::rows_common::{dependency_order, like_pattern, run_order, task_order, TASK_COLUMNS};

/// Ids per query for the `*_of_tasks` lookups. The ids travel as one JSON array parameter (so
/// every chunk reuses one cached statement whatever its length); chunking only bounds the size of
/// that parameter and of each result set.
const ID_CHUNK: usize = 500;

const TASK_ORDER_SQL: &str =
    " ORDER BY last_activity_at DESC, updated_at DESC, created_at DESC, id DESC";

/// The oldest queued run, with its `claim_caps`, of the next claim class of audience ?1 at
/// priority ?2 after capability class ?3: one seek of `task_runs_claim_class`. (A row-value
/// bound `(priority_rank, claim_caps) > (?, ?)` would read like one seek too, but SQLite seeks on
/// its first column only and filters the rest, walking the whole last class.)
pub(super) const NEXT_CLASS_OF_PRIORITY_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    ", claim_caps FROM task_runs INDEXED BY task_runs_claim_class \
     WHERE claim_audience = ?1 AND status = 'queued' AND priority_rank = ?2 AND claim_caps > ?3 \
     ORDER BY claim_caps, queued_at, id LIMIT 1"
);

/// The oldest queued run, with its `claim_caps`, of the first claim class of audience ?1 above
/// priority ?2: one seek of `task_runs_claim_class`.
pub(super) const FIRST_CLASS_ABOVE_PRIORITY_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    ", claim_caps FROM task_runs INDEXED BY task_runs_claim_class \
     WHERE claim_audience = ?1 AND status = 'queued' AND priority_rank > ?2 \
     ORDER BY priority_rank, claim_caps, queued_at, id LIMIT 1"
);

/// Unique ids, in first-seen order, as JSON arrays of at most [`ID_CHUNK`] ids.
pub(crate) fn id_chunks(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    let unique: Vec<&str> = ids
        .iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect();
    unique
        .chunks(ID_CHUNK)
        .map(|chunk| serde_json::Value::from(chunk.to_vec()).to_string())
        .collect()
}

fn as_sql<T: ToSql>(v: &Option<T>) -> Option<&dyn ToSql> {
    v.as_ref().map(|v| v as &dyn ToSql)
}

/// SQLite reads a negative LIMIT as "no limit".
fn sql_limit(limit: Option<i64>) -> i64 {
    match limit {
        Some(n) if n > 0 => n,
        _ => -1,
    }
}

/// Hands `run` the `list_tasks` statement for this filter and its parameters.
pub(crate) fn with_task_list_query<R>(
    filter: &TaskFilter,
    run: impl FnOnce(&str, &[&dyn ToSql]) -> Result<R>,
) -> Result<R> {
    let scope = filter.scope.map(|s| s.as_str());
    let status = filter.status.map(|s| s.as_str());
    let priority = filter.priority.map(|p| p.as_str());
    let approval_state = filter.approval_state.map(|a| a.as_str());
    let owner_kind = filter.owner_kind.map(|o| o.as_str());
    let pattern = filter.query.as_deref().map(like_pattern);
    let limit = sql_limit(filter.limit);
    // Only present filters become clauses, so the planner can pick the index a filter
    // allows; the fixed clause order keeps one cached statement per filter shape.
    let equalities = [
        ("scope", as_sql(&scope)),
        ("workspace_id", as_sql(&filter.workspace_id)),
        ("status", as_sql(&status)),
        ("priority", as_sql(&priority)),
        ("approval_state", as_sql(&approval_state)),
        ("owner_kind", as_sql(&owner_kind)),
        ("owner_ref", as_sql(&filter.owner_ref)),
        ("parent_task_id", as_sql(&filter.parent_task_id)),
        ("network_channel", as_sql(&filter.network_channel)),
    ];

    let mut sql = String::from(concat!("SELECT ", task_columns!(), " FROM tasks WHERE 1"));
    let mut params: Vec<&dyn ToSql> = Vec::new();
    for (column, value) in equalities {
        if let Some(value) = value {
            params.push(value);
            let _ = write!(sql, " AND {column} = ?{}", params.len());
        }
    }
    if status.is_none() && !filter.include_drafts {
        sql.push_str(" AND status <> 'draft'");
    }
    if let Some(pattern) = &pattern {
        params.push(pattern);
        let n = params.len();
        let _ = write!(
            sql,
            r" AND (title LIKE ?{n} ESCAPE '\' OR identifier LIKE ?{n} ESCAPE '\')"
        );
    }
    // The row value compares in list order, so the planner resumes with a range on
    // `tasks_list_order` (or `tasks_parent` under a parent filter) instead of skipping rows.
    let after = filter.after.as_ref().map(|k| {
        (
            k.last_activity_at.0,
            k.updated_at.0,
            k.created_at.0,
            k.id.as_str(),
        )
    });
    if let Some((a, u, c, id)) = &after {
        params.extend([a as &dyn ToSql, u, c, id]);
        let n = params.len();
        let _ = write!(
            sql,
            " AND (last_activity_at, updated_at, created_at, id) < (?{}, ?{}, ?{}, ?{n})",
            n - 3,
            n - 2,
            n - 1
        );
    }
    params.push(&limit);
    let _ = write!(sql, "{TASK_ORDER_SQL} LIMIT ?{}", params.len());
    run(&sql, &params)
}

impl Db<'_> {
    /// `task` in the writer: also reads the task's flags, and remembers both for the command.
    fn task_with_flags(&mut self, id: &str) -> Result<Option<Task>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                task_columns!(),
                ", dependency_count > 0, latest_run_failed FROM tasks WHERE id = ?1"
            ))
            .map_err(sql_err)?;
        let found = first(&mut stmt, [id], |row| {
            let flags = TaskFlags {
                has_deps: row.get(TASK_COLUMNS).map_err(sql_err)?,
                latest_failed: row.get(TASK_COLUMNS + 1).map_err(sql_err)?,
            };
            Ok((task_from_row(row)?, flags))
        })?;
        drop(stmt);
        let Some((mut task, flags)) = found else {
            return Ok(None);
        };
        // Before it is remembered: the command's copy is the task as it last wrote it.
        self.overlay_unwritten(&mut task);
        if let Some(known) = self.known.as_mut() {
            known.saw_task(&task, flags);
        }
        self.marks.overlay(&mut task);
        Ok(Some(task))
    }
}

impl ReadStore for Db<'_> {
    fn task(&mut self, id: &str) -> Result<Option<Task>> {
        if self.known.is_some() {
            return self.task_with_flags(id);
        }
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE id = ?1"
            ))
            .map_err(sql_err)?;
        let mut task = first(&mut stmt, [id], task_from_row)?;
        if let Some(t) = task.as_mut() {
            self.marks.overlay(t);
        }
        Ok(task)
    }

    // Reads of several tasks order them by activity: the command's unwritten task UPDATEs and
    // marks are written first so that the order is the one every other reader will see.
    fn tasks_by_ids(&mut self, ids: &[String]) -> Result<Vec<Task>> {
        self.flush_task_writes()?;
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE id IN (SELECT value FROM json_each(?1))",
                " ORDER BY last_activity_at DESC, updated_at DESC, created_at DESC, id DESC"
            ))
            .map_err(sql_err)?;
        let chunks = id_chunks(ids);
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(collect(&mut stmt, [chunk], task_from_row)?);
        }
        if chunks.len() > 1 {
            out.sort_by(task_order);
        }
        Ok(out)
    }

    fn list_tasks(&mut self, filter: &TaskFilter) -> Result<Vec<Task>> {
        self.flush_task_writes()?;
        with_task_list_query(filter, |sql, params| {
            let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
            collect(&mut stmt, rusqlite::params_from_iter(params), task_from_row)
        })
    }

    fn children_of(&mut self, parent_id: &str) -> Result<Vec<Task>> {
        self.flush_task_writes()?;
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE parent_task_id = ?1",
                " ORDER BY last_activity_at DESC, updated_at DESC, created_at DESC, id DESC"
            ))
            .map_err(sql_err)?;
        collect(&mut stmt, [parent_id], task_from_row)
    }

    fn child_counts(&mut self, ids: &[String]) -> Result<HashMap<String, i64>> {
        self.flush_task_writes()?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT parent_task_id, COUNT(*) FROM tasks \
                 WHERE parent_task_id IN (SELECT value FROM json_each(?1)) \
                 GROUP BY parent_task_id",
            )
            .map_err(sql_err)?;
        let mut out = HashMap::new();
        for chunk in id_chunks(ids) {
            let mut rows = stmt.query([&chunk]).map_err(sql_err)?;
            while let Some(row) = rows.next().map_err(sql_err)? {
                out.insert(row.get(0).map_err(sql_err)?, row.get(1).map_err(sql_err)?);
            }
        }
        Ok(out)
    }

    fn run(&mut self, id: &str) -> Result<Option<Run>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM task_runs WHERE id = ?1"
            ))
            .map_err(sql_err)?;
        let run = first(&mut stmt, [id], run_from_row)?;
        self.saw_runs(run.as_slice());
        Ok(run)
    }

    fn runs_of_task(&mut self, task_id: &str) -> Result<Vec<Run>> {
        self.list_runs(task_id, &RunFilter::default())
    }

    fn neighbourhood(&mut self, task_id: &str) -> Result<Neighbourhood> {
        // The writer knows whether a task it has read has edges out (`dependency_count`, read
        // with the task and kept in step by the command's writes): most have none, and need no
        // read of them.
        let has_deps = self
            .known
            .as_ref()
            .and_then(|k| k.flags(task_id))
            .is_none_or(|flags| flags.has_deps);
        Ok(Neighbourhood {
            runs: self.runs_of_task(task_id)?,
            dependencies: if has_deps {
                self.dependencies_of(task_id)?
            } else {
                Vec::new()
            },
            dependents: self.dependents_of(task_id)?,
        })
    }

    fn list_runs(&mut self, task_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        let status = filter.status.map(|s| s.as_str());
        let limit = sql_limit(filter.limit);
        let (after_queued, after_id) = match &filter.after {
            Some(k) => (Some(k.queued_at.0), Some(k.id.as_str())),
            None => (None, None),
        };
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM task_runs WHERE task_id = ?1",
                " AND (?2 IS NULL OR status = ?2)",
                " AND (?3 IS NULL OR session_id = ?3)",
                " AND (?5 IS NULL OR (queued_at, id) < (?5, ?6))",
                " ORDER BY queued_at DESC, id DESC LIMIT ?4"
            ))
            .map_err(sql_err)?;
        let runs = collect(
            &mut stmt,
            rusqlite::params![
                task_id,
                status,
                filter.session_id,
                limit,
                after_queued,
                after_id
            ],
            run_from_row,
        )?;
        drop(stmt);
        self.saw_runs(&runs);
        Ok(runs)
    }

    fn open_runs_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM task_runs WHERE task_id IN (SELECT value FROM json_each(?1))",
                " AND NOT ",
                finished_run!("status"),
                " ORDER BY queued_at DESC, id DESC"
            ))
            .map_err(sql_err)?;
        let chunks = id_chunks(ids);
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(collect(&mut stmt, [chunk], run_from_row)?);
        }
        if chunks.len() > 1 {
            out.sort_by(run_order);
        }
        Ok(out)
    }

    fn active_run_of_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT id FROM task_runs WHERE session_id = ?1 AND session_token IS ?2 AND ",
                active_run!("status"),
                " ORDER BY queued_at DESC, id DESC LIMIT 1"
            ))
            .map_err(sql_err)?;
        first(&mut stmt, rusqlite::params![session_id, token], |row| {
            row.get(0).map_err(sql_err)
        })
    }

    fn dependencies_of(&mut self, task_id: &str) -> Result<Vec<Dependency>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                dependency_columns!(),
                " FROM task_dependencies WHERE task_id = ?1",
                " ORDER BY created_at, depends_on_task_id"
            ))
            .map_err(sql_err)?;
        collect(&mut stmt, [task_id], dependency_from_row)
    }

    fn dependencies_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Dependency>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                dependency_columns!(),
                " FROM task_dependencies WHERE task_id IN (SELECT value FROM json_each(?1))",
                " ORDER BY created_at, depends_on_task_id, task_id"
            ))
            .map_err(sql_err)?;
        let chunks = id_chunks(ids);
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(collect(&mut stmt, [chunk], dependency_from_row)?);
        }
        if chunks.len() > 1 {
            out.sort_by(dependency_order);
        }
        Ok(out)
    }

    fn dependents_of(&mut self, task_id: &str) -> Result<Vec<String>> {
        // Grouped so a pair linked by several kinds is reported once.
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT task_id FROM task_dependencies WHERE depends_on_task_id = ?1 \
                 GROUP BY task_id ORDER BY MIN(created_at), task_id",
            )
            .map_err(sql_err)?;
        collect(&mut stmt, [task_id], |row| row.get(0).map_err(sql_err))
    }

    fn events_of_task(
        &mut self,
        task_id: &str,
        after_sequence: i64,
        limit: Option<i64>,
        newest_first: bool,
    ) -> Result<Vec<Event>> {
        let sql = if newest_first {
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM task_events WHERE task_id = ?1 AND sequence > ?2",
                " ORDER BY sequence DESC LIMIT ?3"
            )
        } else {
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM task_events WHERE task_id = ?1 AND sequence > ?2",
                " ORDER BY sequence ASC LIMIT ?3"
            )
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
        collect(
            &mut stmt,
            rusqlite::params![task_id, after_sequence, sql_limit(limit)],
            event_from_row,
        )
    }

    fn idempotency_record(&mut self, key: &str, origin: &Ref) -> Result<Option<IdempotencyRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, origin_kind, origin_ref, task_id, run_id, created_at \
                 FROM run_idempotency WHERE key = ?1 AND origin_kind = ?2 AND origin_ref = ?3",
            )
            .map_err(sql_err)?;
        first(
            &mut stmt,
            rusqlite::params![key, origin.kind, origin.reference],
            idempotency_from_row,
        )
    }

    fn agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<AgentSessionRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT session_id, agent_name, first_seen_at, last_seen_at, token_name \
                 FROM agent_sessions WHERE token_name = ?2 AND session_id = ?1",
            )
            .map_err(sql_err)?;
        first(
            &mut stmt,
            rusqlite::params![session_id, token.unwrap_or("")],
            agent_session_from_row,
        )
    }

    fn claim_class_heads(
        &mut self,
        audiences: &[String],
        min_priority: Priority,
    ) -> Result<Vec<Run>> {
        // A skip-scan of the claim index: each seek lands on the first run after the previous
        // class, which is the oldest run of the next class because the index continues with
        // (queued_at, id). One seek per class, plus one per priority band and a last one.
        let mut same_priority = self
            .conn
            .prepare_cached(NEXT_CLASS_OF_PRIORITY_SQL)
            .map_err(sql_err)?;
        let mut higher_priority = self
            .conn
            .prepare_cached(FIRST_CLASS_ABOVE_PRIORITY_SQL)
            .map_err(sql_err)?;
        let mut heads = Vec::new();
        for audience in audiences {
            let mut next = first(
                &mut higher_priority,
                rusqlite::params![audience, min_priority.rank() - 1],
                run_and_claim_caps_from_row,
            )?;
            while let Some((head, caps)) = next {
                let rank = head.priority.rank();
                heads.push(head);
                next = first(
                    &mut same_priority,
                    rusqlite::params![audience, rank, caps],
                    run_and_claim_caps_from_row,
                )?;
                if next.is_none() {
                    next = first(
                        &mut higher_priority,
                        rusqlite::params![audience, rank],
                        run_and_claim_caps_from_row,
                    )?;
                }
            }
        }
        drop((same_priority, higher_priority));
        self.saw_runs(&heads);
        Ok(heads)
    }

    fn active_runs_of_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM task_runs WHERE session_id = ?1 AND session_token IS ?2 AND ",
                active_run!("status"),
                " ORDER BY queued_at, id"
            ))
            .map_err(sql_err)?;
        collect(
            &mut stmt,
            rusqlite::params![session_id, token],
            run_from_row,
        )
    }

    fn expired_leases(&mut self, now: Ts, limit: i64) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                run_columns!(),
                " FROM task_runs WHERE ",
                active_run!("status"),
                " AND lease_until IS NOT NULL AND lease_until <= ?1 \
                 ORDER BY lease_until, id LIMIT ?2"
            ))
            .map_err(sql_err)?;
        collect(&mut stmt, rusqlite::params![now.0, limit], run_from_row)
    }

    fn next_lease_deadline(&mut self) -> Result<Option<Ts>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT MIN(lease_until) FROM task_runs WHERE ",
                active_run!("status"),
                " AND lease_until IS NOT NULL"
            ))
            .map_err(sql_err)?;
        let min: Option<i64> = stmt.query_row([], |r| r.get(0)).map_err(sql_err)?;
        Ok(min.map(Ts))
    }

    fn api_tokens(&mut self) -> Result<Vec<ApiToken>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens ORDER BY name"
            ))
            .map_err(sql_err)?;
        collect(&mut stmt, [], token_from_row)
    }

    fn api_token(&mut self, token_hash: &str) -> Result<Option<ApiToken>> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens WHERE token_hash = ?1"
            ))
            .map_err(sql_err)?;
        first(&mut stmt, [token_hash], token_from_row)
    }
}
