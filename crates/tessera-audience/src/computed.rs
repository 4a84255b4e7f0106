//! Computed traits: aggregates of a profile's events, kept up to date as events
//! arrive, usable in audiences (`computed total_orders > 3`) and shown on profiles.
//!
//! A computed trait is a pure function of the profile's indexed events and "now"
//! (for sliding windows), so the realtime and batch evaluators agree and replay
//! gives the same values.

use crate::ast::{Duration, ValueTest};
use crate::index::{CompactEvent, ProfileIndex, Slot};
use crate::scalar::{CompiledTest, Scalar, Sym};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// How many values a `unique_list` keeps (the first ones seen).
pub const UNIQUE_LIST_LIMIT: usize = 200;

/// A computed trait's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputedTrait {
    /// The name audiences and profiles use (`total_orders`).
    pub key: String,
    /// What it means, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The aggregate.
    pub aggregate: Aggregate,
    /// Only events of this name (all events when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// Only events whose properties pass these tests.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<ValueTest>,
    /// The property aggregated (every aggregate but `count`, `first_seen` and
    /// `last_seen` needs one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A sliding window (`30d`): only events at most this old; all time when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// What a computed trait computes over the matching events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Number of events (0 when none).
    Count,
    /// Sum of a numeric property (0 when none).
    Sum,
    /// Average of a numeric property.
    Avg,
    /// Smallest numeric property value.
    Min,
    /// Largest numeric property value.
    Max,
    /// The property's value on the oldest event.
    First,
    /// The property's value on the newest event.
    Last,
    /// The property's most frequent value (ties: the one seen most recently).
    MostFrequent,
    /// The property's distinct values, in order of first appearance (at most 200).
    UniqueList,
    /// Time of the oldest event.
    FirstSeen,
    /// Time of the newest event.
    LastSeen,
}

impl Aggregate {
    fn needs_property(self) -> bool {
        !matches!(
            self,
            Aggregate::Count | Aggregate::FirstSeen | Aggregate::LastSeen
        )
    }
}

impl ComputedTrait {
    /// Checks the definition; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        crate::validate_key(&self.key)?;
        if self.aggregate.needs_property() && self.property.is_none() {
            return Err(format!(
                "computed trait \"{}\": aggregate {:?} needs a \"property\" to aggregate",
                self.key, self.aggregate
            ));
        }
        Ok(())
    }

    /// The presets shipped with Tessera.
    pub fn presets() -> Vec<ComputedTrait> {
        let trait_of = |key: &str,
                        description: &str,
                        aggregate,
                        event: Option<&str>,
                        property: Option<&str>| {
            ComputedTrait {
                key: key.into(),
                description: description.into(),
                aggregate,
                event: event.map(str::to_owned),
                filters: Vec::new(),
                property: property.map(str::to_owned),
                window: None,
            }
        };
        vec![
            trait_of(
                "total_orders",
                "Number of orders (Order Completed events)",
                Aggregate::Count,
                Some("Order Completed"),
                None,
            ),
            trait_of(
                "lifetime_value",
                "Sum of order revenue",
                Aggregate::Sum,
                Some("Order Completed"),
                Some("revenue"),
            ),
            trait_of(
                "avg_order_value",
                "Average order revenue",
                Aggregate::Avg,
                Some("Order Completed"),
                Some("revenue"),
            ),
            trait_of(
                "last_seen_at",
                "Time of the latest event of any kind",
                Aggregate::LastSeen,
                None,
                None,
            ),
            trait_of(
                "favorite_category",
                "Most frequent product category across events",
                Aggregate::MostFrequent,
                None,
                Some("category"),
            ),
            trait_of(
                "wishlist",
                "Distinct skus added to the wishlist",
                Aggregate::UniqueList,
                Some("Product Added to Wishlist"),
                Some("sku"),
            ),
        ]
    }
}

/// A computed trait resolved against the index for one "now".
#[derive(Debug, Clone)]
pub struct CompiledComputed {
    aggregate: Aggregate,
    /// `None` = all events; `Some(None)` = a name no event has.
    event: Option<Option<Sym>>,
    filters: Vec<(Option<Sym>, CompiledTest)>,
    property: Option<Option<Sym>>,
    from_ms: i64,
    to_ms: i64,
}

impl CompiledComputed {
    /// Resolves `definition` for evaluation at `now_ms`.
    pub fn compile(definition: &ComputedTrait, index: &ProfileIndex, now_ms: i64) -> Self {
        let symbols = &index.symbols;
        let (from_ms, to_ms) = match definition.window {
            Some(window) => (now_ms.saturating_sub(window.millis), now_ms),
            None => (i64::MIN, i64::MAX),
        };
        Self {
            aggregate: definition.aggregate,
            event: definition.event.as_deref().map(|e| symbols.get(e)),
            filters: definition
                .filters
                .iter()
                .map(|f| {
                    (
                        symbols.get(&f.name),
                        CompiledTest::compile(&f.test, symbols, now_ms),
                    )
                })
                .collect(),
            property: definition.property.as_deref().map(|p| symbols.get(p)),
            from_ms,
            to_ms,
        }
    }

    /// The value for one profile (`None`: no value, e.g. the average of nothing).
    pub fn value(&self, index: &ProfileIndex, slot: Slot) -> Option<Scalar> {
        let events = index.profile_events(slot);
        let window = if (self.from_ms, self.to_ms) == (i64::MIN, i64::MAX) {
            events
        } else {
            events.between(self.from_ms, self.to_ms)
        };
        match self.event {
            None => self.fold(index, window.iter()),
            Some(None) => self.fold(index, std::iter::empty()),
            Some(Some(name)) => self.fold(index, window.named(name)),
        }
    }

    fn fold<'a>(
        &self,
        index: &'a ProfileIndex,
        events: impl Iterator<Item = CompactEvent>,
    ) -> Option<Scalar> {
        let matching = events.filter(|e| {
            self.filters.iter().all(|(key, test)| {
                let value = key.and_then(|k| index.property(e, k));
                test.holds(value, &index.symbols)
            })
        });
        let property = |e: &CompactEvent| -> Option<&'a Scalar> {
            let key = self.property.flatten()?;
            index
                .property(e, key)
                .filter(|v| !matches!(v, Scalar::Null))
        };
        match self.aggregate {
            Aggregate::Count => Some(Scalar::Num(matching.count() as f64)),
            Aggregate::FirstSeen => matching.map(|e| e.timestamp_ms).min().map(Scalar::Time),
            Aggregate::LastSeen => matching.map(|e| e.timestamp_ms).max().map(Scalar::Time),
            Aggregate::Sum | Aggregate::Avg | Aggregate::Min | Aggregate::Max => {
                let numbers = matching.filter_map(|e| match property(&e) {
                    Some(Scalar::Num(n)) if n.is_finite() => Some(*n),
                    _ => None,
                });
                numeric(self.aggregate, numbers)
            }
            Aggregate::First => matching.filter_map(|e| property(&e)).next().cloned(),
            Aggregate::Last => matching.filter_map(|e| property(&e)).last().cloned(),
            Aggregate::MostFrequent => most_frequent(matching.filter_map(|e| property(&e))),
            Aggregate::UniqueList => {
                let mut seen: Vec<Scalar> = Vec::new();
                for value in matching.filter_map(|e| property(&e)) {
                    if seen.len() >= UNIQUE_LIST_LIMIT {
                        break;
                    }
                    if !seen.contains(value) {
                        seen.push(value.clone());
                    }
                }
                Some(Scalar::List(Arc::new(seen)))
            }
        }
    }
}

fn numeric(aggregate: Aggregate, numbers: impl Iterator<Item = f64>) -> Option<Scalar> {
    let (mut count, mut sum) = (0u64, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for n in numbers {
        count += 1;
        sum += n;
        min = min.min(n);
        max = max.max(n);
    }
    let value = match aggregate {
        Aggregate::Sum => return Some(Scalar::Num(round_cents(sum))),
        _ if count == 0 => return None,
        Aggregate::Avg => round_cents(sum / count as f64),
        Aggregate::Min => min,
        _ => max,
    };
    Some(Scalar::Num(value))
}

/// Money sums are shown to the cent; floating-point noise (`0.30000000000000004`)
/// would otherwise surprise people and break equality tests in audiences.
fn round_cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn most_frequent<'a>(values: impl Iterator<Item = &'a Scalar>) -> Option<Scalar> {
    // (value, count, position of its latest occurrence)
    let mut counts: Vec<(&Scalar, u32, usize)> = Vec::new();
    let mut by_sym: HashMap<Sym, usize> = HashMap::new();
    for (position, value) in values.enumerate() {
        let slot = match value {
            Scalar::Str(sym) => by_sym.get(sym).copied(),
            other => counts.iter().position(|(v, _, _)| *v == other),
        };
        match slot {
            Some(i) => {
                counts[i].1 += 1;
                counts[i].2 = position;
            }
            None => {
                if let Scalar::Str(sym) = value {
                    by_sym.insert(*sym, counts.len());
                }
                counts.push((value, 1, position));
            }
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, count, latest)| (*count, *latest))
        .map(|(v, _, _)| v.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::index::{EventInput, ProfileInput};
    use crate::scalar::to_json;
    use serde_json::{Value, json};

    fn event(ts: i64, name: &str, props: Value) -> EventInput {
        EventInput {
            timestamp_ms: ts,
            name: name.into(),
            properties: props.as_object().cloned().unwrap_or_default(),
            consent: vec![],
        }
    }

    fn shopper() -> ProfileIndex {
        let mut index = ProfileIndex::new();
        index.upsert_profile(&ProfileInput {
            id: 1,
            events: vec![
                event(
                    1_000,
                    "Product Viewed",
                    json!({"category": "shoes", "sku": "A"}),
                ),
                event(2_000, "Product Added to Wishlist", json!({"sku": "A"})),
                event(
                    3_000,
                    "Order Completed",
                    json!({"revenue": 10.1, "category": "bags"}),
                ),
                event(4_000, "Product Added to Wishlist", json!({"sku": "B"})),
                event(
                    5_000,
                    "Order Completed",
                    json!({"revenue": 20.2, "category": "shoes"}),
                ),
                event(6_000, "Product Added to Wishlist", json!({"sku": "A"})),
                event(7_000, "Page Viewed", json!({"category": "bags"})),
            ],
            ..Default::default()
        });
        index
    }

    fn preset(key: &str, index: &ProfileIndex, now: i64) -> Value {
        let definition = ComputedTrait::presets()
            .into_iter()
            .find(|p| p.key == key)
            .unwrap();
        let value = CompiledComputed::compile(&definition, index, now).value(index, 0);
        value
            .map(|v| to_json(&index.symbols, &v))
            .unwrap_or(Value::Null)
    }

    #[test]
    fn presets_compute_what_their_names_say() {
        let index = shopper();
        assert_eq!(preset("total_orders", &index, 10_000), json!(2));
        assert_eq!(preset("lifetime_value", &index, 10_000), json!(30.3));
        assert_eq!(preset("avg_order_value", &index, 10_000), json!(15.15));
        assert_eq!(preset("favorite_category", &index, 10_000), json!("bags"));
        assert_eq!(preset("wishlist", &index, 10_000), json!(["A", "B"]));
        assert_eq!(
            preset("last_seen_at", &index, 10_000),
            json!("1970-01-01T00:00:07.000Z")
        );
    }

    #[test]
    fn sliding_windows_include_their_lower_bound() {
        let index = shopper();
        let mut orders = ComputedTrait::presets().remove(0);
        orders.window = Some(Duration::from_millis(5_000));
        // now 8000: window [3000, 8000] holds both orders; at 8001 the first drops out.
        let at = |now| CompiledComputed::compile(&orders, &index, now).value(&index, 0);
        assert_eq!(at(8_000), Some(Scalar::Num(2.0)));
        assert_eq!(at(8_001), Some(Scalar::Num(1.0)));
    }

    #[test]
    fn filters_and_missing_values() {
        let index = shopper();
        let definition: ComputedTrait = serde_json::from_value(json!({
            "key": "big_orders", "aggregate": "max", "event": "Order Completed",
            "property": "revenue", "where": [{"name": "category", "op": "=", "value": "shoes"}]
        }))
        .unwrap();
        let compiled = CompiledComputed::compile(&definition, &index, 0);
        assert_eq!(compiled.value(&index, 0), Some(Scalar::Num(20.2)));
        let unknown: ComputedTrait = serde_json::from_value(json!({
            "key": "x", "aggregate": "avg", "event": "Never Happened", "property": "revenue"
        }))
        .unwrap();
        assert_eq!(
            CompiledComputed::compile(&unknown, &index, 0).value(&index, 0),
            None
        );
        let no_property: Result<(), String> =
            serde_json::from_value::<ComputedTrait>(json!({"key": "y", "aggregate": "sum"}))
                .unwrap()
                .validate();
        assert!(no_property.unwrap_err().contains("needs a \"property\""));
    }
}
