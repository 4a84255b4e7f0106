//! Compact values for the in-memory index, and the tests of the language on them.
//!
//! Strings are interned once ([`Symbols`]) so a trait column or an event's
//! properties hold 16-byte [`Scalar`]s and equality of strings is equality of ids. A
//! string that is an ISO-8601 timestamp is kept as the instant it names
//! ([`Scalar::Time`]), parsed once when indexed: time tests compare integers, and
//! `=` on timestamps compares instants (`"2026-01-01T01:00:00+01:00"` equals
//! `"2026-01-01T00:00:00Z"`).

use crate::ast::{Test, TimeRef};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use tessera_core::time::parse_timestamp;

/// An interned string.
pub type Sym = u32;

/// A value as the index keeps it. Nested objects are flattened into dotted names
/// before they get here; an object itself is only remembered as present.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(f64),
    /// An interned string.
    Str(Sym),
    /// A list of values.
    List(Arc<Vec<Scalar>>),
    /// An object (its fields are indexed under dotted names).
    Object,
    /// A time (Unix ms), as computed traits produce (`last_seen_at`).
    Time(i64),
}

/// The string interner.
#[derive(Debug, Default)]
pub struct Symbols {
    ids: HashMap<Arc<str>, Sym>,
    texts: Vec<Arc<str>>,
}

impl Symbols {
    /// The id of `text`, interning it when new.
    pub fn intern(&mut self, text: &str) -> Sym {
        if let Some(id) = self.ids.get(text) {
            return *id;
        }
        let id = self.texts.len() as Sym;
        let shared: Arc<str> = Arc::from(text);
        self.texts.push(Arc::clone(&shared));
        self.ids.insert(shared, id);
        id
    }

    /// The id of `text` when it was interned before.
    pub fn get(&self, text: &str) -> Option<Sym> {
        self.ids.get(text).copied()
    }

    /// The text of an id.
    pub fn text(&self, id: Sym) -> &str {
        self.texts.get(id as usize).map(|t| &**t).unwrap_or("")
    }

    /// Number of interned strings.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Approximate heap bytes.
    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.texts.iter().map(|t| t.len() + 16).sum();
        text + self.texts.capacity() * 16 + self.ids.capacity() * 24
    }
}

/// Parses a timestamp only when the text looks like one (cheap check first: most
/// strings are not dates).
pub fn parse_time(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let looks_like_date = bytes.len() >= 10
        && bytes[..4].iter().all(u8::is_ascii_digit)
        && bytes[4] == b'-'
        && bytes[7] == b'-';
    if !looks_like_date {
        return None;
    }
    parse_timestamp(text).map(|t| t.timestamp_millis())
}

/// Converts a JSON value, flattening objects: calls `emit(path, scalar)` for the value
/// itself (an object as [`Scalar::Object`]) and for every nested field, with dotted
/// paths (`address.country`).
pub fn flatten(
    symbols: &mut Symbols,
    path: &str,
    value: &Value,
    emit: &mut dyn FnMut(&str, Scalar),
) {
    match value {
        Value::Object(map) => {
            emit(path, Scalar::Object);
            for (key, child) in map {
                let child_path = format!("{path}.{key}");
                flatten(symbols, &child_path, child, emit);
            }
        }
        other => {
            let scalar = to_scalar(symbols, other);
            emit(path, scalar);
        }
    }
}

/// Converts a JSON value that is not an object (objects become [`Scalar::Object`]).
pub fn to_scalar(symbols: &mut Symbols, value: &Value) -> Scalar {
    match value {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => match parse_time(s) {
            Some(ms) => Scalar::Time(ms),
            None => Scalar::Str(symbols.intern(s)),
        },
        Value::Array(items) => Scalar::List(Arc::new(
            items.iter().map(|v| to_scalar(symbols, v)).collect(),
        )),
        Value::Object(_) => Scalar::Object,
    }
}

/// Converts back to JSON (objects come back as `{}`: their fields live elsewhere).
pub fn to_json(symbols: &Symbols, scalar: &Scalar) -> Value {
    match scalar {
        Scalar::Null => Value::Null,
        Scalar::Bool(b) => Value::Bool(*b),
        // Whole numbers print as integers (`3`, not `3.0`): counts are counts.
        Scalar::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Value::from(*n as i64),
        Scalar::Num(n) => serde_json::Number::from_f64(*n)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Scalar::Str(s) => Value::String(symbols.text(*s).to_owned()),
        Scalar::List(items) => Value::Array(items.iter().map(|v| to_json(symbols, v)).collect()),
        Scalar::Object => Value::Object(serde_json::Map::new()),
        Scalar::Time(ms) => Value::String(tessera_core::time::format_millis(*ms)),
    }
}

/// A literal of a test, resolved against the interner. A string never interned cannot
/// be equal to any indexed string, which [`Literal::Absent`] says without interning it.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// A value that can equal indexed values.
    Known(Scalar),
    /// A string no indexed value has.
    Absent(String),
    /// A timestamp (as written, and its instant).
    Time(i64, String),
}

impl Literal {
    fn resolve(symbols: &Symbols, value: &Value) -> Self {
        match value {
            Value::String(s) => match (parse_time(s), symbols.get(s)) {
                (Some(ms), _) => Literal::Time(ms, s.clone()),
                (None, Some(id)) => Literal::Known(Scalar::Str(id)),
                (None, None) => Literal::Absent(s.clone()),
            },
            Value::Null => Literal::Known(Scalar::Null),
            Value::Bool(b) => Literal::Known(Scalar::Bool(*b)),
            Value::Number(n) => Literal::Known(Scalar::Num(n.as_f64().unwrap_or(f64::NAN))),
            // Lists and objects as literals equal nothing.
            other => Literal::Absent(other.to_string()),
        }
    }

    fn text<'a>(&'a self, symbols: &'a Symbols) -> Option<&'a str> {
        match self {
            Literal::Known(Scalar::Str(id)) => Some(symbols.text(*id)),
            Literal::Absent(text) | Literal::Time(_, text) => Some(text),
            _ => None,
        }
    }
}

/// A [`Test`] ready to run: literals resolved, times made absolute for one "now".
#[derive(Debug, Clone, PartialEq)]
pub enum CompiledTest {
    /// Equal.
    Eq(Literal),
    /// Not equal (or missing).
    Ne(Literal),
    /// Ordered comparison.
    Order(std::cmp::Ordering, bool, Literal),
    /// Contains.
    Contains(Literal),
    /// One of.
    In(Vec<Literal>),
    /// Present and not null.
    Exists,
    /// Missing or null.
    NotExists,
    /// A timestamp within `[from, to]` (inclusive), in Unix ms.
    TimeBetween(i64, i64),
}

impl CompiledTest {
    /// Resolves `test` for evaluation at `now_ms`.
    pub fn compile(test: &Test, symbols: &Symbols, now_ms: i64) -> Self {
        use std::cmp::Ordering::{Greater, Less};
        let lit = |v: &Value| Literal::resolve(symbols, v);
        match test {
            Test::Eq(v) => CompiledTest::Eq(lit(v)),
            Test::Ne(v) => CompiledTest::Ne(lit(v)),
            Test::Lt(v) => CompiledTest::Order(Less, false, lit(v)),
            Test::Le(v) => CompiledTest::Order(Less, true, lit(v)),
            Test::Gt(v) => CompiledTest::Order(Greater, false, lit(v)),
            Test::Ge(v) => CompiledTest::Order(Greater, true, lit(v)),
            Test::Contains(v) => CompiledTest::Contains(lit(v)),
            Test::In(values) => CompiledTest::In(values.iter().map(lit).collect()),
            Test::Exists => CompiledTest::Exists,
            Test::NotExists => CompiledTest::NotExists,
            Test::Before(at) => match resolve_time(at, now_ms) {
                Some(t) => CompiledTest::TimeBetween(i64::MIN, t.saturating_sub(1)),
                None => CompiledTest::TimeBetween(1, 0),
            },
            Test::After(at) => match resolve_time(at, now_ms) {
                Some(t) => CompiledTest::TimeBetween(t.saturating_add(1), i64::MAX),
                None => CompiledTest::TimeBetween(1, 0),
            },
            Test::Within(d) => CompiledTest::TimeBetween(now_ms.saturating_sub(d.millis), now_ms),
        }
    }

    /// Runs the test on a value (`None` when missing).
    pub fn holds(&self, value: Option<&Scalar>, symbols: &Symbols) -> bool {
        match self {
            CompiledTest::Exists => !matches!(value, None | Some(Scalar::Null)),
            CompiledTest::NotExists => matches!(value, None | Some(Scalar::Null)),
            CompiledTest::Ne(lit) => value.is_none_or(|v| !equals(v, lit)),
            _ => value.is_some_and(|v| self.holds_present(v, symbols)),
        }
    }

    fn holds_present(&self, value: &Scalar, symbols: &Symbols) -> bool {
        match self {
            CompiledTest::Eq(lit) => equals(value, lit),
            CompiledTest::In(lits) => lits.iter().any(|lit| equals(value, lit)),
            CompiledTest::Order(side, or_equal, lit) => match compare(value, lit, symbols) {
                Some(std::cmp::Ordering::Equal) => *or_equal,
                Some(ordering) => ordering == *side,
                None => false,
            },
            CompiledTest::Contains(lit) => match value {
                Scalar::List(items) => items.iter().any(|item| equals(item, lit)),
                Scalar::Str(id) => lit
                    .text(symbols)
                    .is_some_and(|needle| symbols.text(*id).contains(needle)),
                _ => false,
            },
            CompiledTest::TimeBetween(from, to) => match value {
                Scalar::Time(t) => *from <= *t && *t <= *to,
                _ => false,
            },
            // `holds` answers these before a present value is looked at.
            CompiledTest::Exists | CompiledTest::NotExists | CompiledTest::Ne(_) => false,
        }
    }
}

/// Resolves a time reference to Unix ms (`None` when the text is not a time; the
/// parser rejects those, so only hand-built JSON reaches it).
pub fn resolve_time(at: &TimeRef, now_ms: i64) -> Option<i64> {
    match at {
        TimeRef::At(text) => parse_timestamp(text).map(|t| t.timestamp_millis()),
        TimeRef::Ago(d) => Some(now_ms.saturating_sub(d.millis)),
    }
}

fn equals(value: &Scalar, lit: &Literal) -> bool {
    match (value, lit) {
        (Scalar::Num(a), Literal::Known(Scalar::Num(b))) => a == b,
        (Scalar::Time(a), Literal::Time(b, _)) => a == b,
        (_, Literal::Known(known)) => value == known,
        (_, Literal::Absent(_) | Literal::Time(..)) => false,
    }
}

fn compare(value: &Scalar, lit: &Literal, symbols: &Symbols) -> Option<std::cmp::Ordering> {
    match (value, lit) {
        (Scalar::Num(a), Literal::Known(Scalar::Num(b))) => a.partial_cmp(b),
        (Scalar::Str(id), _) => lit.text(symbols).map(|t| symbols.text(*id).cmp(t)),
        (Scalar::Time(ms), Literal::Time(t, _)) => Some(ms.cmp(t)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ast::Duration;
    use serde_json::json;

    fn check(test: Test, value: Option<Value>, now_ms: i64) -> bool {
        let mut symbols = Symbols::default();
        let scalar = value.map(|v| to_scalar(&mut symbols, &v));
        CompiledTest::compile(&test, &symbols, now_ms).holds(scalar.as_ref(), &symbols)
    }

    #[test]
    fn each_operator_on_present_and_missing_values() {
        let cases: Vec<(Test, Option<Value>, bool)> = vec![
            (Test::Eq(json!("pro")), Some(json!("pro")), true),
            (Test::Eq(json!("pro")), Some(json!("Pro")), false),
            (Test::Eq(json!(3)), Some(json!(3.0)), true),
            (Test::Eq(json!("pro")), None, false),
            (Test::Ne(json!("free")), None, true),
            (Test::Ne(json!("free")), Some(json!("free")), false),
            (Test::Ne(json!("free")), Some(json!("pro")), true),
            (Test::Lt(json!(10)), Some(json!(9.5)), true),
            (Test::Lt(json!(10)), Some(json!(10)), false),
            (Test::Le(json!(10)), Some(json!(10)), true),
            (Test::Gt(json!(10)), Some(json!(10)), false),
            (Test::Ge(json!(10)), Some(json!(10)), true),
            (Test::Gt(json!(10)), Some(json!("11")), false),
            (Test::Gt(json!("b")), Some(json!("c")), true),
            (
                Test::Contains(json!("gmail")),
                Some(json!("a@gmail.com")),
                true,
            ),
            (Test::Contains(json!("x")), Some(json!(["a", "x"])), true),
            (Test::Contains(json!("y")), Some(json!(["a", "x"])), false),
            (
                Test::In(vec![json!("DE"), json!("AT")]),
                Some(json!("AT")),
                true,
            ),
            (Test::In(vec![json!("DE")]), None, false),
            (Test::Exists, Some(json!(null)), false),
            (Test::Exists, Some(json!(0)), true),
            (Test::NotExists, None, true),
            (Test::NotExists, Some(json!(null)), true),
            // Timestamps compare as instants, whatever the offset they were written in.
            (
                Test::Eq(json!("2026-01-01T01:00:00+01:00")),
                Some(json!("2026-01-01T00:00:00Z")),
                true,
            ),
            (
                Test::Lt(json!("2026-01-01T00:00:01Z")),
                Some(json!("2026-01-01T01:00:00+01:00")),
                true,
            ),
            (
                Test::Eq(json!("2026-01-01")),
                Some(json!("2026-01-01T00:00:00.000Z")),
                true,
            ),
            (
                Test::Contains(json!("2026")),
                Some(json!("2026-01-01")),
                false,
            ),
        ];
        for (test, value, expected) in cases {
            assert_eq!(
                check(test.clone(), value.clone(), 0),
                expected,
                "{test:?} on {value:?}"
            );
        }
    }

    #[test]
    fn time_tests_have_inclusive_windows_and_strict_before_after_across_time_zones() {
        let now = parse_timestamp("2026-11-23T12:00:00Z")
            .unwrap()
            .timestamp_millis();
        let week = Test::Within(Duration::parse("7d").unwrap());
        // Exactly seven days ago is inside; one millisecond earlier is not.
        assert!(check(
            week.clone(),
            Some(json!("2026-11-16T12:00:00.000Z")),
            now
        ));
        assert!(!check(
            week.clone(),
            Some(json!("2026-11-16T11:59:59.999Z")),
            now
        ));
        // The same instant written in another zone.
        assert!(check(
            week.clone(),
            Some(json!("2026-11-16T14:00:00+02:00")),
            now
        ));
        assert!(!check(week, Some(json!("2026-11-16T13:59:59+02:00")), now));
        let after = Test::After(TimeRef::At("2026-01-01T00:00:00+01:00".into()));
        assert!(!check(
            after.clone(),
            Some(json!("2025-12-31T23:00:00Z")),
            now
        ));
        assert!(check(after, Some(json!("2025-12-31T23:00:01Z")), now));
        let before = Test::Before(TimeRef::Ago(Duration::parse("30d").unwrap()));
        assert!(check(
            before.clone(),
            Some(json!("2026-10-24T11:59:59Z")),
            now
        ));
        assert!(!check(
            before.clone(),
            Some(json!("2026-10-24T12:00:00Z")),
            now
        ));
        assert!(!check(before, Some(json!("not a date")), now));
    }
}
