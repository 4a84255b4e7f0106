//! RFM: recency, frequency and monetary quintile scores, and the usual named
//! segments, over a configurable window and revenue property.
//!
//! A [`RfmModel`] holds the quintile boundaries computed over every buyer (profiles
//! with at least one order in the window). A profile's scores are then a pure
//! function of its own orders, "now" and the model, so the realtime and batch
//! evaluators agree; the engine refreshes the model on a schedule. Profiles without
//! an order in the window have no RFM traits.
//!
//! Scores run 1–5 (5 best: most recent, most frequent, highest spend). The segment
//! comes from the recency score and the rounded mean of the frequency and monetary
//! scores, on the widely used 5×5 grid.

use crate::ast::Duration;
use crate::index::{ProfileIndex, Slot};
use crate::scalar::{Scalar, Sym};
use serde::{Deserialize, Serialize};

/// The RFM traits a profile gets, usable as `computed <name>` in audiences.
pub const RFM_TRAITS: [&str; 5] = [
    "rfm_recency_score",
    "rfm_frequency_score",
    "rfm_monetary_score",
    "rfm_score",
    "rfm_segment",
];

/// Segment names, in the order of [`segment_for`]'s grid.
pub const SEGMENTS: [&str; 11] = [
    "Champions",
    "Loyal",
    "Potential Loyalist",
    "New",
    "Promising",
    "Need Attention",
    "About To Sleep",
    "At Risk",
    "Can't Lose Them",
    "Hibernating",
    "Lost",
];

/// RFM settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RfmConfig {
    /// The order event.
    pub event: String,
    /// The revenue property of the order event.
    pub revenue_property: String,
    /// Orders older than this are ignored.
    pub window: Duration,
}

impl Default for RfmConfig {
    fn default() -> Self {
        Self {
            event: "Order Completed".into(),
            revenue_property: "revenue".into(),
            window: Duration::from_millis(365 * 86_400_000),
        }
    }
}

/// One profile's raw RFM measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RfmMeasures {
    /// Time since the latest order (ms).
    pub age_ms: i64,
    /// Orders in the window.
    pub orders: u32,
    /// Revenue in the window.
    pub revenue: f64,
}

/// One profile's scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RfmScores {
    /// Recency 1–5.
    pub recency: u8,
    /// Frequency 1–5.
    pub frequency: u8,
    /// Monetary 1–5.
    pub monetary: u8,
}

impl RfmScores {
    /// The segment's name.
    pub fn segment(&self) -> &'static str {
        let fm = (self.frequency + self.monetary).div_ceil(2);
        segment_for(self.recency, fm)
    }
}

/// The named segment of a recency score and a frequency-monetary score.
pub fn segment_for(r: u8, fm: u8) -> &'static str {
    match (r, fm) {
        (5, 4..=5) => "Champions",
        (3..=4, 4..=5) => "Loyal",
        (4..=5, 2..=3) => "Potential Loyalist",
        (5, _) => "New",
        (4, _) => "Promising",
        (3, 3) => "Need Attention",
        (3, _) => "About To Sleep",
        (1..=2, 5) => "Can't Lose Them",
        (1..=2, 3..=4) => "At Risk",
        (1, 1) => "Lost",
        _ => "Hibernating",
    }
}

/// The measures of one profile at `now_ms` (`None` without an order in the window).
pub fn measures(
    index: &ProfileIndex,
    slot: Slot,
    config: &RfmConfig,
    now_ms: i64,
) -> Option<RfmMeasures> {
    let name = index.symbols.get(&config.event)?;
    let revenue_key = index.symbols.get(&config.revenue_property);
    let from = now_ms.saturating_sub(config.window.millis);
    let mut result: Option<RfmMeasures> = None;
    for event in index.profile_events(slot).between(from, now_ms).named(name) {
        let revenue = match revenue_key.and_then(|k| index.property(&event, k)) {
            Some(Scalar::Num(n)) if n.is_finite() => *n,
            _ => 0.0,
        };
        let m = result.get_or_insert(RfmMeasures {
            age_ms: i64::MAX,
            orders: 0,
            revenue: 0.0,
        });
        m.orders += 1;
        m.revenue += revenue;
        m.age_ms = m.age_ms.min(now_ms - event.timestamp_ms);
    }
    result.map(|m| RfmMeasures {
        revenue: cents(m.revenue),
        ..m
    })
}

/// Revenue to the cent, so sums in any order compare equal.
fn cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The measures of every buyer at `now_ms`, from the order event's postings (one scan
/// of that event, not of every profile's events).
pub fn all_measures(index: &ProfileIndex, config: &RfmConfig, now_ms: i64) -> Vec<RfmMeasures> {
    let Some(postings) = index
        .symbols
        .get(&config.event)
        .and_then(|n| index.postings(n))
    else {
        return Vec::new();
    };
    let revenue_key = index.symbols.get(&config.revenue_property);
    let from = now_ms.saturating_sub(config.window.millis);
    let mut by_slot: Vec<Option<RfmMeasures>> = vec![None; index.slot_count()];
    for p in postings.between(from, now_ms) {
        let revenue = match revenue_key.and_then(|k| index.property_of(p.props, k)) {
            Some(Scalar::Num(n)) if n.is_finite() => *n,
            _ => 0.0,
        };
        let m = by_slot[p.slot as usize].get_or_insert(RfmMeasures {
            age_ms: i64::MAX,
            orders: 0,
            revenue: 0.0,
        });
        m.orders += 1;
        m.revenue += revenue;
        m.age_ms = m.age_ms.min(now_ms - p.timestamp_ms);
    }
    by_slot
        .into_iter()
        .flatten()
        .map(|m| RfmMeasures {
            revenue: cents(m.revenue),
            ..m
        })
        .collect()
}

/// Every buyer's measures, sorted, computed at one time: a profile's score is the
/// quintile its value falls in among them.
#[derive(Debug, Clone, PartialEq)]
pub struct RfmModel {
    /// The settings it was computed with.
    pub config: RfmConfig,
    /// When (Unix ms).
    pub computed_at_ms: i64,
    /// Buyers it was computed over.
    pub buyers: usize,
    /// Times of the buyers' latest orders, ascending.
    latest: Vec<i64>,
    /// Order counts, ascending.
    orders: Vec<u32>,
    /// Revenues, ascending.
    revenue: Vec<f64>,
    /// Interned segment names, in [`SEGMENTS`] order (`None`: not interned yet).
    pub segment_syms: Vec<Option<Sym>>,
}

/// The quintile (1–5) of a share in (0, 1].
fn quintile(at_or_below: usize, total: usize) -> u8 {
    (at_or_below * 5).div_ceil(total).clamp(1, 5) as u8
}

impl RfmModel {
    /// Computes the model over every live profile of the index at `now_ms`.
    pub fn compute(index: &ProfileIndex, config: RfmConfig, now_ms: i64) -> Self {
        let measures = all_measures(index, &config, now_ms);
        let mut latest: Vec<i64> = measures.iter().map(|m| now_ms - m.age_ms).collect();
        let mut orders: Vec<u32> = measures.iter().map(|m| m.orders).collect();
        let mut revenue: Vec<f64> = measures.iter().map(|m| m.revenue).collect();
        latest.sort_unstable();
        orders.sort_unstable();
        revenue.sort_by(f64::total_cmp);
        Self {
            buyers: latest.len(),
            latest,
            orders,
            revenue,
            segment_syms: SEGMENTS.iter().map(|s| index.symbols.get(s)).collect(),
            config,
            computed_at_ms: now_ms,
        }
    }

    /// Scores of measures at `now_ms`: the share of the model's buyers whose value is
    /// at or below this one (for recency: whose latest order is at or before this
    /// one's), in fifths. Recency compares order times, not ages, so scores do not
    /// drift as time passes between refreshes. A buyer the model has not seen yet
    /// (e.g. the first one) is compared as if it were in it.
    pub fn score(&self, m: &RfmMeasures, now_ms: i64) -> RfmScores {
        let n = self.buyers.max(1);
        let latest = now_ms - m.age_ms;
        let at_or_before = self.latest.partition_point(|t| *t <= latest).max(1);
        let fewer_or_same = self.orders.partition_point(|o| *o <= m.orders).max(1);
        let less_or_same = self.revenue.partition_point(|r| *r <= m.revenue).max(1);
        RfmScores {
            recency: quintile(at_or_before.min(n), n),
            frequency: quintile(fewer_or_same.min(n), n),
            monetary: quintile(less_or_same.min(n), n),
        }
    }

    /// One RFM trait of a profile (see [`RFM_TRAITS`]); `None` for non-buyers.
    pub fn trait_value(
        &self,
        index: &ProfileIndex,
        slot: Slot,
        name: &str,
        now_ms: i64,
    ) -> Option<Scalar> {
        let m = measures(index, slot, &self.config, now_ms)?;
        let s = self.score(&m, now_ms);
        match name {
            "rfm_recency_score" => Some(Scalar::Num(s.recency as f64)),
            "rfm_frequency_score" => Some(Scalar::Num(s.frequency as f64)),
            "rfm_monetary_score" => Some(Scalar::Num(s.monetary as f64)),
            "rfm_score" => {
                let text = format!("{}{}{}", s.recency, s.frequency, s.monetary);
                index.symbols.get(&text).map(Scalar::Str)
            }
            "rfm_segment" => {
                let segment = s.segment();
                let position = SEGMENTS.iter().position(|n| *n == segment)?;
                self.segment_syms
                    .get(position)
                    .copied()
                    .flatten()
                    .map(Scalar::Str)
            }
            _ => None,
        }
    }

    /// The strings RFM traits produce, to intern before evaluating
    /// (evaluation reads the index and cannot intern).
    pub fn strings() -> Vec<String> {
        let mut out: Vec<String> = SEGMENTS.iter().map(|s| (*s).to_owned()).collect();
        for r in 1..=5 {
            for f in 1..=5 {
                for m in 1..=5 {
                    out.push(format!("{r}{f}{m}"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::index::{EventInput, ProfileInput};
    use serde_json::json;

    #[test]
    fn the_grid_names_every_cell() {
        for r in 1..=5 {
            for fm in 1..=5 {
                assert!(SEGMENTS.contains(&segment_for(r, fm)), "{r}{fm}");
            }
        }
        assert_eq!(segment_for(5, 5), "Champions");
        assert_eq!(segment_for(5, 1), "New");
        assert_eq!(segment_for(1, 5), "Can't Lose Them");
        assert_eq!(segment_for(1, 1), "Lost");
        assert_eq!(segment_for(2, 4), "At Risk");
    }

    #[test]
    fn recent_frequent_big_spenders_are_champions_and_old_small_ones_are_lost() {
        let day = 86_400_000i64;
        let now = 400 * day;
        let mut index = ProfileIndex::new();
        for id in 0..10i64 {
            // Profile i: i+1 orders of 10*(i+1), the latest (10 - i) * 20 days ago.
            let events = (0..=id)
                .map(|k| EventInput {
                    timestamp_ms: now - (10 - id) * 20 * day - k * day,
                    name: "Order Completed".into(),
                    properties: json!({"revenue": 10.0 * (id + 1) as f64})
                        .as_object()
                        .cloned()
                        .unwrap(),
                    consent: vec![],
                })
                .collect();
            index.upsert_profile(&ProfileInput {
                id,
                events,
                ..Default::default()
            });
        }
        for s in RfmModel::strings() {
            index.symbols.intern(&s);
        }
        let model = RfmModel::compute(&index, RfmConfig::default(), now);
        assert_eq!(model.buyers, 10);
        let segment = |id| {
            let slot = index.slot(id).unwrap();
            match model.trait_value(&index, slot, "rfm_segment", now) {
                Some(Scalar::Str(s)) => index.symbols.text(s).to_owned(),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(segment(9), "Champions");
        assert_eq!(segment(0), "Lost");
        let slot = index.slot(9).unwrap();
        let score = model.trait_value(&index, slot, "rfm_score", now).unwrap();
        assert_eq!(score, Scalar::Str(index.symbols.get("555").unwrap()));
    }
}
