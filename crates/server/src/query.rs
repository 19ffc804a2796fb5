//! Query-string parsing. Unknown parameters are ignored; a bad value is a 422.

use axum::extract::RawQuery;
use tasklane_core::error::{Error, Result};
use tasklane_core::model::{ApprovalState, OwnerKind, Priority, RunStatus, Scope, TaskStatus};
use tasklane_core::page::{self, RunKey, TaskKey};
use tasklane_core::store::{RunFilter, TaskFilter};
use tasklane_core::validate;

/// Decoded `key=value` pairs; when a key repeats, the last value wins.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn from_raw(raw: &RawQuery) -> Self {
        let pairs = raw.0.as_deref().map(url_decode_pairs).unwrap_or_default();
        Params(pairs)
    }

    /// A parameter's trimmed value; empty counts as absent.
    pub fn get(&self, key: &str) -> Option<String> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn parse<T>(&self, key: &str, f: impl Fn(&str) -> Result<T>) -> Result<Option<T>> {
        self.get(key).map(|v| f(&v)).transpose()
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.parse(key, |v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            _ => Err(Error::validation(format!(
                "{key} must be true or false; got {v:?}"
            ))),
        })
    }

    /// The page size of `limit` (see `tasklane_core::page`).
    pub fn page_size(&self) -> Result<usize> {
        page::size(self.int("limit")?)
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>> {
        self.parse(key, |v| {
            v.parse::<i64>()
                .map_err(|_| Error::validation(format!("{key} must be an integer; got {v:?}")))
        })
    }
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `scope` and `workspace`: a workspace id needs `scope=workspace` (or, where
/// `workspace_alone_ok`, no scope at all), and `scope=workspace` needs a workspace id.
pub fn scope_and_workspace(
    p: &Params,
    workspace_alone_ok: bool,
) -> Result<(Option<Scope>, Option<String>)> {
    let scope = p.parse("scope", Scope::parse)?;
    let workspace_id = p.get("workspace");
    match (scope, &workspace_id) {
        (None, Some(_)) if !workspace_alone_ok => {
            return Err(Error::validation(
                "scope is required (scope=workspace) when workspace is given",
            ))
        }
        (Some(Scope::Global), Some(_)) => {
            return Err(Error::validation(
                "workspace must be empty when scope is global",
            ))
        }
        (Some(Scope::Workspace), None) => {
            return Err(Error::validation(
                "workspace is required when scope is workspace",
            ))
        }
        _ => {}
    }
    if let Some(ws) = &workspace_id {
        validate::workspace_id(ws)?;
    }
    Ok((scope, workspace_id))
}

/// `GET /api/tasks` filters and the page's `cursor` (its size is `Params::page_size`). A workspace
/// without a scope filters by workspace only.
pub fn task_filter(p: &Params) -> Result<TaskFilter> {
    let (scope, workspace_id) = scope_and_workspace(p, true)?;
    let network_channel = p.get("network_channel");
    if let Some(ch) = &network_channel {
        validate::network_channel(ch)?;
    }
    Ok(TaskFilter {
        scope,
        workspace_id,
        status: p.parse("status", TaskStatus::parse)?,
        priority: p.parse("priority", Priority::parse)?,
        include_drafts: p.bool("include_drafts")?.unwrap_or(false),
        approval_state: p.parse("approval_state", ApprovalState::parse)?,
        owner_kind: p.parse("owner_kind", OwnerKind::parse)?,
        owner_ref: p.get("owner_ref"),
        parent_task_id: p.get("parent_task_id"),
        network_channel,
        query: p.get("query"),
        after: p.parse("cursor", TaskKey::parse)?,
        limit: None,
    })
}

/// `GET /api/tasks/{id}/runs` filters and the page's `cursor`.
pub fn run_filter(p: &Params) -> Result<RunFilter> {
    Ok(RunFilter {
        status: p.parse("status", RunStatus::parse)?,
        session_id: p.get("session_id"),
        after: p.parse("cursor", RunKey::parse)?,
        limit: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::from_raw(&RawQuery(Some(q.to_string())))
    }

    #[test]
    fn decodes_percent_and_plus() {
        let p = params("query=a%20b+c&x=%zz");
        assert_eq!(p.get("query").as_deref(), Some("a b c"));
        assert_eq!(p.get("x").as_deref(), Some("%zz"));
    }

    #[test]
    fn bad_values_are_validation_errors() {
        assert!(params("limit=-1").page_size().is_err());
        assert!(params("limit=abc").page_size().is_err());
        assert!(task_filter(&params("cursor=abc")).is_err());
        assert!(run_filter(&params("cursor=zz")).is_err());
        assert!(task_filter(&params("status=bogus")).is_err());
        assert!(task_filter(&params("scope=workspace")).is_err());
        assert!(task_filter(&params("scope=global&workspace=w")).is_err());
        let f = task_filter(&params("status=READY&limit=0&include_drafts=true")).unwrap();
        assert_eq!(f.status, Some(TaskStatus::Ready));
        assert_eq!(params("limit=0").page_size().unwrap(), page::DEFAULT_LIMIT);
        assert!(f.include_drafts);
    }
}
