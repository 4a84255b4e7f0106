//! Proposes a tracking plan from the events a source sent: every track event name,
//! for each its properties' JSON types, and as `required` the properties present in
//! every one of its events; the same for identify traits. The result is a plan in
//! `flag` mode the user edits and stores with `tessera plans set`.

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use tessera_core::{ErrorCode, UserError};
use tessera_store::{EventFilter, EventLog, StoreError};

/// Most events read for one proposal.
pub const MAX_SCANNED: u64 = 1_000_000;
/// Most event names proposed.
pub const MAX_EVENTS: usize = 500;
/// Most properties proposed per event.
pub const MAX_PROPERTIES: usize = 200;

#[derive(Default)]
struct Shape {
    seen: u64,
    properties: BTreeMap<String, (u64, [bool; 7])>,
}

const TYPES: [&str; 7] = [
    "string", "integer", "number", "boolean", "object", "array", "null",
];

fn type_index(value: &Value) -> usize {
    match value {
        Value::String(_) => 0,
        Value::Number(n) if n.is_i64() || n.is_u64() => 1,
        Value::Number(_) => 2,
        Value::Bool(_) => 3,
        Value::Object(_) => 4,
        Value::Array(_) => 5,
        Value::Null => 6,
    }
}

impl Shape {
    fn add(&mut self, object: Option<&Value>) {
        self.seen += 1;
        let Some(Value::Object(map)) = object else {
            return;
        };
        for (name, value) in map {
            if !self.properties.contains_key(name) && self.properties.len() >= MAX_PROPERTIES {
                continue;
            }
            let entry = self.properties.entry(name.clone()).or_default();
            entry.0 += 1;
            entry.1[type_index(value)] = true;
        }
    }

    fn schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (name, (count, types)) in &self.properties {
            let mut names: Vec<&str> = TYPES
                .iter()
                .zip(types)
                .filter(|(_, seen)| **seen)
                .map(|(t, _)| *t)
                .collect();
            // An integer seen beside fractions is a number.
            if names.contains(&"number") {
                names.retain(|t| *t != "integer");
            }
            let kind = if names.len() == 1 {
                Value::from(names[0])
            } else {
                Value::from(names)
            };
            properties.insert(name.clone(), json!({"type": kind}));
            if *count == self.seen {
                required.push(Value::from(name.as_str()));
            }
        }
        json!({"type": "object", "properties": properties, "required": required})
    }
}

/// Longest look-back, in days.
pub const MAX_SINCE_DAYS: u64 = 3_650;

/// Reads a look-back such as `7d`, `24h`, `30m` or `90s`.
pub fn parse_since(text: &str) -> Result<std::time::Duration, UserError> {
    let bad = || {
        UserError::new(
            ErrorCode::InvalidRequest,
            format!(
                "\"since\" must be a number with d, h, m or s (7d, 24h, 30m), at most {MAX_SINCE_DAYS}d"
            ),
        )
    };
    let text = text.trim();
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    if !text.is_char_boundary(split) {
        return Err(bad());
    }
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "d" => number.checked_mul(86_400),
        "h" => number.checked_mul(3_600),
        "m" => number.checked_mul(60),
        "s" => Some(number),
        _ => None,
    }
    .filter(|s| *s > 0 && *s <= MAX_SINCE_DAYS * 86_400)
    .ok_or_else(bad)?;
    Ok(std::time::Duration::from_secs(seconds))
}

/// What [`propose`] read and proposes.
pub struct Proposal {
    /// The proposed plan (mode `flag`).
    pub plan: Value,
    /// Events read.
    pub scanned: u64,
}

/// Proposes a plan from the source's events received at or after `since_ms`.
pub fn propose(log: &dyn EventLog, source_key: i64, since_ms: i64) -> Result<Proposal, StoreError> {
    let mut events: BTreeMap<String, Shape> = BTreeMap::new();
    let mut traits = Shape::default();
    let mut scanned = 0u64;
    let filter = EventFilter {
        source_key: Some(source_key),
        received_since_ms: Some(since_ms),
        limit: Some(MAX_SCANNED as usize),
        ..EventFilter::default()
    };
    log.scan(&filter, &mut |event| {
        scanned += 1;
        let Ok(Value::Object(body)) = serde_json::from_str::<Value>(&event.payload) else {
            return Ok(());
        };
        match body.get("type").and_then(Value::as_str) {
            Some("track") => {
                let Some(name) = body.get("event").and_then(Value::as_str) else {
                    return Ok(());
                };
                if !events.contains_key(name) && events.len() >= MAX_EVENTS {
                    return Ok(());
                }
                events
                    .entry(name.to_owned())
                    .or_default()
                    .add(body.get("properties"));
            }
            Some("identify") => traits.add(body.get("traits")),
            _ => {}
        }
        Ok(())
    })?;
    let mut plan_events = Map::new();
    for (name, shape) in &events {
        plan_events.insert(name.clone(), json!({"properties": shape.schema()}));
    }
    let mut plan = json!({
        "mode": "flag",
        "comment": format!("proposed from {scanned} events; edit, then store with `tessera plans set`"),
        "events": plan_events,
    });
    if traits.seen > 0 {
        plan["identify"] = json!({"traits": traits.schema()});
    }
    Ok(Proposal { plan, scanned })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_since("30m").unwrap().as_secs(), 1_800);
        for bad in ["", "d", "7", "7w", "-1d", "0d", "99999d", "é"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn required_means_present_in_all_and_types_merge() {
        let mut shape = Shape::default();
        shape.add(Some(&json!({"a": 1, "b": "x", "c": 1})));
        shape.add(Some(&json!({"a": 2, "c": 1.5, "d": null})));
        let schema = shape.schema();
        assert_eq!(schema["required"], json!(["a", "c"]));
        assert_eq!(schema["properties"]["a"]["type"], "integer");
        assert_eq!(schema["properties"]["c"]["type"], "number");
        assert_eq!(schema["properties"]["d"]["type"], "null");
        // The proposal compiles as a plan.
        let plan = json!({"mode": "flag", "events": {"E": {"properties": schema}}});
        assert!(super::super::compile(&plan).is_ok());
    }
}
