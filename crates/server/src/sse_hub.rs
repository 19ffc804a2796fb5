//! Live fan-out of task events to SSE subscribers.
//!
//! One pump task per server wakes on the store's committed-sequence watch (never on a timer),
//! reads the newly committed events once, renders each frame once, and routes it to the
//! subscribers of the event's task and of every ancestor (so children created after a subscriber
//! connected are covered). Idle subscribers cost no work at all.
//!
//! The fan-out never blocks on a subscriber: each has a bounded queue, and one that is full is
//! unregistered. Its connection notices the closed queue and catches up from storage by sequence
//! (see `routes/stream.rs`), so a slow consumer is delayed, never skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use tasklane_core::observe::{sse_frame, timeline_items};
use tasklane_store::Store;
use tokio::sync::{mpsc, watch};

/// Frames buffered per subscriber before it is switched to catch-up from storage.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// Events read per storage round trip, by the pump and by catch-ups.
pub const PAGE: i64 = 256;

const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(15);

/// One rendered event, shared by every subscriber it goes to.
#[derive(Clone, Debug)]
pub struct Frame {
    pub sequence: i64,
    pub bytes: Bytes,
}

type Subscribers = HashMap<String, Vec<(u64, mpsc::Sender<Frame>)>>;

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_root: Subscribers,
}

pub struct Hub {
    store: Store,
    registry: Mutex<Registry>,
    pump_started: AtomicBool,
    keepalive: watch::Sender<u64>,
    keepalive_started: AtomicBool,
    shutting_down: watch::Receiver<bool>,
}

/// A registration; unregisters on drop.
pub struct Subscription {
    hub: Arc<Hub>,
    root: String,
    id: u64,
    pub frames: mpsc::Receiver<Frame>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        crate::metrics::sse_unsubscribed();
        self.hub.unregister(&self.root, self.id);
    }
}

/// The keepalive period: 15 s, or `TASKLANE_SSE_KEEPALIVE_MS` (tests shorten it).
fn keepalive_period() -> Duration {
    std::env::var("TASKLANE_SSE_KEEPALIVE_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

impl Hub {
    pub fn new(store: Store, shutting_down: watch::Receiver<bool>) -> Arc<Hub> {
        Arc::new(Hub {
            store,
            registry: Mutex::new(Registry::default()),
            pump_started: AtomicBool::new(false),
            keepalive: watch::channel(0).0,
            keepalive_started: AtomicBool::new(false),
            shutting_down,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Ticks every keepalive period; one timer serves every connection.
    pub fn keepalive(self: &Arc<Self>) -> watch::Receiver<u64> {
        if !self.keepalive_started.swap(true, Ordering::SeqCst) {
            let hub = Arc::downgrade(self);
            let period = keepalive_period();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(hub) = hub.upgrade() else { return };
                    hub.keepalive.send_modify(|n| *n += 1);
                }
            });
        }
        self.keepalive.subscribe()
    }

    pub fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutting_down.clone()
    }

    /// Registers for live frames of the subtree rooted at `root`. Register before reading the
    /// backlog: anything committed after the backlog's snapshot then arrives live.
    pub fn subscribe(self: &Arc<Self>, root: &str) -> Subscription {
        if !self.pump_started.swap(true, Ordering::SeqCst) {
            tokio::spawn(pump(Arc::downgrade(self), self.store.committed_sequence()));
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
        crate::metrics::sse_subscribed();
        let mut reg = self.lock();
        reg.next_id += 1;
        let id = reg.next_id;
        reg.by_root
            .entry(root.to_string())
            .or_default()
            .push((id, tx));
        Subscription {
            hub: self.clone(),
            root: root.to_string(),
            id,
            frames: rx,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unregister(&self, root: &str, id: u64) {
        let mut reg = self.lock();
        if let Some(subs) = reg.by_root.get_mut(root) {
            subs.retain(|(sid, _)| *sid != id);
            if subs.is_empty() {
                reg.by_root.remove(root);
            }
        }
    }

    /// Sends `frame` to the subscribers of every task in `ancestry`; a subscriber whose queue is
    /// full (or gone) is dropped, which tells its connection to catch up from storage.
    fn route(&self, ancestry: &[String], frame: &Frame) {
        let mut reg = self.lock();
        for task in ancestry {
            let Some(subs) = reg.by_root.get_mut(task) else {
                continue;
            };
            subs.retain(|(_, tx)| tx.try_send(frame.clone()).is_ok());
            if subs.is_empty() {
                reg.by_root.remove(task);
            }
        }
    }
}

/// What one pump round read: the highest sequence seen and the rendered frames with the ancestry
/// of their task.
struct Batch {
    /// Events read (frames may be fewer: an event whose task was deleted meanwhile is dropped).
    read: i64,
    last_sequence: Option<i64>,
    frames: Vec<(Vec<String>, Frame)>,
}

async fn read_batch(store: &Store, after: i64) -> tasklane_core::Result<Batch> {
    store
        .read_observe(move |r| {
            let events = r.events_after(after, PAGE)?;
            let read = events.len() as i64;
            let last_sequence = events.last().map(|e| e.sequence);
            let mut ancestries: HashMap<String, Vec<String>> = HashMap::new();
            for e in &events {
                if !ancestries.contains_key(&e.task_id) {
                    ancestries.insert(e.task_id.clone(), r.ancestry(&e.task_id)?);
                }
            }
            let frames = timeline_items(r, events)?
                .into_iter()
                .map(|item| {
                    let ancestry = ancestries.get(&item.task.id).cloned().unwrap_or_default();
                    let frame = Frame {
                        sequence: item.sequence,
                        bytes: Bytes::from(sse_frame(&item)),
                    };
                    (ancestry, frame)
                })
                .collect();
            Ok(Batch {
                read,
                last_sequence,
                frames,
            })
        })
        .await
}

/// The single wake-up loop. Holds only a weak handle so it ends with the server's state.
async fn pump(hub: std::sync::Weak<Hub>, mut committed: watch::Receiver<i64>) {
    let mut cursor = *committed.borrow_and_update();
    loop {
        if committed.changed().await.is_err() {
            return;
        }
        loop {
            let target = *committed.borrow_and_update();
            if cursor >= target {
                break;
            }
            let Some(hub) = hub.upgrade() else { return };
            {
                // With nobody listening there is nothing to render: a subscriber registering from
                // now on reads everything up to `target` in its own backlog.
                let reg = hub.lock();
                if reg.by_root.is_empty() {
                    cursor = target;
                    break;
                }
            }
            match read_batch(&hub.store, cursor).await {
                Ok(batch) => {
                    for (ancestry, frame) in &batch.frames {
                        hub.route(ancestry, frame);
                    }
                    match batch.last_sequence {
                        // A short page means everything committed up to `target` was read.
                        Some(last) if batch.read < PAGE && last < target => cursor = target,
                        Some(last) => cursor = last,
                        None => cursor = target,
                    }
                }
                Err(e) => {
                    // Nothing is skipped: the same range is read again after a pause.
                    tracing::warn!(error = %e, "sse fan-out read failed; retrying");
                    drop(hub);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}
