//! The canonical printer of the audience language: names bare when they can be,
//! default counts and windows left out, durations in their largest whole unit.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
    Top,
    OrOperand,
    AndOperand,
    NotOperand,
}

pub(super) fn write_condition(out: &mut String, condition: &Condition, context: Context) {
    // A one-child And / Or prints as its child (the parser has no form for it).
    let mut condition = condition;
    while let Condition::And(children) | Condition::Or(children) = condition {
        match children.as_slice() {
            [only] => condition = only,
            _ => break,
        }
    }
    match condition {
        Condition::And(children) if children.is_empty() => out.push_str("all"),
        Condition::Or(children) if children.is_empty() => out.push_str("none"),
        Condition::And(children) => {
            let parens = matches!(context, Context::AndOperand | Context::NotOperand);
            write_list(out, children, " and ", Context::AndOperand, parens);
        }
        Condition::Or(children) => {
            let parens = context != Context::Top;
            write_list(out, children, " or ", Context::OrOperand, parens);
        }
        Condition::Not(child) => {
            out.push_str("not ");
            write_condition(out, child, Context::NotOperand);
        }
        Condition::Trait(test) => {
            out.push_str("trait ");
            write_value_test(out, test);
        }
        Condition::Computed(test) => {
            out.push_str("computed ");
            write_value_test(out, test);
        }
        Condition::Event(event) => write_event(out, event),
        Condition::Identifier(name) => {
            out.push_str("identifier ");
            write_name(out, name);
        }
        Condition::Consent(name) => {
            out.push_str("consent ");
            write_name(out, name);
        }
        Condition::Audience(name) => {
            out.push_str("audience ");
            write_name(out, name);
        }
        Condition::Profiles(ids) => {
            out.push_str("profile in [");
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&id.to_string());
            }
            out.push(']');
        }
    }
}

pub(super) fn write_list(
    out: &mut String,
    children: &[Condition],
    separator: &str,
    context: Context,
    parens: bool,
) {
    if parens {
        out.push('(');
    }
    for (i, child) in children.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        write_condition(out, child, context);
    }
    if parens {
        out.push(')');
    }
}

pub(super) fn write_event(out: &mut String, event: &EventCondition) {
    out.push_str("event ");
    write_string(out, &event.name);
    match event.filters.as_slice() {
        [] => {}
        [only] => {
            out.push_str(" where ");
            write_value_test(out, only);
        }
        filters => {
            out.push_str(" where (");
            for (i, filter) in filters.iter().enumerate() {
                if i > 0 {
                    out.push_str(" and ");
                }
                write_value_test(out, filter);
            }
            out.push(')');
        }
    }
    if event.count != CountTest::default() {
        let op = match event.count.op {
            CountOp::Eq => "=",
            CountOp::Ne => "!=",
            CountOp::Lt => "<",
            CountOp::Le => "<=",
            CountOp::Gt => ">",
            CountOp::Ge => ">=",
        };
        out.push_str(&format!(" {op} {}", event.count.value));
    }
    match &event.window {
        Window::AllTime => {}
        Window::Within(duration) => out.push_str(&format!(" within {duration}")),
        Window::Since(name) => {
            out.push_str(" since ");
            write_string(out, name);
        }
    }
}

pub(super) fn write_value_test(out: &mut String, test: &ValueTest) {
    write_name(out, &test.name);
    out.push(' ');
    let (op, value) = match &test.test {
        Test::Eq(v) => ("=", v),
        Test::Ne(v) => ("!=", v),
        Test::Lt(v) => ("<", v),
        Test::Le(v) => ("<=", v),
        Test::Gt(v) => (">", v),
        Test::Ge(v) => (">=", v),
        Test::Contains(v) => ("contains", v),
        Test::In(values) => {
            out.push_str("in [");
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, value);
            }
            out.push(']');
            return;
        }
        Test::Exists => return out.push_str("exists"),
        Test::NotExists => return out.push_str("not exists"),
        Test::Before(time) => return write_time(out, "before", time),
        Test::After(time) => return write_time(out, "after", time),
        Test::Within(duration) => return out.push_str(&format!("within {duration}")),
    };
    out.push_str(op);
    out.push(' ');
    write_value(out, value);
}

pub(super) fn write_time(out: &mut String, keyword: &str, time: &TimeRef) {
    out.push_str(keyword);
    out.push(' ');
    match time {
        TimeRef::At(at) => write_string(out, at),
        TimeRef::Ago(duration) => out.push_str(&format!("{duration} ago")),
    }
}

pub(super) fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => write_string(out, s),
        // Numbers, booleans and null print as JSON, which the parser reads back.
        other => out.push_str(&other.to_string()),
    }
}

/// Whether `name` can be printed without quotes.
pub(super) fn is_bare(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_word_start) && chars.all(is_word_char) && !is_keyword(name)
}

pub(super) fn write_name(out: &mut String, name: &str) {
    if is_bare(name) {
        out.push_str(name);
    } else {
        write_string(out, name);
    }
}

/// Writes `s` as a JSON string literal.
pub(super) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&escape_char(c)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON escape of a control character.
pub(super) fn escape_char(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        '\u{8}' => "\\b".into(),
        '\u{c}' => "\\f".into(),
        c => format!("\\u{:04x}", c as u32),
    }
}

pub(super) fn quoted(name: &str) -> String {
    let mut out = String::new();
    write_string(&mut out, name);
    out
}
