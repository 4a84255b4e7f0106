//! Trends: per bucket of a range, how many events, how many people, or the sum or
//! average of a numeric property — for one or more series, optionally broken down
//! by an event property or a trait (the top values, the rest as "other").
//!
//! Counting rules: an event counts in the bucket holding its time when the time is
//! in `[from, to)` and the person is among the `where` members. `people` counts each
//! person once per bucket, and once in the total. `sum` and `avg` read a numeric
//! property: events without a number there count for neither (an average over no
//! event is `null`).

use super::{
    Breakdown, BreakdownValues, Calendar, EventStep, InsightError, InsightInput, Interval,
    MAX_BUCKETS, MAX_SERIES, ReportingZone, Table, TimeRange, breakdown_limit, cell, invalid,
    number, top_values,
};
use crate::index::Slot;
use crate::scalar::Scalar;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashSet;

/// A trend as the API and the CLI take it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrendsRequest {
    /// The series: an event step (name, or `event "..." where ...`), or an object.
    pub series: Vec<SeriesRequest>,
    /// First day or instant (default: 30 days before `to`).
    pub from: Option<String>,
    /// Last day (included) or first instant after (default: today).
    pub to: Option<String>,
    /// `hour`, `day` (default), `week` or `month`.
    pub interval: Option<String>,
    /// The measure of series given as text: `events` (default), `people`, `sum`, `avg`.
    pub measure: Option<String>,
    /// The numeric property `sum` and `avg` read, for series given as text.
    pub property: Option<String>,
    /// Break down by this event property.
    pub by_property: Option<String>,
    /// Break down by this trait.
    pub by_trait: Option<String>,
    /// Breakdown values shown (default 10, at most 100); the rest are "other".
    pub limit: Option<usize>,
    /// Only people for whom this audience-language condition holds (checked by
    /// the engine, not here).
    #[serde(rename = "where")]
    pub filter: Option<Value>,
    /// `json` (default) or `csv` (read by the HTTP edge).
    pub format: Option<String>,
}

/// One series of a [`TrendsRequest`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SeriesRequest {
    /// An event step, measured by the request's `measure`.
    Step(String),
    /// A step with its own measure.
    Full(SeriesObject),
}

/// A series written as an object.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesObject {
    /// The event step.
    pub event: String,
    /// `events` (default), `people`, `sum` or `avg`.
    pub measure: Option<String>,
    /// The numeric property `sum` and `avg` read.
    pub property: Option<String>,
    /// A label for the answer (default: the step's text).
    pub label: Option<String>,
}

/// What a series measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Measure {
    /// Matching events.
    Events,
    /// Distinct people with a matching event.
    People,
    /// The sum of a numeric property.
    Sum(String),
    /// The average of a numeric property.
    Avg(String),
}

impl Measure {
    fn parse(
        measure: Option<&str>,
        property: Option<&str>,
        field: &str,
    ) -> Result<Self, InsightError> {
        let property = property.map(str::trim).filter(|p| !p.is_empty());
        let measure = measure.map(str::trim).unwrap_or("events");
        match (measure, property) {
            ("events", _) => Ok(Measure::Events),
            ("people", _) => Ok(Measure::People),
            ("sum", Some(p)) => Ok(Measure::Sum(p.to_owned())),
            ("avg", Some(p)) => Ok(Measure::Avg(p.to_owned())),
            ("sum" | "avg", None) => Err(invalid(format!(
                "{field}: \"{measure}\" needs \"property\", the numeric event property to add up (e.g. \"revenue\")"
            ))),
            _ => Err(invalid(format!(
                "{field}: \"measure\" is \"{measure}\": use events, people, sum or avg"
            ))),
        }
    }

    /// Its name in answers.
    pub fn name(&self) -> &'static str {
        match self {
            Measure::Events => "events",
            Measure::People => "people",
            Measure::Sum(_) => "sum",
            Measure::Avg(_) => "avg",
        }
    }

    /// The property it reads.
    pub fn property(&self) -> Option<&str> {
        match self {
            Measure::Sum(p) | Measure::Avg(p) => Some(p),
            _ => None,
        }
    }
}

/// One checked series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its label.
    pub label: String,
    /// The event step.
    pub step: EventStep,
    /// The measure.
    pub measure: Measure,
}

/// A checked trend, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendsQuery {
    /// The series.
    pub series: Vec<Series>,
    /// The range.
    pub range: TimeRange,
    /// The bucket length.
    pub interval: Interval,
    /// The reporting zone.
    pub zone: ReportingZone,
    /// The breakdown.
    pub breakdown: Option<Breakdown>,
    /// Breakdown values shown.
    pub limit: usize,
}

impl TrendsRequest {
    /// Checks the request for a zone and a "now".
    pub fn compile(&self, zone: ReportingZone, now_ms: i64) -> Result<TrendsQuery, InsightError> {
        if self.series.is_empty() {
            return Err(invalid(
                "\"series\" is empty: give at least one event, e.g. [\"Order Completed\"]",
            ));
        }
        if self.series.len() > MAX_SERIES {
            return Err(InsightError::TooLarge(format!(
                "{} series: at most {MAX_SERIES}",
                self.series.len()
            )));
        }
        let mut series = Vec::with_capacity(self.series.len());
        for (i, s) in self.series.iter().enumerate() {
            let field = format!("series[{i}]");
            let (text, measure, property, label) = match s {
                SeriesRequest::Step(text) => (
                    text,
                    self.measure.as_deref(),
                    self.property.as_deref(),
                    None,
                ),
                SeriesRequest::Full(o) => (
                    &o.event,
                    o.measure.as_deref().or(self.measure.as_deref()),
                    o.property.as_deref().or(self.property.as_deref()),
                    o.label.clone(),
                ),
            };
            let step = EventStep::parse(text, &field)?;
            let measure = Measure::parse(measure, property, &field)?;
            series.push(Series {
                label: label.unwrap_or_else(|| step.text()),
                step,
                measure,
            });
        }
        let interval = Interval::parse(
            self.interval.as_deref().unwrap_or("day"),
            "interval",
            &[
                Interval::Hour,
                Interval::Day,
                Interval::Week,
                Interval::Month,
            ],
        )?;
        Ok(TrendsQuery {
            series,
            range: TimeRange::parse(self.from.as_deref(), self.to.as_deref(), zone, now_ms)?,
            interval,
            zone,
            breakdown: Breakdown::from_request(self.by_property.clone(), self.by_trait.clone())?,
            limit: breakdown_limit(self.limit)?,
        })
    }
}

/// A trend's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrendsAnswer {
    /// The bucket length.
    pub interval: &'static str,
    /// The reporting zone.
    pub time_zone: &'static str,
    /// The range's start.
    pub from: String,
    /// The range's end (excluded).
    pub to: String,
    /// Each bucket's start (the first may begin before `from`).
    pub buckets: Vec<String>,
    /// One row per series (and breakdown value).
    pub series: Vec<SeriesAnswer>,
}

/// One row of a trend.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesAnswer {
    /// The series' label.
    pub label: String,
    /// The event step.
    pub event: String,
    /// The measure.
    pub measure: &'static str,
    /// The property `sum` / `avg` read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// The breakdown value (`null`: the event or person has none); absent without a
    /// breakdown and on the "other" row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Value>,
    /// Set on the row summing every value past the top ones.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other: bool,
    /// One value per bucket.
    pub values: Vec<Value>,
    /// Over the whole range (`people`: distinct people over the range).
    pub total: Value,
}

/// What one (series, group) gathered.
#[derive(Default, Clone)]
struct Cell {
    count: u64,
    sum: f64,
    people: HashSet<Slot>,
}

impl TrendsQuery {
    /// Runs the trend.
    pub fn run(&self, input: &InsightInput<'_>) -> Result<TrendsAnswer, InsightError> {
        let index = input.index;
        let range = self.range;
        let calendar = Calendar::new(
            self.zone,
            self.interval,
            range.from_ms,
            range.to_ms,
            MAX_BUCKETS,
        )?;
        let mut values = BreakdownValues::new(index, self.breakdown.as_ref());
        // (series, value id, bucket, slot, number) of every counted event.
        let mut hits: Vec<(u32, u32, u32, Slot, f64)> = Vec::new();
        for (s, series) in self.series.iter().enumerate() {
            let matcher = series.step.compile(index, input.now_ms);
            let Some(postings) = matcher.name().and_then(|n| index.postings(n)) else {
                continue;
            };
            let property = series.measure.property().map(|p| index.symbols.get(p));
            for posting in postings.between(range.from_ms, range.to_ms - 1) {
                if !input.allows(posting.slot) || !matcher.passes(index, posting.props) {
                    continue;
                }
                let amount = match property {
                    None => 0.0,
                    Some(key) => match key.and_then(|k| index.property_of(posting.props, k)) {
                        Some(Scalar::Num(n)) if n.is_finite() => *n,
                        _ => continue,
                    },
                };
                let Some(bucket) = calendar.bucket(posting.timestamp_ms) else {
                    continue;
                };
                let value = values.of(posting.slot, posting.props);
                hits.push((s as u32, value, bucket as u32, posting.slot, amount));
            }
        }
        // Rank breakdown values by their events over every series.
        let mut weights = vec![0u64; values.len()];
        for hit in &hits {
            weights[hit.1 as usize] += 1;
        }
        let (group_of, kept) = top_values(&weights, &values, self.limit);
        let groups = kept.len() + 1;
        let buckets = calendar.len();
        // [series][group] -> (per bucket, total)
        let mut cells: Vec<Vec<(Vec<Cell>, Cell)>> =
            vec![
                vec![(vec![Cell::default(); buckets], Cell::default()); groups];
                self.series.len()
            ];
        let mut seen_other = false;
        for (s, value, bucket, slot, amount) in hits {
            let group = group_of[value as usize];
            seen_other |= group == kept.len();
            let (per_bucket, total) = &mut cells[s as usize][group];
            let people = matches!(self.series[s as usize].measure, Measure::People);
            for cell in [&mut per_bucket[bucket as usize], total] {
                cell.count += 1;
                cell.sum += amount;
                if people {
                    cell.people.insert(slot);
                }
            }
        }
        let mut rows = Vec::new();
        for (s, series) in self.series.iter().enumerate() {
            let mut emit = |group: usize, breakdown: Option<Value>, other: bool| {
                let (per_bucket, total) = &cells[s][group];
                let measure = |cell: &Cell| match series.measure {
                    Measure::Events => number(cell.count as f64),
                    Measure::People => number(cell.people.len() as f64),
                    Measure::Sum(_) => number(cell.sum),
                    Measure::Avg(_) if cell.count == 0 => Value::Null,
                    Measure::Avg(_) => number(cell.sum / cell.count as f64),
                };
                rows.push(SeriesAnswer {
                    label: series.label.clone(),
                    event: series.step.text(),
                    measure: series.measure.name(),
                    property: series.measure.property().map(str::to_owned),
                    breakdown,
                    other,
                    values: per_bucket.iter().map(measure).collect(),
                    total: measure(total),
                });
            };
            if values.active() {
                for (group, id) in kept.iter().enumerate() {
                    emit(group, Some(values.value(*id)), false);
                }
                if seen_other {
                    emit(kept.len(), None, true);
                }
            } else {
                emit(0, None, false);
            }
        }
        Ok(TrendsAnswer {
            interval: self.interval.name(),
            time_zone: self.zone.name(),
            from: self.zone.format(range.from_ms),
            to: self.zone.format(range.to_ms),
            buckets: calendar
                .starts
                .iter()
                .map(|s| self.zone.format(*s))
                .collect(),
            series: rows,
        })
    }

    /// Event names, property names and trait names the query reads (for warnings).
    pub fn names(&self) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        let mut events = Vec::new();
        let mut properties = Vec::new();
        for s in &self.series {
            events.push(s.step.event.name.as_str());
            properties.extend(s.step.properties());
            properties.extend(s.measure.property());
        }
        let mut traits = Vec::new();
        match &self.breakdown {
            Some(Breakdown::Property(p)) => properties.push(p),
            Some(Breakdown::Trait(t)) => traits.push(t.as_str()),
            None => {}
        }
        (events, properties, traits)
    }
}

impl TrendsAnswer {
    /// One row per (series, breakdown value, bucket).
    pub fn table(&self) -> Table {
        let mut rows = Vec::new();
        for series in &self.series {
            let breakdown = match (&series.breakdown, series.other) {
                (_, true) => "(other)".to_owned(),
                (Some(v), _) => cell(v),
                (None, _) => String::new(),
            };
            for (bucket, value) in self.buckets.iter().zip(&series.values) {
                rows.push(vec![
                    series.label.clone(),
                    series.measure.to_owned(),
                    breakdown.clone(),
                    bucket.clone(),
                    cell(value),
                ]);
            }
        }
        Table {
            header: vec!["series", "measure", "breakdown", "bucket", "value"],
            rows,
        }
    }
}
