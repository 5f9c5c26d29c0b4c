//! Request parameters: query string for GET, JSON object body for POST, read
//! through one interface. Numbers and booleans are accepted as JSON values or as
//! their string forms (query strings carry only strings).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::error::*;
use crate::http::Query;

pub struct Params<'a> {
    pub values: Values<'a>,
    /// The client's address: failed password checks back off per source.
    pub peer: Option<std::net::IpAddr>,
}

pub enum Values<'a> {
    Query(Query<'a>),
    Json(Map<String, Value>),
}

impl<'a> Params<'a> {
    pub fn query(q: Query<'a>, peer: Option<std::net::IpAddr>) -> Self {
        Params {
            values: Values::Query(q),
            peer,
        }
    }
    pub fn json(m: Map<String, Value>, peer: Option<std::net::IpAddr>) -> Self {
        Params {
            values: Values::Json(m),
            peer,
        }
    }
}

impl Params<'_> {
    pub fn str(&self, k: &str) -> Option<Cow<'_, str>> {
        match &self.values {
            Values::Query(q) => q.get(k).map(Cow::Borrowed),
            Values::Json(m) => match m.get(k)? {
                Value::String(s) => Some(Cow::Borrowed(s.as_str())),
                Value::Number(n) => Some(Cow::Owned(n.to_string())),
                Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
                _ => None,
            },
        }
    }

    /// A present, non-empty string parameter, borrowed from the request
    /// (`None` for a number or boolean in a JSON body).
    pub fn text_ref(&self, k: &str) -> Option<&str> {
        match &self.values {
            Values::Query(q) => q.get(k),
            Values::Json(m) => m.get(k).and_then(Value::as_str),
        }
        .filter(|s| !s.is_empty())
    }

    /// A present, non-empty string.
    pub fn text(&self, k: &str) -> Option<Cow<'_, str>> {
        self.str(k).filter(|s| !s.is_empty())
    }

    pub fn required(&self, k: &str) -> Result<Cow<'_, str>, LicenseSpringError> {
        self.text(k).ok_or(MISSING_PARAMETERS)
    }

    pub fn int(&self, k: &str) -> Result<Option<i64>, LicenseSpringError> {
        match &self.values {
            Values::Json(m) => match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(INVALID_PARAMETERS),
                Some(Value::String(s)) => {
                    s.trim().parse().map(Some).map_err(|_| INVALID_PARAMETERS)
                }
                Some(_) => Err(INVALID_PARAMETERS),
            },
            Values::Query(q) => match q.get(k) {
                None | Some("") => Ok(None),
                Some(s) => s.trim().parse().map(Some).map_err(|_| INVALID_PARAMETERS),
            },
        }
    }

    pub fn bool(&self, k: &str) -> bool {
        match &self.values {
            Values::Json(m) => match m.get(k) {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true") || s == "1",
                Some(Value::Number(n)) => n.as_i64() == Some(1),
                _ => false,
            },
            Values::Query(q) => q
                .get(k)
                .is_some_and(|s| s.eq_ignore_ascii_case("true") || s == "1"),
        }
    }

    /// `variables` as name/value pairs: an object `{name: value}` or a list of
    /// `{"variable": name, "value": value}`.
    pub fn variables(&self) -> Result<Vec<(String, String)>, LicenseSpringError> {
        let Values::Json(m) = &self.values else {
            return Ok(Vec::new());
        };
        let scalar = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
            Value::Null => Some(String::new()),
            _ => None,
        };
        match m.get("variables") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(o)) => o
                .iter()
                .map(|(k, v)| Ok((k.clone(), scalar(v).ok_or(INVALID_PARAMETERS)?)))
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|item| {
                    let name = item
                        .get("variable")
                        .and_then(Value::as_str)
                        .ok_or(INVALID_PARAMETERS)?;
                    let value = item
                        .get("value")
                        .and_then(scalar)
                        .ok_or(INVALID_PARAMETERS)?;
                    Ok((name.to_string(), value))
                })
                .collect(),
            Some(_) => Err(INVALID_PARAMETERS),
        }
    }
}
