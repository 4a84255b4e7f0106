//! Insights over the audience index: trends, funnels and retention.
//!
//! Each insight is a request (the API's JSON, shared by the CLI) that is checked and
//! compiled into a query for one reporting time zone and one "now", then run over
//! the index under the engine's read lock ([`crate::engine::AudienceEngine::insight`]).
//! The index already resolves identities: a merged person's events are one timeline,
//! so every insight counts people, not the profiles they once were.
//!
//! Shared here: the reporting time zone and its calendar (hour, day, week, month
//! buckets whose boundaries are local midnights, Mondays and firsts of the month),
//! date ranges, event steps (an event name, or the audience language's `event`
//! atom with property filters), breakdowns, the limits every query is held to,
//! and the tabular form answers take for CSV and the CLI.
//!
//! Invariants: a range is half-open, `[from, to)`; buckets are counted in the
//! reporting zone; no query reads outside the range it was given except where its
//! documentation says (a funnel's later steps may fall after `to`, inside the
//! conversion window).

pub mod funnels;
pub mod retention;
pub mod trends;

use crate::ast::{Condition, CountTest, EventCondition, Window};
use crate::bitset::Bitset;
use crate::eval::EventPlan;
use crate::index::{ProfileIndex, Slot};
use crate::language::{parse, print};
use crate::scalar::{Scalar, Sym, to_json};
use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use serde_json::Value;
use std::collections::HashMap;

/// Most buckets a trend may have (e.g. 83 days by the hour, 5 years by the day).
pub const MAX_BUCKETS: usize = 2_000;
/// Most cohorts a retention table may have.
pub const MAX_COHORTS: usize = 400;
/// Most series in one trend.
pub const MAX_SERIES: usize = 10;
/// Most steps in one funnel.
pub const MAX_STEPS: usize = 10;
/// Most breakdown values shown (the rest are summed up as "other").
pub const MAX_BREAKDOWN_VALUES: usize = 100;
/// Breakdown values shown when the request does not say.
pub const DEFAULT_BREAKDOWN_VALUES: usize = 10;
/// Most periods after a retention cohort.
pub const MAX_PERIODS: usize = 60;
/// The longest range, in days (about five years).
pub const MAX_RANGE_DAYS: i64 = 1_830;
/// The longest funnel conversion window, in days.
pub const MAX_WINDOW_DAYS: i64 = 365;
/// The days a range covers when the request gives no `from`.
pub const DEFAULT_RANGE_DAYS: i64 = 30;

const DAY_MS: i64 = 86_400_000;

/// Why an insight query cannot run; the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsightError {
    /// Not well-formed.
    #[error("{0}")]
    Invalid(String),
    /// Over a limit.
    #[error("{0}")]
    TooLarge(String),
}

impl tessera_core::CodedError for InsightError {
    fn code(&self) -> tessera_core::ErrorCode {
        match self {
            InsightError::Invalid(_) => tessera_core::ErrorCode::InvalidInsight,
            InsightError::TooLarge(_) => tessera_core::ErrorCode::InsightTooLarge,
        }
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> InsightError {
    InsightError::Invalid(message.into())
}

/// The time zone day, week and month boundaries are counted in (IANA name, e.g.
/// `Europe/Berlin`; daylight saving time included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportingZone(chrono_tz::Tz);

impl Default for ReportingZone {
    fn default() -> Self {
        Self(chrono_tz::UTC)
    }
}

impl ReportingZone {
    /// UTC.
    pub const UTC: ReportingZone = ReportingZone(chrono_tz::UTC);

    /// Reads an IANA time zone name (`UTC`, `Europe/Berlin`, `America/New_York`).
    pub fn parse(name: &str) -> Result<Self, String> {
        name.trim()
            .parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| {
                format!(
                    "\"{name}\" is not an IANA time zone name: use e.g. \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
                )
            })
    }

    /// Its IANA name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// A time as RFC 3339 with this zone's offset at that time (seconds precision).
    pub fn format(&self, ms: i64) -> String {
        self.0
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    }

    fn local(&self, ms: i64) -> NaiveDateTime {
        self.0
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.naive_local())
            .unwrap_or_default()
    }

    /// The instant a local time names: the earlier of two in a repeated hour; in a
    /// skipped hour (a daylight saving gap), the first instant after the gap.
    fn instant(&self, local: NaiveDateTime) -> i64 {
        let mut probe = local;
        for _ in 0..4 {
            match self.0.from_local_datetime(&probe) {
                chrono::LocalResult::Single(t) => return t.timestamp_millis(),
                chrono::LocalResult::Ambiguous(t, _) => return t.timestamp_millis(),
                chrono::LocalResult::None => {
                    probe = probe
                        .with_minute(0)
                        .unwrap_or(probe)
                        .checked_add_signed(chrono::TimeDelta::hours(1))
                        .unwrap_or(probe);
                }
            }
        }
        local.and_utc().timestamp_millis()
    }

    /// Local midnight starting `date`.
    pub fn midnight(&self, date: NaiveDate) -> i64 {
        self.instant(date.and_hms_opt(0, 0, 0).unwrap_or_default())
    }

    /// The start of the bucket holding `ms`.
    pub fn bucket_start(&self, ms: i64, interval: Interval) -> i64 {
        let local = self.local(ms);
        let date = local.date();
        match interval {
            Interval::Hour => {
                let start = self.instant(date.and_hms_opt(local.hour(), 0, 0).unwrap_or_default());
                // In a repeated hour the local floor names the earlier instant, which
                // may lie a full hour before: the bucket is then the later hour.
                if ms - start >= 3_600_000 {
                    start + 3_600_000
                } else {
                    start
                }
            }
            Interval::Day => self.midnight(date),
            Interval::Week => self.midnight(
                date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday())),
            ),
            Interval::Month => self.midnight(date.with_day(1).unwrap_or(date)),
        }
    }

    /// The start of the bucket after the one starting at `start`.
    pub fn next_bucket(&self, start: i64, interval: Interval) -> i64 {
        let date = self.local(start).date();
        let next = match interval {
            Interval::Hour => {
                let next = self.bucket_start(start + 3_600_000, interval);
                return if next > start {
                    next
                } else {
                    start + 3_600_000
                };
            }
            Interval::Day => self.midnight(date + chrono::Days::new(1)),
            Interval::Week => self.midnight(date + chrono::Days::new(7)),
            Interval::Month => {
                self.midnight(date.with_day(1).unwrap_or(date) + chrono::Months::new(1))
            }
        };
        // A zone whose midnight falls in a gap could map two dates to one instant.
        next.max(start + 1)
    }
}

/// A bucket's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    /// An hour.
    Hour,
    /// A day, from local midnight.
    Day,
    /// A week, from Monday's local midnight (ISO weeks).
    Week,
    /// A month, from the first's local midnight.
    Month,
}

impl Interval {
    /// Reads `hour`, `day`, `week` or `month`.
    pub fn parse(text: &str, field: &str, allowed: &[Interval]) -> Result<Self, InsightError> {
        let interval = match text.trim().to_ascii_lowercase().as_str() {
            "hour" => Some(Interval::Hour),
            "day" => Some(Interval::Day),
            "week" => Some(Interval::Week),
            "month" => Some(Interval::Month),
            _ => None,
        };
        match interval {
            Some(interval) if allowed.contains(&interval) => Ok(interval),
            _ => {
                let names: Vec<&str> = allowed.iter().map(|i| i.name()).collect();
                Err(invalid(format!(
                    "\"{field}\" is \"{text}\": use one of {}",
                    names.join(", ")
                )))
            }
        }
    }

    /// Its name in requests and answers.
    pub fn name(&self) -> &'static str {
        match self {
            Interval::Hour => "hour",
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
        }
    }
}

/// Consecutive buckets covering a range in one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// The start of each bucket (the first may begin before the range).
    pub starts: Vec<i64>,
    /// The end of the last bucket.
    pub end: i64,
}

impl Calendar {
    /// The buckets covering `[from, to)`; at most `max` of them.
    pub fn new(
        zone: ReportingZone,
        interval: Interval,
        from: i64,
        to: i64,
        max: usize,
    ) -> Result<Self, InsightError> {
        let mut starts = Vec::new();
        let mut at = zone.bucket_start(from, interval);
        while at < to {
            if starts.len() == max {
                return Err(InsightError::TooLarge(format!(
                    "the range has more than {max} {}s: choose a shorter range or a longer interval",
                    interval.name()
                )));
            }
            starts.push(at);
            at = zone.next_bucket(at, interval);
        }
        Ok(Self { starts, end: at })
    }

    /// The bucket holding `ms`.
    pub fn bucket(&self, ms: i64) -> Option<usize> {
        if self.starts.first().is_none_or(|s| ms < *s) || ms >= self.end {
            return None;
        }
        Some(self.starts.partition_point(|s| *s <= ms) - 1)
    }

    /// Number of buckets.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// A half-open range of time, `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First instant in (Unix ms).
    pub from_ms: i64,
    /// First instant after (Unix ms).
    pub to_ms: i64,
}

impl TimeRange {
    /// Reads `from` and `to`: a date (`2026-03-01`, local midnight in `zone`; `to`
    /// includes its whole day) or an RFC 3339 timestamp (`to` excluded). Without
    /// `to`: through today; without `from`: the 30 days ending at `to`.
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        zone: ReportingZone,
        now_ms: i64,
    ) -> Result<Self, InsightError> {
        let to_ms = match to {
            Some(text) => bound(text, "to", zone, true)?,
            None => zone.midnight(zone.local(now_ms).date() + chrono::Days::new(1)),
        };
        let from_ms = match from {
            Some(text) => bound(text, "from", zone, false)?,
            None => {
                let last_day = zone.local(to_ms - 1).date();
                zone.midnight(last_day - chrono::Days::new(DEFAULT_RANGE_DAYS as u64 - 1))
            }
        };
        if from_ms >= to_ms {
            return Err(invalid(
                "\"from\" must be before \"to\" (a date \"to\" includes its whole day)",
            ));
        }
        if to_ms - from_ms > MAX_RANGE_DAYS * DAY_MS {
            return Err(InsightError::TooLarge(format!(
                "the range is longer than {MAX_RANGE_DAYS} days: choose a shorter one"
            )));
        }
        Ok(Self { from_ms, to_ms })
    }
}

fn bound(text: &str, field: &str, zone: ReportingZone, end: bool) -> Result<i64, InsightError> {
    let text = text.trim();
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let date = if end {
            date + chrono::Days::new(1)
        } else {
            date
        };
        return Ok(zone.midnight(date));
    }
    tessera_core::time::parse_timestamp(text)
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| {
            invalid(format!(
                "\"{field}\" is \"{text}\": use a date (2026-03-01) or an RFC 3339 timestamp (2026-03-01T12:00:00+01:00)"
            ))
        })
}

/// One event with optional property filters: a trend's series, a funnel's step, a
/// retention's cohort or return event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventStep {
    /// The event condition (count and window always the defaults).
    pub event: EventCondition,
}

/// How long an event name or step text may be.
const MAX_STEP_CHARS: usize = 2_000;

impl EventStep {
    /// Reads a step: an event name (`Order Completed`), or the audience language's
    /// event atom with filters (`event "Order Completed" where total > 50`).
    pub fn parse(text: &str, field: &str) -> Result<Self, InsightError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(invalid(format!(
                "\"{field}\" is empty: give an event name, e.g. \"Order Completed\""
            )));
        }
        if trimmed.chars().count() > MAX_STEP_CHARS {
            return Err(InsightError::TooLarge(format!(
                "\"{field}\" is over {MAX_STEP_CHARS} characters"
            )));
        }
        let is_atom = trimmed.get(..6).is_some_and(|head| {
            head.eq_ignore_ascii_case("event ") || head.eq_ignore_ascii_case("event\"")
        });
        if !is_atom {
            return Ok(Self {
                event: EventCondition {
                    name: trimmed.to_owned(),
                    filters: Vec::new(),
                    count: CountTest::default(),
                    window: Window::AllTime,
                },
            });
        }
        match parse(trimmed) {
            Ok(Condition::Event(event))
                if event.count == CountTest::default() && event.window.is_all_time() =>
            {
                Ok(Self { event })
            }
            Ok(_) => Err(invalid(format!(
                "\"{field}\" must be one event with optional filters, e.g. event \"Order Completed\" where total > 50 (no counts, windows, and/or)"
            ))),
            Err(e) => Err(invalid(format!("\"{field}\": {e}"))),
        }
    }

    /// Its canonical text: the event name alone, or the event atom with filters.
    pub fn text(&self) -> String {
        if self.event.filters.is_empty() {
            self.event.name.clone()
        } else {
            print(&Condition::Event(self.event.clone()))
        }
    }

    /// Compiled against the index.
    pub fn compile(&self, index: &ProfileIndex, now_ms: i64) -> StepMatcher {
        StepMatcher(EventPlan::compile(&self.event, index, now_ms))
    }

    /// The property names its filters read.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.event.filters.iter().map(|f| f.name.as_str())
    }
}

/// A compiled [`EventStep`].
pub struct StepMatcher(EventPlan);

impl StepMatcher {
    /// The interned event name (`None`: no event has it).
    pub fn name(&self) -> Option<Sym> {
        self.0.name
    }

    /// Whether an event of this name with these properties matches.
    pub fn matches(&self, index: &ProfileIndex, name: Sym, props: u32) -> bool {
        self.0.name == Some(name) && self.0.passes_filters(index, props)
    }

    /// Whether an event known to have this name matches its filters.
    pub fn passes(&self, index: &ProfileIndex, props: u32) -> bool {
        self.0.passes_filters(index, props)
    }
}

/// What a breakdown groups by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Breakdown {
    /// A property of the event (for funnels: of the first step's event).
    Property(String),
    /// A trait of the person.
    Trait(String),
}

impl Breakdown {
    /// From the request's `byProperty` / `byTrait` (at most one).
    pub fn from_request(
        by_property: Option<String>,
        by_trait: Option<String>,
    ) -> Result<Option<Self>, InsightError> {
        match (by_property, by_trait) {
            (Some(_), Some(_)) => Err(invalid(
                "give \"byProperty\" or \"byTrait\", not both: a breakdown has one dimension",
            )),
            (Some(p), None) if !p.trim().is_empty() => Ok(Some(Breakdown::Property(p))),
            (None, Some(t)) if !t.trim().is_empty() => Ok(Some(Breakdown::Trait(t))),
            (None, None) => Ok(None),
            _ => Err(invalid(
                "\"byProperty\" / \"byTrait\" is empty: name a property or trait",
            )),
        }
    }
}

/// Breakdown values seen during a scan, numbered in order of appearance.
pub(crate) struct BreakdownValues<'a> {
    index: &'a ProfileIndex,
    source: Option<BreakdownSource<'a>>,
    ids: HashMap<ValueKey, u32>,
    values: Vec<Value>,
}

enum BreakdownSource<'a> {
    Property(Option<Sym>),
    Trait(Option<&'a [Option<Scalar>]>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ValueKey {
    Missing,
    Str(Sym),
    Other(String),
}

impl<'a> BreakdownValues<'a> {
    pub(crate) fn new(index: &'a ProfileIndex, breakdown: Option<&Breakdown>) -> Self {
        let source = breakdown.map(|b| match b {
            Breakdown::Property(p) => BreakdownSource::Property(index.symbols.get(p)),
            Breakdown::Trait(t) => BreakdownSource::Trait(index.trait_column(t)),
        });
        Self {
            index,
            source,
            ids: HashMap::new(),
            values: Vec::new(),
        }
    }

    /// The value id of an event (its properties) of a person (its slot); 0 when
    /// there is no breakdown.
    pub(crate) fn of(&mut self, slot: Slot, props: u32) -> u32 {
        let scalar = match &self.source {
            None => return 0,
            Some(BreakdownSource::Property(key)) => {
                key.and_then(|k| self.index.property_of(props, k))
            }
            Some(BreakdownSource::Trait(column)) => column
                .and_then(|c| c.get(slot as usize))
                .and_then(Option::as_ref),
        };
        let key = match scalar {
            None | Some(Scalar::Null) => ValueKey::Missing,
            Some(Scalar::Str(s)) => ValueKey::Str(*s),
            Some(other) => ValueKey::Other(to_json(&self.index.symbols, other).to_string()),
        };
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let value = match scalar {
            None => Value::Null,
            Some(s) => to_json(&self.index.symbols, s),
        };
        let id = self.values.len() as u32;
        self.values.push(value);
        self.ids.insert(key, id);
        id
    }

    /// Whether a breakdown was asked for.
    pub(crate) fn active(&self) -> bool {
        self.source.is_some()
    }

    /// The value of an id.
    pub(crate) fn value(&self, id: u32) -> Value {
        self.values.get(id as usize).cloned().unwrap_or(Value::Null)
    }

    /// Number of distinct values.
    pub(crate) fn len(&self) -> usize {
        self.values.len().max(1)
    }
}

/// Keeps the `limit` values with the largest weight (ties: by value text); returns
/// for each value id its group (`0..kept`, or `kept` for "other") and the kept ids
/// in rank order.
pub(crate) fn top_values(
    weights: &[u64],
    values: &BreakdownValues<'_>,
    limit: usize,
) -> (Vec<usize>, Vec<u32>) {
    let mut order: Vec<u32> = (0..weights.len() as u32).collect();
    order.sort_by(|a, b| {
        weights[*b as usize]
            .cmp(&weights[*a as usize])
            .then_with(|| value_text(&values.value(*a)).cmp(&value_text(&values.value(*b))))
    });
    order.truncate(limit);
    let mut group = vec![order.len(); weights.len()];
    for (rank, id) in order.iter().enumerate() {
        group[*id as usize] = rank;
    }
    (group, order)
}

/// A value as text (strings without quotes), for ordering and tables.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A number as JSON: whole numbers as integers.
pub fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// A share rounded to 4 decimals (`None` when the base is 0).
pub fn share(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| (part as f64 / whole as f64 * 10_000.0).round() / 10_000.0)
}

/// The breakdown limit of a request.
pub(crate) fn breakdown_limit(limit: Option<usize>) -> Result<usize, InsightError> {
    let limit = limit.unwrap_or(DEFAULT_BREAKDOWN_VALUES);
    if !(1..=MAX_BREAKDOWN_VALUES).contains(&limit) {
        return Err(InsightError::TooLarge(format!(
            "\"limit\" (breakdown values) must be from 1 to {MAX_BREAKDOWN_VALUES}"
        )));
    }
    Ok(limit)
}

/// What an insight runs on.
pub struct InsightInput<'a> {
    /// The index.
    pub index: &'a ProfileIndex,
    /// Only these people (the `where` condition's members); `None`: everyone.
    pub members: Option<&'a Bitset>,
    /// "Now", for relative times in step filters (`where at within 7d`).
    pub now_ms: i64,
}

impl InsightInput<'_> {
    /// Whether a person counts.
    pub fn allows(&self, slot: Slot) -> bool {
        self.members.is_none_or(|m| m.contains(slot))
    }
}

/// An answer as a table: a header and rows of text, for CSV and the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Column names.
    pub header: Vec<&'static str>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// RFC 4180 CSV (fields quoted when they hold a comma, quote or line break).
    pub fn csv(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, fields: &mut dyn Iterator<Item = &str>| {
            let mut first = true;
            for field in fields {
                if !first {
                    out.push(',');
                }
                first = false;
                if field.contains([',', '"', '\n', '\r']) {
                    out.push('"');
                    out.push_str(&field.replace('"', "\"\""));
                    out.push('"');
                } else {
                    out.push_str(field);
                }
            }
            out.push_str("\r\n");
        };
        line(&mut out, &mut self.header.iter().copied());
        for row in &self.rows {
            line(&mut out, &mut row.iter().map(String::as_str));
        }
        out
    }

    /// Aligned columns for a terminal.
    pub fn text(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let mut out = String::new();
        let mut line = |cells: Vec<&str>| {
            let text: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
                .collect();
            out.push_str(text.join("  ").trim_end());
            out.push('\n');
        };
        line(self.header.clone());
        for row in &self.rows {
            line(row.iter().map(String::as_str).collect());
        }
        out
    }
}

/// A cell: a JSON value as text (`null` as empty).
pub(crate) fn cell(value: &Value) -> String {
    value_text(value)
}

/// What the API and the CLI do with every kind of insight request: check it,
/// run it, and print it as a table.
pub trait InsightRequest {
    /// The checked query.
    type Query;
    /// The answer (the API's JSON).
    type Answer: serde::Serialize;
    /// The `where` condition, as text or as the JSON tree.
    fn filter(&self) -> Option<&Value>;
    /// The requested format (`json`, `csv`), if any.
    fn format(&self) -> Option<&str>;
    /// Checks the request for a zone and a "now".
    fn compile(&self, zone: ReportingZone, now_ms: i64) -> Result<Self::Query, InsightError>;
    /// Event, property and trait names the query reads.
    fn names(query: &Self::Query) -> (Vec<&str>, Vec<&str>, Vec<&str>);
    /// Runs the query.
    fn run(query: &Self::Query, input: &InsightInput<'_>) -> Result<Self::Answer, InsightError>;
    /// The answer as a table.
    fn table(answer: &Self::Answer) -> Table;
}

impl InsightRequest for trends::TrendsRequest {
    type Query = trends::TrendsQuery;
    type Answer = trends::TrendsAnswer;
    fn filter(&self) -> Option<&Value> {
        self.filter.as_ref()
    }
    fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
    fn compile(&self, zone: ReportingZone, now_ms: i64) -> Result<Self::Query, InsightError> {
        trends::TrendsRequest::compile(self, zone, now_ms)
    }
    fn names(query: &Self::Query) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        query.names()
    }
    fn run(query: &Self::Query, input: &InsightInput<'_>) -> Result<Self::Answer, InsightError> {
        query.run(input)
    }
    fn table(answer: &Self::Answer) -> Table {
        answer.table()
    }
}

impl InsightRequest for funnels::FunnelRequest {
    type Query = funnels::FunnelQuery;
    type Answer = funnels::FunnelAnswer;
    fn filter(&self) -> Option<&Value> {
        self.filter.as_ref()
    }
    fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
    fn compile(&self, zone: ReportingZone, now_ms: i64) -> Result<Self::Query, InsightError> {
        funnels::FunnelRequest::compile(self, zone, now_ms)
    }
    fn names(query: &Self::Query) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        query.names()
    }
    fn run(query: &Self::Query, input: &InsightInput<'_>) -> Result<Self::Answer, InsightError> {
        Ok(query.run(input))
    }
    fn table(answer: &Self::Answer) -> Table {
        answer.table()
    }
}

impl InsightRequest for retention::RetentionRequest {
    type Query = retention::RetentionQuery;
    type Answer = retention::RetentionAnswer;
    fn filter(&self) -> Option<&Value> {
        self.filter.as_ref()
    }
    fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }
    fn compile(&self, zone: ReportingZone, now_ms: i64) -> Result<Self::Query, InsightError> {
        retention::RetentionRequest::compile(self, zone, now_ms)
    }
    fn names(query: &Self::Query) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        query.names()
    }
    fn run(query: &Self::Query, input: &InsightInput<'_>) -> Result<Self::Answer, InsightError> {
        query.run(input)
    }
    fn table(answer: &Self::Answer) -> Table {
        answer.table()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        tessera_core::time::parse_timestamp(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn berlin_days_start_at_local_midnight_across_daylight_saving() {
        let zone = ReportingZone::parse("Europe/Berlin").unwrap();
        // 2026-03-29: clocks go forward at 02:00 (a 23-hour day).
        let day = zone.bucket_start(ms("2026-03-29T12:00:00Z"), Interval::Day);
        assert_eq!(day, ms("2026-03-28T23:00:00Z"));
        assert_eq!(
            zone.next_bucket(day, Interval::Day),
            ms("2026-03-29T22:00:00Z")
        );
        // 2026-10-25: back at 03:00 (a 25-hour day); the repeated hour is two buckets.
        let day = zone.bucket_start(ms("2026-10-25T12:00:00Z"), Interval::Day);
        assert_eq!(zone.next_bucket(day, Interval::Day) - day, 25 * 3_600_000);
        let first = zone.bucket_start(ms("2026-10-25T00:30:00Z"), Interval::Hour);
        let second = zone.bucket_start(ms("2026-10-25T01:30:00Z"), Interval::Hour);
        assert_eq!(first, ms("2026-10-25T00:00:00Z"));
        assert_eq!(second, ms("2026-10-25T01:00:00Z"));
        assert_eq!(zone.next_bucket(first, Interval::Hour), second);
        assert_eq!(zone.format(day), "2026-10-25T00:00:00+02:00");
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let zone = ReportingZone::UTC;
        // 2026-01-01 is a Thursday.
        assert_eq!(
            zone.bucket_start(ms("2026-01-01T10:00:00Z"), Interval::Week),
            ms("2025-12-29T00:00:00Z")
        );
        assert_eq!(
            zone.bucket_start(ms("2026-02-17T10:00:00Z"), Interval::Month),
            ms("2026-02-01T00:00:00Z")
        );
        assert_eq!(
            zone.next_bucket(ms("2026-02-01T00:00:00Z"), Interval::Month),
            ms("2026-03-01T00:00:00Z")
        );
    }

    #[test]
    fn a_date_to_includes_its_day_and_an_instant_to_is_excluded() {
        let zone = ReportingZone::parse("Europe/Berlin").unwrap();
        let range = TimeRange::parse(Some("2026-01-01"), Some("2026-01-31"), zone, 0).unwrap();
        assert_eq!(range.from_ms, ms("2025-12-31T23:00:00Z"));
        assert_eq!(range.to_ms, ms("2026-01-31T23:00:00Z"));
        let range = TimeRange::parse(
            Some("2026-01-01T00:00:00Z"),
            Some("2026-01-02T00:00:00Z"),
            zone,
            0,
        )
        .unwrap();
        assert_eq!(range.to_ms - range.from_ms, DAY_MS);
        assert!(TimeRange::parse(Some("2026-02-01"), Some("2026-01-01"), zone, 0).is_err());
        assert!(matches!(
            TimeRange::parse(Some("2000-01-01"), Some("2026-01-01"), zone, 0),
            Err(InsightError::TooLarge(_))
        ));
        assert!(matches!(
            TimeRange::parse(Some("yesterday"), None, zone, 0),
            Err(InsightError::Invalid(_))
        ));
    }

    #[test]
    fn a_step_is_a_name_or_an_event_atom_with_filters() {
        let plain = EventStep::parse("Order Completed", "steps[0]").unwrap();
        assert_eq!(plain.text(), "Order Completed");
        let filtered =
            EventStep::parse("event \"Order Completed\" where total > 50", "steps[1]").unwrap();
        assert_eq!(filtered.event.filters.len(), 1);
        assert_eq!(
            filtered.text(),
            "event \"Order Completed\" where total > 50"
        );
        for bad in [
            "event \"A\" >= 2",
            "event \"A\" within 7d",
            "event \"A\" and event \"B\"",
            "event \"A\" where",
            "  ",
        ] {
            assert!(matches!(
                EventStep::parse(bad, "steps[0]"),
                Err(InsightError::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_calendar_refuses_too_many_buckets() {
        let zone = ReportingZone::UTC;
        let calendar = Calendar::new(zone, Interval::Day, 0, 3 * DAY_MS, 10).unwrap();
        assert_eq!(calendar.len(), 3);
        assert_eq!(calendar.bucket(DAY_MS), Some(1));
        assert_eq!(calendar.bucket(3 * DAY_MS), None);
        assert!(Calendar::new(zone, Interval::Hour, 0, 3 * DAY_MS, 10).is_err());
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let table = Table {
            header: vec!["a", "b"],
            rows: vec![vec!["x,y".into(), "say \"hi\"".into()]],
        };
        assert_eq!(table.csv(), "a,b\r\n\"x,y\",\"say \"\"hi\"\"\"\r\n");
    }
}
