//! What the writer's current command owes its tasks' storage-maintained columns:
//! `last_activity_at` (raised by every run written and event appended) and `latest_event_seq`.
//!
//! One operation raises a task's activity several times (the run written, each event appended),
//! and each raise written at once would write the task row again: on SQLite its list and inbox
//! index entries, on PostgreSQL a new version of the row and, when the activity moves, an entry
//! in every one of its indexes. So the raises are collected here and each backend writes them
//! once per task when the command (or an item of it) ends. Until then reads on the writer apply
//! them to a task read back ([`TaskMarks::overlay`]); reads of several tasks, whose order
//! depends on the activity, write them first.

use tasklane_core::model::Task;
use tasklane_core::time::Ts;

/// What the current command owes one task.
#[derive(Clone, Debug)]
struct TaskMark {
    task_id: String,
    activity: Ts,
    latest_seq: Option<i64>,
    /// How far an update of the task in this command already raised `last_activity_at` (an
    /// update that writes `updated_at` raises it too): a mark no later needs no write.
    activity_written: Option<Ts>,
}

/// One task's owed write: raise `last_activity_at` to `activity` unless the command already
/// did, and `latest_event_seq` to `latest_seq`. Either may be nothing to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owed {
    pub(crate) task_id: String,
    pub(crate) activity: Option<Ts>,
    pub(crate) latest_seq: Option<i64>,
}

/// The marks of the writer's current command.
#[derive(Debug, Default)]
pub(crate) struct TaskMarks(Vec<TaskMark>);

impl TaskMarks {
    /// Records that `task_id` saw activity at `at` (and an event `seq`).
    pub(crate) fn raise(&mut self, task_id: &str, at: Ts, seq: Option<i64>) {
        let m = self.mark(task_id, at);
        m.activity = m.activity.max(at);
        m.latest_seq = m.latest_seq.max(seq);
    }

    /// Records that an update of `task_id` raised its `last_activity_at` to at least `at`.
    pub(crate) fn activity_written(&mut self, task_id: &str, at: Ts) {
        let m = self.mark(task_id, at);
        m.activity_written = m.activity_written.max(Some(at));
    }

    /// The task's mark, begun at activity `at` if it has none yet.
    fn mark(&mut self, task_id: &str, at: Ts) -> &mut TaskMark {
        let i = match self.0.iter().position(|m| m.task_id == task_id) {
            Some(i) => i,
            None => {
                self.0.push(TaskMark {
                    task_id: task_id.to_string(),
                    activity: at,
                    latest_seq: None,
                    activity_written: None,
                });
                self.0.len() - 1
            }
        };
        &mut self.0[i]
    }

    /// Applies the marks to a task read back in the command.
    pub(crate) fn overlay(&self, task: &mut Task) {
        if let Some(m) = self.0.iter().find(|m| m.task_id == task.id) {
            task.last_activity_at = task.last_activity_at.max(m.activity);
            if let Some(seq) = m.latest_seq {
                task.latest_event_seq = task.latest_event_seq.max(seq);
            }
        }
    }

    /// Forgets the marks (their writes were rolled back).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Takes what is owed, to be written now. Activity never moves backwards, so a backend
    /// writes each only where the row is behind it.
    pub(crate) fn take(&mut self) -> Vec<Owed> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|m| Owed {
                activity: m
                    .activity_written
                    .is_none_or(|at| at < m.activity)
                    .then_some(m.activity),
                latest_seq: m.latest_seq,
                task_id: m.task_id,
            })
            .filter(|owed| owed.activity.is_some() || owed.latest_seq.is_some())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Owed, TaskMarks};
    use tasklane_core::time::Ts;

    #[test]
    fn a_task_owes_its_latest_activity_and_sequence_once() {
        let mut marks = TaskMarks::default();
        marks.raise("a", Ts(10), None);
        marks.raise("a", Ts(30), Some(5));
        marks.raise("a", Ts(20), Some(4));
        marks.raise("b", Ts(7), None);
        assert_eq!(
            marks.take(),
            vec![
                Owed {
                    task_id: "a".into(),
                    activity: Some(Ts(30)),
                    latest_seq: Some(5)
                },
                Owed {
                    task_id: "b".into(),
                    activity: Some(Ts(7)),
                    latest_seq: None
                },
            ]
        );
        assert_eq!(marks.take(), vec![]);
    }

    #[test]
    fn activity_an_update_already_wrote_is_not_owed() {
        let mut marks = TaskMarks::default();
        marks.raise("a", Ts(10), Some(3));
        marks.activity_written("a", Ts(10));
        marks.raise("b", Ts(10), None);
        marks.activity_written("b", Ts(9));
        marks.activity_written("c", Ts(4));
        assert_eq!(
            marks.take(),
            vec![
                Owed {
                    task_id: "a".into(),
                    activity: None,
                    latest_seq: Some(3)
                },
                Owed {
                    task_id: "b".into(),
                    activity: Some(Ts(10)),
                    latest_seq: None
                },
            ]
        );
    }
}
