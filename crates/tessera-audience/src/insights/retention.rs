//! Retention: people grouped into cohorts by the bucket (day, week, month in the
//! reporting zone) of their first cohort event in the range, and for each later
//! bucket, how many of them did the return event in it — the retention triangle.
//!
//! Definitions: a person's cohort is the bucket of their first event matching the
//! cohort step with a time in `[from, to)`. Period 0 is the cohort bucket itself
//! (its count is the cohort's size); period n counts the cohort's people with a
//! return event in the n-th bucket after it. Only return events in `[from, to)`
//! count, so a period that starts at or after `to` has no value (`null`), and the
//! last periods shown may be partial. A person is in one cohort only.

use super::{
    Calendar, EventStep, InsightError, InsightInput, Interval, MAX_COHORTS, MAX_PERIODS,
    ReportingZone, Table, TimeRange, invalid, share,
};
use crate::index::Slot;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, HashSet};

/// Periods after the cohort when the request does not say.
pub const DEFAULT_PERIODS: usize = 8;

/// A retention table as the API and the CLI take it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetentionRequest {
    /// The cohort event (its first occurrence in the range places a person).
    pub start: String,
    /// The return event (default: the cohort event).
    #[serde(rename = "return")]
    pub returning: Option<String>,
    /// `day`, `week` (default) or `month`.
    pub interval: Option<String>,
    /// Periods after the cohort's own (default 8, at most 60).
    pub periods: Option<usize>,
    /// First day or instant (default: 30 days before `to`).
    pub from: Option<String>,
    /// Last day (included) or first instant after (default: today).
    pub to: Option<String>,
    /// Only people for whom this audience-language condition holds.
    #[serde(rename = "where")]
    pub filter: Option<Value>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A checked retention query.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionQuery {
    /// The cohort event.
    pub start: EventStep,
    /// The return event.
    pub returning: EventStep,
    /// The bucket length.
    pub interval: Interval,
    /// Periods after the cohort's own.
    pub periods: usize,
    /// The range.
    pub range: TimeRange,
    /// The reporting zone.
    pub zone: ReportingZone,
}

impl RetentionRequest {
    /// Checks the request for a zone and a "now".
    pub fn compile(
        &self,
        zone: ReportingZone,
        now_ms: i64,
    ) -> Result<RetentionQuery, InsightError> {
        let start = EventStep::parse(&self.start, "start")?;
        let returning = match &self.returning {
            Some(text) => EventStep::parse(text, "return")?,
            None => start.clone(),
        };
        let periods = self.periods.unwrap_or(DEFAULT_PERIODS);
        if periods == 0 {
            return Err(invalid("\"periods\" must be at least 1"));
        }
        if periods > MAX_PERIODS {
            return Err(InsightError::TooLarge(format!(
                "\"periods\" is over {MAX_PERIODS}"
            )));
        }
        Ok(RetentionQuery {
            start,
            returning,
            interval: Interval::parse(
                self.interval.as_deref().unwrap_or("week"),
                "interval",
                &[Interval::Day, Interval::Week, Interval::Month],
            )?,
            periods,
            range: TimeRange::parse(self.from.as_deref(), self.to.as_deref(), zone, now_ms)?,
            zone,
        })
    }
}

/// A retention answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionAnswer {
    /// The bucket length.
    pub interval: &'static str,
    /// Periods after the cohort's own.
    pub periods: usize,
    /// The cohort event.
    pub start: String,
    /// The return event.
    #[serde(rename = "return")]
    pub returning: String,
    /// The reporting zone.
    pub time_zone: &'static str,
    /// The range's start.
    pub from: String,
    /// The range's end (excluded).
    pub to: String,
    /// One row per bucket of the range, oldest first.
    pub cohorts: Vec<CohortRow>,
}

/// One cohort.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CohortRow {
    /// The bucket's start.
    pub cohort: String,
    /// People whose first cohort event is in it.
    pub size: u64,
    /// Index n: people back in period n (index 0: the size); `null` for periods
    /// starting at or after `to`.
    pub returned: Vec<Option<u64>>,
    /// `returned` over `size` (`null` when the cohort is empty or the period not begun).
    pub share: Vec<Option<f64>>,
}

impl RetentionQuery {
    /// Runs the query.
    pub fn run(&self, input: &InsightInput<'_>) -> Result<RetentionAnswer, InsightError> {
        let index = input.index;
        let range = self.range;
        let calendar = Calendar::new(
            self.zone,
            self.interval,
            range.from_ms,
            range.to_ms,
            MAX_COHORTS,
        )?;
        let start = self.start.compile(index, input.now_ms);
        let returning = self.returning.compile(index, input.now_ms);
        // Each person's first cohort event.
        let mut first: HashMap<Slot, i64> = HashMap::new();
        if let Some(postings) = start.name().and_then(|n| index.postings(n)) {
            for p in postings.between(range.from_ms, range.to_ms - 1) {
                if input.allows(p.slot) && start.passes(index, p.props) {
                    let t = first.entry(p.slot).or_insert(p.timestamp_ms);
                    *t = (*t).min(p.timestamp_ms);
                }
            }
        }
        let cohorts = calendar.len();
        let mut sizes = vec![0u64; cohorts];
        let mut cohort_of: HashMap<Slot, usize> = HashMap::with_capacity(first.len());
        for (slot, t) in &first {
            if let Some(c) = calendar.bucket(*t) {
                sizes[c] += 1;
                cohort_of.insert(*slot, c);
            }
        }
        let mut back: HashSet<(Slot, usize)> = HashSet::new();
        if let Some(postings) = returning.name().and_then(|n| index.postings(n)) {
            for p in postings.between(range.from_ms, range.to_ms - 1) {
                let Some(&c) = cohort_of.get(&p.slot) else {
                    continue;
                };
                let Some(b) = calendar.bucket(p.timestamp_ms) else {
                    continue;
                };
                if b > c && b - c <= self.periods && returning.passes(index, p.props) {
                    back.insert((p.slot, b - c));
                }
            }
        }
        let mut returned = vec![vec![0u64; self.periods + 1]; cohorts];
        for (slot, period) in back {
            if let Some(&c) = cohort_of.get(&slot) {
                returned[c][period] += 1;
            }
        }
        let rows = (0..cohorts)
            .map(|c| {
                let row: Vec<Option<u64>> = (0..=self.periods)
                    .map(|n| match n {
                        0 => Some(sizes[c]),
                        _ if c + n < cohorts => Some(returned[c][n]),
                        _ => None,
                    })
                    .collect();
                CohortRow {
                    cohort: self.zone.format(calendar.starts[c]),
                    size: sizes[c],
                    share: row
                        .iter()
                        .map(|r| r.and_then(|r| share(r, sizes[c])))
                        .collect(),
                    returned: row,
                }
            })
            .collect();
        Ok(RetentionAnswer {
            interval: self.interval.name(),
            periods: self.periods,
            start: self.start.text(),
            returning: self.returning.text(),
            time_zone: self.zone.name(),
            from: self.zone.format(range.from_ms),
            to: self.zone.format(range.to_ms),
            cohorts: rows,
        })
    }

    /// Event names and property names the query reads (for warnings).
    pub fn names(&self) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        let events = vec![
            self.start.event.name.as_str(),
            self.returning.event.name.as_str(),
        ];
        let properties = self
            .start
            .properties()
            .chain(self.returning.properties())
            .collect();
        (events, properties, Vec::new())
    }
}

impl RetentionAnswer {
    /// One row per (cohort, period) that has begun.
    pub fn table(&self) -> Table {
        let mut rows = Vec::new();
        for c in &self.cohorts {
            for (n, (returned, share)) in c.returned.iter().zip(&c.share).enumerate() {
                let Some(returned) = returned else { continue };
                rows.push(vec![
                    c.cohort.clone(),
                    c.size.to_string(),
                    n.to_string(),
                    returned.to_string(),
                    share.map(|s| s.to_string()).unwrap_or_default(),
                ]);
            }
        }
        Table {
            header: vec!["cohort", "size", "period", "returned", "share"],
            rows,
        }
    }
}
