//! `GET /api/observe/queue` (a Tasklane extension): the queue's depth and oldest age per priority
//! and per workspace, for the console's dashboard. It answers the figures `/metrics` exports,
//! from the same store read (`SqliteStore::queue_gauges`), so the JSON and the Prometheus gauges
//! cannot disagree, and it costs what a scrape costs: index seeks and counter rows.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use tasklane_core::model::Priority;
use tasklane_core::time::Ts;
use tasklane_store::monitor::{QueueGauges, QueueStat, Workspace, TOP_WORKSPACES};
use utoipa::ToSchema;

use super::json;
use crate::error::ApiResult;
use crate::state::AppState;

/// The queued runs grouped two ways. Counts are exact at `observed_at`.
#[derive(Serialize, ToSchema)]
pub struct QueueHealth {
    pub observed_at: Ts,
    /// One row per priority, most urgent first (the order claims take them in), empty ones too.
    pub by_priority: Vec<PriorityRow>,
    /// One row per workspace with queued runs: global tasks, the busiest workspaces by name (at
    /// most `top_workspaces`, most queued runs first) and the rest summed in one `other` row.
    pub by_workspace: Vec<WorkspaceRow>,
    /// How many workspaces get a row of their own.
    pub top_workspaces: usize,
}

#[derive(Serialize, ToSchema)]
pub struct PriorityRow {
    pub priority: Priority,
    /// Queued runs.
    pub count: i64,
    /// When the oldest of them was queued; null when none is.
    pub oldest_queued_at: Option<Ts>,
    /// How long it has waited; 0 when none is queued.
    pub oldest_queue_age_ms: i64,
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceRow {
    pub kind: WorkspaceKind,
    /// The workspace, for `kind: workspace`; null for `global` and `other`.
    pub workspace_id: Option<String>,
    /// Queued runs.
    pub count: i64,
    /// When the oldest of them was queued.
    pub oldest_queued_at: Option<Ts>,
    /// How long it has waited.
    pub oldest_queue_age_ms: i64,
}

/// `global`: tasks of global scope; `workspace`: one named workspace; `other`: every workspace
/// beyond the busiest `top_workspaces`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceKind {
    Global,
    Workspace,
    Other,
}

/// `{"queue": …}`.
#[derive(Serialize, ToSchema)]
pub struct QueueHealthAnswer {
    pub queue: QueueHealth,
}

pub async fn queue_health(State(s): State<AppState>) -> ApiResult<Response> {
    let gauges = s.store.queue_gauges().await?;
    let queue = shape(&gauges, s.clock.now());
    Ok(json(StatusCode::OK, QueueHealthAnswer { queue }))
}

fn shape(gauges: &QueueGauges, now: Ts) -> QueueHealth {
    let oldest = |stat: &QueueStat| {
        let at = stat.oldest_queued_at.map(Ts);
        let age = at.map_or(0, |at| ((now.micros() - at.micros()) / 1000).max(0));
        (at, age)
    };
    // `by_priority` is indexed by rank, and `Priority::ALL` lists the priorities by rank.
    let by_priority = Priority::ALL
        .iter()
        .zip(&gauges.by_priority)
        .rev()
        .map(|(&priority, stat)| {
            let (oldest_queued_at, oldest_queue_age_ms) = oldest(stat);
            PriorityRow {
                priority,
                count: stat.depth,
                oldest_queued_at,
                oldest_queue_age_ms,
            }
        })
        .collect();
    let mut by_workspace: Vec<WorkspaceRow> = gauges
        .by_workspace
        .iter()
        .map(|(ws, stat)| {
            let (kind, workspace_id) = match ws {
                Workspace::Global => (WorkspaceKind::Global, None),
                Workspace::Named(name) => (WorkspaceKind::Workspace, Some(name.clone())),
                Workspace::Other => (WorkspaceKind::Other, None),
            };
            let (oldest_queued_at, oldest_queue_age_ms) = oldest(stat);
            WorkspaceRow {
                kind,
                workspace_id,
                count: stat.depth,
                oldest_queued_at,
                oldest_queue_age_ms,
            }
        })
        .collect();
    // Busiest first, as a reader scans for trouble; `other` last whatever its size.
    by_workspace.sort_by(|a, b| {
        matches!(a.kind, WorkspaceKind::Other)
            .cmp(&matches!(b.kind, WorkspaceKind::Other))
            .then(b.count.cmp(&a.count))
            .then_with(|| a.workspace_id.cmp(&b.workspace_id))
    });
    QueueHealth {
        observed_at: now,
        by_priority,
        by_workspace,
        top_workspaces: TOP_WORKSPACES,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn rows_come_most_urgent_and_busiest_first_with_ages_from_now() {
        let mut gauges = QueueGauges::default();
        gauges.by_priority[1] = QueueStat {
            depth: 2,
            oldest_queued_at: Some(1_000_000),
        };
        gauges.by_workspace = vec![
            (
                Workspace::Global,
                QueueStat {
                    depth: 1,
                    oldest_queued_at: Some(2_000_000),
                },
            ),
            (
                Workspace::Named("a".into()),
                QueueStat {
                    depth: 3,
                    oldest_queued_at: Some(1_000_000),
                },
            ),
            (
                Workspace::Other,
                QueueStat {
                    depth: 9,
                    oldest_queued_at: Some(1_500_000),
                },
            ),
        ];
        let v = serde_json::to_value(shape(&gauges, Ts(3_000_000))).unwrap();
        let priorities: Vec<_> = v["by_priority"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["priority"].as_str().unwrap())
            .collect();
        assert_eq!(priorities, ["urgent", "high", "medium", "low"]);
        assert_eq!(v["by_priority"][2]["count"], 2);
        assert_eq!(v["by_priority"][2]["oldest_queue_age_ms"], 2000);
        assert_eq!(v["by_priority"][0]["oldest_queued_at"], Value::Null);
        assert_eq!(v["by_priority"][0]["oldest_queue_age_ms"], 0);
        let kinds: Vec<_> = v["by_workspace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["kind"].as_str().unwrap(), r["workspace_id"].clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("workspace", json!("a")),
                ("global", Value::Null),
                ("other", Value::Null)
            ]
        );
        assert_eq!(v["by_workspace"][2]["oldest_queue_age_ms"], 1500);
    }
}
