//! What a monitoring scrape reads on PostgreSQL (STUB: to be ported from `sqlite/monitor.rs`).

use tasklane_core::Result;

use super::PgStore;
use crate::sqlite::monitor::QueueGauges;

impl PgStore {
    /// The queue and lease figures of one scrape.
    pub async fn queue_gauges(&self) -> Result<QueueGauges> {
        unimplemented!()
    }
}
