//! The realtime evaluator (one profile at a time) and the batch evaluator (set
//! algebra over every profile) must agree on every condition and every index,
//! merges included.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use tessera_audience::ast::{
    Condition, CountOp, CountTest, Duration, EventCondition, Test, TimeRef, ValueTest, Window,
};
use tessera_audience::batch::{Parallelism, evaluate};
use tessera_audience::bitset::Bitset;
use tessera_audience::computed::ComputedTrait;
use tessera_audience::eval::{Context, Plan};
use tessera_audience::index::{EventInput, ProfileIndex, ProfileInput};
use tessera_audience::rfm::{RfmConfig, RfmModel};

const NOW: i64 = 1_800_000_000_000;
const DAY: i64 = 86_400_000;
const NAMES: [&str; 4] = [
    "Product Added",
    "Order Completed",
    "Page Viewed",
    "Never Sent",
];
const CATEGORIES: [&str; 3] = ["shoes", "bags", "hats"];

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0..4usize).prop_map(|i| json!(["free", "pro", "enterprise", "gone"][i])),
        (0..200i64).prop_map(|n| json!(n)),
        (0..3usize).prop_map(|i| json!(CATEGORIES[i])),
    ]
}

fn test_strategy() -> impl Strategy<Value = Test> {
    prop_oneof![
        value_strategy().prop_map(Test::Eq),
        value_strategy().prop_map(Test::Ne),
        value_strategy().prop_map(Test::Lt),
        value_strategy().prop_map(Test::Ge),
        Just(Test::Exists),
        Just(Test::NotExists),
        prop::collection::vec(value_strategy(), 0..3).prop_map(Test::In),
        Just(Test::Contains(json!("o"))),
        (1..60i64).prop_map(|d| Test::Within(Duration::from_millis(d * DAY))),
        (1..60i64).prop_map(|d| Test::After(TimeRef::Ago(Duration::from_millis(d * DAY)))),
    ]
}

fn leaf_strategy() -> impl Strategy<Value = Condition> {
    let count = (0..6usize, 0..4u32).prop_map(|(op, value)| CountTest {
        op: [
            CountOp::Eq,
            CountOp::Ne,
            CountOp::Lt,
            CountOp::Le,
            CountOp::Gt,
            CountOp::Ge,
        ][op],
        value,
    });
    let window = prop_oneof![
        Just(Window::AllTime),
        (1..40i64).prop_map(|d| Window::Within(Duration::from_millis(d * DAY))),
        (0..4usize).prop_map(|i| Window::Since(NAMES[i].into())),
    ];
    let filters = prop::collection::vec(
        (
            prop_oneof![Just("category"), Just("price")],
            test_strategy(),
        )
            .prop_map(|(name, test)| ValueTest {
                name: name.into(),
                test,
            }),
        0..2,
    );
    prop_oneof![
        (
            prop_oneof![
                Just("plan"),
                Just("age"),
                Just("signup_at"),
                Just("address.country")
            ],
            test_strategy()
        )
            .prop_map(|(name, test)| Condition::Trait(ValueTest {
                name: name.into(),
                test
            })),
        (
            prop_oneof![
                Just("total_orders"),
                Just("lifetime_value"),
                Just("favorite_category"),
                Just("rfm_segment"),
                Just("nope")
            ],
            test_strategy()
        )
            .prop_map(|(name, test)| Condition::Computed(ValueTest {
                name: name.into(),
                test
            })),
        ((0..4usize), filters, count, window).prop_map(|(n, filters, count, window)| {
            Condition::Event(EventCondition {
                name: NAMES[n].into(),
                filters,
                count,
                window,
            })
        }),
        prop_oneof![Just("email"), Just("phone")].prop_map(|t| Condition::Identifier(t.into())),
        prop_oneof![Just("marketing"), Just("analytics")]
            .prop_map(|p| Condition::Consent(p.into())),
        prop_oneof![Just("base"), Just("missing")].prop_map(|a| Condition::Audience(a.into())),
    ]
}

fn condition_strategy() -> impl Strategy<Value = Condition> {
    leaf_strategy().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::And),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::Or),
            inner.prop_map(|c| Condition::Not(Box::new(c))),
        ]
    })
}

#[derive(Debug, Clone)]
struct GenEvent {
    name: usize,
    age_days: i64,
    category: usize,
    price: i64,
    consent: Option<bool>,
}

#[derive(Debug, Clone)]
struct GenProfile {
    traits: Vec<(usize, Value)>,
    identifiers: Vec<bool>,
    events: Vec<GenEvent>,
}

fn profile_strategy() -> impl Strategy<Value = GenProfile> {
    let event = (
        0..3usize,
        -2..50i64,
        0..3usize,
        1..200i64,
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(name, age_days, category, price, consent)| GenEvent {
            name,
            age_days,
            category,
            price,
            consent,
        });
    (
        prop::collection::vec((0..4usize, value_strategy()), 0..4),
        prop::collection::vec(any::<bool>(), 2),
        prop::collection::vec(event, 0..12),
    )
        .prop_map(|(traits, identifiers, events)| GenProfile {
            traits,
            identifiers,
            events,
        })
}

fn build(profiles: &[GenProfile], merges: &[(usize, usize)]) -> ProfileIndex {
    let mut index = ProfileIndex::new();
    for (id, p) in profiles.iter().enumerate() {
        let mut traits = Map::new();
        for (k, v) in &p.traits {
            match k {
                0 => traits.insert("plan".into(), v.clone()),
                1 => traits.insert("age".into(), v.clone()),
                2 => traits.insert(
                    "signup_at".into(),
                    json!(tessera_core::time::format_millis(
                        NOW - v.as_i64().unwrap_or(3) * DAY
                    )),
                ),
                _ => traits.insert("address".into(), json!({"country": v})),
            };
        }
        let events = p.events.iter().map(|e| EventInput {
            timestamp_ms: NOW - e.age_days * DAY + e.price,
            name: NAMES[e.name].into(),
            properties:
                json!({"category": CATEGORIES[e.category], "price": e.price, "revenue": e.price})
                    .as_object()
                    .cloned()
                    .unwrap(),
            consent: e
                .consent
                .map(|c| vec![("marketing".to_owned(), c)])
                .unwrap_or_default(),
        });
        // Half the events arrive one by one (the realtime path), half at load.
        let (load, live): (Vec<_>, Vec<_>) = events.enumerate().partition(|(i, _)| i % 2 == 0);
        let identifier_types = ["email", "phone"]
            .iter()
            .zip(&p.identifiers)
            .filter(|(_, has)| **has)
            .map(|(t, _)| (*t).to_owned())
            .collect();
        index.upsert_profile(&ProfileInput {
            id: id as i64,
            traits,
            identifier_types,
            events: load.into_iter().map(|(_, e)| e).collect(),
        });
        for (_, event) in live {
            index.add_event(id as i64, &event);
        }
    }
    for (winner, loser) in merges {
        if winner != loser {
            index.merge(*winner as i64, *loser as i64);
        }
    }
    for s in RfmModel::strings() {
        index.symbols.intern(&s);
    }
    index
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    #[test]
    fn realtime_and_batch_agree(
        profiles in prop::collection::vec(profile_strategy(), 1..40),
        merges in prop::collection::vec((0..40usize, 0..40usize), 0..5),
        condition in condition_strategy(),
        base in condition_strategy(),
        compact in any::<bool>(),
    ) {
        let merges: Vec<_> = merges.into_iter().filter(|(a, b)| *a < profiles.len() && *b < profiles.len()).collect();
        let mut index = build(&profiles, &merges);
        if compact {
            index.compact();
        }
        let computed: HashMap<String, ComputedTrait> =
            ComputedTrait::presets().into_iter().map(|c| (c.key.clone(), c)).collect();
        let rfm = RfmModel::compute(&index, RfmConfig::default(), NOW);
        let no_memberships = HashMap::new();
        let base_context = Context { index: &index, now_ms: NOW, computed: &computed, rfm: Some(&rfm), memberships: &no_memberships };
        let base_members = evaluate(&Plan::compile(&base, &base_context), &index, NOW, Parallelism::threads(1));
        let memberships: HashMap<String, Bitset> = [("base".to_owned(), base_members)].into();
        let context = Context { memberships: &memberships, ..base_context };
        let plan = Plan::compile(&condition, &context);
        for threads in [1, 2] {
            let batch = evaluate(&plan, &index, NOW, Parallelism { threads, min_candidates: 1 });
            for slot in 0..index.slot_count() as u32 {
                let realtime = index.is_alive(slot) && plan.holds(&index, slot, NOW);
                prop_assert_eq!(batch.contains(slot), realtime, "slot {} of {:?}", slot, condition);
            }
        }
    }
}
