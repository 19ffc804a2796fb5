//! How answers are shown: the API's JSON body untouched (`-o json`), or tables and short
//! summaries for people, with relative times and colour on a terminal only.

use std::io::{IsTerminal, Write};

use chrono::{DateTime, Utc};
use comfy_table::presets::NOTHING;
use comfy_table::{Cell, CellAlignment, Color, ContentArrangement, Table};
use serde_json::Value;

use super::http::Answer;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables and summaries.
    Human,
    /// The API's JSON body, exactly as the server sent it.
    Json,
}

pub struct Printer {
    pub format: Format,
    colour: bool,
}

impl Printer {
    pub fn new(format: Format) -> Printer {
        // https://no-color.org: any non-empty NO_COLOR turns colour off.
        let no_color = matches!(std::env::var_os("NO_COLOR"), Some(v) if !v.is_empty());
        let colour = std::io::stdout().is_terminal() && !no_color;
        Printer { format, colour }
    }

    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Prints the body as received (`-o json`), or hands it to `human`.
    pub fn emit(&self, answer: &Answer, human: impl FnOnce(&Printer, &Value)) {
        if self.json() {
            self.raw(&answer.text);
        } else {
            let body = serde_json::from_str(&answer.text).unwrap_or(Value::Null);
            human(self, &body);
        }
    }

    /// One JSON document on its own line, flushed at once (also for streams).
    pub fn raw(&self, text: &str) {
        if text.is_empty() {
            return;
        }
        if text.ends_with('\n') {
            write_out(text);
        } else {
            write_out(&format!("{text}\n"));
        }
    }

    pub fn line(&self, text: &str) {
        write_out(&format!("{text}\n"));
    }

    /// A borderless table with aligned columns; styled only when colour is on.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table
            .load_preset(NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        if !header.is_empty() {
            table.set_header(header.iter().map(|h| Cell::new(h.to_uppercase())));
        }
        if self.colour {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table
    }

    pub fn print_table(&self, table: &Table) {
        // comfy-table pads every cell by one space on each side; the left edge needs none.
        let text = table.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
            .collect();
        self.line(&lines.join("\n"));
    }

    /// `key  value` lines, keys aligned; rows whose value is empty are left out.
    pub fn fields(&self, rows: &[(&str, String)]) {
        let mut table = self.table(&[]);
        for (key, value) in rows {
            if !value.is_empty() {
                table.add_row(vec![Cell::new(key), Cell::new(value)]);
            }
        }
        self.print_table(&table);
    }

    /// A status word as a table cell, coloured by what it means.
    pub fn status(&self, status: &str) -> Cell {
        let cell = Cell::new(status);
        match tone(status) {
            Some((colour, _)) if self.colour => cell.fg(colour),
            _ => cell,
        }
    }

    /// A status word in free text (fields, one line per event), coloured as in tables.
    pub fn paint(&self, status: &str) -> String {
        match tone(status) {
            Some((_, ansi)) if self.colour => format!("\x1b[{ansi}m{status}\x1b[0m"),
            _ => status.to_string(),
        }
    }
}

/// The colour of a status word (task, run, approval or health), for tables and for free text:
/// green done, red failed, yellow in flight, magenta waiting, cyan ready to go, grey out of play.
fn tone(status: &str) -> Option<(Color, &'static str)> {
    Some(match status {
        "completed" | "approved" | "ok" | "current" => (Color::Green, "32"),
        "failed" | "rejected" | "needs_attention" | "critical" | "stuck" => (Color::Red, "31"),
        "in_progress" | "running" | "starting" | "claimed" | "warn" | "warning" | "stale" => {
            (Color::Yellow, "33")
        }
        "blocked" | "pending" => (Color::Magenta, "35"),
        "queued" | "ready" => (Color::Cyan, "36"),
        "canceled" | "draft" => (Color::DarkGrey, "90"),
        _ => return None,
    })
}

/// Writes and flushes stdout. When the reader has gone (`tasklane task watch | head`), there is
/// nobody left to answer: end quietly instead of following a stream for no one.
fn write_out(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("tasklane: writing the output failed: {e}");
        std::process::exit(1);
    }
}

pub fn right(text: impl ToString) -> Cell {
    Cell::new(text.to_string()).set_alignment(CellAlignment::Right)
}

/// A string field, or "" when absent.
pub fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut at = v;
    for key in path {
        match at.get(key) {
            Some(next) => at = next,
            None => return "",
        }
    }
    at.as_str().unwrap_or("")
}

/// Any scalar field as text ("" when absent or null).
pub fn scalar(v: &Value, path: &[&str]) -> String {
    let mut at = v;
    for key in path {
        match at.get(key) {
            Some(next) => at = next,
            None => return String::new(),
        }
    }
    match at {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `kind:ref` of an actor or owner.
pub fn actor(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(a) if a.is_object() => format!("{}:{}", text(a, &["kind"]), text(a, &["ref"])),
        _ => String::new(),
    }
}

/// "3m ago" / "in 5m" for an RFC 3339 timestamp; "" when absent or the zero time.
pub fn ago(timestamp: &str) -> String {
    relative_to(timestamp, Utc::now())
}

fn relative_to(timestamp: &str, now: DateTime<Utc>) -> String {
    let Ok(at) = DateTime::parse_from_rfc3339(timestamp) else {
        return timestamp.to_string();
    };
    let at = at.with_timezone(&Utc);
    if at.timestamp() <= 0 {
        return String::new();
    }
    let seconds = (now - at).num_seconds();
    let span = short_span(seconds.unsigned_abs());
    if seconds >= 0 {
        if span == "0s" {
            "just now".to_string()
        } else {
            format!("{span} ago")
        }
    } else {
        format!("in {span}")
    }
}

fn short_span(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Milliseconds as a short span ("950ms", "42s", "3m").
pub fn millis(ms: &Value) -> String {
    match ms.as_i64() {
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => short_span((ms / 1000) as u64),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(relative_to("2026-01-01T11:57:00Z", now), "3m ago");
        assert_eq!(relative_to("2026-01-01T12:00:00.4Z", now), "just now");
        assert_eq!(relative_to("2026-01-01T12:05:00Z", now), "in 5m");
        assert_eq!(relative_to("2025-12-30T12:00:00Z", now), "2d ago");
        assert_eq!(relative_to("0001-01-01T00:00:00Z", now), "");
    }
}
