//! How both backends run a read: off the async threads, at most as many at once as they have
//! read connections.

use std::sync::Arc;

use tasklane_core::{Error, Result};
use tokio::sync::Semaphore;

/// Waits for one of `permits`, then runs `read` in `spawn_blocking`, holding the permit until it
/// returns.
pub(crate) async fn run_read<R, F>(permits: &Arc<Semaphore>, read: F) -> Result<R>
where
    F: FnOnce() -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Unavailable("the store is shut down".to_string()))?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        read()
    })
    .await
    .map_err(|e| Error::Storage(format!("read task failed: {e}")))?
}
