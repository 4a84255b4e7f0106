//! Trends, funnels and retention checked against plain reference implementations
//! over random events: few people, few names, coarse random times (so equal times
//! and events exactly on a range or window bound are common), merges between
//! people in the middle of the events, a reporting zone with a daylight saving
//! change inside the data.
//!
//! The references know nothing of the index: they take the raw events, follow the
//! merges with a union-find, and compute each definition literally (funnels by
//! exhaustive search over event sequences).
#![allow(clippy::unwrap_used)]

use chrono::{Datelike, TimeZone};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use tessera_audience::batch::{Parallelism, evaluate};
use tessera_audience::eval::{Context, Plan};
use tessera_audience::index::{EventInput, ProfileIndex};
use tessera_audience::insights::funnels::FunnelRequest;
use tessera_audience::insights::retention::RetentionRequest;
use tessera_audience::insights::trends::TrendsRequest;
use tessera_audience::insights::{InsightInput, ReportingZone};
use tessera_audience::language::parse;

/// 2026-03-27T00:00:00Z: the data spans the night Berlin moves its clocks forward.
const BASE: i64 = 1_774_569_600_000;
/// Times are BASE + k * STEP: 90 minutes, so some fall on local midnights.
const STEP: i64 = 5_400_000;
const NAMES: [&str; 3] = ["A", "B", "C"];
const ZONE: &str = "Europe/Berlin";

#[derive(Debug, Clone)]
struct RawEvent {
    person: i64,
    slot_k: i64,
    name: usize,
    v: Option<i64>,
    c: Option<&'static str>,
}

#[derive(Debug, Clone)]
enum Action {
    Event(RawEvent),
    /// Merge the second person into the first.
    Merge(i64, i64),
}

fn action() -> impl Strategy<Value = Action> {
    let event = (
        1..5i64,
        0..60i64,
        0..3usize,
        prop::option::of(0..4i64),
        prop::option::of(prop::sample::select(vec!["x", "y", "z"])),
    )
        .prop_map(|(person, slot_k, name, v, c)| {
            Action::Event(RawEvent {
                person,
                slot_k,
                name,
                v,
                c,
            })
        });
    prop_oneof![
        12 => event,
        1 => (1..5i64, 1..5i64).prop_map(|(a, b)| Action::Merge(a, b)),
    ]
}

/// The events as (final person, time, event), and the index fed with them.
struct World {
    index: ProfileIndex,
    events: Vec<(i64, i64, RawEvent)>,
}

fn build(actions: &[Action]) -> World {
    let mut index = ProfileIndex::new();
    let mut parent: HashMap<i64, i64> = HashMap::new();
    fn root(parent: &HashMap<i64, i64>, mut id: i64) -> i64 {
        while let Some(p) = parent.get(&id) {
            id = *p;
        }
        id
    }
    let mut raw = Vec::new();
    for action in actions {
        match action {
            Action::Event(e) => {
                // The processor attributes a merged-away person's events to the winner.
                let owner = root(&parent, e.person);
                let mut properties = serde_json::Map::new();
                if let Some(v) = e.v {
                    properties.insert("v".into(), json!(v));
                }
                if let Some(c) = e.c {
                    properties.insert("c".into(), json!(c));
                }
                index.add_event(
                    owner,
                    &EventInput {
                        timestamp_ms: BASE + e.slot_k * STEP,
                        name: NAMES[e.name].into(),
                        properties,
                        consent: vec![],
                    },
                );
                raw.push((owner, e.clone()));
            }
            Action::Merge(a, b) => {
                let (winner, loser) = (root(&parent, *a), root(&parent, *b));
                if winner != loser {
                    index.merge(winner, loser);
                    parent.insert(loser, winner);
                }
            }
        }
    }
    let events = raw
        .into_iter()
        .map(|(owner, e)| (root(&parent, owner), BASE + e.slot_k * STEP, e))
        .collect();
    World { index, events }
}

fn time_text(k: i64) -> String {
    tessera_core::time::format_millis(BASE + k * STEP)
}

fn zone() -> chrono_tz::Tz {
    ZONE.parse().unwrap()
}

/// The bucket key of a time as a reference computes it: the local date (day), the
/// local Monday (week), or the local date and hour with the offset (hour).
fn reference_key(t: i64, interval: &str) -> String {
    let local = zone().timestamp_millis_opt(t).unwrap();
    match interval {
        "hour" => local.format("%Y-%m-%dT%H%:z").to_string(),
        "day" => local.format("%Y-%m-%d").to_string(),
        "week" => {
            let date = local.date_naive();
            let monday = date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()));
            monday.format("%Y-%m-%d").to_string()
        }
        _ => unreachable!(),
    }
}

/// The same key read from a bucket label (`2026-03-29T00:00:00+01:00`).
fn label_key(label: &str, interval: &str) -> String {
    match interval {
        "hour" => format!("{}{}", &label[..13], &label[19..]),
        _ => label[..10].to_owned(),
    }
}

fn members(
    index: &ProfileIndex,
    condition: Option<&str>,
) -> Option<tessera_audience::bitset::Bitset> {
    let condition = parse(condition?).unwrap();
    let computed = HashMap::new();
    let memberships = HashMap::new();
    let context = Context {
        index,
        now_ms: BASE,
        computed: &computed,
        rfm: None,
        memberships: &memberships,
    };
    Some(evaluate(
        &Plan::compile(&condition, &context),
        index,
        BASE,
        Parallelism::threads(1),
    ))
}

/// People (final ids) with a "C" event: the reference side of `event "C" >= 1`.
fn c_people(world: &World) -> HashSet<i64> {
    world
        .events
        .iter()
        .filter(|(_, _, e)| e.name == 2)
        .map(|(p, _, _)| *p)
        .collect()
}

fn reference_trends(
    world: &World,
    from: i64,
    to: i64,
    interval: &str,
    measure: &str,
    filtered: bool,
    by_c: Option<usize>,
) -> BTreeMap<(String, String, String), f64> {
    let allowed = c_people(world);
    let allowed = &allowed;
    let matching = |name: usize| {
        world.events.iter().filter(move |(p, t, e)| {
            e.name == name && *t >= from && *t < to && (!filtered || allowed.contains(p))
        })
    };
    // The breakdown's top values, ranked by events over both series.
    let c_text = |e: &RawEvent| e.c.unwrap_or("").to_owned();
    let top: Option<Vec<String>> = by_c.map(|limit| {
        let mut weights: BTreeMap<String, u64> = BTreeMap::new();
        for name in [0, 1] {
            for (_, _, e) in matching(name) {
                if measure == "sum" && e.v.is_none() {
                    continue;
                }
                *weights.entry(c_text(e)).or_default() += 1;
            }
        }
        let mut ranked: Vec<(String, u64)> = weights.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.into_iter().take(limit).map(|(v, _)| v).collect()
    });
    let mut out: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut people: HashMap<(String, String, String), HashSet<i64>> = HashMap::new();
    for name in [0, 1] {
        for (p, t, e) in matching(name) {
            let amount = match measure {
                "sum" => match e.v {
                    Some(v) => v as f64,
                    None => continue,
                },
                _ => 1.0,
            };
            let group = match &top {
                None => String::new(),
                Some(top) if top.contains(&c_text(e)) => c_text(e),
                Some(_) => "(other)".to_owned(),
            };
            let key = (NAMES[name].to_owned(), group, reference_key(*t, interval));
            match measure {
                "people" => {
                    people.entry(key).or_default().insert(*p);
                }
                _ => *out.entry(key).or_default() += amount,
            }
        }
    }
    for (key, set) in people {
        out.insert(key, set.len() as f64);
    }
    out.retain(|_, v| *v != 0.0);
    out
}

/// A funnel person's result by exhaustive search: (steps reached, earliest time
/// each step could be completed).
fn reference_person_funnel(
    events: &[(i64, u16)],
    n: usize,
    window: i64,
    order: &str,
    from: i64,
    to: i64,
) -> Option<(usize, Vec<i64>)> {
    let mut best: Option<(usize, i64, Vec<i64>)> = None;
    for (i, &(t0, mask)) in events.iter().enumerate() {
        let enters = if order == "any" {
            mask != 0
        } else {
            mask & 1 != 0
        };
        if !enters || t0 < from || t0 >= to {
            continue;
        }
        let (reached, times) = if order == "any" {
            let window_events: Vec<u16> = events
                .iter()
                .filter(|(t, _)| *t >= t0 && *t <= t0 + window)
                .map(|(_, m)| *m)
                .collect();
            (
                max_assignment(&window_events, n, 0, &mut vec![false; window_events.len()]),
                vec![],
            )
        } else {
            let mut earliest = vec![i64::MAX; n];
            earliest[0] = t0;
            let mut used = vec![false; events.len()];
            used[i] = true;
            let reached = sequences(
                events,
                n,
                window,
                order == "strict",
                t0,
                i,
                1,
                &mut used,
                &mut earliest,
            );
            (reached, earliest[..reached].to_vec())
        };
        match &mut best {
            Some((r, at, times_best)) if *r == reached && *at == t0 => {
                for (b, t) in times_best.iter_mut().zip(&times) {
                    *b = (*b).min(*t);
                }
            }
            Some((r, at, _)) if *r > reached || (*r == reached && *at < t0) => {}
            _ => best = Some((reached, t0, times)),
        }
    }
    best.map(|(r, _, t)| (r, t))
}

/// Most steps (from `step`) a sequence of distinct events can extend to, recording
/// the earliest time each step is completed along any valid sequence.
#[allow(clippy::too_many_arguments)]
fn sequences(
    events: &[(i64, u16)],
    n: usize,
    window: i64,
    strict: bool,
    t0: i64,
    last: usize,
    step: usize,
    used: &mut Vec<bool>,
    earliest: &mut Vec<i64>,
) -> usize {
    if step == n {
        return n;
    }
    let mut best = step;
    let t_last = events[last].0;
    for j in 0..events.len() {
        let (t, mask) = events[j];
        if used[j] || mask & (1 << step) == 0 || t < t_last || t > t0 + window {
            continue;
        }
        if strict && events.iter().any(|(u, _)| *u > t_last && *u < t) {
            continue;
        }
        used[j] = true;
        earliest[step] = earliest[step].min(t);
        best = best.max(sequences(
            events,
            n,
            window,
            strict,
            t0,
            j,
            step + 1,
            used,
            earliest,
        ));
        used[j] = false;
    }
    best
}

/// Most distinct steps (from `step` on, each optional) distinct events can serve.
fn max_assignment(masks: &[u16], n: usize, step: usize, used: &mut Vec<bool>) -> usize {
    if step == n {
        return 0;
    }
    let mut best = max_assignment(masks, n, step + 1, used);
    for e in 0..masks.len() {
        if !used[e] && masks[e] & (1 << step) != 0 {
            used[e] = true;
            best = best.max(1 + max_assignment(masks, n, step + 1, used));
            used[e] = false;
        }
    }
    best
}

fn median(mut values: Vec<i64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let m = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[m] as f64
    } else {
        (values[m - 1] + values[m]) as f64 / 2.0
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn trends_match_the_reference(
        actions in prop::collection::vec(action(), 0..40),
        from_k in 0..40i64,
        length in 1..40i64,
        interval in prop::sample::select(vec!["hour", "day", "week"]),
        measure in prop::sample::select(vec!["events", "people", "sum"]),
        filtered in any::<bool>(),
        by_c in prop::option::of(1..3usize),
    ) {
        let world = build(&actions);
        let (from, to) = (BASE + from_k * STEP, BASE + (from_k + length) * STEP);
        let request = TrendsRequest {
            series: serde_json::from_value(json!(["A", "B"])).unwrap(),
            from: Some(time_text(from_k)),
            to: Some(time_text(from_k + length)),
            interval: Some(interval.into()),
            measure: Some(measure.into()),
            property: Some("v".into()),
            by_property: by_c.map(|_| "c".into()),
            limit: by_c,
            ..TrendsRequest::default()
        };
        let query = request.compile(ReportingZone::parse(ZONE).unwrap(), BASE).unwrap();
        let members = members(&world.index, filtered.then_some("event \"C\" >= 1"));
        let answer = query
            .run(&InsightInput { index: &world.index, members: members.as_ref(), now_ms: BASE })
            .unwrap();
        let mut got: BTreeMap<(String, String, String), f64> = BTreeMap::new();
        for row in &answer.series {
            let group = match (&row.breakdown, row.other) {
                (_, true) => "(other)".to_owned(),
                (Some(Value::String(s)), _) => s.clone(),
                _ => String::new(),
            };
            for (label, value) in answer.buckets.iter().zip(&row.values) {
                let value = value.as_f64().unwrap();
                if value != 0.0 {
                    got.insert((row.label.clone(), group.clone(), label_key(label, interval)), value);
                }
            }
        }
        prop_assert_eq!(got, reference_trends(&world, from, to, interval, measure, filtered, by_c));
    }

    #[test]
    fn funnels_match_the_reference(
        actions in prop::collection::vec(action(), 0..30),
        steps in prop::collection::vec(0..3usize, 2..4),
        from_k in 0..30i64,
        length in 1..40i64,
        window_steps in 1..12i64,
        order in prop::sample::select(vec!["ordered", "strict", "any"]),
        filtered in any::<bool>(),
    ) {
        let world = build(&actions);
        let (from, to) = (BASE + from_k * STEP, BASE + (from_k + length) * STEP);
        let window = window_steps * STEP;
        let request = FunnelRequest {
            steps: steps.iter().map(|s| NAMES[*s].to_owned()).collect(),
            window: Some(format!("{}m", window / 60_000)),
            order: Some(order.into()),
            from: Some(time_text(from_k)),
            to: Some(time_text(from_k + length)),
            ..FunnelRequest::default()
        };
        let query = request.compile(ReportingZone::parse(ZONE).unwrap(), BASE).unwrap();
        let members = members(&world.index, filtered.then_some("event \"C\" >= 1"));
        let answer = query.run(&InsightInput { index: &world.index, members: members.as_ref(), now_ms: BASE });

        let allowed = c_people(&world);
        let mut people: BTreeMap<i64, Vec<(i64, u16)>> = BTreeMap::new();
        for (p, t, e) in &world.events {
            if filtered && !allowed.contains(p) {
                continue;
            }
            let mut mask = 0u16;
            for (i, s) in steps.iter().enumerate() {
                if *s == e.name {
                    mask |= 1 << i;
                }
            }
            people.entry(*p).or_default().push((*t, mask));
        }
        let n = steps.len();
        let mut counts = vec![0u64; n];
        let mut durations: Vec<Vec<i64>> = vec![Vec::new(); n];
        for events in people.values_mut() {
            events.sort_by_key(|(t, _)| *t);
            if let Some((reached, times)) = reference_person_funnel(events, n, window, order, from, to) {
                for k in 0..reached {
                    counts[k] += 1;
                    if k > 0 && order != "any" {
                        durations[k].push(times[k] - times[k - 1]);
                    }
                }
            }
        }
        let got: Vec<u64> = answer.steps.iter().map(|s| s.count).collect();
        prop_assert_eq!(got, counts);
        let got: Vec<Option<f64>> = answer.steps.iter().map(|s| s.median_seconds_to_convert).collect();
        let want: Vec<Option<f64>> = durations.into_iter().map(|d| median(d).map(|m| m / 1000.0)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn retention_matches_the_reference(
        actions in prop::collection::vec(action(), 0..40),
        from_k in 0..20i64,
        length in 1..45i64,
        interval in prop::sample::select(vec!["day", "week"]),
        periods in 1..6usize,
        start in 0..3usize,
        back in 0..3usize,
    ) {
        let world = build(&actions);
        let (from, to) = (BASE + from_k * STEP, BASE + (from_k + length) * STEP);
        let request = RetentionRequest {
            start: NAMES[start].into(),
            returning: Some(NAMES[back].into()),
            interval: Some(interval.into()),
            periods: Some(periods),
            from: Some(time_text(from_k)),
            to: Some(time_text(from_k + length)),
            ..RetentionRequest::default()
        };
        let query = request.compile(ReportingZone::parse(ZONE).unwrap(), BASE).unwrap();
        let answer = query
            .run(&InsightInput { index: &world.index, members: None, now_ms: BASE })
            .unwrap();

        let date = |key: &str| chrono::NaiveDate::parse_from_str(key, "%Y-%m-%d").unwrap();
        let unit = if interval == "week" { 7 } else { 1 };
        let mut first: HashMap<i64, i64> = HashMap::new();
        for (p, t, e) in &world.events {
            if e.name == start && *t >= from && *t < to {
                let f = first.entry(*p).or_insert(*t);
                *f = (*f).min(*t);
            }
        }
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for t in first.values() {
            *sizes.entry(reference_key(*t, interval)).or_default() += 1;
        }
        let mut returned: HashSet<(i64, i64)> = HashSet::new();
        for (p, t, e) in &world.events {
            let Some(f) = first.get(p) else { continue };
            if e.name != back || *t < from || *t >= to {
                continue;
            }
            let n = (date(&reference_key(*t, interval)) - date(&reference_key(*f, interval))).num_days() / unit;
            if n >= 1 && n <= periods as i64 {
                returned.insert((*p, n));
            }
        }
        let mut cells: BTreeMap<(String, i64), u64> = BTreeMap::new();
        for (p, n) in returned {
            *cells.entry((reference_key(first[&p], interval), n)).or_default() += 1;
        }
        let got_sizes: BTreeMap<String, u64> = answer
            .cohorts
            .iter()
            .filter(|c| c.size > 0)
            .map(|c| (c.cohort[..10].to_owned(), c.size))
            .collect();
        prop_assert_eq!(got_sizes, sizes);
        let mut got_cells: BTreeMap<(String, i64), u64> = BTreeMap::new();
        for c in &answer.cohorts {
            for (n, r) in c.returned.iter().enumerate().skip(1) {
                if let Some(r) = r.filter(|r| *r > 0) {
                    got_cells.insert((c.cohort[..10].to_owned(), n as i64), r);
                }
            }
        }
        prop_assert_eq!(got_cells, cells);
    }
}

/// Two people merge between the funnel's steps: the merged person converts.
#[test]
fn a_merge_in_the_middle_of_a_funnel_joins_the_steps() {
    let world = build(&[
        Action::Event(RawEvent {
            person: 1,
            slot_k: 1,
            name: 0,
            v: None,
            c: None,
        }),
        Action::Event(RawEvent {
            person: 2,
            slot_k: 2,
            name: 1,
            v: None,
            c: None,
        }),
        Action::Merge(1, 2),
        Action::Event(RawEvent {
            person: 2,
            slot_k: 3,
            name: 2,
            v: None,
            c: None,
        }),
    ]);
    let request = FunnelRequest {
        steps: vec!["A".into(), "B".into(), "C".into()],
        window: Some("1d".into()),
        from: Some(time_text(0)),
        to: Some(time_text(10)),
        ..FunnelRequest::default()
    };
    let query = request.compile(ReportingZone::UTC, BASE).unwrap();
    let answer = query.run(&InsightInput {
        index: &world.index,
        members: None,
        now_ms: BASE,
    });
    let counts: Vec<u64> = answer.steps.iter().map(|s| s.count).collect();
    assert_eq!(counts, [1, 1, 1]);
    assert_eq!(answer.steps[1].median_seconds_to_convert, Some(5_400.0));
}

/// A person whose first cohort event is in one week and who does it again later is
/// in the first week's cohort only (one cohort per person).
#[test]
fn a_person_is_in_one_cohort() {
    let world = build(&[
        Action::Event(RawEvent {
            person: 1,
            slot_k: 0,
            name: 0,
            v: None,
            c: None,
        }),
        Action::Event(RawEvent {
            person: 1,
            slot_k: 200,
            name: 0,
            v: None,
            c: None,
        }),
    ]);
    let request = RetentionRequest {
        start: "A".into(),
        interval: Some("week".into()),
        periods: Some(3),
        from: Some("2026-03-23".into()),
        to: Some("2026-04-19".into()),
        ..RetentionRequest::default()
    };
    let query = request.compile(ReportingZone::UTC, BASE).unwrap();
    let answer = query
        .run(&InsightInput {
            index: &world.index,
            members: None,
            now_ms: BASE,
        })
        .unwrap();
    let sizes: Vec<u64> = answer.cohorts.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [1, 0, 0, 0]);
    // 200 steps of 90 minutes later is 12.5 days: the second week after.
    assert_eq!(
        answer.cohorts[0].returned,
        [Some(1), Some(0), Some(1), Some(0)]
    );
    assert_eq!(answer.cohorts[3].returned, [Some(0), None, None, None]);
}

/// An event exactly at `to` is outside the range; one exactly at `from` inside.
#[test]
fn range_bounds_are_half_open() {
    let world = build(&[
        Action::Event(RawEvent {
            person: 1,
            slot_k: 4,
            name: 0,
            v: None,
            c: None,
        }),
        Action::Event(RawEvent {
            person: 1,
            slot_k: 8,
            name: 0,
            v: None,
            c: None,
        }),
    ]);
    let request = TrendsRequest {
        series: serde_json::from_value(json!(["A"])).unwrap(),
        from: Some(time_text(4)),
        to: Some(time_text(8)),
        interval: Some("day".into()),
        ..TrendsRequest::default()
    };
    let query = request.compile(ReportingZone::UTC, BASE).unwrap();
    let answer = query
        .run(&InsightInput {
            index: &world.index,
            members: None,
            now_ms: BASE,
        })
        .unwrap();
    assert_eq!(answer.series[0].total, json!(1));
}

/// The fixed list a funnel's drop-offs are saved as: read, printed, refused when
/// it holds something other than ids, and evaluated against profile ids.
#[test]
fn a_profile_list_parses_prints_and_holds_for_the_listed_profiles() {
    use tessera_audience::ast::Condition;
    use tessera_audience::language::print;
    let condition = parse("profile in [3, 1]").unwrap();
    assert_eq!(condition, Condition::Profiles(vec![3, 1]));
    assert_eq!(print(&condition), "profile in [3, 1]");
    assert_eq!(parse("profile in []").unwrap(), Condition::Profiles(vec![]));
    for bad in [
        "profile in [\"a\"]",
        "profile [1]",
        "profile in [1.5]",
        "profile in 1",
    ] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    let world = build(&[
        Action::Event(RawEvent {
            person: 1,
            slot_k: 0,
            name: 0,
            v: None,
            c: None,
        }),
        Action::Event(RawEvent {
            person: 2,
            slot_k: 0,
            name: 0,
            v: None,
            c: None,
        }),
        Action::Event(RawEvent {
            person: 3,
            slot_k: 0,
            name: 0,
            v: None,
            c: None,
        }),
    ]);
    let listed = members(&world.index, Some("profile in [3, 1, 99]")).unwrap();
    let ids: Vec<i64> = listed.iter().map(|s| world.index.profile_id(s)).collect();
    assert_eq!(ids, [1, 3]);
}
