//! Evaluation of a condition: compiled once for a "now" against the index
//! ([`Plan`]), then run either per profile ([`Plan::holds`], the realtime evaluator)
//! or set-wise over every profile ([`crate::batch`]).
//!
//! Compiling resolves every name (event names, property keys, trait paths,
//! identifier types, consent purposes, audiences) to the index's interned ids once,
//! and every relative time to an absolute one, so both evaluators compare integers.

use crate::ast::{Condition, CountOp, CountTest, EventCondition, Window};
use crate::bitset::Bitset;
use crate::computed::{CompiledComputed, ComputedTrait};
use crate::index::{ProfileEvents, ProfileIndex, Slot};
use crate::rfm::{RFM_TRAITS, RfmModel};
use crate::scalar::{CompiledTest, Scalar, Sym};
use std::collections::HashMap;

/// What a condition may refer to besides the index.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    /// The profiles.
    pub index: &'a ProfileIndex,
    /// The evaluation time (Unix ms).
    pub now_ms: i64,
    /// Computed traits by key.
    pub computed: &'a HashMap<String, ComputedTrait>,
    /// The RFM model, once computed.
    pub rfm: Option<&'a RfmModel>,
    /// Current members of each audience, by key (for `audience "key"`).
    pub memberships: &'a HashMap<String, Bitset>,
}

/// A compiled condition.
pub enum Plan<'a> {
    /// All hold.
    And(Vec<Plan<'a>>),
    /// One holds.
    Or(Vec<Plan<'a>>),
    /// Does not hold.
    Not(Box<Plan<'a>>),
    /// A trait column and a test (`None`: no profile has the trait).
    Trait(Option<&'a [Option<Scalar>]>, CompiledTest),
    /// A computed value and a test.
    Computed(ComputedSource<'a>, CompiledTest),
    /// An event condition.
    Event(EventPlan),
    /// An identifier type's bit (`None`: no profile has one).
    Identifier(Option<u32>),
    /// A consent purpose (`None`: nobody gave it).
    Consent(Option<Sym>),
    /// Another audience's members (`None`: no such audience, nobody).
    Audience(Option<&'a Bitset>),
    /// A fixed list of profile ids.
    Profiles(std::collections::HashSet<i64>),
}

/// Where a `computed` condition's value comes from.
pub enum ComputedSource<'a> {
    /// A computed trait.
    Trait(CompiledComputed),
    /// An RFM trait.
    Rfm(&'a RfmModel, &'static str),
    /// Unknown name: no profile has a value.
    Missing,
}

/// A compiled event condition.
pub struct EventPlan {
    /// The event name (`None`: no event has it).
    pub name: Option<Sym>,
    /// Property filters.
    pub filters: Vec<(Option<Sym>, CompiledTest)>,
    /// The count test.
    pub count: CountTest,
    /// The window.
    pub window: WindowPlan,
}

/// A compiled window.
pub enum WindowPlan {
    /// Every event.
    All,
    /// Events with `from <= time <= to`.
    Between(i64, i64),
    /// Events after the latest event of this name (`None`: no event has it, so all).
    Since(Option<Sym>),
}

impl<'a> Plan<'a> {
    /// Compiles `condition` for `context`.
    pub fn compile(condition: &Condition, context: &Context<'a>) -> Plan<'a> {
        let index = context.index;
        let symbols = &index.symbols;
        let now = context.now_ms;
        match condition {
            Condition::And(children) => {
                Plan::And(children.iter().map(|c| Plan::compile(c, context)).collect())
            }
            Condition::Or(children) => {
                Plan::Or(children.iter().map(|c| Plan::compile(c, context)).collect())
            }
            Condition::Not(child) => Plan::Not(Box::new(Plan::compile(child, context))),
            Condition::Trait(test) => Plan::Trait(
                index.trait_column(&test.name),
                CompiledTest::compile(&test.test, symbols, now),
            ),
            Condition::Computed(test) => {
                let source = if let Some(definition) = context.computed.get(&test.name) {
                    ComputedSource::Trait(CompiledComputed::compile(definition, index, now))
                } else if let (Some(model), Some(name)) =
                    (context.rfm, RFM_TRAITS.iter().find(|n| **n == test.name))
                {
                    ComputedSource::Rfm(model, name)
                } else {
                    ComputedSource::Missing
                };
                Plan::Computed(source, CompiledTest::compile(&test.test, symbols, now))
            }
            Condition::Event(event) => Plan::Event(EventPlan::compile(event, index, now)),
            Condition::Identifier(id_type) => Plan::Identifier(index.identifier_bit(id_type)),
            Condition::Consent(purpose) => {
                Plan::Consent(symbols.get(&purpose.trim().to_lowercase()))
            }
            Condition::Audience(key) => Plan::Audience(context.memberships.get(key)),
            Condition::Profiles(ids) => Plan::Profiles(ids.iter().copied().collect()),
        }
    }

    /// Whether the condition holds for one profile: the realtime evaluator.
    pub fn holds(&self, index: &ProfileIndex, slot: Slot, now_ms: i64) -> bool {
        match self {
            Plan::And(children) => children.iter().all(|c| c.holds(index, slot, now_ms)),
            Plan::Or(children) => children.iter().any(|c| c.holds(index, slot, now_ms)),
            Plan::Not(child) => !child.holds(index, slot, now_ms),
            Plan::Trait(column, test) => {
                let value = column
                    .and_then(|c| c.get(slot as usize))
                    .and_then(Option::as_ref);
                test.holds(value, &index.symbols)
            }
            Plan::Computed(source, test) => {
                let value = source.value(index, slot, now_ms);
                test.holds(value.as_ref(), &index.symbols)
            }
            Plan::Event(event) => event.holds(index, index.profile_events(slot)),
            Plan::Identifier(bit) => bit.is_some_and(|b| {
                index
                    .identifier_bits()
                    .get(slot as usize)
                    .is_some_and(|bits| bits & (1 << b) != 0)
            }),
            Plan::Consent(purpose) => purpose.is_some_and(|p| index.consent(slot, p)),
            Plan::Audience(members) => members.is_some_and(|m| m.contains(slot)),
            Plan::Profiles(ids) => ids.contains(&index.profile_id(slot)),
        }
    }

    /// A rough relative cost per profile, to run cheap conditions first.
    pub fn cost(&self) -> u32 {
        match self {
            Plan::And(c) | Plan::Or(c) => c.iter().map(Plan::cost).sum(),
            Plan::Not(c) => c.cost(),
            Plan::Identifier(_) | Plan::Consent(_) | Plan::Audience(_) | Plan::Profiles(_) => 1,
            Plan::Trait(..) => 2,
            Plan::Event(e) if matches!(e.window, WindowPlan::Between(..)) => 20,
            Plan::Event(_) => 40,
            Plan::Computed(..) => 60,
        }
    }
}

impl ComputedSource<'_> {
    /// The value for one profile.
    pub fn value(&self, index: &ProfileIndex, slot: Slot, now_ms: i64) -> Option<Scalar> {
        match self {
            ComputedSource::Trait(compiled) => compiled.value(index, slot),
            ComputedSource::Rfm(model, name) => model.trait_value(index, slot, name, now_ms),
            ComputedSource::Missing => None,
        }
    }
}

impl EventPlan {
    /// Compiles an event condition against the index for evaluation at `now_ms`.
    pub fn compile(event: &EventCondition, index: &ProfileIndex, now_ms: i64) -> Self {
        let symbols = &index.symbols;
        Self {
            name: symbols.get(&event.name),
            filters: event
                .filters
                .iter()
                .map(|f| {
                    (
                        symbols.get(&f.name),
                        CompiledTest::compile(&f.test, symbols, now_ms),
                    )
                })
                .collect(),
            count: event.count,
            window: match &event.window {
                Window::AllTime => WindowPlan::All,
                Window::Within(d) => WindowPlan::Between(now_ms.saturating_sub(d.millis), now_ms),
                Window::Since(name) => WindowPlan::Since(symbols.get(name)),
            },
        }
    }

    /// Whether the count of matching events among `events` (one profile's, in time
    /// order) passes the count test.
    pub fn holds(&self, index: &ProfileIndex, events: ProfileEvents<'_>) -> bool {
        let Some(name) = self.name else {
            // No event has this name: the count is 0.
            return self.count.holds(0);
        };
        // Counting can stop once the answer cannot change.
        let enough = match self.count.op {
            CountOp::Ge => self.count.value,
            CountOp::Lt => self.count.value,
            _ => self.count.value.saturating_add(1),
        };
        let (from, to, after) = match self.window {
            WindowPlan::All | WindowPlan::Since(None) => (i64::MIN, i64::MAX, None),
            WindowPlan::Between(from, to) => (from, to, None),
            WindowPlan::Since(Some(anchor)) => (
                i64::MIN,
                i64::MAX,
                events.named(anchor).next_back().map(|e| e.timestamp_ms),
            ),
        };
        let events = if (from, to) == (i64::MIN, i64::MAX) {
            events
        } else {
            events.between(from, to)
        };
        // Walk back from the newest, so counting stops as soon as the answer is known
        // (and an anchor's time ends the walk); other names are skipped unread.
        let mut count = 0u32;
        for event in events.named(name).rev() {
            if count >= enough || after.is_some_and(|a| event.timestamp_ms <= a) {
                break;
            }
            if self.passes_filters(index, event.props) {
                count += 1;
            }
        }
        self.count.holds(count)
    }

    /// Whether an event's properties pass every filter.
    pub fn passes_filters(&self, index: &ProfileIndex, props: u32) -> bool {
        self.filters.iter().all(|(key, test)| {
            let value = key.and_then(|k| index.property_of(props, k));
            test.holds(value, &index.symbols)
        })
    }
}
