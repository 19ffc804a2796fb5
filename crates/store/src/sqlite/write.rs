//! `WriteStore` on the writer's connection, always inside the current command's SAVEPOINT.

use tasklane_core::model::{ApiToken, Dependency, IdempotencyRecord, NewEvent, Run, Task};
use tasklane_core::store::WriteStore;
use tasklane_core::time::Ts;
use tasklane_core::{Error, Result};

use super::error::sql_err;
use crate::counter_deltas::CountedStore;
use crate::task_marks::Owed;
use std::fmt::Write as _;

use super::rows::{
    bind_run, bind_task, changed_run_columns, changed_task_columns, payload_text, run_columns,
    task_columns, task_param,
};
use super::status_sets::finished_run;
use super::Db;

/// The command's state when an item began, restored if the item is rolled back.
#[derive(Debug)]
pub(super) struct ItemStart {
    appended: Option<i64>,
    deltas: tasklane_core::observe::counters::CounterDeltas,
}

/// A task UPDATE of the current command not written yet: the task as last written by
/// `update_task`, and every column any of the command's updates changed.
#[derive(Debug)]
pub(super) struct UnwrittenTask {
    task: Task,
    changed: Vec<(&'static str, usize)>,
}

/// Parameter numbers after the task's columns (`bind_task` binds `?1`..`?29`): the owed
/// activity and sequence of a task's marks.
const OWED_ACTIVITY: usize = 30;
const OWED_SEQ: usize = 31;

impl Db<'_> {
    /// Writes the command's task UPDATEs and marks (`crate::task_marks`), one statement per
    /// task: a claim changed its task's current run, then raised its activity and sequence with
    /// the event, three writes of the same row that are one now.
    ///
    /// A task with marks but no UPDATE is written only where the row is behind them;
    /// `latest_event_seq` is in no index, so it is set on its own, and an UPDATE that names
    /// `last_activity_at` rewrites its index entries whether or not the value moves.
    pub(super) fn flush_task_writes(&mut self) -> Result<()> {
        let mut owed = self.marks.take();
        for unwritten in std::mem::take(&mut self.unwritten_tasks) {
            let marks = owed
                .iter()
                .position(|o| o.task_id == unwritten.task.id)
                .map(|i| owed.swap_remove(i));
            self.write_task_update(&unwritten, marks)?;
        }
        for owed in owed {
            let writes = [
                (
                    "UPDATE tasks SET latest_event_seq = ?2 WHERE id = ?1 AND latest_event_seq < ?2",
                    owed.latest_seq,
                ),
                (
                    "UPDATE tasks SET last_activity_at = ?2 WHERE id = ?1 AND last_activity_at < ?2",
                    owed.activity.map(|at| at.0),
                ),
            ];
            for (sql, value) in writes {
                if let Some(value) = value {
                    let mut stmt = self.conn.prepare_cached(sql).map_err(sql_err)?;
                    stmt.execute(rusqlite::params![owed.task_id, value])
                        .map_err(sql_err)?;
                }
            }
        }
        Ok(())
    }

    /// `UPDATE tasks` of the changed columns, raising `last_activity_at` with `updated_at` and
    /// to the owed activity, and `latest_event_seq` to the owed sequence.
    fn write_task_update(&mut self, unwritten: &UnwrittenTask, marks: Option<Owed>) -> Result<()> {
        let (activity, seq) = marks.map_or((None, None), |m| (m.activity, m.latest_seq));
        let mut raises = Vec::new();
        if task_param::writes_updated_at(&unwritten.changed) {
            raises.push(format!("?{}", task_param::UPDATED_AT));
        }
        if activity.is_some() {
            raises.push(format!("?{OWED_ACTIVITY}"));
        }
        let mut sql = String::from("UPDATE tasks SET ");
        for (i, (column, idx)) in unwritten.changed.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            let _ = write!(sql, "{column} = ?{idx}");
        }
        if !raises.is_empty() {
            let _ = write!(
                sql,
                ", last_activity_at = MAX(last_activity_at, {})",
                raises.join(", ")
            );
        }
        if seq.is_some() {
            let _ = write!(
                sql,
                ", latest_event_seq = MAX(latest_event_seq, ?{OWED_SEQ})"
            );
        }
        sql.push_str(" WHERE id = ?1");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
        bind_task(&mut stmt, &unwritten.task)?;
        // Unused numbers are left unbound: SQLite counts parameters up to the highest one used.
        if let Some(at) = activity {
            stmt.raw_bind_parameter(OWED_ACTIVITY, at.0)
                .map_err(sql_err)?;
        }
        if let Some(seq) = seq {
            stmt.raw_bind_parameter(OWED_SEQ, seq).map_err(sql_err)?;
        }
        stmt.raw_execute().map_err(sql_err)?;
        Ok(())
    }

    /// Applies the command's unwritten UPDATE of `task`, if any, to the row read back.
    pub(super) fn overlay_unwritten(&self, task: &mut Task) {
        let Some(unwritten) = self.unwritten_tasks.iter().find(|u| u.task.id == task.id) else {
            return;
        };
        let (activity, seq) = (task.last_activity_at, task.latest_event_seq);
        *task = unwritten.task.clone();
        task.latest_event_seq = seq;
        task.last_activity_at = if task_param::writes_updated_at(&unwritten.changed) {
            activity.max(unwritten.task.updated_at)
        } else {
            activity
        };
    }
}

impl WriteStore for Db<'_> {
    fn insert_task(&mut self, task: &Task) -> Result<()> {
        // DO NOTHING + a change count tells a duplicate id apart without parsing error codes;
        // other constraint failures (a missing parent) still surface as errors.
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "INSERT INTO tasks (",
                task_columns!(),
                ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,",
                " ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, MAX(?26, ?24), ?27, ?28, ?29)",
                " ON CONFLICT (id) DO NOTHING"
            ))
            .map_err(sql_err)?;
        bind_task(&mut stmt, task)?;
        if stmt.raw_execute().map_err(sql_err)? == 0 {
            return Err(Error::conflict(
                "duplicate_task",
                format!("task {} already exists", task.id),
            ));
        }
        self.count_inserted_task(task);
        Ok(())
    }

    fn update_task(&mut self, task: &Task) -> Result<()> {
        // Only the columns that changed are written: SQLite maintains every index (and partial
        // index) that mentions a column of the SET list, whether or not its value changed, and
        // tasks carry many indexes. The UPDATE waits for the end of the command or item
        // (`flush_task_writes`), which writes it with the task's marks as one statement; reads of
        // the task before then see it (`overlay_unwritten`), and reads of several tasks write it
        // first.
        let current = self.stored_task(&task.id)?;
        let changed = changed_task_columns(&current, task);
        if changed.is_empty() {
            return Ok(());
        }
        if task_param::writes_updated_at(&changed) {
            self.marks.activity_written(&task.id, task.updated_at);
        }
        match self
            .unwritten_tasks
            .iter_mut()
            .find(|u| u.task.id == task.id)
        {
            Some(unwritten) => {
                unwritten.task = task.clone();
                for column in changed {
                    if !unwritten.changed.contains(&column) {
                        unwritten.changed.push(column);
                    }
                }
            }
            None => self.unwritten_tasks.push(UnwrittenTask {
                task: task.clone(),
                changed,
            }),
        }
        self.count_updated_task(&current, task)
    }

    fn delete_task(&mut self, id: &str) -> Result<()> {
        // Runs, edges in both directions, events and idempotency records go by ON DELETE CASCADE.
        self.flush_task_writes()?;
        self.count_deleted_task(id)?;
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM tasks WHERE id = ?1")
            .map_err(sql_err)?;
        stmt.execute([id]).map_err(sql_err)?;
        Ok(())
    }

    fn insert_run(&mut self, run: &Run) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "INSERT INTO task_runs (",
                run_columns!(),
                ", claim_caps) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,",
                " ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
            ))
            .map_err(sql_err)?;
        bind_run(&mut stmt, run)?;
        stmt.raw_execute().map_err(sql_err)?;
        self.count_inserted_run(run)?;
        self.marks.raise(&run.task_id, run.activity_at(), None);
        Ok(())
    }

    fn update_run(&mut self, run: &Run) -> Result<()> {
        // As for tasks, only the changed columns are written: a SET list naming every column
        // makes SQLite rewrite every index of task_runs and re-check its foreign key on each
        // claim, heartbeat and completion.
        let current = self.stored_run(&run.id)?;
        let changed = changed_run_columns(&current, run);
        if !changed.is_empty() {
            let mut sql = String::from("UPDATE task_runs SET ");
            for (i, (column, idx)) in changed.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let _ = write!(sql, "{column} = ?{idx}");
            }
            sql.push_str(" WHERE id = ?1");
            let mut stmt = self.conn.prepare_cached(&sql).map_err(sql_err)?;
            bind_run(&mut stmt, run)?;
            stmt.raw_execute().map_err(sql_err)?;
            self.count_updated_run(&current, run)?;
        }
        self.marks.raise(&run.task_id, run.activity_at(), None);
        Ok(())
    }

    fn set_claim_audience(&mut self, task_id: &str, audience: Option<&str>) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "UPDATE task_runs SET claim_audience = ?2 \
                 WHERE task_id = ?1 AND claim_audience IS NOT ?2 AND NOT ",
                finished_run!("status")
            ))
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![task_id, audience])
            .map_err(sql_err)?;
        Ok(())
    }

    fn insert_dependency(&mut self, dep: &Dependency) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO task_dependencies (task_id, depends_on_task_id, kind, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )
            .map_err(sql_err)?;
        let inserted = stmt
            .execute(rusqlite::params![
                dep.task_id,
                dep.depends_on_task_id,
                dep.kind,
                dep.created_at.0
            ])
            .map_err(sql_err)?;
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "DELETE FROM task_dependencies WHERE task_id = ?1 AND depends_on_task_id = ?2",
            )
            .map_err(sql_err)?;
        let deleted = stmt
            .execute([task_id, depends_on_task_id])
            .map_err(sql_err)?;
        if deleted > 0 {
            self.add_dependency_count(task_id, -(deleted as i64))?;
        }
        Ok(deleted > 0)
    }

    fn append_event(&mut self, event: &NewEvent) -> Result<i64> {
        // Named by sequence: the one AUTOINCREMENT would give it (the highest ever handed out,
        // plus one), given explicitly so that the id is known before the insert. After the
        // command's first event that is the last one it appended (a rolled-back item restores
        // `appended` with the rows), so a claim-batch reads `sqlite_sequence` once, not per run.
        let named = if self.events_by_sequence {
            Some(match self.appended {
                Some(last) => last + 1,
                None => super::last_sequence(self.conn)? + 1,
            })
        } else {
            None
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO task_events (id, task_id, run_id, event_type, actor_kind, actor_ref, \
                 origin_kind, origin_ref, payload, timestamp, sequence) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![
            event.recorded_id(named),
            event.task_id,
            event.run_id,
            event.event_type,
            event.actor.kind,
            event.actor.reference,
            event.origin.kind,
            event.origin.reference,
            payload_text(&event.payload),
            event.timestamp.0,
            named,
        ])
        .map_err(sql_err)?;
        // `sequence` is the rowid alias, so the rowid just inserted is the sequence.
        let sequence = self.conn.last_insert_rowid();
        debug_assert!(named.is_none_or(|named| named == sequence));

        self.marks
            .raise(&event.task_id, event.timestamp, Some(sequence));

        self.appended = Some(self.appended.map_or(sequence, |s| s.max(sequence)));
        Ok(sequence)
    }

    fn insert_idempotency_record(&mut self, record: &IdempotencyRecord) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO run_idempotency (key, origin_kind, origin_ref, task_id, run_id, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
            )
            .map_err(sql_err)?;
        let inserted = stmt
            .execute(rusqlite::params![
                record.key,
                record.origin.kind,
                record.origin.reference,
                record.task_id,
                record.run_id,
                record.created_at.0,
            ])
            .map_err(sql_err)?;
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO api_tokens (name, role, token_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
            )
            .map_err(sql_err)?;
        let inserted = stmt
            .execute(rusqlite::params![
                token.name,
                token.role.as_str(),
                token.token_hash,
                token.created_at.0
            ])
            .map_err(sql_err)?;
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
        let mut stmt = self
            .conn
            .prepare_cached("DELETE FROM api_tokens WHERE name = ?1")
            .map_err(sql_err)?;
        Ok(stmt.execute([name]).map_err(sql_err)? > 0)
    }

    fn touch_api_token(&mut self, token_hash: &str, at: Ts) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE api_tokens SET last_used_at = MAX(COALESCE(last_used_at, 0), ?2) \
                 WHERE token_hash = ?1",
            )
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![token_hash, at.0])
            .map_err(sql_err)?;
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
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO agent_sessions \
                 (token_name, session_id, agent_name, first_seen_at, last_seen_at) \
                 VALUES (?1, ?2, ?3, ?4, ?4) \
                 ON CONFLICT (token_name, session_id) DO UPDATE SET \
                 agent_name = COALESCE(excluded.agent_name, agent_name), \
                 last_seen_at = MAX(last_seen_at, excluded.last_seen_at)",
            )
            .map_err(sql_err)?;
        stmt.execute(rusqlite::params![
            token.unwrap_or(""),
            session_id,
            agent_name,
            now.0
        ])
        .map_err(sql_err)?;
        Ok(())
    }

    fn begin_item(&mut self) -> Result<()> {
        if self.item_start.is_some() {
            return Err(Error::Storage("an item is already open".to_string()));
        }
        // Writes owed from before the item are made outside it, so that the item's own are all
        // a rollback has to forget.
        self.flush_task_writes()?;
        self.exec_cached("SAVEPOINT item")?;
        self.item_start = Some(ItemStart {
            appended: self.appended,
            deltas: std::mem::take(&mut self.deltas),
        });
        Ok(())
    }

    fn end_item(&mut self, keep: bool) -> Result<()> {
        let Some(start) = self.item_start.take() else {
            return Err(Error::Storage("no item is open".to_string()));
        };
        // After some failures (disk full, I/O error) SQLite has already rolled the whole
        // transaction back: no item of it may be reported as done.
        if self.conn.is_autocommit() {
            return Err(Error::Unavailable(
                "the transaction was rolled back by sqlite".to_string(),
            ));
        }
        let item_deltas = std::mem::replace(&mut self.deltas, start.deltas);
        if keep {
            self.deltas.merge(item_deltas);
            self.flush_task_writes()?;
            self.exec_cached("RELEASE item")
        } else {
            self.appended = start.appended;
            self.marks.clear();
            self.unwritten_tasks.clear();
            if let Some(known) = self.known.as_mut() {
                known.forget();
            }
            self.exec_cached("ROLLBACK TO item")?;
            self.exec_cached("RELEASE item")
        }
    }
}

impl Db<'_> {
    fn exec_cached(&self, sql: &str) -> Result<()> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(sql_err)
    }
}
