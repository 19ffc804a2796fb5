//! `GET /api/tasks/{id}/timeline` and the items of the SSE stream.
//! Ordered by sequence, which is commit order.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use super::{ActiveRunChip, ObserveStore};
use crate::error::{Error, Result};
use crate::model::{Event, Ref, Run, Task};
use crate::page::{self, Page};
use crate::time::Ts;
use crate::views::TaskReference;

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TimelineItem {
    pub sequence: i64,
    pub event_id: String,
    /// The task as it is now (not when the event happened).
    pub task: TaskReference,
    /// The run as it is now, when the event names one that still exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<ActiveRunChip>,
    pub event_type: String,
    pub actor: Ref,
    pub origin: Ref,
    #[serde(skip_serializing_if = "Value::is_null")]
    pub payload: Value,
    pub timestamp: Ts,
}

/// One SSE frame's data: keys in this order (`sequence`, `type`, `timeline`).
#[derive(Clone, Debug, Serialize)]
pub struct StreamData<'a> {
    pub sequence: i64,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub timeline: &'a TimelineItem,
}

/// One page of the task's own events with sequence > `after`, oldest first, at most `size`.
pub fn timeline(
    store: &mut dyn ObserveStore,
    task_id: &str,
    after: i64,
    size: usize,
) -> Result<Page<TimelineItem>> {
    if store.task(task_id)?.is_none() {
        return Err(Error::task_not_found(task_id));
    }
    let events = store.events_of_task(task_id, after, Some(page::fetch(size)), false)?;
    let Page { items, next_cursor } =
        Page::cut(events, size, |e| page::sequence_cursor(e.sequence));
    Ok(Page {
        items: timeline_items(store, items)?,
        next_cursor,
    })
}

/// Events of the subtree of `root` with sequence > `after`, oldest first, at most `limit`.
pub fn subtree_backlog(
    store: &mut dyn ObserveStore,
    root: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<TimelineItem>> {
    let events = store.subtree_events_after(root, after, limit)?;
    timeline_items(store, events)
}

/// Decorates events with their task and run, with two lookups whatever the number of events.
/// Events whose task is gone (deleted meanwhile) are dropped.
pub fn timeline_items(
    store: &mut dyn ObserveStore,
    events: Vec<Event>,
) -> Result<Vec<TimelineItem>> {
    let task_ids: Vec<String> = events.iter().map(|e| e.task_id.clone()).collect();
    let run_ids: Vec<String> = events.iter().filter_map(|e| e.run_id.clone()).collect();
    let tasks: HashMap<String, Task> = store
        .tasks_by_ids(&task_ids)?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let runs: HashMap<String, Run> = if run_ids.is_empty() {
        HashMap::new()
    } else {
        store
            .runs_by_ids(&run_ids)?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect()
    };
    Ok(events
        .into_iter()
        .filter_map(|e| {
            let task = tasks.get(&e.task_id)?;
            let run = e
                .run_id
                .as_ref()
                .and_then(|id| runs.get(id))
                .map(|r| ActiveRunChip::new(r, task.max_attempts));
            Some(TimelineItem {
                sequence: e.sequence,
                event_id: e.id,
                task: TaskReference::from(task),
                run,
                event_type: e.event_type,
                actor: e.actor,
                origin: e.origin,
                payload: e.payload,
                timestamp: e.timestamp,
            })
        })
        .collect())
}

/// The exact bytes of one SSE frame: `id`, `event`, `data`, blank line.
pub fn sse_frame(item: &TimelineItem) -> String {
    let data = StreamData {
        sequence: item.sequence,
        event_type: &item.event_type,
        timeline: item,
    };
    // Serializing these plain structs cannot fail; JSON never contains a raw newline.
    let json = serde_json::to_string(&data).unwrap_or_else(|_| "{}".to_string());
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        item.sequence, item.event_type, json
    )
}
