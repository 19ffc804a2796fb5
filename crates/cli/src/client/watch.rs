//! `tasklane task watch`: follows `GET /api/tasks/{id}/stream` (server-sent events) and prints
//! each event as it arrives. `reqwest-eventsource` reconnects after a dropped connection and
//! sends `Last-Event-ID`, so the server resumes right after the last event shown: nothing is
//! skipped or printed twice.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use reqwest_eventsource::retry::ExponentialBackoff;
use reqwest_eventsource::{Error as SseError, Event, EventSource};
use serde_json::Value;

use super::body::Query;
use super::http::{Client, Failure, Outcome};
use super::output::{actor, text, Printer};

pub async fn follow(client: &Client, out: &Printer, id: &str, after: Option<i64>) -> Outcome {
    let mut resume_after = after.map(|n| n.to_string());
    let mut opened = false;
    let mut pause = Duration::from_millis(500);
    // Each pass is one `EventSource`, which reconnects by itself after a dropped connection. It
    // gives up only on an error status; a 5xx after the stream once opened is a server in
    // trouble (shutting down, storage unavailable), so a new pass resumes after the last event.
    loop {
        let query = Query::new().opt("after_sequence", resume_after.as_deref());
        let request = client
            .request(Method::GET, client.url(&["tasks", id, "stream"]))
            .query(&query.pairs());
        let mut events = EventSource::new(request)
            .map_err(|e| Failure::Other(format!("cannot build the stream request: {e}")))?;
        // The server's `retry:` sets the first delay; later attempts back off to at most 10 s,
        // and never give up: following is the point, and Ctrl-C ends it.
        events.set_retry_policy(Box::new(ExponentialBackoff::new(
            Duration::from_millis(500),
            2.0,
            Some(MAX_PAUSE),
            None,
        )));
        let mut dropped = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Open) => {
                    if dropped {
                        eprintln!("tasklane: reconnected");
                        dropped = false;
                    }
                    opened = true;
                    pause = Duration::from_millis(500);
                }
                Ok(Event::Message(message)) => {
                    if !message.id.is_empty() {
                        resume_after = Some(message.id.clone());
                    }
                    if out.json() {
                        out.raw(&message.data);
                    } else {
                        out.line(&event_line(out, &message.data));
                    }
                }
                Err(SseError::InvalidStatusCode(status, response)) => {
                    let body = response.text().await.unwrap_or_default();
                    let failure = Failure::from_answer(status, &body);
                    if !(opened && status.is_server_error()) {
                        return Err(failure);
                    }
                    eprintln!(
                        "tasklane: {failure}; resuming{}",
                        resume_note(&resume_after)
                    );
                    break;
                }
                Err(SseError::InvalidContentType(kind, _)) => {
                    return Err(Failure::Other(format!(
                        "the server did not answer with an event stream (content type {kind:?})"
                    )));
                }
                Err(SseError::Transport(e)) if !opened => return Err(client.transport(e)),
                Err(e) => {
                    if !dropped {
                        eprintln!(
                            "tasklane: stream interrupted ({e}); resuming{}",
                            resume_note(&resume_after)
                        );
                        dropped = true;
                    }
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

const MAX_PAUSE: Duration = Duration::from_secs(10);

fn resume_note(after: &Option<String>) -> String {
    match after {
        Some(last) => format!(" after event {last}"),
        None => String::new(),
    }
}

/// `#12  14:30:10  task.run_claimed  task-…  "Title"  run-… claimed  by agent_session:w1`.
fn event_line(out: &Printer, data: &str) -> String {
    let Ok(frame) = serde_json::from_str::<Value>(data) else {
        return data.to_string();
    };
    let item = &frame["timeline"];
    let time = text(item, &["timestamp"])
        .get(11..19)
        .unwrap_or_default()
        .to_string();
    let mut line = format!(
        "#{:<5} {time}  {:<28} {}  {:?}",
        frame["sequence"].as_i64().unwrap_or_default(),
        text(item, &["event_type"]),
        text(item, &["task", "id"]),
        text(item, &["task", "title"]),
    );
    // The status the event recorded; the embedded task and run show their state of now.
    let status = [
        &["payload", "status"][..],
        &["run", "status"],
        &["task", "status"],
    ]
    .iter()
    .map(|path| text(item, path))
    .find(|s| !s.is_empty())
    .unwrap_or_default();
    if !text(item, &["run", "id"]).is_empty() {
        line.push_str(&format!("  {}", text(item, &["run", "id"])));
    }
    if !status.is_empty() {
        line.push_str(&format!(" {}", out.paint(status)));
    }
    let by = actor(item, "actor");
    if !by.is_empty() {
        line.push_str(&format!("  by {by}"));
    }
    line
}
