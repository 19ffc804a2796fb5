//! `ReadStore` over one PostgreSQL connection: a reader's snapshot or the writer's open
//! transaction.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::LazyLock;

use postgres::types::ToSql;
use tasklane_core::model::{
    ApiToken, Dependency, Event, IdempotencyRecord, Priority, Ref, Run, Task,
};
use tasklane_core::store::{
    AgentSessionRecord, LeaseView, Neighbourhood, ReadStore, RunFilter, TaskFilter,
};
use tasklane_core::time::Ts;
use tasklane_core::Result;

use super::conn::Params;
use super::rows::{
    agent_session_from_row, column, dependency_columns, dependency_from_row, event_columns,
    event_from_row, idempotency_from_row, map_rows, run_and_claim_caps_from_row, run_columns,
    run_from_row, task_columns, task_from_row, token_columns, token_from_row,
};
use super::Db;
use crate::known_rows::TaskFlags;
use crate::rows_common::{dependency_order, like_pattern, run_order, task_order, TASK_COLUMNS};
use crate::sqlite::status_sets::{active_run, finished_run};

/// Ids per query for the `*_of_tasks` lookups. The ids travel as one TEXT[] parameter (so every
/// chunk reuses one prepared statement whatever its length); chunking only bounds the size of
/// that parameter and of each result set.
const ID_CHUNK: usize = 500;

const TASK_ORDER_SQL: &str =
    " ORDER BY last_activity_at DESC, updated_at DESC, created_at DESC, id DESC";

/// `$c` with ASCII letters folded to lower case, and nothing else: SQLite's `LIKE` folds ASCII
/// only, and `lower()`/`ILIKE` would also fold other letters by the database's locale. Compare
/// with a pattern passed through `str::to_ascii_lowercase`.
macro_rules! ascii_lower {
    ($c:literal) => {
        concat!(
            "translate(",
            $c,
            ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"
        )
    };
}
pub(crate) use ascii_lower;

/// A task's runs, newest first: $2 a status, $3 a session, $4 a limit, and ($5, $6) the
/// (queued_at, id) to continue after, each ignored when NULL.
const LIST_RUNS_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM task_runs WHERE task_id = $1",
    " AND ($2::TEXT IS NULL OR status = $2)",
    " AND ($3::TEXT IS NULL OR session_id = $3)",
    " AND ($5::BIGINT IS NULL OR (queued_at, id) < ($5, $6::TEXT))",
    " ORDER BY queued_at DESC, id DESC LIMIT $4::BIGINT"
);

const RUNS_OF_TASK_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM task_runs WHERE task_id = $1 ORDER BY queued_at DESC, id DESC"
);

const DEPENDENCIES_OF_SQL: &str = concat!(
    "SELECT ",
    dependency_columns!(),
    " FROM task_dependencies WHERE task_id = $1",
    " ORDER BY created_at, depends_on_task_id"
);

/// Grouped so a pair linked by several kinds is reported once.
const DEPENDENTS_OF_SQL: &str = "SELECT task_id FROM task_dependencies \
     WHERE depends_on_task_id = $1 GROUP BY task_id ORDER BY MIN(created_at), task_id";

/// `runs_of_task`, `dependencies_of` and `dependents_of` of the task `id` names, in the order
/// `Db::neighbourhood_from` reads their answers.
fn neighbourhood_queries(id: Params<'_>) -> [(&'static str, Params<'_>); 3] {
    [
        (RUNS_OF_TASK_SQL, id),
        (DEPENDENCIES_OF_SQL, id),
        (DEPENDENTS_OF_SQL, id),
    ]
}

const RUN_SQL: &str = concat!("SELECT ", run_columns!(), " FROM task_runs WHERE id = $1");

const TASK_SQL: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");

/// [`TASK_SQL`] with the task's flags, which the writer reads for the counters' bucket of the
/// task.
const TASK_WITH_FLAGS_SQL: &str = concat!(
    "SELECT ",
    task_columns!(),
    ", dependency_count > 0, latest_run_failed <> 0 FROM tasks WHERE id = $1"
);

const ACTIVE_RUNS_OF_SESSION_SQL: &str = concat!(
    "SELECT ",
    run_columns!(),
    " FROM task_runs WHERE session_id = $1",
    " AND session_token IS NOT DISTINCT FROM $2::TEXT AND ",
    active_run!("status"),
    " ORDER BY queued_at, id"
);

/// [`TASK_SQL`], [`TASK_WITH_FLAGS_SQL`] and the neighbourhood statements, each naming by `$1`
/// a run whose task it reads, so that they can travel with the statement that finds the run.
static OF_RUNS_TASK: LazyLock<[String; 5]> = LazyLock::new(|| {
    [
        TASK_SQL,
        TASK_WITH_FLAGS_SQL,
        RUNS_OF_TASK_SQL,
        DEPENDENCIES_OF_SQL,
        DEPENDENTS_OF_SQL,
    ]
    .map(|sql| {
        assert!(
            sql.matches('$').count() == 1 && sql.contains("= $1"),
            "{sql}"
        );
        sql.replacen("= $1", "= (SELECT task_id FROM task_runs WHERE id = $1)", 1)
    })
});

/// The parameters of [`CLAIM_CLASS_HEADS_SQL`] for `audiences` (at most three), at priority
/// rank above `below`.
fn heads_params<'p>(
    audiences: &'p [String],
    below: &'p i64,
) -> Result<[&'p (dyn ToSql + Sync); 4]> {
    const NONE: &Option<String> = &None;
    if audiences.len() > 3 {
        return Err(tasklane_core::Error::Storage(format!(
            "a claimer has at most three audiences; got {}",
            audiences.len()
        )));
    }
    let audience =
        |i: usize| -> &'p (dyn ToSql + Sync) { audiences.get(i).map_or(NONE as _, |a| a as _) };
    Ok([audience(0), audience(1), audience(2), below as _])
}

/// The oldest queued run, with its `claim_caps`, of each claim class of each of the audiences
/// $1, $2 and $3 (each ignored when NULL) at priority rank above $4, in class order within an
/// audience: a skip-scan of the claim queue (`run_queue`) in one statement, then each head's
/// run. Each step of the recursion is one seek, to the first queued run of the same audience
/// after the previous class, which is the oldest run of the next class because the index
/// continues with (queued_at, run_id).
///
/// Three parameters rather than an array: PostgreSQL plans an array's `unnest` at a hundred
/// rows until it sees the values, so it would plan the statement anew at every execution. The
/// `LIMIT 1` of each head's run keeps PostgreSQL from joining the heads to `task_runs` as a
/// whole: it guesses a recursion yields hundreds of rows, and would hash all of `task_runs`.
pub(super) const CLAIM_CLASS_HEADS_SQL: &str = concat!(
    "WITH RECURSIVE heads AS (SELECT first.* \
     FROM (VALUES ($1::TEXT), ($2::TEXT), ($3::TEXT)) AS a (audience) \
     CROSS JOIN LATERAL (SELECT claim_audience, priority_rank, claim_caps, run_id \
     FROM run_queue WHERE claim_audience = a.audience AND priority_rank > $4 \
     ORDER BY priority_rank, claim_caps, queued_at, run_id LIMIT 1) first \
     UNION ALL SELECT next.* FROM heads CROSS JOIN LATERAL \
     (SELECT claim_audience, priority_rank, claim_caps, run_id FROM run_queue \
     WHERE claim_audience = heads.claim_audience \
     AND (priority_rank, claim_caps) > (heads.priority_rank, heads.claim_caps) \
     ORDER BY priority_rank, claim_caps, queued_at, run_id LIMIT 1) next) \
     SELECT run.* FROM heads CROSS JOIN LATERAL (SELECT ",
    run_columns!(),
    ", claim_caps FROM task_runs WHERE id = heads.run_id LIMIT 1) run"
);

/// Unique ids, in first-seen order, in chunks of at most [`ID_CHUNK`] ids (bind a chunk as a
/// TEXT[] parameter: `id = ANY($1)`).
pub(crate) fn id_chunks(ids: &[String]) -> Vec<Vec<String>> {
    let mut seen = HashSet::with_capacity(ids.len());
    let unique: Vec<String> = ids
        .iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect();
    unique.chunks(ID_CHUNK).map(<[String]>::to_vec).collect()
}

/// A page size for `LIMIT $n::BIGINT`: NULL (no limit) unless positive, as SQLite reads a
/// negative limit.
fn sql_limit(limit: Option<i64>) -> Option<i64> {
    limit.filter(|n| *n > 0)
}

fn as_sql<T: ToSql + Sync>(v: &Option<T>) -> Option<&(dyn ToSql + Sync)> {
    v.as_ref().map(|v| v as &(dyn ToSql + Sync))
}

/// Hands `run` the `list_tasks` statement for this filter and its parameters.
pub(crate) fn with_task_list_query<R>(
    filter: &TaskFilter,
    run: impl FnOnce(&str, &[&(dyn ToSql + Sync)]) -> Result<R>,
) -> Result<R> {
    let scope = filter.scope.map(|s| s.as_str());
    let status = filter.status.map(|s| s.as_str());
    let priority = filter.priority.map(|p| p.as_str());
    let approval_state = filter.approval_state.map(|a| a.as_str());
    let owner_kind = filter.owner_kind.map(|o| o.as_str());
    let pattern = filter
        .query
        .as_deref()
        .map(|q| like_pattern(q).to_ascii_lowercase());
    let limit = sql_limit(filter.limit);
    // Only present filters become clauses, so the planner can pick the index a filter
    // allows; the fixed clause order keeps one prepared statement per filter shape.
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

    let mut sql = String::from(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE TRUE"
    ));
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    for (column, value) in equalities {
        if let Some(value) = value {
            params.push(value);
            let _ = write!(sql, " AND {column} = ${}", params.len());
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
            concat!(
                r" AND (",
                self::ascii_lower!("title"),
                r" LIKE ${n}::TEXT ESCAPE '\' OR ",
                self::ascii_lower!("identifier"),
                r" LIKE ${n}::TEXT ESCAPE '\')"
            ),
            n = n
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
        params.extend([a as &(dyn ToSql + Sync), u, c, id]);
        let n = params.len();
        let _ = write!(
            sql,
            " AND (last_activity_at, updated_at, created_at, id) < (${}, ${}, ${}, ${n})",
            n - 3,
            n - 2,
            n - 1
        );
    }
    params.push(&limit);
    let _ = write!(sql, "{TASK_ORDER_SQL} LIMIT ${}::BIGINT", params.len());
    run(&sql, &params)
}

impl Db<'_> {
    /// Tasks in the order of their activity: the command's pending marks are written first (they
    /// travel with the query), so that the order is the one every other reader will see.
    fn tasks(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Task>> {
        self.flush_task_marks()?;
        map_rows(self.conn.query(sql, params)?, task_from_row)
    }

    /// `claim_view` and `lease_view` begin every agent operation, and each item of a batch of
    /// them. In a batch the items share one command, whose marks would otherwise wait for its
    /// end, when every item's task UPDATE has long been sent: written here instead, the
    /// previous item's marks still find its UPDATE unsent and join it (`flush_task_marks`): one
    /// statement and one task row version less per item.
    fn flush_marks_of_previous_item(&mut self) -> Result<()> {
        self.flush_task_marks()
    }

    fn runs(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Run>> {
        let rows = self.conn.query(sql, params)?;
        self.runs_from(rows)
    }

    /// The statement that reads one task: the writer reads the task's flags with it, for the
    /// counters' bucket of the task.
    fn task_sql(&self) -> &'static str {
        self.with_flags_if_writer(TASK_SQL, TASK_WITH_FLAGS_SQL)
    }

    /// `with_flags` on the writer, `plain` on a reader: a statement of [`Db::task_sql`]'s pair.
    fn with_flags_if_writer<'s>(&self, plain: &'s str, with_flags: &'s str) -> &'s str {
        if self.known.is_some() {
            with_flags
        } else {
            plain
        }
    }

    /// The task of a `task_sql` answer, remembered by the writer.
    fn task_from(&mut self, row: Option<postgres::Row>) -> Result<Option<Task>> {
        let Some(row) = row else {
            return Ok(None);
        };
        let mut task = task_from_row(&row)?;
        if let Some(known) = self.known.as_mut() {
            let flags = TaskFlags {
                has_deps: column(&row, TASK_COLUMNS)?,
                latest_failed: column(&row, TASK_COLUMNS + 1)?,
            };
            known.saw_task(&task, flags);
        }
        self.marks.overlay(&mut task);
        Ok(Some(task))
    }

    /// The answers to the three neighbourhood statements, in order.
    fn neighbourhood_from(&mut self, answers: Vec<Vec<postgres::Row>>) -> Result<Neighbourhood> {
        let [runs, dependencies, dependents]: [Vec<postgres::Row>; 3] = answers
            .try_into()
            .map_err(|_| tasklane_core::Error::Storage("three answers expected".into()))?;
        Ok(Neighbourhood {
            runs: self.runs_from(runs)?,
            dependencies: map_rows(dependencies, dependency_from_row)?,
            dependents: map_rows(dependents, |row| column(row, 0))?,
        })
    }

    /// The answer to `CLAIM_CLASS_HEADS_SQL`.
    fn heads_from(&mut self, rows: Vec<postgres::Row>) -> Result<Vec<Run>> {
        let heads = map_rows(rows, |row| {
            run_and_claim_caps_from_row(row).map(|(run, _)| run)
        })?;
        if let Some(known) = self.known.as_mut() {
            heads.iter().for_each(|run| known.saw_run(run));
        }
        Ok(heads)
    }

    fn runs_from(&mut self, rows: Vec<postgres::Row>) -> Result<Vec<Run>> {
        let runs = map_rows(rows, run_from_row)?;
        if let Some(known) = self.known.as_mut() {
            runs.iter().for_each(|run| known.saw_run(run));
        }
        Ok(runs)
    }
}

impl ReadStore for Db<'_> {
    fn task(&mut self, id: &str) -> Result<Option<Task>> {
        let row = self.conn.query_opt(self.task_sql(), &[&id])?;
        self.task_from(row)
    }

    fn tasks_by_ids(&mut self, ids: &[String]) -> Result<Vec<Task>> {
        let sql = concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = ANY($1)",
            " ORDER BY last_activity_at DESC, updated_at DESC, created_at DESC, id DESC"
        );
        let chunks = id_chunks(ids);
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(self.tasks(sql, &[chunk])?);
        }
        if chunks.len() > 1 {
            out.sort_by(task_order);
        }
        Ok(out)
    }

    fn list_tasks(&mut self, filter: &TaskFilter) -> Result<Vec<Task>> {
        with_task_list_query(filter, |sql, params| self.tasks(sql, params))
    }

    fn children_of(&mut self, parent_id: &str) -> Result<Vec<Task>> {
        self.tasks(
            concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE parent_task_id = $1",
                " ORDER BY last_activity_at DESC, updated_at DESC, created_at DESC, id DESC"
            ),
            &[&parent_id],
        )
    }

    fn child_counts(&mut self, ids: &[String]) -> Result<HashMap<String, i64>> {
        let mut out = HashMap::new();
        for chunk in id_chunks(ids) {
            let rows = self.conn.query(
                "SELECT parent_task_id, COUNT(*) FROM tasks \
                 WHERE parent_task_id = ANY($1) GROUP BY parent_task_id",
                &[&chunk],
            )?;
            for row in &rows {
                out.insert(column(row, 0)?, column(row, 1)?);
            }
        }
        Ok(out)
    }

    fn run(&mut self, id: &str) -> Result<Option<Run>> {
        let run = self
            .conn
            .query_opt(RUN_SQL, &[&id])?
            .as_ref()
            .map(run_from_row)
            .transpose()?;
        if let (Some(known), Some(run)) = (self.known.as_mut(), &run) {
            known.saw_run(run);
        }
        Ok(run)
    }

    fn runs_of_task(&mut self, task_id: &str) -> Result<Vec<Run>> {
        self.runs(RUNS_OF_TASK_SQL, &[&task_id])
    }

    fn list_runs(&mut self, task_id: &str, filter: &RunFilter) -> Result<Vec<Run>> {
        let status = filter.status.map(|s| s.as_str());
        let limit = sql_limit(filter.limit);
        let (after_queued, after_id) = match &filter.after {
            Some(k) => (Some(k.queued_at.0), Some(k.id.as_str())),
            None => (None, None),
        };
        self.runs(
            LIST_RUNS_SQL,
            &[
                &task_id,
                &status,
                &filter.session_id,
                &limit,
                &after_queued,
                &after_id,
            ],
        )
    }

    fn open_runs_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Run>> {
        let sql = concat!(
            "SELECT ",
            run_columns!(),
            " FROM task_runs WHERE task_id = ANY($1)",
            " AND NOT ",
            finished_run!("status"),
            " ORDER BY queued_at DESC, id DESC"
        );
        let chunks = id_chunks(ids);
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(self.runs(sql, &[chunk])?);
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
        self.conn
            .query_opt(
                concat!(
                    "SELECT id FROM task_runs WHERE session_id = $1",
                    " AND session_token IS NOT DISTINCT FROM $2::TEXT AND ",
                    active_run!("status"),
                    " ORDER BY queued_at DESC, id DESC LIMIT 1"
                ),
                &[&session_id, &token],
            )?
            .as_ref()
            .map(|row| column(row, 0))
            .transpose()
    }

    fn dependencies_of(&mut self, task_id: &str) -> Result<Vec<Dependency>> {
        let rows = self.conn.query(DEPENDENCIES_OF_SQL, &[&task_id])?;
        map_rows(rows, dependency_from_row)
    }

    fn neighbourhood(&mut self, task_id: &str) -> Result<Neighbourhood> {
        let answers = self.conn.query_all(&neighbourhood_queries(&[&task_id]))?;
        self.neighbourhood_from(answers)
    }

    fn task_with_neighbourhood(&mut self, id: &str) -> Result<Option<(Task, Neighbourhood)>> {
        let id: [&(dyn ToSql + Sync); 1] = [&id];
        let mut queries = vec![(self.task_sql(), id.as_slice())];
        queries.extend(neighbourhood_queries(&id));
        let mut answers = self.conn.query_all(&queries)?;
        let task_rows = answers.remove(0);
        let Some(task) = self.task_from(task_rows.into_iter().next())? else {
            return Ok(None);
        };
        Ok(Some((task, self.neighbourhood_from(answers)?)))
    }

    fn lease_view(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        run_id: &str,
        around: bool,
    ) -> Result<LeaseView> {
        self.flush_marks_of_previous_item()?;
        let session: [&(dyn ToSql + Sync); 2] = [&session_id, &token];
        let id: [&(dyn ToSql + Sync); 1] = [&run_id];
        let [task, task_with_flags, runs, dependencies, dependents] = &*OF_RUNS_TASK;
        let task = self.with_flags_if_writer(task, task_with_flags);
        // With the neighbourhood, the run is among the task's runs; without, it is read alone.
        let mut queries: Vec<(&str, Params<'_>)> =
            vec![(ACTIVE_RUNS_OF_SESSION_SQL, &session), (task, &id)];
        if around {
            queries.extend([
                (runs.as_str(), &id[..]),
                (dependencies, &id),
                (dependents, &id),
            ]);
        } else {
            queries.push((RUN_SQL, &id));
        }
        let mut answers = self.conn.query_all(&queries)?;
        let active = self.runs_from(answers.remove(0))?;
        let task = self.task_from(answers.remove(0).into_iter().next())?;
        let (run, around) = if around {
            let around = self.neighbourhood_from(answers)?;
            let run = around.runs.iter().find(|r| r.id == run_id).cloned();
            (run, task.is_some().then_some(around))
        } else {
            (self.runs_from(answers.remove(0))?.into_iter().next(), None)
        };
        Ok(LeaseView {
            active,
            run,
            task,
            around,
        })
    }

    fn claim_view(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        heads: Option<(&[String], Priority)>,
    ) -> Result<(Vec<Run>, Vec<Run>)> {
        self.flush_marks_of_previous_item()?;
        let session: [&(dyn ToSql + Sync); 2] = [&session_id, &token];
        let (audiences, below) = match heads {
            Some((audiences, min_priority)) => (audiences, min_priority.rank() - 1),
            None => (&[][..], 0),
        };
        let heads = heads_params(audiences, &below)?;
        let mut queries: Vec<(&str, Params<'_>)> = vec![(ACTIVE_RUNS_OF_SESSION_SQL, &session)];
        if !audiences.is_empty() {
            queries.push((CLAIM_CLASS_HEADS_SQL, &heads));
        }
        let mut answers = self.conn.query_all(&queries)?;
        let active = self.runs_from(answers.remove(0))?;
        let heads = answers.pop().unwrap_or_default();
        Ok((active, self.heads_from(heads)?))
    }

    fn dependencies_of_tasks(&mut self, ids: &[String]) -> Result<Vec<Dependency>> {
        let sql = concat!(
            "SELECT ",
            dependency_columns!(),
            " FROM task_dependencies WHERE task_id = ANY($1)",
            " ORDER BY created_at, depends_on_task_id, task_id"
        );
        let chunks = id_chunks(ids);
        let mut out = Vec::new();
        for chunk in &chunks {
            out.extend(map_rows(
                self.conn.query(sql, &[chunk])?,
                dependency_from_row,
            )?);
        }
        if chunks.len() > 1 {
            out.sort_by(dependency_order);
        }
        Ok(out)
    }

    fn dependents_of(&mut self, task_id: &str) -> Result<Vec<String>> {
        let rows = self.conn.query(DEPENDENTS_OF_SQL, &[&task_id])?;
        map_rows(rows, |row| column(row, 0))
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
                " FROM task_events WHERE task_id = $1 AND sequence > $2",
                " ORDER BY sequence DESC LIMIT $3::BIGINT"
            )
        } else {
            concat!(
                "SELECT ",
                event_columns!(),
                " FROM task_events WHERE task_id = $1 AND sequence > $2",
                " ORDER BY sequence ASC LIMIT $3::BIGINT"
            )
        };
        let rows = self
            .conn
            .query(sql, &[&task_id, &after_sequence, &sql_limit(limit)])?;
        map_rows(rows, event_from_row)
    }

    fn idempotency_record(&mut self, key: &str, origin: &Ref) -> Result<Option<IdempotencyRecord>> {
        self.conn
            .query_opt(
                "SELECT key, origin_kind, origin_ref, task_id, run_id, created_at \
                 FROM run_idempotency WHERE key = $1 AND origin_kind = $2 AND origin_ref = $3",
                &[&key, &origin.kind, &origin.reference],
            )?
            .as_ref()
            .map(idempotency_from_row)
            .transpose()
    }

    fn agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Option<AgentSessionRecord>> {
        self.conn
            .query_opt(
                "SELECT session_id, agent_name, first_seen_at, last_seen_at, token_name \
                 FROM agent_sessions WHERE token_name = $2 AND session_id = $1",
                &[&session_id, &token.unwrap_or("")],
            )?
            .as_ref()
            .map(agent_session_from_row)
            .transpose()
    }

    fn claim_class_heads(
        &mut self,
        audiences: &[String],
        min_priority: Priority,
    ) -> Result<Vec<Run>> {
        let below = min_priority.rank() - 1;
        let rows = self
            .conn
            .query(CLAIM_CLASS_HEADS_SQL, &heads_params(audiences, &below)?)?;
        self.heads_from(rows)
    }

    fn active_runs_of_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
    ) -> Result<Vec<Run>> {
        self.runs(ACTIVE_RUNS_OF_SESSION_SQL, &[&session_id, &token])
    }

    fn expired_leases(&mut self, now: Ts, limit: i64) -> Result<Vec<Run>> {
        self.runs(
            concat!(
                "SELECT ",
                run_columns!(),
                " FROM task_runs WHERE ",
                active_run!("status"),
                " AND lease_until IS NOT NULL AND lease_until <= $1 \
                 ORDER BY lease_until, id LIMIT $2::BIGINT"
            ),
            // SQLite reads a negative LIMIT as "no limit"; PostgreSQL refuses one.
            &[&now.0, &(limit >= 0).then_some(limit)],
        )
    }

    fn next_lease_deadline(&mut self) -> Result<Option<Ts>> {
        let row = self.conn.query_one(
            concat!(
                "SELECT MIN(lease_until) FROM task_runs WHERE ",
                active_run!("status"),
                " AND lease_until IS NOT NULL"
            ),
            &[],
        )?;
        Ok(column::<Option<i64>>(&row, 0)?.map(Ts))
    }

    fn api_tokens(&mut self) -> Result<Vec<ApiToken>> {
        let rows = self.conn.query(
            concat!(
                "SELECT ",
                token_columns!(),
                " FROM api_tokens ORDER BY name"
            ),
            &[],
        )?;
        map_rows(rows, token_from_row)
    }

    fn api_token(&mut self, token_hash: &str) -> Result<Option<ApiToken>> {
        self.conn
            .query_opt(
                concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM api_tokens WHERE token_hash = $1"
                ),
                &[&token_hash],
            )?
            .as_ref()
            .map(token_from_row)
            .transpose()
    }
}
