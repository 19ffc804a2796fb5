//! Connections: the accept loop, the cap on open connections, and the timeouts that close the
//! connections that hold a slot without using it. hyper serves HTTP/1 on each one.
//!
//! A connection is either busy (a request is being answered; long polls and event streams last
//! minutes and are never cut) or waiting for a request. A waiting connection is closed when a
//! request head takes longer than the header timeout (counted from the accept for the first
//! request, from its first byte for later ones) or when a kept-alive connection stays idle longer
//! than the idle timeout. A request body must arrive within the body timeout (else 408).
//!
//! At the cap the loop stops accepting until a connection closes: new clients wait in the
//! kernel's backlog instead of costing a descriptor each, and the timeouts free slots that idle or
//! slow clients hold.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;

/// How long stopping waits for the connections still answering. Long polls and event streams end
/// as soon as the server stops; what remains after this is a client that stopped reading (an
/// answer stuck in a full socket buffer), which must not keep the server from exiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How many connections may be open, and how long each may make the server wait.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
}

/// The error a request body fails with when it has not fully arrived by its deadline.
#[derive(Debug)]
pub struct BodyTimeout;

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimeout {}

/// Serves `app` on connections from `listener` until `shutdown` resolves; then stops accepting,
/// lets each connection finish the request it is answering, and returns when all are closed.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut full = Throttle::new(Duration::from_secs(60));
    let mut failing = Throttle::new(Duration::from_secs(60));
    let mut backoff = Duration::ZERO;
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if let Some(more) = full.ready() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        times_since_last_report = more,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, _)) => {
                if !backoff.is_zero() {
                    tracing::info!("accepting connections again");
                    backoff = Duration::ZERO;
                }
                tokio::spawn(serve_connection(
                    stream,
                    app.clone(),
                    limits,
                    close_rx.clone(),
                    permit,
                ));
            }
            // Out of descriptors or memory, or a connection that died in the queue: back off so
            // the loop neither spins nor floods the log, and try again.
            Err(error) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                if let Some(more) = failing.ready() {
                    tracing::warn!(%error, times_since_last_report = more, retry_in = ?backoff, "accept failed");
                }
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    drop(listener);
    close_tx.send_replace(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            open = limits.max_connections - slots.available_permits(),
            grace = ?SHUTDOWN_GRACE,
            "connections still open when stopping (a client that stopped reading its answer); dropping them"
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: ConnectionLimits,
    mut close: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |req: Request<Incoming>| {
            let busy = activity.begin_request();
            let deadline = Instant::now() + limits.body_timeout;
            let req = req.map(|body| Body::new(Deadline::new(body, deadline)));
            let mut app = app.clone();
            async move {
                let response = app.call(req).await?;
                // The connection stays busy until the response body is done or dropped.
                Ok::<_, Infallible>(response.map(|body| {
                    body.map_frame(move |frame| {
                        let _ = &busy;
                        frame
                    })
                }))
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        // Replaced by `Activity`, which also tells a kept-alive connection's idle time apart.
        .header_read_timeout(None)
        .serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            () = activity.expired(&limits) => {
                tracing::debug!("closing a connection that waited too long for a request");
                return;
            }
            _ = close.wait_for(|closing| *closing), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection is doing, for its timeouts.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

struct Phase {
    /// Requests whose response is not finished yet.
    busy: usize,
    /// When the current request head started: the accept for the first request, the first byte
    /// for later ones; `None` while idle.
    head_since: Option<Instant>,
    /// When the connection last became idle.
    idle_since: Instant,
}

impl Activity {
    fn new() -> Self {
        let now = Instant::now();
        Activity {
            phase: Mutex::new(Phase {
                busy: 0,
                head_since: Some(now),
                idle_since: now,
            }),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes arrived: on an idle connection they start a request head.
    fn read(&self) {
        let mut phase = self.phase();
        if phase.busy == 0 && phase.head_since.is_none() {
            phase.head_since = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// Bytes left: the end of a response may still be flushing after its body is done, which is
    /// not idleness.
    fn wrote(&self) {
        let mut phase = self.phase();
        if phase.busy == 0 && phase.head_since.is_none() {
            phase.idle_since = Instant::now();
        }
    }

    fn begin_request(self: &Arc<Self>) -> Busy {
        let mut phase = self.phase();
        phase.busy += 1;
        phase.head_since = None;
        drop(phase);
        self.changed.notify_one();
        Busy(self.clone())
    }

    /// When the connection is to be closed if nothing changes; `None` while busy.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let phase = self.phase();
        if phase.busy > 0 {
            return None;
        }
        Some(match phase.head_since {
            Some(since) => since + limits.header_timeout,
            None => phase.idle_since + limits.idle_timeout,
        })
    }

    /// Resolves once the connection has waited longer than its limits allow.
    async fn expired(&self, limits: &ConnectionLimits) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(limits) {
                None => changed.await,
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::select! {
                    () = sleep_until(deadline) => {}
                    () = changed => {}
                },
            }
        }
    }
}

/// Marks a request in progress; dropped when its response is done.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut phase = self.0.phase();
        phase.busy -= 1;
        if phase.busy == 0 {
            phase.idle_since = Instant::now();
        }
        drop(phase);
        self.0.changed.notify_one();
    }
}

/// A TCP stream that reports bytes in and out to its connection's [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request body that fails with [`BodyTimeout`] unless it has fully arrived by its deadline.
struct Deadline {
    body: Incoming,
    deadline: Instant,
    /// Armed on the first poll, so bodies nobody reads cost no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn new(body: Incoming, deadline: Instant) -> Self {
        Deadline {
            body,
            deadline,
            timer: None,
        }
    }
}

impl HttpBody for Deadline {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Lets a repeated warning through at most once per period, counting the ones held back.
pub(crate) struct Throttle {
    period: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl Throttle {
    pub(crate) const fn new(period: Duration) -> Self {
        Throttle {
            period,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(held back since the last report)` when the warning may be logged now.
    pub(crate) fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + self.period) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}
