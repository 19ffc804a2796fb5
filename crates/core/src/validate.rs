//! Input limits and value rules shared by every operation.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{OwnerKind, Ref};

/// Task metadata and run metadata given at enqueue.
pub const METADATA_LIMIT: usize = 16 * 1024;
/// Run results, and fail/cancel metadata.
pub const RESULT_LIMIT: usize = 64 * 1024;
/// Any request body.
pub const BODY_LIMIT: usize = 4 * 1024 * 1024;
pub const MAX_DEPENDENCIES: usize = 32;
pub const MAX_DEPTH: usize = 8;
pub const MAX_CHILDREN: i64 = 64;
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
pub const MAX_ATTEMPTS_LIMIT: i64 = 10;
const MAX_ID_LEN: usize = 128;

/// Trims a string and turns an empty result into `None`.
pub fn non_empty(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Longest reason a rejection may carry, in characters: enough for a paragraph on the timeline.
pub const MAX_REASON_CHARS: usize = 1000;

/// A reason given with a decision: trimmed, blank means none (as every reason field), and at most
/// [`MAX_REASON_CHARS`] characters.
pub fn reason(value: Option<&str>) -> Result<Option<String>> {
    let reason = non_empty(value);
    if let Some(r) = &reason {
        let chars = r.chars().count();
        if chars > MAX_REASON_CHARS {
            return Err(Error::validation(format!(
                "reason is {chars} characters; the limit is {MAX_REASON_CHARS}"
            )));
        }
    }
    Ok(reason)
}

/// Checks a JSON document against a size limit (413) and refuses any `claim_token` key at any depth
/// (422): raw claim tokens must never be stored where responses could echo them.
pub fn check_json(value: &Value, limit: usize, field: &str) -> Result<()> {
    let size = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > limit {
        return Err(Error::too_large(format!(
            "{field} is {size} bytes; the limit is {limit} bytes"
        )));
    }
    if contains_claim_token(value) {
        return Err(Error::validation(format!(
            "{field} must not contain a claim_token key"
        )));
    }
    Ok(())
}

fn contains_claim_token(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("claim_token") || contains_claim_token(v)),
        Value::Array(items) => items.iter().any(contains_claim_token),
        _ => false,
    }
}

/// Network channels: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub fn network_channel(value: &str) -> Result<()> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "network_channel {value:?} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$"
        )))
    }
}

/// Workspace ids: 1–128 characters of `[A-Za-z0-9._:/-]`.
pub fn workspace_id(value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'/' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "workspace {value:?} must be 1-128 characters of [A-Za-z0-9._:/-]"
        )))
    }
}

/// Longest agent session id or agent name a client may send.
pub const MAX_IDENTITY_LEN: usize = 256;

/// An identity header's value (`X-AGH-Session-ID`, `X-AGH-Agent`): UTF-8 text, trimmed, at most
/// [`MAX_IDENTITY_LEN`] bytes, no control characters. `Ok(None)` when absent or blank.
pub fn identity_header(name: &str, value: Option<&[u8]>) -> Result<Option<String>> {
    let Some(bytes) = value else { return Ok(None) };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Error::validation(format!("{name} must be UTF-8 text")))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_IDENTITY_LEN || text.chars().any(char::is_control) {
        return Err(Error::validation(format!(
            "{name} must be at most {MAX_IDENTITY_LEN} bytes of text without control characters"
        )));
    }
    Ok(Some(text.to_string()))
}

/// Client-supplied ids appear in URL paths, so they are held to a path-safe alphabet.
pub fn client_id(value: &str) -> Result<()> {
    let ok = value.len() <= MAX_ID_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "id {value:?} must be at most 128 characters of [A-Za-z0-9._:-]"
        )))
    }
}

/// `max_attempts`: 1..=10, absent or null meaning the default.
pub fn max_attempts(value: i64) -> Result<i64> {
    if (1..=MAX_ATTEMPTS_LIMIT).contains(&value) {
        Ok(value)
    } else {
        Err(Error::validation(format!(
            "max_attempts must be between 1 and {MAX_ATTEMPTS_LIMIT}; got {value}"
        )))
    }
}

/// Capability ids: 1–128 characters, no whitespace or commas. Duplicates are dropped, order kept.
pub fn capabilities(field: &str, values: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for raw in values {
        let v = raw.trim();
        if v.is_empty()
            || v.chars().count() > MAX_ID_LEN
            || v.chars().any(|c| c.is_whitespace() || c == ',')
        {
            return Err(Error::validation(format!(
                "{field} entries must be 1-128 characters without whitespace or commas; got {raw:?}"
            )));
        }
        if !out.iter().any(|o| o == v) {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

/// An owner `{kind, ref}`: kind from the owner enum, ref non-empty.
pub fn owner(kind: Option<&str>, reference: Option<&str>) -> Result<Ref> {
    let kind = OwnerKind::parse(kind.unwrap_or(""))?;
    let reference =
        non_empty(reference).ok_or_else(|| Error::validation("owner.ref is required"))?;
    Ok(Ref::new(kind.as_str(), reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_token_is_refused_at_any_depth() {
        assert!(check_json(&json!({"a": [{"Claim_Token": 1}]}), 100, "result").is_err());
        assert!(check_json(&json!({"a": [{"token": 1}]}), 100, "result").is_ok());
    }

    #[test]
    fn size_limit_is_413() {
        let big = json!("x".repeat(200));
        assert!(matches!(
            check_json(&big, 100, "metadata"),
            Err(Error::PayloadTooLarge { .. })
        ));
    }

    #[test]
    fn channel_grammar() {
        assert!(network_channel("ops-1_a").is_ok());
        assert!(network_channel("-ops").is_err());
        assert!(network_channel("Ops").is_err());
        assert!(network_channel(&"a".repeat(65)).is_err());
    }

    #[test]
    fn capabilities_are_trimmed_and_deduplicated() {
        let caps = capabilities("c", &[" rust ".into(), "rust".into(), "sql".into()]).unwrap();
        assert_eq!(caps, vec!["rust", "sql"]);
        assert!(capabilities("c", &["a b".into()]).is_err());
        assert!(capabilities("c", &["a,b".into()]).is_err());
    }
}
