//! The audience language's text form: a parser with exact error positions and a
//! canonical printer for the [`Condition`] tree (JSON is that tree's serde form).
//!
//! Keywords are case-insensitive; names are bare words (`[A-Za-z_][A-Za-z0-9_.$-]*`,
//! not a keyword) or double-quoted strings with JSON escapes. `not` binds tighter
//! than `and`, which binds tighter than `or`; `a and b and c` is one `And` of three.
//!
//! ```text
//! expr     := or_expr
//! or_expr  := and_expr ("or" and_expr)*
//! and_expr := unary ("and" unary)*
//! unary    := "not" unary | "(" expr ")" | atom
//! atom     := "trait" NAME test | "computed" NAME test
//!           | "event" STRING [where] [count] [window]
//!           | "identifier" NAME | "consent" NAME | "audience" NAME
//!           | "profile" "in" "[" [INT ("," INT)*] "]"   (a fixed list of profile ids)
//!           | "all"                                    (an empty And: always holds)
//!           | "none"                                   (an empty Or: never holds)
//! where    := "where" filter | "where" "(" filter ("and" filter)* ")"
//! filter   := NAME test                               (an event property)
//! count    := ("=" | "!=" | "<" | "<=" | ">" | ">=") UINT       (default >= 1)
//! window   := "within" DURATION | "since" STRING                (default all time)
//! test     := ("=" | "!=" | "<" | "<=" | ">" | ">=") VALUE | "contains" VALUE
//!           | "in" "[" [VALUE ("," VALUE)*] "]" | "exists" | "not" "exists"
//!           | "before" TIME | "after" TIME | "within" DURATION
//! VALUE    := STRING | NUMBER (JSON syntax) | "true" | "false" | "null"
//! TIME     := STRING (an RFC 3339 timestamp with an offset, or YYYY-MM-DD)
//!           | DURATION "ago"
//! DURATION := digits and a unit s, m, h, d or w with no space (7d, 90m, 2w)
//! ```
//!
//! For example `event "Product Added" within 7d and not event "Order Completed"
//! within 7d`, or `computed total_orders >= 3 or (trait country in ["DE", "AT"] and
//! identifier email)`.
//!
//! [`parse`] reads the text form, [`print()`] writes the canonical one (default count
//! and window left out, names bare when they can be, durations in their largest
//! whole unit up to days: `168h` prints as `7d`), [`parse_definition`] accepts either form, and
//! [`normalize`] flattens a tree to the shape the parser produces, so
//! `parse(&print(&normalize(t))) == Ok(normalize(t))`. Parentheses never add a node,
//! but `a and (b and c)` keeps its nested `And`, so the printer can write any tree
//! except a one-child `And` / `Or`.

mod lex;
mod parse;
mod print;

use std::fmt;

use serde_json::Value;

use lex::*;
use parse::*;
use print::*;

use crate::ast::{
    Condition, CountOp, CountTest, Duration, EventCondition, Test, TimeRef, ValueTest, Window,
};

/// How deeply `(` and `not` may nest before parsing stops with an error.
const MAX_DEPTH: usize = 64;

/// Words with a meaning in the grammar; as names they must be quoted.
const KEYWORDS: [&str; 23] = [
    "and",
    "or",
    "not",
    "trait",
    "computed",
    "event",
    "identifier",
    "consent",
    "audience",
    "all",
    "none",
    "where",
    "within",
    "since",
    "contains",
    "in",
    "exists",
    "before",
    "after",
    "ago",
    "true",
    "false",
    "null",
];

const CONDITION_STARTS: &str =
    "trait, computed, event, identifier, consent, audience, all, none, not or \"(\"";

const TESTS: &str = "=, !=, <, <=, >, >=, contains, in, exists, not exists, before, after, within";

const VALUES: &str = "a \"string\", a number, true, false or null";

/// A parse error pointing at the exact place in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong and how to fix it.
    pub message: String,
    /// Byte offset of the error in the text.
    pub offset: usize,
    /// Line of the error, 1-based.
    pub line: usize,
    /// Column of the error, 1-based, counted in characters.
    pub column: usize,
}

impl ParseError {
    fn at(text: &str, offset: usize, message: impl Into<String>) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Self {
            message: message.into(),
            offset,
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// Parses the text form of a condition.
///
/// Errors carry the position of the offending token and say what was expected.
/// Never panics; nesting of `(` and `not` deeper than 64 levels is an error.
pub fn parse(text: &str) -> Result<Condition, ParseError> {
    let mut parser = Parser {
        text,
        tokens: lex(text),
        pos: 0,
        depth: 0,
        bare_filter_end: None,
    };
    let condition = parser.expr()?;
    let token = parser.peek();
    if token.kind != Kind::Eof {
        return Err(parser.expected_or_bad(|found| {
            format!("unexpected {found} after a complete condition (join conditions with and / or)")
        }));
    }
    Ok(condition)
}

/// Parses a definition in either form: JSON (the text starts with `{` after
/// whitespace) or the text form.
///
/// A JSON definition must also be valid as text: values are scalars and times are
/// RFC 3339 timestamps with an offset or `YYYY-MM-DD` dates.
pub fn parse_definition(text: &str) -> Result<Condition, ParseError> {
    if !text.trim_start().starts_with('{') {
        return parse(text);
    }
    let condition: Condition = serde_json::from_str(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let message = e.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = message.strip_suffix(&suffix).unwrap_or(&message);
        // serde_json counts lines from 1 and columns in bytes from 1 (0 before the
        // first byte of a line).
        let line_start = text
            .split_inclusive('\n')
            .take(line.saturating_sub(1))
            .map(str::len)
            .sum::<usize>();
        let offset = if e.is_eof() {
            text.len()
        } else {
            line_start + column.saturating_sub(1)
        };
        ParseError::at(text, offset, format!("invalid JSON definition: {message}"))
    })?;
    if depth(&condition) > MAX_DEPTH {
        return Err(ParseError::at(
            text,
            0,
            format!(
                "invalid JSON definition: the condition is nested too deeply (more than {MAX_DEPTH} levels of and/or/not)"
            ),
        ));
    }
    if let Err((needle, message)) = validate(&condition) {
        let offset = needle.and_then(|n| text.find(&n)).unwrap_or(0);
        return Err(ParseError::at(
            text,
            offset,
            format!("invalid JSON definition: {message}"),
        ));
    }
    Ok(condition)
}

/// Levels of `and`/`or`/`not` nesting (a leaf is 0).
fn depth(condition: &Condition) -> usize {
    match condition {
        Condition::And(children) | Condition::Or(children) => {
            1 + children.iter().map(depth).max().unwrap_or(0)
        }
        Condition::Not(child) => 1 + depth(child),
        _ => 0,
    }
}

/// Prints the canonical text form of a condition.
///
/// `parse(&print(c)) == Ok(c)` for every tree in [`normalize`]d shape whose times
/// and values are valid (as [`parse`] and [`parse_definition`] produce). The
/// default count (`>= 1`) and window (all time) are left out, names are bare words
/// when they can be, event names are always quoted.
pub fn print(condition: &Condition) -> String {
    let mut out = String::new();
    write_condition(&mut out, condition, Context::Top);
    out
}

/// Brings a tree into the shape the parser produces: children of an `And` that are
/// themselves `And`s are merged into it (likewise `Or` in `Or`), and an `And` or `Or`
/// of a single child becomes that child. The meaning is unchanged.
pub fn normalize(condition: Condition) -> Condition {
    match condition {
        Condition::And(children) => flatten(children, |c| match c {
            Condition::And(inner) => Ok(inner),
            other => Err(other),
        })
        .map_or_else(|only| only, Condition::And),
        Condition::Or(children) => flatten(children, |c| match c {
            Condition::Or(inner) => Ok(inner),
            other => Err(other),
        })
        .map_or_else(|only| only, Condition::Or),
        Condition::Not(child) => Condition::Not(Box::new(normalize(*child))),
        other => other,
    }
}

/// Normalizes `children` and merges those of the same kind (`same` returns their
/// children); `Err(child)` when a single child remains.
fn flatten(
    children: Vec<Condition>,
    same: impl Fn(Condition) -> Result<Vec<Condition>, Condition>,
) -> Result<Vec<Condition>, Condition> {
    let mut out = Vec::with_capacity(children.len());
    for child in children {
        match same(normalize(child)) {
            Ok(inner) => out.extend(inner),
            Err(other) => out.push(other),
        }
    }
    if out.len() == 1
        && let Some(only) = out.pop()
    {
        return Err(only);
    }
    Ok(out)
}

impl fmt::Display for Condition {
    /// The canonical text form, as [`print()`] writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn d(text: &str) -> Duration {
        Duration::parse(text).unwrap()
    }

    fn vt(name: &str, test: Test) -> ValueTest {
        ValueTest {
            name: name.into(),
            test,
        }
    }

    fn event(
        name: &str,
        filters: Vec<ValueTest>,
        count: (CountOp, u32),
        window: Window,
    ) -> Condition {
        Condition::Event(EventCondition {
            name: name.into(),
            filters,
            count: CountTest {
                op: count.0,
                value: count.1,
            },
            window,
        })
    }

    const AT_LEAST_ONE: (CountOp, u32) = (CountOp::Ge, 1);

    #[test]
    fn language_examples_parse_to_exact_trees() {
        let examples: Vec<(&str, Condition)> = vec![
            (
                r#"event "Product Added" >= 1 within 7d and not event "Order Completed" within 7d"#,
                Condition::And(vec![
                    event(
                        "Product Added",
                        vec![],
                        AT_LEAST_ONE,
                        Window::Within(d("7d")),
                    ),
                    Condition::Not(Box::new(event(
                        "Order Completed",
                        vec![],
                        AT_LEAST_ONE,
                        Window::Within(d("7d")),
                    ))),
                ]),
            ),
            (
                r#"trait plan = "pro""#,
                Condition::Trait(vt("plan", Test::Eq(json!("pro")))),
            ),
            (
                r#"event "Order Completed" where (revenue > 100 and currency = "EUR") >= 2 within 30d"#,
                event(
                    "Order Completed",
                    vec![
                        vt("revenue", Test::Gt(json!(100))),
                        vt("currency", Test::Eq(json!("EUR"))),
                    ],
                    (CountOp::Ge, 2),
                    Window::Within(d("30d")),
                ),
            ),
            (
                r#"computed total_orders >= 3 or (trait country in ["DE", "AT"] and identifier email)"#,
                Condition::Or(vec![
                    Condition::Computed(vt("total_orders", Test::Ge(json!(3)))),
                    Condition::And(vec![
                        Condition::Trait(vt("country", Test::In(vec![json!("DE"), json!("AT")]))),
                        Condition::Identifier("email".into()),
                    ]),
                ]),
            ),
            (
                r#"trait signup_at after "2026-01-01T00:00:00+01:00""#,
                Condition::Trait(vt(
                    "signup_at",
                    Test::After(TimeRef::At("2026-01-01T00:00:00+01:00".into())),
                )),
            ),
            (
                "trait last_login before 30d ago",
                Condition::Trait(vt("last_login", Test::Before(TimeRef::Ago(d("30d"))))),
            ),
            (
                r#"trait "address.country" = "DE""#,
                Condition::Trait(vt("address.country", Test::Eq(json!("DE")))),
            ),
            ("consent marketing", Condition::Consent("marketing".into())),
            (r#"audience "vip""#, Condition::Audience("vip".into())),
            (
                "not trait email exists",
                Condition::Not(Box::new(Condition::Trait(vt("email", Test::Exists)))),
            ),
            (
                "trait email not exists",
                Condition::Trait(vt("email", Test::NotExists)),
            ),
            (
                r#"event "Checkout Started" = 0 since "Order Completed""#,
                event(
                    "Checkout Started",
                    vec![],
                    (CountOp::Eq, 0),
                    Window::Since("Order Completed".into()),
                ),
            ),
            // Precedence, flattening and parentheses.
            (
                "consent a and consent b and consent c or consent d",
                Condition::Or(vec![
                    Condition::And(vec![
                        Condition::Consent("a".into()),
                        Condition::Consent("b".into()),
                        Condition::Consent("c".into()),
                    ]),
                    Condition::Consent("d".into()),
                ]),
            ),
            (
                "not consent a and consent b",
                Condition::And(vec![
                    Condition::Not(Box::new(Condition::Consent("a".into()))),
                    Condition::Consent("b".into()),
                ]),
            ),
            (
                "not (consent a or consent b)",
                Condition::Not(Box::new(Condition::Or(vec![
                    Condition::Consent("a".into()),
                    Condition::Consent("b".into()),
                ]))),
            ),
            ("((consent a))", Condition::Consent("a".into())),
            ("all", Condition::And(vec![])),
            ("NONE", Condition::Or(vec![])),
            // Keywords are case-insensitive, names are not.
            (
                "TRAIT Plan CONTAINS \"x\" Or Identifier Email",
                Condition::Or(vec![
                    Condition::Trait(vt("Plan", Test::Contains(json!("x")))),
                    Condition::Identifier("Email".into()),
                ]),
            ),
            // Values.
            (
                "trait x != -12.5",
                Condition::Trait(vt("x", Test::Ne(json!(-12.5)))),
            ),
            (
                "trait x < 1e3",
                Condition::Trait(vt("x", Test::Lt(json!(1e3)))),
            ),
            (
                "trait x <= 2.5E-2",
                Condition::Trait(vt("x", Test::Le(json!(2.5e-2)))),
            ),
            (
                "trait x = TRUE",
                Condition::Trait(vt("x", Test::Eq(json!(true)))),
            ),
            (
                "trait x != null",
                Condition::Trait(vt("x", Test::Ne(Value::Null))),
            ),
            ("trait x in []", Condition::Trait(vt("x", Test::In(vec![])))),
            (
                r#"trait x in [1, "a\"b\u00e9\ud83d\ude00", false, null]"#,
                Condition::Trait(vt(
                    "x",
                    Test::In(vec![json!(1), json!("a\"bé😀"), json!(false), Value::Null]),
                )),
            ),
            (
                "trait seen within 90m",
                Condition::Trait(vt("seen", Test::Within(d("90m")))),
            ),
            (
                r#"trait born after "2026-01-31""#,
                Condition::Trait(vt("born", Test::After(TimeRef::At("2026-01-31".into())))),
            ),
            ("identifier x-1.$y", Condition::Identifier("x-1.$y".into())),
            (
                r#"event "Page Viewed" where url contains "/pricing" < 3 within 2w"#,
                event(
                    "Page Viewed",
                    vec![vt("url", Test::Contains(json!("/pricing")))],
                    (CountOp::Lt, 3),
                    Window::Within(d("2w")),
                ),
            ),
            (
                // A filter's `within` is the filter's; the next one is the window.
                r#"event "E" where at within 1d within 30d"#,
                event(
                    "E",
                    vec![vt("at", Test::Within(d("1d")))],
                    AT_LEAST_ONE,
                    Window::Within(d("30d")),
                ),
            ),
            (
                "consent a\n  and\tconsent \"b\"",
                Condition::And(vec![
                    Condition::Consent("a".into()),
                    Condition::Consent("b".into()),
                ]),
            ),
        ];
        for (text, expected) in examples {
            assert_eq!(parse(text), Ok(expected.clone()), "parsing {text}");
            assert_eq!(
                parse(&print(&expected)),
                Ok(expected.clone()),
                "reparsing {text}"
            );
        }
    }

    #[test]
    fn json_definitions_nested_too_deeply_are_refused() {
        let leaf = r#"{"identifier": "email"}"#;
        let deep = format!(
            "{}{leaf}{}",
            r#"{"not": "#.repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        let error = parse_definition(&deep).unwrap_err();
        assert!(error.message.contains("nested too deeply"), "{error}");
        let fine = format!(
            "{}{leaf}{}",
            r#"{"not": "#.repeat(MAX_DEPTH),
            "}".repeat(MAX_DEPTH)
        );
        assert!(parse_definition(&fine).is_ok());
    }

    #[test]
    fn language_prints_canonical_text() {
        let cases = [
            (
                r#"EVENT "Product Added" >= 1 within 168h and not event "Order Completed" within 7d"#,
                r#"event "Product Added" within 7d and not event "Order Completed" within 7d"#,
            ),
            (
                r#"trait "plan" = "pro" and (consent a or consent b)"#,
                r#"trait plan = "pro" and (consent a or consent b)"#,
            ),
            (
                "consent a or consent b and consent c",
                "consent a or consent b and consent c",
            ),
            (
                "not (consent a and consent b)",
                "not (consent a and consent b)",
            ),
            ("not not consent a", "not not consent a"),
            (
                r#"event "E" where (a = 1) >= 1"#,
                r#"event "E" where a = 1"#,
            ),
            (
                r#"event "E" where (a = 1 and "b c" in [1.5, -2]) > 0 since "X""#,
                r#"event "E" where (a = 1 and "b c" in [1.5, -2]) > 0 since "X""#,
            ),
            (
                r#"identifier "and" and audience "2fa" and consent "é""#,
                r#"identifier "and" and audience "2fa" and consent "é""#,
            ),
            (
                "trait t before 60m ago or trait u after 14d ago",
                "trait t before 1h ago or trait u after 14d ago",
            ),
            ("all or none", "all or none"),
            ("trait x = 3.0", "trait x = 3.0"),
        ];
        for (text, canonical) in cases {
            let condition = parse(text).unwrap();
            assert_eq!(print(&condition), canonical, "printing {text}");
            assert_eq!(condition.to_string(), canonical);
        }
        // Nested same-kind lists keep their shape through parentheses.
        let nested = Condition::And(vec![
            Condition::Consent("a".into()),
            Condition::And(vec![
                Condition::Consent("b".into()),
                Condition::Consent("c".into()),
            ]),
        ]);
        assert_eq!(print(&nested), "consent a and (consent b and consent c)");
        assert_eq!(parse(&print(&nested)), Ok(nested));
        // A one-child list prints as its child.
        let single = Condition::Or(vec![Condition::Consent("a".into())]);
        assert_eq!(print(&single), "consent a");
    }

    #[test]
    fn language_normalize_flattens_and_collapses() {
        let a = || Condition::Consent("a".into());
        let b = || Condition::Consent("b".into());
        let tree = Condition::And(vec![
            Condition::And(vec![a(), Condition::And(vec![b()])]),
            Condition::Or(vec![Condition::Or(vec![a()])]),
            Condition::Not(Box::new(Condition::Or(vec![b()]))),
            Condition::And(vec![]),
        ]);
        assert_eq!(
            normalize(tree),
            Condition::And(vec![a(), b(), a(), Condition::Not(Box::new(b()))])
        );
        assert_eq!(
            normalize(Condition::Or(vec![Condition::And(vec![])])),
            Condition::And(vec![])
        );
        assert_eq!(normalize(Condition::Or(vec![])), Condition::Or(vec![]));
    }

    #[test]
    fn language_errors_point_at_the_problem() {
        // (text, line, column, a phrase of the message)
        let cases: &[(&str, usize, usize, &str)] = &[
            ("", 1, 1, "expected a condition: trait, computed, event"),
            ("   ", 1, 4, "found end of text"),
            (
                "trait plan",
                1,
                11,
                "expected a comparison (=, !=, <, <=, >, >=, contains, in, exists, not exists, before, after, within) after trait name \"plan\", found end of text",
            ),
            ("trait plan is \"pro\"", 1, 12, "expected a comparison"),
            ("trait", 1, 6, "expected a trait name after trait"),
            ("trait and = 1", 1, 7, "quote it: \"and\""),
            ("trait plan =", 1, 13, "expected a value after \"=\""),
            ("trait plan = pro", 1, 14, "(quote text: \"pro\")"),
            ("trait plan = 1.2.3", 1, 14, "invalid number \"1.2.3\""),
            ("trait plan = 01", 1, 14, "invalid number \"01\""),
            ("trait plan = 7d", 1, 14, "found the duration \"7d\""),
            ("trait plan == 1", 1, 12, "\"==\" is not an operator"),
            ("trait plan <> 1", 1, 12, "\"<>\" is not an operator"),
            ("trait plan ! 1", 1, 12, "unexpected character \"!\""),
            (
                "frobnicate x",
                1,
                1,
                "expected a condition: trait, computed, event, identifier, consent, audience, all, none, not or \"(\", found \"frobnicate\"",
            ),
            ("plan = 1", 1, 1, "(did you mean trait plan ...?)"),
            (
                "consent a and plan not exists",
                1,
                15,
                "did you mean trait plan",
            ),
            (
                "consent a consent b",
                1,
                11,
                "unexpected \"consent\" after a complete condition",
            ),
            (
                "consent a foo",
                1,
                11,
                "unexpected \"foo\" after a complete condition",
            ),
            (
                "consent a)",
                1,
                10,
                "unexpected \")\" after a complete condition",
            ),
            (
                "(consent a",
                1,
                11,
                "expected \")\" to close the \"(\" at line 1, column 1",
            ),
            ("consent a and", 1, 14, "expected a condition"),
            ("consent \"abc", 1, 9, "unterminated string"),
            ("consent \"a\\qb\"", 1, 11, "invalid escape \"\\q\""),
            ("consent \"\\u12G4\"", 1, 10, "invalid unicode escape"),
            ("consent \"\\ud800\"", 1, 10, "surrogate"),
            ("consent \"a\nb\"", 1, 11, "can't contain a line break"),
            (
                "event \"E\" within 7x",
                1,
                18,
                "duration \"7x\" needs a unit",
            ),
            (
                "event \"E\" within 7 d",
                1,
                18,
                "write the duration without a space: 7d",
            ),
            ("event \"E\" within 0d", 1, 18, "positive whole number"),
            (
                "event \"E\" within",
                1,
                17,
                "expected a duration after within",
            ),
            (
                "event \"E\" >= x",
                1,
                14,
                "expected a number of events after \">=\" (e.g. >= 1), found \"x\"",
            ),
            (
                "event \"E\" >= 1.5",
                1,
                14,
                "invalid number of events \"1.5\"",
            ),
            ("event \"E\" >= -1", 1, 14, "invalid number of events"),
            ("event \"E\" >= 4294967296", 1, 14, "from 0 to 4294967295"),
            (
                "event Signup",
                1,
                7,
                "expected the event name as a \"quoted string\"",
            ),
            ("event \"E\" since Other", 1, 17, "after since"),
            (
                "event \"E\" where",
                1,
                16,
                "expected an event property name after where",
            ),
            (
                "event \"E\" where (a = 1 or b = 2)",
                1,
                24,
                "expected and or \")\" after the event filter",
            ),
            (
                "event \"E\" where a = 1 and b = 2",
                1,
                27,
                "several event filters go in parentheses: where (a = 1 and b ...)",
            ),
            (
                "trait t before yesterday",
                1,
                16,
                "expected a time after before",
            ),
            (
                "trait t before \"2026-13-01\"",
                1,
                16,
                "invalid time \"2026-13-01\"",
            ),
            (
                "trait t after \"2026-01-01T00:00:00\"",
                1,
                15,
                "timestamp with an offset",
            ),
            (
                "trait t after 30d",
                1,
                18,
                "expected ago after the duration 30d",
            ),
            ("trait t not 1", 1, 13, "expected exists after not"),
            ("trait t in \"DE\"", 1, 12, "expected \"[\" after in"),
            (
                "trait t in [\"DE\" \"AT\"]",
                1,
                18,
                "expected \",\" or \"]\" in the list",
            ),
            (
                "trait t in [\"DE\",]",
                1,
                18,
                "expected a value after \",\"",
            ),
            ("trait t in [\"DE\"", 1, 17, "found end of text"),
            ("consent a && consent b", 1, 11, "write the keyword and"),
            ("trait café = 1", 1, 10, "must be quoted"),
            ("trait 'x' = 1", 1, 7, "strings use double quotes"),
            // Lines and columns count characters, not bytes.
            (
                "trait \"é😀\" = 1\n  and trait x",
                2,
                14,
                "after trait name \"x\"",
            ),
            ("consent \"日本\" and\n\n  bogus", 3, 3, "found \"bogus\""),
        ];
        for &(text, line, column, phrase) in cases {
            let error = parse(text).unwrap_err();
            assert!(
                error.message.contains(phrase),
                "{text:?}: message {:?} lacks {phrase:?}",
                error.message
            );
            assert_eq!(
                (error.line, error.column),
                (line, column),
                "{text:?}: {error}"
            );
            let start = text[..error.offset].rfind('\n').map_or(0, |i| i + 1);
            assert_eq!(text[start..error.offset].chars().count() + 1, error.column);
            assert_eq!(
                error.to_string(),
                format!("line {line}, column {column}: {}", error.message)
            );
        }
    }

    #[test]
    fn language_depth_is_limited() {
        let ok = format!(
            "{}consent a{}",
            "(".repeat(MAX_DEPTH),
            ")".repeat(MAX_DEPTH)
        );
        assert_eq!(parse(&ok), Ok(Condition::Consent("a".into())));
        let deep = format!(
            "{}consent a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        let error = parse(&deep).unwrap_err();
        assert!(error.message.contains("nested too deeply"), "{error}");
        assert_eq!(error.column, MAX_DEPTH + 1);
        for text in [
            "not ".repeat(100_000) + "consent a",
            "(".repeat(100_000),
            "( not ".repeat(50_000),
        ] {
            assert!(
                parse(&text)
                    .unwrap_err()
                    .message
                    .contains("nested too deeply")
            );
        }
    }

    #[test]
    fn language_parse_definition_accepts_both_forms() {
        let condition = parse(
            r#"event "Order Completed" where (revenue > 100 and currency = "EUR") >= 2 within 30d or trait t before 30d ago"#,
        )
        .unwrap();
        let json = serde_json::to_string_pretty(&condition).unwrap();
        assert_eq!(parse_definition(&json), Ok(condition.clone()));
        assert_eq!(
            parse_definition(&format!("\n  {json}")),
            Ok(condition.clone())
        );
        assert_eq!(parse_definition(&print(&condition)), Ok(condition));

        let error = parse_definition("{\n  \"consent\": 5}").unwrap_err();
        assert_eq!(error.line, 2, "{error}");
        assert!(
            error.message.starts_with("invalid JSON definition: "),
            "{error}"
        );
        assert!(!error.message.contains(" at line "), "{error}");

        let error = parse_definition("{\"consent\": \"a\"").unwrap_err();
        assert!(error.message.contains("EOF"), "{error}");
        assert_eq!(error.offset, 15);

        let error = parse_definition("{\"trat\": {}}").unwrap_err();
        assert!(error.message.contains("unknown variant"), "{error}");
        assert_eq!((error.line, error.column), (1, 7), "{error}");

        // JSON the text form would reject.
        let bad_time = serde_json::to_string(&Condition::Trait(vt(
            "t",
            Test::After(TimeRef::At("tomorrow".into())),
        )))
        .unwrap();
        let error = parse_definition(&bad_time).unwrap_err();
        assert!(
            error.message.contains("invalid time \"tomorrow\""),
            "{error}"
        );
        assert_eq!(error.offset, bad_time.find("\"tomorrow\"").unwrap());
        let bad_value =
            serde_json::to_string(&Condition::Trait(vt("t", Test::Eq(json!([1]))))).unwrap();
        let error = parse_definition(&bad_value).unwrap_err();
        assert!(
            error.message.contains("a value must be a string"),
            "{error}"
        );

        // Text that is not JSON stays text.
        assert_eq!(
            parse_definition("  consent a"),
            Ok(Condition::Consent("a".into()))
        );
    }

    // ---- property tests ----

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("plan".to_string()),
            Just("a".to_string()),
            Just("address.country".to_string()),
            Just("x-1_$y".to_string()),
            Just("and".to_string()),
            Just("Not".to_string()),
            Just("EXISTS".to_string()),
            Just("two words".to_string()),
            Just("quo\"te\\".to_string()),
            Just("ünï😀".to_string()),
            Just("$x".to_string()),
            Just("2fa".to_string()),
            Just("line\nbreak\u{1}".to_string()),
            Just(String::new()),
        ]
    }

    fn string_value() -> impl Strategy<Value = String> {
        prop_oneof![name(), "\\PC{0,8}", ".{0,4}"]
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            string_value().prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i32>().prop_map(|n| Value::from(f64::from(n) / 8.0)),
            any::<i32>().prop_map(|n| Value::from(f64::from(n) / 100.0)),
            (-9i32..9, 0i32..22).prop_map(|(m, e)| Value::from(f64::from(m) * 10f64.powi(e))),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ]
    }

    fn duration() -> impl Strategy<Value = Duration> {
        (
            1i64..2000,
            prop::sample::select(vec![1_000i64, 60_000, 3_600_000, 86_400_000, 604_800_000]),
        )
            .prop_map(|(n, unit)| Duration::from_millis(n * unit))
    }

    fn time_ref() -> impl Strategy<Value = TimeRef> {
        prop_oneof![
            prop::sample::select(vec![
                "2026-01-01",
                "2026-01-01T00:00:00+01:00",
                "2025-12-31T23:59:59.123Z",
                "1999-02-28T12:00:00-05:30",
            ])
            .prop_map(|s| TimeRef::At(s.to_string())),
            duration().prop_map(TimeRef::Ago),
        ]
    }

    fn test_strategy() -> impl Strategy<Value = Test> {
        prop_oneof![
            value().prop_map(Test::Eq),
            value().prop_map(Test::Ne),
            value().prop_map(Test::Lt),
            value().prop_map(Test::Le),
            value().prop_map(Test::Gt),
            value().prop_map(Test::Ge),
            value().prop_map(Test::Contains),
            prop::collection::vec(value(), 0..4).prop_map(Test::In),
            Just(Test::Exists),
            Just(Test::NotExists),
            time_ref().prop_map(Test::Before),
            time_ref().prop_map(Test::After),
            duration().prop_map(Test::Within),
        ]
    }

    fn value_test() -> impl Strategy<Value = ValueTest> {
        (name(), test_strategy()).prop_map(|(name, test)| ValueTest { name, test })
    }

    fn count_test() -> impl Strategy<Value = CountTest> {
        (
            prop::sample::select(vec![
                CountOp::Eq,
                CountOp::Ne,
                CountOp::Lt,
                CountOp::Le,
                CountOp::Gt,
                CountOp::Ge,
            ]),
            prop_oneof![0u32..4, any::<u32>()],
        )
            .prop_map(|(op, value)| CountTest { op, value })
    }

    fn window() -> impl Strategy<Value = Window> {
        prop_oneof![
            Just(Window::AllTime),
            duration().prop_map(Window::Within),
            name().prop_map(Window::Since),
        ]
    }

    fn leaf() -> impl Strategy<Value = Condition> {
        prop_oneof![
            value_test().prop_map(Condition::Trait),
            value_test().prop_map(Condition::Computed),
            (
                name(),
                prop::collection::vec(value_test(), 0..3),
                count_test(),
                window()
            )
                .prop_map(|(name, filters, count, window)| {
                    Condition::Event(EventCondition {
                        name,
                        filters,
                        count,
                        window,
                    })
                }),
            name().prop_map(Condition::Identifier),
            name().prop_map(Condition::Consent),
            name().prop_map(Condition::Audience),
            prop::collection::vec(any::<i64>(), 0..4).prop_map(Condition::Profiles),
        ]
    }

    fn condition() -> impl Strategy<Value = Condition> {
        leaf().prop_recursive(4, 48, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::And),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Condition::Or),
                inner.prop_map(|c| Condition::Not(Box::new(c))),
            ]
        })
    }

    fn token_soup() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "trait",
            "computed",
            "event",
            "identifier",
            "consent",
            "audience",
            "all",
            "none",
            "not",
            "and",
            "or",
            "where",
            "within",
            "since",
            "contains",
            "in",
            "exists",
            "before",
            "after",
            "ago",
            "true",
            "false",
            "null",
            "(",
            ")",
            "[",
            "]",
            ",",
            "=",
            "!=",
            "<",
            "<=",
            ">",
            ">=",
            "==",
            "!",
            "7d",
            "0",
            "-1.5",
            "1e400",
            "7x",
            "\"a\"",
            "\"2026-01-01\"",
            "\"",
            "\"\\u",
            "\\",
            "plan",
            "é",
            "😀",
            "\n",
            "{",
            "}",
        ]);
        prop::collection::vec((token, any::<bool>()), 0..24).prop_map(|tokens| {
            tokens
                .into_iter()
                .map(|(t, space)| {
                    if space {
                        format!("{t} ")
                    } else {
                        t.to_string()
                    }
                })
                .collect()
        })
    }

    fn check_error(text: &str, result: Result<Condition, ParseError>) {
        if let Err(error) = result {
            assert!(error.offset <= text.len());
            assert!(text.is_char_boundary(error.offset));
            assert!(error.line >= 1 && error.column >= 1);
            assert!(!error.message.is_empty());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn language_print_parse_round_trip(tree in condition()) {
            let tree = normalize(tree);
            let text = print(&tree);
            prop_assert_eq!(parse(&text), Ok(tree.clone()), "text: {}", text);
            prop_assert_eq!(print(&normalize(tree.clone())), text.clone());
            prop_assert_eq!(parse_definition(&text), Ok(tree));
        }

        #[test]
        fn language_json_round_trip(tree in condition()) {
            let json = serde_json::to_string(&tree).unwrap();
            let back: Condition = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &tree);
            prop_assert_eq!(parse_definition(&json), Ok(tree));
        }

        #[test]
        fn language_normalize_is_idempotent(tree in condition()) {
            let once = normalize(tree);
            prop_assert_eq!(normalize(once.clone()), once);
        }

        #[test]
        fn language_parse_never_panics(text in ".*") {
            check_error(&text, parse(&text));
            check_error(&text, parse_definition(&text));
        }

        #[test]
        fn language_parse_never_panics_on_token_soup(text in token_soup()) {
            check_error(&text, parse(&text));
            if let Ok(condition) = parse(&text) {
                prop_assert_eq!(parse(&print(&condition)), Ok(condition));
            }
        }
    }
}
