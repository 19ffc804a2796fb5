//! Request bodies built from flags: only the fields the caller gave are sent, so the server's
//! defaults and "absent means no change" rules apply unchanged.

use serde_json::{Map, Value};

use super::http::{Failure, Outcome};

#[derive(Default)]
pub struct Body(Map<String, Value>);

impl Body {
    pub fn new() -> Body {
        Body::default()
    }

    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Body {
        self.0.insert(key.to_string(), value.into());
        self
    }

    pub fn opt<T: Into<Value>>(self, key: &str, value: Option<T>) -> Body {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// A flag that is sent only when given (`true`).
    pub fn flag(self, key: &str, on: bool) -> Body {
        if on {
            self.set(key, true)
        } else {
            self
        }
    }

    /// A repeatable flag, sent as a list when given at least once.
    pub fn list(self, key: &str, values: &[String]) -> Body {
        if values.is_empty() {
            self
        } else {
            self.set(key, values.to_vec())
        }
    }

    /// A JSON document given on the command line (`--metadata '{"k":1}'`).
    pub fn json(self, key: &str, flag: &str, raw: Option<&str>) -> Outcome<Body> {
        match raw {
            Some(raw) => Ok(self.set(key, parse_json(flag, raw)?)),
            None => Ok(self),
        }
    }

    /// `None` for an empty body, so that body-less operations send none.
    pub fn build(self) -> Option<Value> {
        if self.0.is_empty() {
            None
        } else {
            Some(Value::Object(self.0))
        }
    }

    pub fn value(self) -> Value {
        Value::Object(self.0)
    }
}

pub fn parse_json(flag: &str, raw: &str) -> Outcome<Value> {
    serde_json::from_str(raw).map_err(|e| Failure::Usage(format!("{flag}: not valid JSON: {e}")))
}

/// `kind:ref` → `{"kind","ref"}`.
pub fn owner(raw: &str) -> Outcome<Value> {
    match raw.split_once(':') {
        Some((kind, reference)) if !kind.is_empty() && !reference.is_empty() => {
            Ok(serde_json::json!({ "kind": kind, "ref": reference }))
        }
        _ => Err(Failure::Usage(format!(
            "--owner {raw:?}: expected KIND:REF, e.g. human:alice"
        ))),
    }
}

/// Query parameters of the flags that were given.
#[derive(Default)]
pub struct Query(Vec<(&'static str, String)>);

impl Query {
    pub fn new() -> Query {
        Query::default()
    }

    pub fn opt<T: ToString>(mut self, key: &'static str, value: Option<T>) -> Query {
        if let Some(v) = value {
            self.0.push((key, v.to_string()));
        }
        self
    }

    pub fn flag(mut self, key: &'static str, on: bool) -> Query {
        if on {
            self.0.push((key, "true".to_string()));
        }
        self
    }

    pub fn pairs(&self) -> Vec<(&str, String)> {
        self.0.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}
