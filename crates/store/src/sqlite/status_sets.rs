//! The status sets that queries and partial indexes test, as SQL fragments written once.
//!
//! Each set is a chain of `=` comparisons joined by `OR`, never `IN (…)`: SQLite evaluates a
//! constant `IN` list of three or more values by building a temporary b-tree every time the
//! expression's program runs, and a partial index's `WHERE` runs on every write of a row of its
//! table, for the old and the new row. On the claim → complete path that was about thirty
//! temporary b-trees per job, a third of the writer's instructions.
//!
//! A partial index serves a query only when the query's `WHERE` repeats the index's predicate, so
//! the migration that creates those indexes and the queries that rely on them take the predicate
//! from the same macro here. `$c` is the status column as the statement names it (`status`,
//! `r.status`).

/// `($c = 'a' OR $c = 'b' OR …)`.
macro_rules! any_of {
    ($c:literal; $first:literal $(, $rest:literal)*) => {
        concat!("(", $c, " = '", $first, "'", $(" OR ", $c, " = '", $rest, "'",)* ")")
    };
}
pub(crate) use any_of;

/// A run that holds or held a claim and is not finished: claimed, starting or running.
macro_rules! active_run {
    ($c:literal) => {
        $crate::sqlite::status_sets::any_of!($c; "claimed", "starting", "running")
    };
}
pub(crate) use active_run;

/// A finished run: completed, failed or canceled (`RunStatus::is_terminal`).
macro_rules! finished_run {
    ($c:literal) => {
        $crate::sqlite::status_sets::any_of!($c; "completed", "failed", "canceled")
    };
}
pub(crate) use finished_run;

/// A run queued or active, the runs the inbox counts as the claimer's: not finished and not
/// waiting for attention.
macro_rules! open_run {
    ($c:literal) => {
        $crate::sqlite::status_sets::any_of!($c; "queued", "claimed", "starting", "running")
    };
}
pub(crate) use open_run;

/// A task whose queued runs may not be claimed: a draft, blocked or canceled task.
macro_rules! unclaimable_task {
    ($c:literal) => {
        $crate::sqlite::status_sets::any_of!($c; "draft", "blocked", "canceled")
    };
}
pub(crate) use unclaimable_task;

/// A task that is not open work of its owner: a draft, a finished task, or a blocked one (the
/// inbox's my_work lane; see `core::observe::inbox::lane_of`).
macro_rules! not_open_work {
    ($c:literal) => {
        $crate::sqlite::status_sets::any_of!(
            $c; "draft", "completed", "failed", "canceled", "blocked"
        )
    };
}
pub(crate) use not_open_work;
