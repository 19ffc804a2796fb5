//! The threads a node runs beside its writer, each on its own connection until the store shuts
//! down: the listener (`listener`) and the claim queue's vacuum (`queue_vacuum`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tasklane_core::{Error, Result};

pub(crate) struct Background {
    name: &'static str,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Background {
    /// Starts `run` on a thread named `name`; it returns once the flag it is given is set.
    pub(crate) fn start(
        name: &'static str,
        run: impl FnOnce(&AtomicBool) + Send + 'static,
    ) -> Result<Background> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&stopping))
            .map_err(|e| Error::Storage(format!("cannot start {name}: {e}")))?;
        Ok(Background { name, stop, thread })
    }

    /// Tells the thread to stop and waits for it.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!(thread = self.name, "postgres background thread panicked");
        }
    }
}
