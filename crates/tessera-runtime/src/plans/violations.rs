//! Recorded tracking-plan violations: counted in memory on the ingest path and
//! merged into the catalog (`tracking_plan_violations/<source id>`) at most once a
//! second, with counts per event, property and rule and one example message id
//! each. A crash loses at most the last second's counts (the `flag`ged events
//! themselves are in the log; `block`ed ones in the rejected-events view).

use super::Violation;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tessera_core::time::format_millis;
use tessera_store::{Catalog, StoreError};

/// The catalog key prefix of recorded violations.
pub const VIOLATIONS_PREFIX: &str = "tracking_plan_violations/";
/// Most distinct (event, property, rule) rows kept per source; further ones are
/// counted in `dropped`.
pub const MAX_ROWS: usize = 1_000;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// One (event, property, rule) with its count and an example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// The event (or `identify`).
    pub event: String,
    /// The property or trait, empty for the event itself.
    pub property: String,
    /// `unplanned_event` or the failed JSON Schema keyword.
    pub rule: String,
    /// How many messages broke it.
    pub count: u64,
    /// The `messageId` of the latest such message.
    pub example_message_id: String,
    /// What the plan said about it (no values).
    pub example_message: String,
    /// Whether that message was refused (`block`) or stored (`flag`).
    pub example_blocked: bool,
    /// When first seen, Unix ms.
    pub first_seen_ms: i64,
    /// When last seen, Unix ms.
    pub last_seen_ms: i64,
}

/// A source's stored violations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// The rows.
    pub rows: Vec<Row>,
    /// Violations not kept as rows (over [`MAX_ROWS`]).
    pub dropped: u64,
}

type Key = (String, String, String);
/// Pending rows per source id.
type PendingRows = HashMap<String, HashMap<Key, Row>>;

/// Violations counted since the last flush.
#[derive(Default)]
pub struct Pending {
    inner: Mutex<(PendingRows, Option<Instant>)>,
}

impl Pending {
    /// Counts a message's violations.
    pub fn record(
        &self,
        source_id: &str,
        violations: &[Violation],
        message_id: &str,
        blocked: bool,
        at_ms: i64,
    ) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let rows = inner.0.entry(source_id.to_owned()).or_default();
        for v in violations {
            if rows.len() >= MAX_ROWS {
                break;
            }
            let row = rows
                .entry((v.event.clone(), v.property.clone(), v.rule.clone()))
                .or_insert_with(|| Row {
                    event: v.event.clone(),
                    property: v.property.clone(),
                    rule: v.rule.clone(),
                    count: 0,
                    example_message_id: String::new(),
                    example_message: String::new(),
                    example_blocked: blocked,
                    first_seen_ms: at_ms,
                    last_seen_ms: at_ms,
                });
            row.count += 1;
            row.example_message_id = message_id.to_owned();
            row.example_message = v.describe();
            row.example_blocked = blocked;
            row.last_seen_ms = at_ms;
        }
    }

    /// Whether anything waits to be stored.
    pub fn is_empty(&self) -> bool {
        self.inner.lock().map(|i| i.0.is_empty()).unwrap_or(true)
    }

    /// Merges what is pending into the catalog, when the last merge is over a
    /// second old or `force`.
    pub fn flush(&self, catalog: &dyn Catalog, force: bool) -> Result<(), StoreError> {
        let taken = {
            let Ok(mut inner) = self.inner.lock() else {
                return Ok(());
            };
            if inner.0.is_empty()
                || (!force && inner.1.is_some_and(|at| at.elapsed() < FLUSH_EVERY))
            {
                return Ok(());
            }
            inner.1 = Some(Instant::now());
            std::mem::take(&mut inner.0)
        };
        for (source_id, rows) in taken {
            let key = format!("{VIOLATIONS_PREFIX}{source_id}");
            let mut stored: Stored = catalog
                .setting(&key)?
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            for (_, row) in rows {
                let found = stored.rows.iter().position(|r| {
                    r.event == row.event && r.property == row.property && r.rule == row.rule
                });
                match found {
                    Some(index) => {
                        let existing = &mut stored.rows[index];
                        existing.count += row.count;
                        existing.example_message_id = row.example_message_id;
                        existing.example_message = row.example_message;
                        existing.example_blocked = row.example_blocked;
                        existing.last_seen_ms = row.last_seen_ms;
                    }
                    None if stored.rows.len() < MAX_ROWS => stored.rows.push(row),
                    None => stored.dropped += row.count,
                }
            }
            let text =
                serde_json::to_string(&stored).map_err(|e| StoreError::Engine(e.to_string()))?;
            catalog.set_setting(&key, &text)?;
        }
        Ok(())
    }
}

/// A source's stored violations.
pub fn stored(catalog: &dyn Catalog, source_id: &str) -> Result<Stored, StoreError> {
    Ok(catalog
        .setting(&format!("{VIOLATIONS_PREFIX}{source_id}"))?
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default())
}

/// Forgets a source's recorded violations.
pub fn clear(catalog: &dyn Catalog, source_id: &str) -> Result<bool, StoreError> {
    catalog.delete_setting(&format!("{VIOLATIONS_PREFIX}{source_id}"))
}

/// The report the API and CLI show: per event its total and per property and rule
/// the count and an example, most frequent first.
pub fn report(source_id: &str, stored: &Stored) -> Value {
    let mut events: BTreeMap<&str, (u64, Vec<&Row>)> = BTreeMap::new();
    for row in &stored.rows {
        let entry = events.entry(row.event.as_str()).or_default();
        entry.0 += row.count;
        entry.1.push(row);
    }
    let mut list: Vec<(&str, (u64, Vec<&Row>))> = events.into_iter().collect();
    list.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let events: Vec<Value> = list
        .into_iter()
        .map(|(event, (count, mut rows))| {
            rows.sort_by_key(|r| std::cmp::Reverse(r.count));
            json!({
                "event": event,
                "count": count,
                "properties": rows.iter().map(|r| json!({
                    "property": r.property,
                    "rule": r.rule,
                    "count": r.count,
                    "firstSeen": format_millis(r.first_seen_ms),
                    "lastSeen": format_millis(r.last_seen_ms),
                    "example": {
                        "messageId": r.example_message_id,
                        "message": r.example_message,
                        "blocked": r.example_blocked,
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "sourceId": source_id,
        "total": stored.rows.iter().map(|r| r.count).sum::<u64>() + stored.dropped,
        "dropped": stored.dropped,
        "events": events,
    })
}
