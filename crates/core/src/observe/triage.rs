//! `POST /api/tasks/{id}/triage/read|dismiss|archive`. Triage is per
//! caller, records no event and never changes the task, so it cannot un-read itself.

use super::{ObserveWriteStore, TriageRecord};
use crate::error::{Error, Result};
use crate::model::Ref;
use crate::time::Ts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriageAction {
    Read,
    Dismiss,
    Archive,
}

impl TriageAction {
    /// The origin action name (`tasks.<action>`).
    pub fn action_name(self) -> &'static str {
        match self {
            TriageAction::Read => "triage_read",
            TriageAction::Dismiss => "triage_dismiss",
            TriageAction::Archive => "triage_archive",
        }
    }
}

/// Applies `action` for `actor` at `now` and returns the stored state (not the effective one).
/// There is no un-archive: `read` and `dismiss` leave `archived` as it is.
pub fn apply_triage(
    store: &mut dyn ObserveWriteStore,
    task_id: &str,
    actor: &Ref,
    action: TriageAction,
    now: Ts,
) -> Result<TriageRecord> {
    let task = store
        .task(task_id)?
        .ok_or_else(|| Error::task_not_found(task_id))?;
    // Storage keeps last_activity_at at the newest of updated_at, run times and event times.
    let activity = task
        .last_activity_at
        .max(task.updated_at)
        .max(task.created_at);
    let mut record = store
        .triage_record(task_id, actor)?
        .unwrap_or(TriageRecord {
            task_id: task_id.to_string(),
            actor: actor.clone(),
            read: false,
            archived: false,
            dismissed: false,
            last_seen_activity_at: None,
            updated_at: None,
        });
    record.read = true;
    record.dismissed = action == TriageAction::Dismiss;
    record.archived |= action == TriageAction::Archive;
    // Moves forward only, so a repeated call never forgets activity it has already seen.
    record.last_seen_activity_at = Some(
        record
            .last_seen_activity_at
            .map_or(activity, |s| s.max(activity)),
    );
    record.updated_at = Some(now);
    store.put_triage(&record)?;
    Ok(record)
}
