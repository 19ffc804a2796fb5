//! `WriteStore` on the writer's connection, always inside the current command's SAVEPOINT (and
//! under the cluster's write lock, so no statement here needs a row lock or a retry).
//!
//! As on SQLite, a task's `last_activity_at` and `latest_event_seq` are raised once per task
//! when the command or item ends (`crate::task_marks`), with one UPDATE that leaves the row alone
//! when it is already there, or within the command's own UPDATE of the task while that is still
//! unsent: every UPDATE of a row is a new version of it, and one that moves `last_activity_at`
//! (indexed) an entry in each of the task's indexes.

use std::fmt::Write as _;

use postgres::types::ToSql;
use tasklane_core::model::{ApiToken, Dependency, IdempotencyRecord, NewEvent, Run, Task};
use tasklane_core::store::WriteStore;
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::rows::{
    changed_run_columns, changed_task_columns, param_refs, payload_text, run_columns, run_params,
    task_columns, task_param, task_params, Param,
};
use super::{Db, ItemStart};
use crate::counter_deltas::CountedStore;
use crate::sqlite::status_sets::finished_run;

/// `UPDATE <table> SET <changed columns> WHERE id = $1`, numbering the changed columns' parameters
/// `$2, $3, …` (PostgreSQL must see every parameter it is given), and the parameters to bind.
/// `extra` adds SQL after a column's assignment, given the column's parameter number.
fn partial_update<'p>(
    table: &str,
    changed: &[(&'static str, usize)],
    params: &'p [Param<'_>],
    extra: impl Fn(usize, usize) -> Option<String>,
) -> (String, Vec<&'p (dyn ToSql + Sync)>) {
    let sql = partial_update_sql(table, changed, "", extra);
    (sql, partial_update_params(changed, params))
}

/// The parameters [`partial_update`] binds: the id, then the changed columns'.
fn partial_update_params<'p>(
    changed: &[(&'static str, usize)],
    params: &'p [Param<'_>],
) -> Vec<&'p (dyn ToSql + Sync)> {
    let all = param_refs(params);
    std::iter::once(all[0])
        .chain(changed.iter().map(|(_, idx)| all[idx - 1]))
        .collect()
}

/// The SQL of [`partial_update`], with `more` (assignments) after the changed columns'.
fn partial_update_sql(
    table: &str,
    changed: &[(&'static str, usize)],
    more: &str,
    extra: impl Fn(usize, usize) -> Option<String>,
) -> String {
    let mut sql = format!("UPDATE {table} SET ");
    for (i, (column, idx)) in changed.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        let n = i + 2;
        let _ = write!(sql, "{column} = ${n}");
        if let Some(more) = extra(*idx, n) {
            sql.push_str(&more);
        }
    }
    sql.push_str(more);
    sql.push_str(" WHERE id = $1");
    sql
}

/// A task UPDATE of `changed` raises `last_activity_at` with `updated_at`; with `marks`, the
/// parameter numbers of the command's owed sequence and activity, it raises both to those too
/// (`GREATEST` ignores a NULL).
fn task_update_sql(changed: &[(&'static str, usize)], marks: Option<(usize, usize)>) -> String {
    let writes_updated_at = task_param::writes_updated_at(changed);
    let owed_activity = marks.map(|(_, at)| format!(", ${at}")).unwrap_or_default();
    let mut more = String::new();
    if let Some((seq, at)) = marks {
        let _ = write!(
            more,
            ", latest_event_seq = GREATEST(latest_event_seq, ${seq})"
        );
        if !writes_updated_at {
            let _ = write!(
                more,
                ", last_activity_at = GREATEST(last_activity_at, ${at})"
            );
        }
    }
    partial_update_sql("tasks", changed, &more, |idx, n| {
        (idx == task_param::UPDATED_AT).then(|| {
            format!(", last_activity_at = GREATEST(last_activity_at, ${n}{owed_activity})")
        })
    })
}

impl Db<'_> {
    /// Writes the command's task marks, deferred: they travel with the next statement that
    /// waits for an answer. `GREATEST` ignores a NULL, so one statement serves a mark with
    /// either part missing.
    ///
    /// A task the command updated whose UPDATE is still unsent gets its marks in that UPDATE
    /// instead (`Conn::amend_unsent`): one statement and one row version less. Nothing between
    /// the UPDATE and the end of the command reads the two columns back from the database.
    pub(crate) fn flush_task_marks(&mut self) -> Result<()> {
        let updates = std::mem::take(&mut self.task_updates);
        for owed in self.marks.take() {
            let activity = owed.activity.map(|at| at.0);
            if let Some(update) = updates.iter().rev().find(|u| u.task_id == owed.task_id) {
                let n = update.changed.len() + 1;
                let sql = task_update_sql(&update.changed, Some((n + 1, n + 2)));
                let marks: [&(dyn ToSql + Sync); 2] = [&owed.latest_seq, &activity];
                if self.conn.amend_unsent(update.statement, &sql, &marks)? {
                    continue;
                }
            }
            self.conn.execute_later(
                "UPDATE tasks SET latest_event_seq = GREATEST(latest_event_seq, $2), \
                 last_activity_at = GREATEST(last_activity_at, $3) \
                 WHERE id = $1 AND (latest_event_seq < $2 OR last_activity_at < $3)",
                &[&owed.task_id, &owed.latest_seq, &activity],
            )?;
        }
        Ok(())
    }
}

impl WriteStore for Db<'_> {
    fn insert_task(&mut self, task: &Task) -> Result<()> {
        // DO NOTHING + a change count tells a duplicate id apart without parsing error codes;
        // other constraint failures (a missing parent) still surface as errors.
        let params = task_params(task);
        let inserted = self.conn.execute(
            concat!(
                "INSERT INTO tasks (",
                task_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,",
                " $17, $18, $19, $20, $21, $22, $23, $24, $25, GREATEST($26::BIGINT, $24::BIGINT), $27, $28, $29)",
                " ON CONFLICT (id) DO NOTHING"
            ),
            &param_refs(&params),
        )?;
        if inserted == 0 {
            return Err(Error::conflict(
                "duplicate_task",
                format!("task {} already exists", task.id),
            ));
        }
        self.count_inserted_task(task);
        Ok(())
    }

    fn update_task(&mut self, task: &Task) -> Result<()> {
        // Only the columns that changed are written (as on SQLite): an UPDATE that leaves every
        // indexed column alone can stay a heap-only update, and tasks carry many indexes.
        let current = self.stored_task(&task.id)?;
        let changed = changed_task_columns(&current, task);
        if changed.is_empty() {
            return Ok(());
        }
        let params = task_params(task);
        let statement = self.conn.execute_later(
            &task_update_sql(&changed, None),
            &partial_update_params(&changed, &params),
        )?;
        if task_param::writes_updated_at(&changed) {
            self.marks.activity_written(&task.id, task.updated_at);
        }
        self.task_updates.push(super::TaskUpdate {
            task_id: task.id.clone(),
            statement,
            changed,
        });
        self.count_updated_task(&current, task)
    }

    fn delete_task(&mut self, id: &str) -> Result<()> {
        // Runs, edges in both directions, events and idempotency records go by ON DELETE CASCADE.
        self.count_deleted_task(id)?;
        self.conn
            .execute("DELETE FROM tasks WHERE id = $1", &[&id])?;
        Ok(())
    }

    fn insert_run(&mut self, run: &Run) -> Result<()> {
        let params = run_params(run);
        self.conn.execute_later(
            concat!(
                "INSERT INTO task_runs (",
                run_columns!(),
                ", claim_caps) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,",
                " $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29,",
                " $30)"
            ),
            &param_refs(&params),
        )?;
        self.marks.raise(&run.task_id, run.activity_at(), None);
        self.count_inserted_run(run)
    }

    fn update_run(&mut self, run: &Run) -> Result<()> {
        // As for tasks, only the changed columns are written.
        let current = self.stored_run(&run.id)?;
        let changed = changed_run_columns(&current, run);
        self.marks.raise(&run.task_id, run.activity_at(), None);
        if changed.is_empty() {
            return Ok(());
        }
        let params = run_params(run);
        let (sql, bound) = partial_update("task_runs", &changed, &params, |_, _| None);
        self.conn.execute_later(&sql, &bound)?;
        self.count_updated_run(&current, run)
    }

    fn set_claim_audience(&mut self, task_id: &str, audience: Option<&str>) -> Result<()> {
        self.conn.execute_later(
            concat!(
                "UPDATE task_runs SET claim_audience = $2 \
                 WHERE task_id = $1 AND claim_audience IS DISTINCT FROM $2::TEXT AND NOT ",
                finished_run!("status")
            ),
            &[&task_id, &audience],
        )?;
        Ok(())
    }

    fn insert_dependency(&mut self, dep: &Dependency) -> Result<()> {
        let inserted = self.conn.execute(
            "INSERT INTO task_dependencies (task_id, depends_on_task_id, kind, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                &dep.task_id,
                &dep.depends_on_task_id,
                &dep.kind,
                &dep.created_at.0,
            ],
        )?;
        if inserted == 0 {
            return Err(Error::conflict(
                "duplicate_dependency",
                format!(
                    "dependency edge {} -> {} already exists",
                    dep.task_id, dep.depends_on_task_id
                ),
            ));
        }
        self.add_dependency_count(&dep.task_id, 1)
    }

    fn delete_dependency(&mut self, task_id: &str, depends_on_task_id: &str) -> Result<bool> {
        let deleted = self.conn.execute(
            "DELETE FROM task_dependencies WHERE task_id = $1 AND depends_on_task_id = $2",
            &[&task_id, &depends_on_task_id],
        )?;
        if deleted > 0 {
            self.add_dependency_count(task_id, -(deleted as i64))?;
        }
        Ok(deleted > 0)
    }

    fn append_event(&mut self, event: &NewEvent) -> Result<i64> {
        // Sent with the next statement that needs an answer: the transaction numbers its events
        // itself (see `Sequence`).
        let sequence = self.next_sequence()?;
        let id = event.recorded_id(self.events_by_sequence.then_some(sequence));
        self.conn.execute_later(
            "INSERT INTO task_events (id, task_id, run_id, event_type, actor_kind, actor_ref, \
             origin_kind, origin_ref, payload, timestamp, sequence) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &id.as_ref(),
                &event.task_id,
                &event.run_id,
                &event.event_type,
                &event.actor.kind,
                &event.actor.reference,
                &event.origin.kind,
                &event.origin.reference,
                &payload_text(&event.payload),
                &event.timestamp.0,
                &sequence,
            ],
        )?;
        self.marks
            .raise(&event.task_id, event.timestamp, Some(sequence));
        self.appended = Some(self.appended.map_or(sequence, |s| s.max(sequence)));
        Ok(sequence)
    }

    fn insert_idempotency_record(&mut self, record: &IdempotencyRecord) -> Result<()> {
        let inserted = self.conn.execute(
            "INSERT INTO run_idempotency (key, origin_kind, origin_ref, task_id, run_id, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &record.key,
                &record.origin.kind,
                &record.origin.reference,
                &record.task_id,
                &record.run_id,
                &record.created_at.0,
            ],
        )?;
        if inserted == 0 {
            return Err(Error::conflict(
                "duplicate_idempotency_key",
                format!(
                    "idempotency key {} is already bound for origin {}/{}",
                    record.key, record.origin.kind, record.origin.reference
                ),
            ));
        }
        Ok(())
    }

    fn insert_api_token(&mut self, token: &ApiToken) -> Result<()> {
        let inserted = self.conn.execute(
            "INSERT INTO api_tokens (name, role, token_hash, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING",
            &[
                &token.name,
                &token.role.as_str(),
                &token.token_hash,
                &token.created_at.0,
            ],
        )?;
        if inserted == 0 {
            return Err(Error::conflict(
                "duplicate_token",
                format!("a token named {} already exists", token.name),
            ));
        }
        Ok(())
    }

    fn revoke_api_token(&mut self, name: &str) -> Result<bool> {
        // The row goes: a revoked token must never authenticate again, and its name becomes free.
        Ok(self
            .conn
            .execute("DELETE FROM api_tokens WHERE name = $1", &[&name])?
            > 0)
    }

    fn touch_api_token(&mut self, token_hash: &str, at: Ts) -> Result<()> {
        self.conn.execute_later(
            "UPDATE api_tokens SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $2) \
             WHERE token_hash = $1",
            &[&token_hash, &at.0],
        )?;
        Ok(())
    }

    fn touch_agent_session(
        &mut self,
        session_id: &str,
        token: Option<&str>,
        agent_name: Option<&str>,
        now: Ts,
    ) -> Result<()> {
        // A call without an agent name keeps the name an earlier call announced.
        self.conn.execute_later(
            "INSERT INTO agent_sessions \
             (token_name, session_id, agent_name, first_seen_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (token_name, session_id) DO UPDATE SET \
             agent_name = COALESCE(EXCLUDED.agent_name, agent_sessions.agent_name), \
             last_seen_at = GREATEST(agent_sessions.last_seen_at, EXCLUDED.last_seen_at)",
            &[&token.unwrap_or(""), &session_id, &agent_name, &now.0],
        )?;
        Ok(())
    }

    fn begin_item(&mut self) -> Result<()> {
        if self.item_start.is_some() {
            return Err(Error::Storage("an item is already open".to_string()));
        }
        // Marks owed from before the item are written outside it, so that the item's own marks
        // are all a rollback has to forget.
        self.flush_task_marks()?;
        self.conn.batch_later("SAVEPOINT item".to_string())?;
        self.item_start = Some(ItemStart {
            appended: self.appended,
            deltas: std::mem::take(&mut self.deltas),
            sequence: self.sequence.clone(),
        });
        Ok(())
    }

    fn end_item(&mut self, keep: bool) -> Result<()> {
        let Some(start) = self.item_start.take() else {
            return Err(Error::Storage("no item is open".to_string()));
        };
        // With the connection gone the whole transaction is: no item of it may be reported as
        // done.
        if self.conn.is_closed() {
            return Err(Error::Unavailable(
                "the database connection was lost".to_string(),
            ));
        }
        let item_deltas = std::mem::replace(&mut self.deltas, start.deltas);
        if keep {
            self.deltas.merge(item_deltas);
            self.flush_task_marks()?;
            // Bare, an error in the item's writes runs the whole batch again: nothing waits.
            if self.bare {
                return self.conn.batch_later("RELEASE item".to_string());
            }
            return self.conn.batch("RELEASE item");
        }
        // A rolled-back sequence must never be published; its numbers go to the next events.
        self.appended = start.appended;
        self.marks.clear();
        self.task_updates.clear();
        self.sequence = start.sequence;
        if let Some(known) = self.known.as_mut() {
            known.forget();
        }
        self.conn.batch_undoing("ROLLBACK TO item; RELEASE item")
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
