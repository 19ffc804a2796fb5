//! The queue and lease figures a monitoring scrape exports, and how the rows each backend reads
//! fold into them. Backends read the rows (`sqlite::monitor`, `postgres::monitor`); the labelling
//! and the bounds on the number of series live here once.

use std::collections::HashMap;

/// Workspaces given their own label in [`QueueGauges::by_workspace`]; the rest are summed under
/// [`Workspace::Other`], so a deployment with thousands of workspaces still exports a bounded
/// number of series.
pub const TOP_WORKSPACES: usize = 20;

/// Queued runs of one group and when the oldest of them was queued (µs since the epoch).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueStat {
    pub depth: i64,
    pub oldest_queued_at: Option<i64>,
}

/// A workspace label of the queue gauges.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workspace {
    /// Tasks of global scope.
    Global,
    Named(String),
    /// Every workspace beyond the [`TOP_WORKSPACES`] with the most queued runs.
    Other,
}

/// The queue and lease figures of one scrape.
#[derive(Clone, Debug, Default)]
pub struct QueueGauges {
    /// Indexed by priority rank (low 0, medium 1, high 2, urgent 3).
    pub by_priority: [QueueStat; 4],
    /// Only workspaces with queued runs; at most [`TOP_WORKSPACES`] named ones.
    pub by_workspace: Vec<(Workspace, QueueStat)>,
    /// Claimed, starting or running runs that hold a lease.
    pub active_leases: i64,
}

impl QueueGauges {
    /// Records the queued runs of one priority rank; ranks outside the four known are ignored.
    pub(crate) fn set_priority(&mut self, rank: i64, depth: i64, oldest_queued_at: i64) {
        if let Some(stat) = usize::try_from(rank)
            .ok()
            .and_then(|r| self.by_priority.get_mut(r))
        {
            *stat = QueueStat {
                depth,
                oldest_queued_at: Some(oldest_queued_at),
            };
        }
    }
}

/// The per-workspace gauges being folded: first the depths (from the run counters), then the
/// queued runs oldest first until every label has its oldest.
pub(crate) struct WorkspaceFold {
    stats: HashMap<Workspace, QueueStat>,
    missing: usize,
}

impl WorkspaceFold {
    /// `depths`: queued runs per workspace id (`""` for global scope), only positive ones.
    pub(crate) fn new(mut depths: Vec<(String, i64)>) -> WorkspaceFold {
        depths.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut stats: HashMap<Workspace, QueueStat> = HashMap::new();
        let mut named = 0;
        for (ws, depth) in depths {
            let label = if ws.is_empty() {
                Workspace::Global
            } else if named < TOP_WORKSPACES {
                named += 1;
                Workspace::Named(ws)
            } else {
                Workspace::Other
            };
            stats.entry(label).or_default().depth += depth;
        }
        let missing = stats.len();
        WorkspaceFold { stats, missing }
    }

    /// Whether every label has its oldest run.
    pub(crate) fn complete(&self) -> bool {
        self.missing == 0
    }

    /// Takes one queued run of workspace `ws` (`""` for global scope), fed oldest first.
    /// Returns whether every label now has its oldest run (the walk can stop).
    pub(crate) fn oldest(&mut self, ws: String, queued_at: i64) -> bool {
        let label = if ws.is_empty() {
            Workspace::Global
        } else {
            let named = Workspace::Named(ws);
            if self.stats.contains_key(&named) {
                named
            } else {
                Workspace::Other
            }
        };
        if let Some(stat) = self.stats.get_mut(&label) {
            if stat.oldest_queued_at.is_none() {
                stat.oldest_queued_at = Some(queued_at);
                self.missing -= 1;
            }
        }
        self.complete()
    }

    /// The labels in order (global, named by name, other).
    pub(crate) fn finish(self) -> Vec<(Workspace, QueueStat)> {
        let mut by_workspace: Vec<_> = self.stats.into_iter().collect();
        by_workspace.sort_by(|a, b| a.0.cmp(&b.0));
        by_workspace
    }
}
