//! Funnels: how many people go through ordered steps within a conversion window.
//!
//! Definitions (the same as in docs/analytics.md, which the property tests hold the
//! code to):
//!
//! - A person **enters** with an event matching the first step (for `any`: any
//!   step) whose time is in `[from, to)`. Every such event starts an attempt; later
//!   steps must happen within `window` of the entering event (inclusive) and may
//!   fall after `to`.
//! - `ordered` (default; Mixpanel's and PostHog's default): the steps happen in
//!   order, other events in between allowed. Step k+1's event must not be earlier
//!   than step k's; events at the very same millisecond may serve consecutive steps
//!   in either arrival order, but one event never serves two steps.
//! - `strict` (PostHog's strict order): as `ordered`, and no other event of the
//!   person lies strictly between two consecutive steps in time.
//! - `any` (PostHog's unordered): a person reaches step k when k different steps
//!   happened within the window after the entering event (each by a different event).
//! - A person counts once, with the attempt that reaches the furthest step (ties:
//!   the earliest entry). The time to convert to step k is the earliest time step k
//!   could be completed in that attempt minus the same for step k − 1; the answer
//!   gives its median over the people who reached step k (`ordered` and `strict`).
//! - A breakdown by property reads the entering event (ties at one millisecond: the
//!   value sorting first); by trait, the person's trait.

use super::{
    Breakdown, BreakdownValues, EventStep, InsightError, InsightInput, MAX_STEPS, MAX_WINDOW_DAYS,
    ReportingZone, Table, TimeRange, breakdown_limit, cell, invalid, share, top_values, value_text,
};
use crate::ast::Duration;
use crate::index::Slot;
use crate::scalar::Sym;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The conversion window when the request does not give one.
pub const DEFAULT_WINDOW: &str = "14d";

/// A funnel as the API and the CLI take it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FunnelRequest {
    /// The steps, in order: event names or `event "..." where ...` atoms.
    pub steps: Vec<String>,
    /// The conversion window from the entering event (default 14d, at most 365d).
    pub window: Option<String>,
    /// `ordered` (default), `strict` or `any`.
    pub order: Option<String>,
    /// First day or instant people may enter (default: 30 days before `to`).
    pub from: Option<String>,
    /// Last day (included) or first instant after (default: today).
    pub to: Option<String>,
    /// Break down by this property of the entering event.
    pub by_property: Option<String>,
    /// Break down by this trait.
    pub by_trait: Option<String>,
    /// Breakdown values shown (default 10, at most 100); the rest are "other".
    pub limit: Option<usize>,
    /// Only people for whom this audience-language condition holds.
    #[serde(rename = "where")]
    pub filter: Option<Value>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Save the people who reached the step before `step` but not `step` as a new
    /// audience (a fixed list of profiles).
    pub save_dropped: Option<SaveDropped>,
}

/// "Save the people who dropped at step k as an audience."
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SaveDropped {
    /// The step they did not reach (from 2, 1-based).
    pub step: usize,
    /// The new audience's key.
    pub key: String,
    /// Its display name (default: the key).
    #[serde(default)]
    pub name: String,
}

/// How steps must follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FunnelOrder {
    /// In order, other events allowed in between.
    Ordered,
    /// In order, nothing in between.
    Strict,
    /// In any order.
    Any,
}

impl FunnelOrder {
    /// Its name.
    pub fn name(&self) -> &'static str {
        match self {
            FunnelOrder::Ordered => "ordered",
            FunnelOrder::Strict => "strict",
            FunnelOrder::Any => "any",
        }
    }
}

/// A checked funnel.
#[derive(Debug, Clone, PartialEq)]
pub struct FunnelQuery {
    /// The steps.
    pub steps: Vec<EventStep>,
    /// The conversion window (ms).
    pub window: Duration,
    /// The order.
    pub order: FunnelOrder,
    /// When people may enter.
    pub range: TimeRange,
    /// The reporting zone (for printing times).
    pub zone: ReportingZone,
    /// The breakdown.
    pub breakdown: Option<Breakdown>,
    /// Breakdown values shown.
    pub limit: usize,
}

impl FunnelRequest {
    /// Checks the request for a zone and a "now".
    pub fn compile(&self, zone: ReportingZone, now_ms: i64) -> Result<FunnelQuery, InsightError> {
        if self.steps.len() < 2 {
            return Err(invalid(
                "\"steps\" needs at least two events, e.g. [\"Product Added\", \"Order Completed\"]",
            ));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(InsightError::TooLarge(format!(
                "{} steps: a funnel has at most {MAX_STEPS}",
                self.steps.len()
            )));
        }
        let steps = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| EventStep::parse(s, &format!("steps[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let window = Duration::parse(self.window.as_deref().unwrap_or(DEFAULT_WINDOW))
            .map_err(|m| invalid(format!("\"window\": {m}")))?;
        if window.millis <= 0 {
            return Err(invalid("\"window\" must be longer than 0 (e.g. 7d)"));
        }
        if window.millis > MAX_WINDOW_DAYS * 86_400_000 {
            return Err(InsightError::TooLarge(format!(
                "\"window\" is longer than {MAX_WINDOW_DAYS}d"
            )));
        }
        let order = match self.order.as_deref().map(str::trim).unwrap_or("ordered") {
            "ordered" => FunnelOrder::Ordered,
            "strict" => FunnelOrder::Strict,
            "any" => FunnelOrder::Any,
            other => {
                return Err(invalid(format!(
                    "\"order\" is \"{other}\": use ordered, strict or any"
                )));
            }
        };
        Ok(FunnelQuery {
            steps,
            window,
            order,
            range: TimeRange::parse(self.from.as_deref(), self.to.as_deref(), zone, now_ms)?,
            zone,
            breakdown: Breakdown::from_request(self.by_property.clone(), self.by_trait.clone())?,
            limit: breakdown_limit(self.limit)?,
        })
    }
}

/// One person's way through a funnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonFunnel {
    /// The person.
    pub slot: Slot,
    /// Steps reached (1 to the number of steps).
    pub reached: usize,
    /// When each reached step was first completable (empty for `any`).
    pub times: Vec<i64>,
    /// Breakdown value id.
    value: u32,
}

/// A funnel's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunnelAnswer {
    /// The order.
    pub order: &'static str,
    /// The conversion window.
    pub window: String,
    /// The reporting zone.
    pub time_zone: &'static str,
    /// First instant people may enter.
    pub from: String,
    /// First instant after.
    pub to: String,
    /// Every step over everyone.
    pub steps: Vec<StepAnswer>,
    /// Per breakdown value (absent without a breakdown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Vec<FunnelGroup>>,
}

/// One step of an answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepAnswer {
    /// 1-based.
    pub step: usize,
    /// The event step.
    pub event: String,
    /// People who reached it.
    pub count: u64,
    /// People who reached the step before but not this one.
    pub dropped: u64,
    /// `count` over the previous step's (`null` when that is 0).
    pub conversion_from_previous: Option<f64>,
    /// `count` over the first step's.
    pub conversion_from_first: Option<f64>,
    /// Median seconds from the previous step (`null` for step 1, for `any`, or when
    /// nobody reached it).
    pub median_seconds_to_convert: Option<f64>,
}

/// The steps of one breakdown value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunnelGroup {
    /// The value (`null`: none); absent on the "other" group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Set on the group of every value past the top ones.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub other: bool,
    /// Its steps.
    pub steps: Vec<StepAnswer>,
}

impl FunnelQuery {
    /// Every person who entered, with how far they got.
    pub fn people(&self, input: &InsightInput<'_>) -> Vec<PersonFunnel> {
        let mut values = BreakdownValues::new(input.index, self.breakdown.as_ref());
        self.people_with(input, &mut values)
    }

    pub(crate) fn people_with(
        &self,
        input: &InsightInput<'_>,
        values: &mut BreakdownValues<'_>,
    ) -> Vec<PersonFunnel> {
        let index = input.index;
        let range = self.range;
        let matchers: Vec<_> = self
            .steps
            .iter()
            .map(|s| s.compile(index, input.now_ms))
            .collect();
        let last = (range.to_ms - 1).saturating_add(self.window.millis);
        let mut people = Vec::new();
        if self.order != FunnelOrder::Strict {
            // Only the steps' events matter: read them from their names' postings (one
            // run per name), not every event of every person.
            let mut names: Vec<Sym> = matchers.iter().filter_map(|m| m.name()).collect();
            names.sort_unstable();
            names.dedup();
            let mut rows: Vec<(Slot, i64, u16, u32)> = Vec::new();
            for name in names {
                let Some(postings) = index.postings(name) else {
                    continue;
                };
                for p in postings.between(range.from_ms, last) {
                    if !input.allows(p.slot) {
                        continue;
                    }
                    let mut mask = 0u16;
                    for (i, m) in matchers.iter().enumerate() {
                        if m.name() == Some(name) && m.passes(index, p.props) {
                            mask |= 1 << i;
                        }
                    }
                    if mask != 0 {
                        rows.push((p.slot, p.timestamp_ms, mask, p.props));
                    }
                }
            }
            rows.sort_unstable_by_key(|r| (r.0, r.1));
            for person in rows.chunk_by(|a, b| a.0 == b.0) {
                let timeline: Vec<(i64, u16)> = person.iter().map(|r| (r.1, r.2)).collect();
                people.extend(self.person(person[0].0, &timeline, &|i| person[i].3, values));
            }
            return people;
        }
        // Strict order: every event of the person counts (as a breaker), so read
        // their whole timeline; candidates are the people with an entering event.
        let mut slots: Vec<Slot> = Vec::new();
        if let Some(postings) = matchers[0].name().and_then(|n| index.postings(n)) {
            slots.extend(
                postings
                    .between(range.from_ms, range.to_ms - 1)
                    .filter(|p| input.allows(p.slot) && matchers[0].passes(index, p.props))
                    .map(|p| p.slot),
            );
        }
        slots.sort_unstable();
        slots.dedup();
        for slot in slots {
            let events = index.events(slot);
            let lo = events.partition_point(|e| e.timestamp_ms < range.from_ms);
            let hi = events.partition_point(|e| e.timestamp_ms <= last);
            let timeline: Vec<(i64, u16)> = events[lo..hi]
                .iter()
                .map(|e| {
                    let mut mask = 0u16;
                    for (i, m) in matchers.iter().enumerate() {
                        if m.matches(index, e.name, e.props) {
                            mask |= 1 << i;
                        }
                    }
                    (e.timestamp_ms, mask)
                })
                .collect();
            people.extend(self.person(slot, &timeline, &|i| events[lo + i].props, values));
        }
        people
    }

    /// One person's result from their timeline of `(time, steps matched)`;
    /// `props_of(i)` gives the properties of the timeline's event `i`.
    fn person(
        &self,
        slot: Slot,
        timeline: &[(i64, u16)],
        props_of: &dyn Fn(usize) -> u32,
        values: &mut BreakdownValues<'_>,
    ) -> Option<PersonFunnel> {
        let (reached, times, entries) = best_attempt(
            timeline,
            self.steps.len(),
            self.window.millis,
            self.order,
            self.range,
        )?;
        // Entries tied at one millisecond: the value sorting first.
        let ids: Vec<u32> = entries
            .iter()
            .map(|i| values.of(slot, props_of(*i)))
            .collect();
        let value = ids
            .into_iter()
            .min_by(|a, b| value_text(&values.value(*a)).cmp(&value_text(&values.value(*b))))
            .unwrap_or(0);
        Some(PersonFunnel {
            slot,
            reached,
            times,
            value,
        })
    }

    /// Runs the funnel.
    pub fn run(&self, input: &InsightInput<'_>) -> FunnelAnswer {
        let mut values = BreakdownValues::new(input.index, self.breakdown.as_ref());
        let people = self.people_with(input, &mut values);
        self.answer(&people, &values)
    }

    pub(crate) fn answer(
        &self,
        people: &[PersonFunnel],
        values: &BreakdownValues<'_>,
    ) -> FunnelAnswer {
        let steps = self.aggregate(people.iter());
        let breakdown = values.active().then(|| {
            let mut weights = vec![0u64; values.len()];
            for p in people {
                weights[p.value as usize] += 1;
            }
            let (group_of, kept) = top_values(&weights, values, self.limit);
            let mut groups: Vec<FunnelGroup> = kept
                .iter()
                .enumerate()
                .map(|(g, id)| FunnelGroup {
                    value: Some(values.value(*id)),
                    other: false,
                    steps: self
                        .aggregate(people.iter().filter(|p| group_of[p.value as usize] == g)),
                })
                .collect();
            if people
                .iter()
                .any(|p| group_of[p.value as usize] == kept.len())
            {
                groups.push(FunnelGroup {
                    value: None,
                    other: true,
                    steps: self.aggregate(
                        people
                            .iter()
                            .filter(|p| group_of[p.value as usize] == kept.len()),
                    ),
                });
            }
            groups
        });
        FunnelAnswer {
            order: self.order.name(),
            window: String::from(self.window),
            time_zone: self.zone.name(),
            from: self.zone.format(self.range.from_ms),
            to: self.zone.format(self.range.to_ms),
            steps,
            breakdown,
        }
    }

    fn aggregate<'p>(&self, people: impl Iterator<Item = &'p PersonFunnel>) -> Vec<StepAnswer> {
        let n = self.steps.len();
        let mut counts = vec![0u64; n];
        let mut durations: Vec<Vec<i64>> = vec![Vec::new(); n];
        for p in people {
            for (k, count) in counts.iter_mut().enumerate().take(p.reached) {
                *count += 1;
                if k > 0 && self.order != FunnelOrder::Any {
                    durations[k].push(p.times[k] - p.times[k - 1]);
                }
            }
        }
        (0..n)
            .map(|k| StepAnswer {
                step: k + 1,
                event: self.steps[k].text(),
                count: counts[k],
                dropped: if k == 0 { 0 } else { counts[k - 1] - counts[k] },
                conversion_from_previous: if k == 0 {
                    share(counts[0], counts[0])
                } else {
                    share(counts[k], counts[k - 1])
                },
                conversion_from_first: share(counts[k], counts[0]),
                median_seconds_to_convert: median_ms(&mut durations[k]).map(|ms| ms / 1000.0),
            })
            .collect()
    }

    /// Event names, property names and trait names the query reads (for warnings).
    pub fn names(&self) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        let events = self.steps.iter().map(|s| s.event.name.as_str()).collect();
        let mut properties: Vec<&str> = self.steps.iter().flat_map(|s| s.properties()).collect();
        let mut traits = Vec::new();
        match &self.breakdown {
            Some(Breakdown::Property(p)) => properties.push(p),
            Some(Breakdown::Trait(t)) => traits.push(t.as_str()),
            None => {}
        }
        (events, properties, traits)
    }
}

/// The median (the mean of the two middle values for an even count).
pub fn median_ms(values: &mut [i64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid] as f64
    } else {
        (values[mid - 1] as f64 + values[mid] as f64) / 2.0
    })
}

/// The person's best attempt over a timeline of `(time, steps matched)` in time
/// order: steps reached, the first completion times, and the positions of the
/// entering events tied for it (same steps reached, same earliest time).
fn best_attempt(
    timeline: &[(i64, u16)],
    n: usize,
    window: i64,
    order: FunnelOrder,
    range: TimeRange,
) -> Option<(usize, Vec<i64>, Vec<usize>)> {
    let mut best: Option<(usize, i64, Vec<i64>, Vec<usize>)> = None;
    for (i, &(t0, mask)) in timeline.iter().enumerate() {
        if t0 < range.from_ms || t0 >= range.to_ms {
            continue;
        }
        let enters = match order {
            FunnelOrder::Any => mask != 0,
            _ => mask & 1 != 0,
        };
        if !enters {
            continue;
        }
        if let Some((reached, at, _, _)) = &best
            && *reached == n
            && *at < t0
        {
            break;
        }
        let (reached, times) = match order {
            FunnelOrder::Any => (attempt_any(timeline, t0, n, window), Vec::new()),
            _ => attempt_ordered(timeline, i, n, window, order == FunnelOrder::Strict),
        };
        match &mut best {
            Some((r, at, best_times, entries)) if *r == reached && *at == t0 => {
                for (b, t) in best_times.iter_mut().zip(&times) {
                    *b = (*b).min(*t);
                }
                entries.push(i);
            }
            Some((r, _, _, _)) if *r >= reached => {}
            _ => best = Some((reached, t0, times, vec![i])),
        }
    }
    best.map(|(reached, _, times, entries)| (reached, times, entries))
}

/// Steps reached in order from the entering event `timeline[entry]`, with the
/// earliest time each could be completed.
fn attempt_ordered(
    timeline: &[(i64, u16)],
    entry: usize,
    n: usize,
    window: i64,
    strict: bool,
) -> (usize, Vec<i64>) {
    let t0 = timeline[entry].0;
    let deadline = t0.saturating_add(window);
    let group_start = timeline[..entry].partition_point(|e| e.0 < t0);
    let group_end = entry + timeline[entry..].partition_point(|e| e.0 == t0);
    let others: Vec<u16> = (group_start..group_end)
        .filter(|i| *i != entry)
        .map(|i| timeline[i].1)
        .collect();
    let mut first = vec![i64::MAX; n + 1];
    // `reachable` bit j: j steps done and the next one possible.
    let mut reachable: u32 = 0;
    let entered = 1 + max_prefix(&others, 1, n);
    for (done, time) in first.iter_mut().enumerate().take(entered + 1).skip(1) {
        reachable |= 1 << done;
        *time = t0;
    }
    let mut best = highest(reachable);
    let mut at = group_end;
    while at < timeline.len() && best < n {
        let t = timeline[at].0;
        if t > deadline {
            break;
        }
        let end = at + timeline[at..].partition_point(|e| e.0 == t);
        let group: Vec<u16> = timeline[at..end].iter().map(|e| e.1).collect();
        let mut next = if strict { 0 } else { reachable };
        for done in 1..n {
            if reachable & (1 << done) == 0 {
                continue;
            }
            for more in 1..=max_prefix(&group, done, n) {
                next |= 1 << (done + more);
                first[done + more] = first[done + more].min(t);
            }
        }
        reachable = next;
        best = best.max(highest(reachable));
        if reachable == 0 {
            break;
        }
        at = end;
    }
    (best, first[1..=best].to_vec())
}

/// Different steps reached within the window from an entering event at `t0` (any
/// order): a maximum matching of steps to events.
fn attempt_any(timeline: &[(i64, u16)], t0: i64, n: usize, window: i64) -> usize {
    let deadline = t0.saturating_add(window);
    let lo = timeline.partition_point(|e| e.0 < t0);
    let hi = timeline.partition_point(|e| e.0 <= deadline);
    let masks: Vec<u16> = timeline[lo..hi]
        .iter()
        .map(|e| e.1)
        .filter(|m| *m != 0)
        .collect();
    let mut owner = vec![usize::MAX; masks.len()];
    (0..n)
        .filter(|step| augment(*step, &masks, &mut owner, &mut vec![false; masks.len()]))
        .count()
}

fn highest(bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        31 - bits.leading_zeros() as usize
    }
}

/// The most consecutive steps from `first` that distinct events of `masks` can
/// serve (each event matches the steps set in its mask).
fn max_prefix(masks: &[u16], first: usize, n: usize) -> usize {
    let useful: Vec<u16> = masks.iter().copied().filter(|m| *m != 0).collect();
    let mut owner = vec![usize::MAX; useful.len()];
    let mut served = 0;
    for step in first..n {
        if !augment(step, &useful, &mut owner, &mut vec![false; useful.len()]) {
            break;
        }
        served += 1;
    }
    served
}

/// Kuhn's augmenting path: gives `step` an event, moving other steps' events when
/// they have another.
fn augment(step: usize, masks: &[u16], owner: &mut [usize], visited: &mut [bool]) -> bool {
    for e in 0..masks.len() {
        if masks[e] & (1 << step) != 0 && !visited[e] {
            visited[e] = true;
            if owner[e] == usize::MAX || augment(owner[e], masks, owner, visited) {
                owner[e] = step;
                return true;
            }
        }
    }
    false
}

impl FunnelAnswer {
    /// One row per (breakdown value, step).
    pub fn table(&self) -> Table {
        let mut rows = Vec::new();
        let mut add = |breakdown: String, steps: &[StepAnswer]| {
            for s in steps {
                rows.push(vec![
                    breakdown.clone(),
                    s.step.to_string(),
                    s.event.clone(),
                    s.count.to_string(),
                    s.dropped.to_string(),
                    s.conversion_from_previous
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    s.conversion_from_first
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                    s.median_seconds_to_convert
                        .map(|c| c.to_string())
                        .unwrap_or_default(),
                ]);
            }
        };
        match &self.breakdown {
            None => add(String::new(), &self.steps),
            Some(groups) => {
                for g in groups {
                    let label = match (&g.value, g.other) {
                        (_, true) => "(other)".to_owned(),
                        (Some(v), _) => cell(v),
                        (None, _) => String::new(),
                    };
                    add(label, &g.steps);
                }
            }
        }
        Table {
            header: vec![
                "breakdown",
                "step",
                "event",
                "count",
                "dropped",
                "conversion_from_previous",
                "conversion_from_first",
                "median_seconds_to_convert",
            ],
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: TimeRange = TimeRange {
        from_ms: 0,
        to_ms: 1_000,
    };

    fn run(
        timeline: &[(i64, u16)],
        n: usize,
        window: i64,
        order: FunnelOrder,
    ) -> Option<(usize, Vec<i64>)> {
        best_attempt(timeline, n, window, order, FULL).map(|(r, t, _)| (r, t))
    }

    #[test]
    fn one_event_never_serves_two_steps() {
        // Steps A, A: one A is step 1 only.
        assert_eq!(
            run(&[(1, 0b11)], 2, 10, FunnelOrder::Ordered),
            Some((1, vec![1]))
        );
        assert_eq!(
            run(&[(1, 0b11), (2, 0b11)], 2, 10, FunnelOrder::Ordered),
            Some((2, vec![1, 2]))
        );
    }

    #[test]
    fn events_at_one_millisecond_serve_consecutive_steps_in_either_arrival_order() {
        // B arrived before A, both at t=5.
        assert_eq!(
            run(&[(5, 0b10), (5, 0b01)], 2, 10, FunnelOrder::Ordered),
            Some((2, vec![5, 5]))
        );
        assert_eq!(
            run(&[(5, 0b10), (5, 0b01)], 2, 10, FunnelOrder::Strict),
            Some((2, vec![5, 5]))
        );
    }

    #[test]
    fn the_window_bound_is_inclusive() {
        assert_eq!(
            run(&[(0, 0b01), (10, 0b10)], 2, 10, FunnelOrder::Ordered).map(|r| r.0),
            Some(2)
        );
        assert_eq!(
            run(&[(0, 0b01), (11, 0b10)], 2, 10, FunnelOrder::Ordered).map(|r| r.0),
            Some(1)
        );
    }

    #[test]
    fn strict_order_breaks_on_any_event_in_between() {
        let timeline = [(0, 0b001), (1, 0), (2, 0b010)];
        assert_eq!(
            run(&timeline, 2, 10, FunnelOrder::Ordered).map(|r| r.0),
            Some(2)
        );
        assert_eq!(
            run(&timeline, 2, 10, FunnelOrder::Strict).map(|r| r.0),
            Some(1)
        );
    }

    #[test]
    fn strict_order_may_leave_a_step_for_a_later_millisecond() {
        // At t=1 both B and C could follow A, but only B-then-C-at-2 keeps going to D.
        let timeline = [
            (0, 0b0001),
            (1, 0b0010),
            (1, 0b0100),
            (2, 0b0100),
            (3, 0b1000),
        ];
        assert_eq!(
            run(&timeline, 4, 10, FunnelOrder::Strict).map(|r| r.0),
            Some(4)
        );
    }

    #[test]
    fn any_order_counts_different_steps() {
        let timeline = [(0, 0b100), (1, 0b001), (2, 0b001)];
        assert_eq!(
            run(&timeline, 3, 10, FunnelOrder::Any).map(|r| r.0),
            Some(2)
        );
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median_ms(&mut [4, 1, 3, 2]), Some(2.5));
        assert_eq!(median_ms(&mut [7]), Some(7.0));
        assert_eq!(median_ms(&mut []), None);
    }
}
