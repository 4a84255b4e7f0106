//! The audience condition tree.
//!
//! One tree serves both evaluators (realtime per profile, batch over the index) and
//! both written forms: the JSON of the API is this tree's serde form, and
//! [`crate::language`] reads and prints the text form people type. Literal values
//! are JSON scalars (string, number, boolean, null).
//!
//! ```text
//! event "Product Added" >= 1 within 7d and not event "Order Completed" within 7d
//! trait plan = "pro"
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A condition over one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// Every child holds (an empty list holds).
    And(Vec<Condition>),
    /// At least one child holds (an empty list does not).
    Or(Vec<Condition>),
    /// The child does not hold.
    Not(Box<Condition>),
    /// A trait of the profile (set by `identify`), e.g. `trait plan = "pro"`.
    Trait(ValueTest),
    /// A computed trait (or an RFM trait), e.g. `computed total_orders > 3`.
    Computed(ValueTest),
    /// Events the profile performed, e.g. `event "Order Completed" >= 2 within 30d`.
    Event(EventCondition),
    /// The profile has an identifier of this type, e.g. `identifier email`.
    Identifier(String),
    /// The person has granted consent for this purpose, e.g. `consent marketing`.
    Consent(String),
    /// The profile is a member of another audience, e.g. `audience "vip"`.
    Audience(String),
    /// The profile is one of a fixed list, by id, e.g. `profile in [12, 15]`: a
    /// snapshot (the people who dropped out of a funnel) rather than a rule.
    Profiles(Vec<i64>),
}

/// The most profile ids a `profile in [...]` list may hold.
pub const MAX_PROFILE_LIST: usize = 100_000;

/// A named value (trait, computed trait, event property) and a test on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueTest {
    /// The name; dots address nested objects (`address.country`).
    pub name: String,
    /// The test.
    #[serde(flatten)]
    pub test: Test,
}

/// A test on one value. A missing value fails every test but `not_exists`, and
/// `!=` (a missing value is not equal to anything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "value", rename_all = "snake_case")]
pub enum Test {
    /// `= v`: equal (numbers numerically, strings exactly, case included).
    #[serde(rename = "=")]
    Eq(Value),
    /// `!= v`: not equal, or missing.
    #[serde(rename = "!=")]
    Ne(Value),
    /// `< v`: numbers numerically, strings (ISO dates too) lexicographically.
    #[serde(rename = "<")]
    Lt(Value),
    /// `<= v`.
    #[serde(rename = "<=")]
    Le(Value),
    /// `> v`.
    #[serde(rename = ">")]
    Gt(Value),
    /// `>= v`.
    #[serde(rename = ">=")]
    Ge(Value),
    /// `contains "s"`: a string containing `s`, or a list with an element equal to it.
    Contains(Value),
    /// `in [a, b]`: equal to one of the values.
    In(Vec<Value>),
    /// `exists`: present and not null.
    Exists,
    /// `not exists`: missing or null.
    NotExists,
    /// `before <time>`: a timestamp strictly before the time.
    Before(TimeRef),
    /// `after <time>`: a timestamp strictly after the time.
    After(TimeRef),
    /// `within 30d`: a timestamp in the last duration, now included.
    Within(Duration),
}

/// A point in time: absolute, or relative to the evaluation's "now".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeRef {
    /// An ISO-8601 timestamp with an offset, or a date (`2026-01-31`, midnight UTC),
    /// kept as written.
    At(String),
    /// That long before now, e.g. `30d ago`.
    Ago(Duration),
}

/// A duration in milliseconds, written in the text form with a unit:
/// `s`, `m`, `h`, `d` or `w` (`90m`, `7d`, `2w`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration {
    /// Length in milliseconds.
    pub millis: i64,
}

/// A condition on a profile's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventCondition {
    /// The event: a `track` call's `event`; `page` and `screen` calls count as
    /// `Page Viewed` and `Screen Viewed`, `identify` as `Identify`, `group` as
    /// `Group`.
    pub name: String,
    /// Filters on the event's properties; all must hold.
    #[serde(default, rename = "where", skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<ValueTest>,
    /// How many matching events are needed; default `>= 1`.
    #[serde(default)]
    pub count: CountTest,
    /// Which events count; default all time.
    #[serde(default, skip_serializing_if = "Window::is_all_time")]
    pub window: Window,
}

/// A test on a number of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountTest {
    /// The comparison.
    pub op: CountOp,
    /// The number compared against.
    pub value: u32,
}

impl Default for CountTest {
    fn default() -> Self {
        Self {
            op: CountOp::Ge,
            value: 1,
        }
    }
}

impl CountTest {
    /// Whether `count` passes.
    pub fn holds(&self, count: u32) -> bool {
        match self.op {
            CountOp::Eq => count == self.value,
            CountOp::Ne => count != self.value,
            CountOp::Lt => count < self.value,
            CountOp::Le => count <= self.value,
            CountOp::Gt => count > self.value,
            CountOp::Ge => count >= self.value,
        }
    }
}

/// Comparison of an event count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CountOp {
    /// `= n` (exactly).
    #[serde(rename = "=")]
    Eq,
    /// `!= n`.
    #[serde(rename = "!=")]
    Ne,
    /// `< n`.
    #[serde(rename = "<")]
    Lt,
    /// `<= n` (at most).
    #[serde(rename = "<=")]
    Le,
    /// `> n`.
    #[serde(rename = ">")]
    Gt,
    /// `>= n` (at least).
    #[serde(rename = ">=")]
    Ge,
}

/// Which of a profile's events an [`EventCondition`] counts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Every event.
    #[default]
    AllTime,
    /// `within 7d`: events whose time is at or after now minus the duration (the
    /// bound is inclusive) and not after now.
    Within(Duration),
    /// `since "Order Completed"`: events whose time is strictly after the time of the
    /// profile's latest event of that name; all events when the profile has none.
    Since(String),
}

impl Window {
    /// Whether this is [`Window::AllTime`].
    pub fn is_all_time(&self) -> bool {
        matches!(self, Window::AllTime)
    }
}

const UNITS: [(char, i64); 5] = [
    ('w', 7 * 86_400_000),
    ('d', 86_400_000),
    ('h', 3_600_000),
    ('m', 60_000),
    ('s', 1_000),
];

impl Duration {
    /// A duration of `millis` milliseconds.
    pub fn from_millis(millis: i64) -> Self {
        Self { millis }
    }

    /// Parses `7d`, `90m`, `2w`, `30s`, `12h`: a positive whole number and a unit.
    pub fn parse(text: &str) -> Result<Self, String> {
        let unit = text.chars().last().ok_or("a duration is empty")?;
        let Some((_, factor)) = UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(format!(
                "duration \"{text}\" needs a unit: s, m, h, d or w (e.g. 7d)"
            ));
        };
        let number = &text[..text.len() - unit.len_utf8()];
        let n: i64 = number.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
            format!("duration \"{text}\" needs a positive whole number before the unit")
        })?;
        n.checked_mul(*factor)
            .map(Self::from_millis)
            .ok_or_else(|| format!("duration \"{text}\" is too long"))
    }
}

impl std::fmt::Display for Duration {
    /// The largest unit up to days that divides the duration exactly (`7d`, not
    /// `168h`; weeks are read but printed as days, the way people write windows).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (unit, factor) in UNITS.into_iter().skip(1) {
            if self.millis % factor == 0 {
                return write!(f, "{}{unit}", self.millis / factor);
            }
        }
        // Not a whole number of seconds: only reachable from JSON built by hand.
        write!(f, "{}s", self.millis as f64 / 1000.0)
    }
}

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<Duration> for String {
    fn from(duration: Duration) -> String {
        duration.to_string()
    }
}

impl Condition {
    /// Every audience this condition refers to (for dependency order and cycles).
    pub fn referenced_audiences(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.walk(&mut |c| {
            if let Condition::Audience(key) = c {
                out.push(key.as_str());
            }
        });
        out
    }

    /// Whether the condition depends on the current time (relative windows or dates),
    /// so memberships can change with no new event and need the scheduler.
    pub fn depends_on_time(&self) -> bool {
        let mut timed = false;
        self.walk(&mut |c| {
            let test_timed = |t: &Test| {
                matches!(
                    t,
                    Test::Within(_) | Test::Before(TimeRef::Ago(_)) | Test::After(TimeRef::Ago(_))
                )
            };
            match c {
                Condition::Trait(v) | Condition::Computed(v) => timed |= test_timed(&v.test),
                Condition::Event(e) => {
                    timed |= matches!(e.window, Window::Within(_))
                        || e.filters.iter().any(|f| test_timed(&f.test))
                }
                _ => {}
            }
        });
        timed
    }

    /// Calls `visit` on this node and every descendant, parents first.
    pub fn walk<'a>(&'a self, visit: &mut dyn FnMut(&'a Condition)) {
        visit(self);
        match self {
            Condition::And(children) | Condition::Or(children) => {
                for child in children {
                    child.walk(visit);
                }
            }
            Condition::Not(child) => child.walk(visit),
            _ => {}
        }
    }
}
