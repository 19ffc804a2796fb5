//! Helpers shared by the observe black-box tests: a test-clock server, the clock, the dashboard
//! and inbox calls, and a minimal SSE client over reqwest's chunked body.
#![allow(dead_code)]

use std::time::Duration;

use crate::common::*;

/// A server on the manual clock.
pub fn clock_server() -> Server {
    Server::start_with_env(&[("TASKLANE_TEST_CLOCK", "true")])
}

pub async fn advance(srv: &Server, seconds: f64) {
    let (s, v) = srv
        .post("/api/_test/clock/advance", json!({ "seconds": seconds }))
        .await;
    assert_eq!(s, StatusCode::OK, "advance clock: {v}");
}

pub async fn minutes(srv: &Server, m: f64) {
    advance(srv, m * 60.0).await;
}

pub async fn dashboard(srv: &Server, query: &str) -> Value {
    let (s, v) = srv
        .get(&format!("/api/observe/tasks/dashboard{query}"))
        .await;
    assert_eq!(s, StatusCode::OK, "dashboard{query}: {v}");
    v["dashboard"].clone()
}

pub async fn inbox_as(srv: &Server, query: &str, headers: &[(&str, String)]) -> Value {
    let path = format!("/api/observe/tasks/inbox{query}");
    let (s, v) = srv.call(Method::GET, &path, None, headers).await;
    assert_eq!(s, StatusCode::OK, "{path}: {v}");
    v["inbox"].clone()
}

pub async fn inbox(srv: &Server, query: &str) -> Value {
    inbox_as(srv, query, &[]).await
}

pub fn group<'a>(inbox: &'a Value, lane: &str) -> &'a Value {
    inbox["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["lane"] == lane)
        .unwrap_or_else(|| panic!("no {lane} group in {inbox}"))
}

pub fn item_ids(group: &Value) -> Vec<String> {
    group["items"]
        .as_array()
        .map(|items| items.iter().map(|i| str_of(&i["task"], "id")).collect())
        .unwrap_or_default()
}

pub async fn triage(srv: &Server, task: &str, action: &str) -> Value {
    let (s, v) = srv
        .post_empty(&format!("/api/tasks/{task}/triage/{action}"))
        .await;
    assert_eq!(s, StatusCode::OK, "triage {action} {task}: {v}");
    v["triage"].clone()
}

pub async fn post_ok(srv: &Server, path: &str, body: Value) -> Value {
    let (s, v) = srv.post(path, body.clone()).await;
    assert!(s.is_success(), "POST {path} {body}: {s} {v}");
    v
}

/// One parsed SSE record: a frame (id/event/data) or a comment.
#[derive(Clone, Debug, PartialEq)]
pub enum Sse {
    Retry(String),
    Comment(String),
    Frame {
        id: i64,
        event: String,
        data: String,
    },
}

/// A live SSE connection read chunk by chunk.
pub struct SseClient {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    resp: Option<reqwest::Response>,
    buf: String,
    /// Every byte received, for exact-framing assertions.
    pub raw: String,
}

impl SseClient {
    pub async fn connect(srv: &Server, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut req = srv.client.get(srv.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("connect stream");
        SseClient {
            status: resp.status(),
            headers: resp.headers().clone(),
            resp: Some(resp),
            buf: String::new(),
            raw: String::new(),
        }
    }

    /// The body of a non-streaming (error) answer.
    pub async fn json(mut self) -> Value {
        let text = self.resp.take().unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }

    /// The next record, or None if `wait` passes first or the stream ends.
    pub async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let record: String = self.buf.drain(..end + 2).collect();
                return Some(parse_record(record.trim_end_matches('\n')));
            }
            let resp = self.resp.as_mut()?;
            match tokio::time::timeout_at(deadline, resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => {
                    let s = String::from_utf8(bytes.to_vec()).expect("utf-8 stream");
                    self.raw.push_str(&s);
                    self.buf.push_str(&s);
                }
                Ok(Ok(None)) | Ok(Err(_)) => {
                    self.resp = None;
                    return None;
                }
            }
        }
    }

    /// The next event frame (skipping comments and retry lines), as (id, event, data JSON).
    pub async fn next_frame(&mut self, wait: Duration) -> Option<(i64, String, Value)> {
        loop {
            match self.next(wait).await? {
                Sse::Frame { id, event, data } => {
                    let v: Value = serde_json::from_str(&data).expect("frame data is JSON");
                    return Some((id, event, v));
                }
                _ => continue,
            }
        }
    }

    /// Frames until `n` have arrived (panics after `wait` without progress).
    pub async fn frames(&mut self, n: usize, wait: Duration) -> Vec<(i64, String, Value)> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next_frame(wait).await {
                Some(f) => out.push(f),
                None => panic!("expected {n} frames, got {}: {:?}", out.len(), ids(&out)),
            }
        }
        out
    }
}

pub fn ids(frames: &[(i64, String, Value)]) -> Vec<i64> {
    frames.iter().map(|f| f.0).collect()
}

fn parse_record(record: &str) -> Sse {
    if let Some(c) = record.strip_prefix(':') {
        return Sse::Comment(c.trim().to_string());
    }
    if let Some(r) = record.strip_prefix("retry: ") {
        return Sse::Retry(r.to_string());
    }
    let mut id = None;
    let mut event = None;
    let mut data = None;
    let lines: Vec<&str> = record.split('\n').collect();
    assert_eq!(
        lines.len(),
        3,
        "a frame has exactly id, event, data lines: {record:?}"
    );
    assert!(lines[0].starts_with("id: "), "id line first: {record:?}");
    assert!(
        lines[1].starts_with("event: "),
        "event line second: {record:?}"
    );
    assert!(
        lines[2].starts_with("data: "),
        "data line third: {record:?}"
    );
    for line in lines {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse::<i64>().expect("numeric id"));
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.to_string());
        }
    }
    Sse::Frame {
        id: id.unwrap(),
        event: event.unwrap(),
        data: data.unwrap(),
    }
}
