//! `GET /api/tasks/{id}/tree`: the task and every descendant, any
//! status, with depth, child count, active run and last activity.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::Serialize;

use super::{ActiveRunChip, ObserveStore};
use crate::derive;
use crate::error::{Error, Result};
use crate::model::{Run, Task};
use crate::page;
use crate::time::Ts;
use crate::views::TaskReference;

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TreeNode {
    pub task: TaskReference,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_task_id: Option<String>,
    pub depth: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub child_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_run: Option<ActiveRunChip>,
    pub last_activity_at: Ts,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tree {
    pub root: TreeNode,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub descendants: Vec<TreeNode>,
    /// More than [`TREE_DESCENDANTS`] descendants exist; the ones shown come first in tree order,
    /// and `GET /api/tasks?parent_task_id=` pages through any node's children (absent when false).
    #[serde(skip_serializing_if = "is_false")]
    pub descendants_truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Descendants a tree answer holds at most.
pub const TREE_DESCENDANTS: usize = page::MAX_LIMIT;

/// Depth first, then newest activity, then task id ascending: siblings are not grouped.
fn node_order(a: &TreeNode, b: &TreeNode) -> Ordering {
    a.depth
        .cmp(&b.depth)
        .then_with(|| b.last_activity_at.cmp(&a.last_activity_at))
        .then_with(|| a.task.id.cmp(&b.task.id))
}

pub fn tree(store: &mut dyn ObserveStore, root_id: &str) -> Result<Tree> {
    // The root, a full set of descendants, and one more to tell whether any were left out.
    let mut nodes = store.subtree(root_id, TREE_DESCENDANTS as i64 + 2)?;
    if nodes.is_empty() {
        return Err(Error::task_not_found(root_id));
    }
    let descendants_truncated = nodes.len() > TREE_DESCENDANTS + 1;
    nodes.truncate(TREE_DESCENDANTS + 1);
    let ids: Vec<String> = nodes.iter().map(|(t, _)| t.id.clone()).collect();
    let child_counts = store.child_counts(&ids)?;
    let mut open_runs: HashMap<String, Vec<Run>> = HashMap::new();
    for r in store.open_runs_of_tasks(&ids)? {
        open_runs.entry(r.task_id.clone()).or_default().push(r);
    }
    let mut built: Vec<TreeNode> = nodes
        .iter()
        .map(|(t, depth)| node(t, *depth, &child_counts, &open_runs))
        .collect();
    let root = built.remove(0);
    built.sort_by(node_order);
    Ok(Tree {
        root,
        descendants: built,
        descendants_truncated,
    })
}

fn node(
    t: &Task,
    depth: i64,
    child_counts: &HashMap<String, i64>,
    open_runs: &HashMap<String, Vec<Run>>,
) -> TreeNode {
    let runs = open_runs.get(&t.id).map(Vec::as_slice).unwrap_or(&[]);
    TreeNode {
        task: TaskReference::from(t),
        parent_task_id: t.parent_task_id.clone(),
        depth,
        child_count: child_counts.get(&t.id).copied().unwrap_or(0),
        active_run: derive::active_run(runs).map(|r| ActiveRunChip::new(r, t.max_attempts)),
        // Storage maintains last_activity_at over updated_at, run times and event times.
        last_activity_at: t.last_activity_at.max(t.updated_at).max(t.created_at),
    }
}
