//! The Rust both backends' observe primitives share: the filter as they bind it (each turns
//! [`FilterParams`] into its dialect's parameters and clauses), the counter-table sums they read
//! back, and the inbox page's tie group.

use std::collections::HashSet;

use tasklane_core::observe::{InboxCandidate, LatencyTotals, ObserveFilter};
use tasklane_core::Result;

/// The filter as SQL parameters, in a fixed order, for the counter tables (small: the
/// `IS NULL OR` form costs nothing there).
pub(crate) struct FilterParams {
    pub(crate) scope: Option<&'static str>,
    pub(crate) workspace_id: Option<String>,
    pub(crate) owner_kind: Option<&'static str>,
    pub(crate) owner_ref: Option<String>,
    pub(crate) network_channel: Option<String>,
    pub(crate) origin_kind: Option<&'static str>,
}

impl FilterParams {
    pub(crate) fn of(f: &ObserveFilter) -> Self {
        FilterParams {
            scope: f.scope.map(|s| s.as_str()),
            workspace_id: f.workspace_id.clone(),
            owner_kind: f.owner_kind.map(|o| o.as_str()),
            owner_ref: f.owner_ref.clone(),
            network_channel: f.network_channel.clone(),
            origin_kind: f.origin_kind.map(|o| o.as_str()),
        }
    }

    /// Only the task filters (scope, workspace and owner): what the inbox filters by.
    pub(crate) fn task_only(f: &ObserveFilter) -> Self {
        FilterParams {
            network_channel: None,
            origin_kind: None,
            ..FilterParams::of(f)
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.scope.is_none()
            && self.workspace_id.is_none()
            && self.owner_kind.is_none()
            && self.owner_ref.is_none()
            && self.network_channel.is_none()
            && self.origin_kind.is_none()
    }
}

/// Adds one counter row's latency samples, sum and maximum to `l`.
pub(crate) fn add_latency(l: &mut LatencyTotals, n: i64, sum: i64, max: i64) {
    l.samples += n;
    l.sum_micros += sum;
    l.max_micros = l.max_micros.max(max);
}

/// Completes an inbox page read with `LIMIT min_rows` by every task tied with its last one on
/// activity: the caller orders ties by priority and id, so the page must hold the whole tie group.
/// `tied(at)` reads the candidates whose activity is `at`.
pub(crate) fn with_tie_group(
    mut page: Vec<InboxCandidate>,
    min_rows: Option<usize>,
    tied: impl FnOnce(i64) -> Result<Vec<InboxCandidate>>,
) -> Result<Vec<InboxCandidate>> {
    if let (Some(n), Some(last)) = (min_rows, page.last()) {
        if page.len() == n && n > 0 {
            let ties = tied(last.latest_activity_at.0)?;
            let seen: HashSet<String> = page.iter().map(|c| c.task_id.clone()).collect();
            page.extend(ties.into_iter().filter(|c| !seen.contains(&c.task_id)));
        }
    }
    Ok(page)
}
