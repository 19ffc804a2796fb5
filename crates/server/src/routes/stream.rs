//! `GET /api/tasks/{id}/stream`: Server-Sent Events for a task's subtree (SPEC §6, reference
//! observe.md §5).
//!
//! Each connection: `retry: 3000`, then the backlog after the cursor read from storage, then live
//! frames from the hub, with `: keepalive` comments from the hub's shared ticker. The connection
//! tracks the last sequence it sent, so it never sends an event twice; when the hub drops it for
//! being slow it re-registers and reads what it missed from storage, so it never skips one.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use tasklane_core::observe::{sse_frame, subtree_backlog};
use tasklane_core::Error;
use tokio::sync::mpsc;

use super::observe::{path_id, sequence, Observe};
use crate::auth::Identity;
use crate::error::ApiResult;
use crate::path::Path;
use crate::query::Params;
use crate::sse_hub::{Hub, PAGE};
use crate::state::AppState;

const RETRY: &str = "retry: 3000\n\n";
const KEEPALIVE: &str = ": keepalive\n\n";
/// Bytes waiting for the socket; small, so a slow reader soon backs up into the hub's queue.
const WIRE_BUFFER: usize = 8;

pub async fn stream(
    State(s): State<AppState>,
    who: Identity,
    Extension(obs): Extension<Arc<Observe>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: RawQuery,
) -> ApiResult<Response> {
    let root = path_id(&id)?;
    // A non-blank Last-Event-ID replaces after_sequence entirely, even when it is "0".
    let last_event_id = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .map(str::to_string)
                .map_err(|_| Error::validation("Last-Event-ID must be an integer"))
        })
        .transpose()?
        .filter(|v| !v.trim().is_empty());
    let after = match last_event_id {
        Some(v) => sequence("Last-Event-ID", Some(&v))?,
        None => sequence(
            "after_sequence",
            Params::from_raw(&raw).get("after_sequence").as_deref(),
        )?,
    };
    let exists_id = root.clone();
    let exists = s
        .store
        .read_observe(move |r| Ok(r.task(&exists_id)?.is_some()))
        .await?;
    if !exists {
        return Err(Error::task_not_found(&root).into());
    }

    let (tx, mut rx) = mpsc::channel::<Bytes>(WIRE_BUFFER);
    tokio::spawn(run(obs.hub.clone(), root, after, tx, who));
    let body = Body::from_stream(futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|b| b.map(Ok::<_, Infallible>))
    }));
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Why a connection's loop stopped.
enum End {
    /// The client went away or the server is shutting down.
    Closed,
    /// The hub dropped this subscriber (its queue was full): catch up from storage.
    Lagged,
}

/// The sending side of one connection, with what ends it.
struct Conn {
    tx: mpsc::Sender<Bytes>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    who: Identity,
}

impl Conn {
    /// Waits for room on the wire, but not past the server stopping or the token's revocation:
    /// a client that stops reading must not keep either from ending its stream.
    async fn send(&mut self, bytes: Bytes) -> Result<(), End> {
        tokio::select! {
            sent = self.tx.send(bytes) => sent.map_err(|_| End::Closed),
            _ = self.shutdown.wait_for(|stopping| *stopping) => Err(End::Closed),
            () = self.who.revoked() => Err(End::Closed),
        }
    }
}

/// Streams until the client goes, the server stops or the caller's token is revoked.
async fn run(hub: Arc<Hub>, root: String, mut last: i64, tx: mpsc::Sender<Bytes>, who: Identity) {
    let mut keepalive = hub.keepalive();
    let mut shutdown = hub.shutting_down();
    if *shutdown.borrow_and_update() {
        return;
    }
    let mut conn = Conn {
        tx,
        shutdown: shutdown.clone(),
        who,
    };
    if conn
        .send(Bytes::from_static(RETRY.as_bytes()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        if conn.who.is_revoked() {
            return;
        }
        // Registered before reading storage, so nothing committed in between is lost.
        let mut sub = hub.subscribe(&root);
        if catch_up(&hub, &root, &mut last, &mut conn).await.is_err() {
            return;
        }
        let end = loop {
            tokio::select! {
                frame = sub.frames.recv() => match frame {
                    Some(f) if f.sequence > last => {
                        if let Err(end) = conn.send(f.bytes).await {
                            break end;
                        }
                        last = f.sequence;
                    }
                    Some(_) => {}
                    None => break End::Lagged,
                },
                changed = keepalive.changed() => {
                    if changed.is_err() {
                        break End::Closed;
                    }
                    if let Err(end) = conn.send(Bytes::from_static(KEEPALIVE.as_bytes())).await {
                        break end;
                    }
                }
                _ = shutdown.changed() => break End::Closed,
                _ = conn.tx.closed() => break End::Closed,
                () = conn.who.revoked() => break End::Closed,
            }
        };
        match end {
            End::Closed => return,
            End::Lagged => {
                tracing::debug!(task = %root, last, "sse subscriber lagged; catching up")
            }
        }
    }
}

/// Sends every subtree event after `last` from storage, page by page.
async fn catch_up(hub: &Hub, root: &str, last: &mut i64, conn: &mut Conn) -> Result<(), End> {
    loop {
        let (root_id, after) = (root.to_string(), *last);
        let page = hub
            .store()
            .read_observe(move |r| {
                let items = subtree_backlog(r, &root_id, after, PAGE)?;
                Ok(items)
            })
            .await;
        let items = match page {
            Ok(items) => items,
            Err(e) => {
                // Ending the stream is the honest answer: the client reconnects with
                // Last-Event-ID and misses nothing.
                tracing::warn!(error = %e, "sse backlog read failed; closing the stream");
                return Err(End::Closed);
            }
        };
        let full = items.len() as i64 >= PAGE;
        for item in &items {
            if item.sequence > *last {
                conn.send(Bytes::from(sse_frame(item))).await?;
                *last = item.sequence;
            }
        }
        if !full {
            return Ok(());
        }
    }
}
