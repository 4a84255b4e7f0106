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

use std::fmt;

use serde_json::Value;

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

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A bare word (keyword or name).
    Word,
    /// A quoted string, decoded.
    Str(String),
    /// A number or a duration, undecided until the parser knows which it expects.
    Num,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Op(Op),
    /// A lexical error at `offset`; reported when the parser reaches the token.
    Bad {
        message: String,
        offset: usize,
    },
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '-')
}

fn lex(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let kind = if is_word_start(c) {
            while chars.next_if(|&(_, c)| is_word_char(c)).is_some() {}
            Kind::Word
        } else if c.is_ascii_digit()
            || (c == '-' && text[start + 1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            chars.next();
            let mut previous = c;
            while let Some((_, c)) = chars.next_if(|&(_, c)| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '_' | '.')
                    || (matches!(c, '+' | '-') && matches!(previous, 'e' | 'E'))
            }) {
                previous = c;
            }
            Kind::Num
        } else if c == '"' {
            chars.next();
            lex_string(text, start, &mut chars)
        } else {
            chars.next();
            let second = text[start + c.len_utf8()..].chars().next();
            let (kind, two) = match (c, second) {
                ('(', _) => (Kind::LParen, false),
                (')', _) => (Kind::RParen, false),
                ('[', _) => (Kind::LBracket, false),
                (']', _) => (Kind::RBracket, false),
                (',', _) => (Kind::Comma, false),
                ('=', Some('=')) => (
                    bad(start, "\"==\" is not an operator: write = to compare"),
                    true,
                ),
                ('=', _) => (Kind::Op(Op::Eq), false),
                ('!', Some('=')) => (Kind::Op(Op::Ne), true),
                ('<', Some('=')) => (Kind::Op(Op::Le), true),
                ('<', Some('>')) => (
                    bad(
                        start,
                        "\"<>\" is not an operator: write != for \"not equal\"",
                    ),
                    true,
                ),
                ('<', _) => (Kind::Op(Op::Lt), false),
                ('>', Some('=')) => (Kind::Op(Op::Ge), true),
                ('>', _) => (Kind::Op(Op::Gt), false),
                _ => (bad(start, unexpected_character(c)), false),
            };
            if two {
                chars.next();
            }
            kind
        };
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        tokens.push(Token { kind, start, end });
    }
    tokens.push(Token {
        kind: Kind::Eof,
        start: text.len(),
        end: text.len(),
    });
    tokens
}

fn bad(offset: usize, message: impl Into<String>) -> Kind {
    Kind::Bad {
        message: message.into(),
        offset,
    }
}

fn unexpected_character(c: char) -> String {
    let hint = match c {
        '!' => " (write != for \"not equal\", or the keyword not)".to_string(),
        '&' => " (write the keyword and)".to_string(),
        '|' => " (write the keyword or)".to_string(),
        '\'' => " (strings use double quotes: \"...\")".to_string(),
        '.' => " (write numbers with a leading digit: 0.5)".to_string(),
        c if c.is_alphanumeric() => format!(
            " (names with characters other than A-Z, a-z, 0-9, _ . $ - must be quoted, \
             e.g. \"caf{c}\")"
        ),
        _ => String::new(),
    };
    format!("unexpected character {}{hint}", quote_char(c))
}

fn quote_char(c: char) -> String {
    let mut out = String::new();
    write_string(&mut out, c.encode_utf8(&mut [0; 4]));
    out
}

/// Lexes a string whose opening quote is at `start` (already consumed).
fn lex_string(
    text: &str,
    start: usize,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Kind {
    let mut value = String::new();
    let mut error: Option<(usize, String)> = None;
    let fail = |error: &mut Option<(usize, String)>, offset: usize, message: String| {
        if error.is_none() {
            *error = Some((offset, message));
        }
    };
    loop {
        let Some((i, c)) = chars.peek().copied() else {
            return Kind::Bad {
                message: "unterminated string: it starts here and has no closing \"".into(),
                offset: start,
            };
        };
        match c {
            '"' => {
                chars.next();
                break;
            }
            '\\' => {
                chars.next();
                let Some((_, e)) = chars.next() else {
                    return Kind::Bad {
                        message: "unterminated string: it starts here and has no closing \"".into(),
                        offset: start,
                    };
                };
                let simple = match e {
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '/' => Some('/'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    _ => None,
                };
                if let Some(s) = simple {
                    value.push(s);
                } else if e == 'u' {
                    match lex_unicode_escape(text, i, chars) {
                        Ok(c) => value.push(c),
                        Err(message) => fail(&mut error, i, message),
                    }
                } else {
                    let message = format!(
                        "invalid escape \"\\{e}\" in a string: use \\\", \\\\, \\/, \\b, \\f, \
                         \\n, \\r, \\t or \\uXXXX"
                    );
                    fail(&mut error, i, message);
                }
            }
            c if c.is_control() && (c as u32) < 0x20 => {
                let what = if c == '\n' || c == '\r' {
                    "a line break"
                } else {
                    "a control character"
                };
                let message = format!(
                    "a string can't contain {what}: close the string with \" here, or write \
                     it as an escape ({})",
                    escape_char(c)
                );
                return Kind::Bad { message, offset: i };
            }
            c => {
                chars.next();
                value.push(c);
            }
        }
    }
    match error {
        Some((offset, message)) => Kind::Bad { message, offset },
        None => Kind::Str(value),
    }
}

/// Reads the hex digits of a `\u` escape whose backslash is at `at` (`\` and `u`
/// consumed), with a following `\uXXXX` low surrogate when needed.
fn lex_unicode_escape(
    text: &str,
    at: usize,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<char, String> {
    fn hex4(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Option<u32> {
        let mut n = 0;
        for _ in 0..4 {
            let (_, c) = chars.next_if(|(_, c)| c.is_ascii_hexdigit())?;
            n = n * 16 + c.to_digit(16)?;
        }
        Some(n)
    }
    let shown = |end: Option<usize>| {
        let end = end.unwrap_or(text.len()).min(at + 12);
        let mut end = end.max(at);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[at..end].to_string()
    };
    let Some(high) = hex4(chars) else {
        let end = chars.peek().map(|&(i, _)| i);
        return Err(format!(
            "invalid unicode escape \"{}\": \\u needs 4 hex digits (e.g. \\u00e9)",
            shown(end)
        ));
    };
    if let Some(c) = char::from_u32(high) {
        return Ok(c);
    }
    if (0xD800..0xDC00).contains(&high) {
        let mut lookahead = chars.clone();
        if lookahead.next_if(|&(_, c)| c == '\\').is_some()
            && lookahead.next_if(|&(_, c)| c == 'u').is_some()
            && let Some(low) = hex4(&mut lookahead)
            && (0xDC00..0xE000).contains(&low)
            && let Some(c) = char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
        {
            *chars = lookahead;
            return Ok(c);
        }
    }
    let end = chars.peek().map(|&(i, _)| i);
    Err(format!(
        "invalid unicode escape \"{}\": a surrogate must be a high one (\\ud800-\\udbff) \
         followed by a low one (\\udc00-\\udfff)",
        shown(end)
    ))
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    /// The token position just after an event with one filter written without
    /// parentheses, for a hint when `and` follows it with another filter.
    bare_filter_end: Option<usize>,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The last token is always Eof, and `pos` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek_at(&self, ahead: usize) -> &Token {
        &self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)]
    }

    fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::Eof {
            self.pos += 1;
        }
        token
    }

    fn raw(&self, token: &Token) -> &str {
        &self.text[token.start..token.end]
    }

    fn is_keyword(&self, token: &Token, keyword: &str) -> bool {
        token.kind == Kind::Word && self.raw(token).eq_ignore_ascii_case(keyword)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.is_keyword(self.peek(), keyword)
    }

    /// A description of the next token for "found ..." in messages.
    fn describe(&self, token: &Token) -> String {
        if token.kind == Kind::Eof {
            return "end of text".into();
        }
        let raw = self.raw(token);
        let shown: String = raw.chars().take(40).collect();
        let ellipsis = if shown.len() < raw.len() { "…" } else { "" };
        match token.kind {
            // Already quoted.
            Kind::Str(_) => format!("{shown}{ellipsis}"),
            _ => format!("\"{shown}{ellipsis}\""),
        }
    }

    /// An error at the next token: its own lexical error if it is malformed, else
    /// `message(description of the token)`.
    fn expected_or_bad(&self, message: impl FnOnce(&str) -> String) -> ParseError {
        let token = self.peek();
        if let Kind::Bad { message, offset } = &token.kind {
            return ParseError::at(self.text, *offset, message.clone());
        }
        ParseError::at(self.text, token.start, message(&self.describe(token)))
    }

    fn expected(&self, what: &str) -> ParseError {
        self.expected_or_bad(|found| format!("expected {what}, found {found}"))
    }

    fn error_at(&self, token: &Token, message: impl Into<String>) -> ParseError {
        ParseError::at(self.text, token.start, message)
    }

    fn expr(&mut self) -> Result<Condition, ParseError> {
        let first = self.and_expr()?;
        if !self.at_keyword("or") {
            return Ok(first);
        }
        let mut children = vec![first];
        while self.at_keyword("or") {
            self.advance();
            children.push(self.and_expr()?);
        }
        Ok(Condition::Or(children))
    }

    fn and_expr(&mut self) -> Result<Condition, ParseError> {
        let first = self.unary()?;
        if !self.at_keyword("and") {
            return Ok(first);
        }
        let mut children = vec![first];
        while self.at_keyword("and") {
            self.advance();
            children.push(self.unary()?);
        }
        Ok(Condition::And(children))
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error_at(
                self.peek(),
                format!(
                    "the condition is nested too deeply (more than {MAX_DEPTH} levels of \
                     \"(\" and not)"
                ),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    fn unary(&mut self) -> Result<Condition, ParseError> {
        if self.at_keyword("not") {
            self.enter()?;
            self.advance();
            let child = self.unary()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(child)));
        }
        if self.peek().kind == Kind::LParen {
            self.enter()?;
            let open = self.advance();
            let inner = self.expr()?;
            if self.peek().kind != Kind::RParen {
                let position = ParseError::at(self.text, open.start, "");
                return Err(self.expected(&format!(
                    "\")\" to close the \"(\" at line {}, column {} (or and / or to continue)",
                    position.line, position.column
                )));
            }
            self.advance();
            self.depth -= 1;
            return Ok(inner);
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Condition, ParseError> {
        let token = self.peek().clone();
        let keyword = if token.kind == Kind::Word {
            self.raw(&token).to_ascii_lowercase()
        } else {
            String::new()
        };
        match keyword.as_str() {
            "trait" => {
                self.advance();
                let name = self.name("a trait name", "trait")?;
                let test = self.test(&format!("trait name {}", quoted(&name)))?;
                Ok(Condition::Trait(ValueTest { name, test }))
            }
            "computed" => {
                self.advance();
                let name = self.name("a computed trait name", "computed")?;
                let test = self.test(&format!("computed trait name {}", quoted(&name)))?;
                Ok(Condition::Computed(ValueTest { name, test }))
            }
            "event" => {
                self.advance();
                self.event().map(Condition::Event)
            }
            "identifier" => {
                self.advance();
                Ok(Condition::Identifier(
                    self.name("an identifier type (e.g. email)", "identifier")?,
                ))
            }
            "consent" => {
                self.advance();
                Ok(Condition::Consent(
                    self.name("a consent purpose (e.g. marketing)", "consent")?,
                ))
            }
            "audience" => {
                self.advance();
                Ok(Condition::Audience(
                    self.name("an audience key", "audience")?,
                ))
            }
            "all" => {
                self.advance();
                Ok(Condition::And(Vec::new()))
            }
            "none" => {
                self.advance();
                Ok(Condition::Or(Vec::new()))
            }
            _ => {
                let mut hint = String::new();
                let next = self.peek_at(1);
                let is_test_start = matches!(next.kind, Kind::Op(_))
                    || [
                        "contains", "in", "exists", "not", "before", "after", "within",
                    ]
                    .iter()
                    .any(|k| self.is_keyword(next, k));
                if matches!(token.kind, Kind::Word | Kind::Str(_)) && is_test_start {
                    let raw = self.raw(&token);
                    hint = if self.bare_filter_end.is_some_and(|end| end + 1 == self.pos) {
                        format!(
                            " (several event filters go in parentheses: where (a = 1 and \
                             {raw} ...))"
                        )
                    } else {
                        format!(" (did you mean trait {raw} ...?)")
                    };
                }
                Err(self.expected_or_bad(|found| {
                    format!("expected a condition: {CONDITION_STARTS}, found {found}{hint}")
                }))
            }
        }
    }

    /// A name after `after` (a keyword): a bare word that is not a keyword, or a
    /// quoted string.
    fn name(&mut self, what: &str, after: &str) -> Result<String, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Str(s) => {
                self.advance();
                Ok(s.clone())
            }
            Kind::Word => {
                let raw = self.raw(&token);
                if is_keyword(raw) {
                    return Err(self.error_at(
                        &token,
                        format!(
                            "expected {what} after {after}, found the keyword \"{raw}\" (to use \
                             it as a name, quote it: \"{raw}\")"
                        ),
                    ));
                }
                let name = raw.to_string();
                self.advance();
                Ok(name)
            }
            _ => Err(self.expected(&format!(
                "{what} after {after} (a word like plan, or a \"quoted name\")"
            ))),
        }
    }

    fn event(&mut self) -> Result<EventCondition, ParseError> {
        let Kind::Str(name) = self.peek().kind.clone() else {
            return Err(self.expected(
                "the event name as a \"quoted string\" after event (e.g. event \"Order \
                 Completed\")",
            ));
        };
        self.advance();
        let mut filters = Vec::new();
        let mut bare_filter = false;
        if self.at_keyword("where") {
            self.advance();
            if self.peek().kind == Kind::LParen {
                self.advance();
                loop {
                    filters.push(self.filter()?);
                    if self.at_keyword("and") {
                        self.advance();
                    } else if self.peek().kind == Kind::RParen {
                        self.advance();
                        break;
                    } else {
                        return Err(self.expected(
                            "and or \")\" after the event filter (filters in where (...) can \
                             only be joined with and)",
                        ));
                    }
                }
            } else {
                filters.push(self.filter()?);
                bare_filter = true;
            }
        }
        let mut count = CountTest::default();
        if let Kind::Op(op) = self.peek().kind {
            self.advance();
            count = CountTest {
                op: match op {
                    Op::Eq => CountOp::Eq,
                    Op::Ne => CountOp::Ne,
                    Op::Lt => CountOp::Lt,
                    Op::Le => CountOp::Le,
                    Op::Gt => CountOp::Gt,
                    Op::Ge => CountOp::Ge,
                },
                value: self.count(op)?,
            };
        }
        let mut window = Window::AllTime;
        if self.at_keyword("within") {
            self.advance();
            window = Window::Within(self.duration("within")?);
        } else if self.at_keyword("since") {
            self.advance();
            let Kind::Str(since) = self.peek().kind.clone() else {
                return Err(self.expected(
                    "the event name as a \"quoted string\" after since (e.g. since \"Order \
                     Completed\")",
                ));
            };
            self.advance();
            window = Window::Since(since);
        }
        if bare_filter {
            self.bare_filter_end = Some(self.pos);
        }
        Ok(EventCondition {
            name,
            filters,
            count,
            window,
        })
    }

    fn filter(&mut self) -> Result<ValueTest, ParseError> {
        let name = self.name("an event property name", "where")?;
        let test = self.test(&format!("property name {}", quoted(&name)))?;
        Ok(ValueTest { name, test })
    }

    fn count(&mut self, op: Op) -> Result<u32, ParseError> {
        let token = self.peek().clone();
        if token.kind != Kind::Num {
            return Err(self.expected(&format!(
                "a number of events after \"{0}\" (e.g. {0} 1)",
                op.text()
            )));
        }
        let raw = self.raw(&token);
        match raw.parse::<u32>() {
            Ok(n) if raw.bytes().all(|b| b.is_ascii_digit()) => {
                self.advance();
                Ok(n)
            }
            _ => Err(self.error_at(
                &token,
                format!(
                    "invalid number of events \"{raw}\": use a whole number from 0 to {}",
                    u32::MAX
                ),
            )),
        }
    }

    /// A test after `subject` (e.g. `trait name "plan"`).
    fn test(&mut self, subject: &str) -> Result<Test, ParseError> {
        let token = self.peek().clone();
        if let Kind::Op(op) = token.kind {
            self.advance();
            let value = self.value(op.text())?;
            return Ok(match op {
                Op::Eq => Test::Eq(value),
                Op::Ne => Test::Ne(value),
                Op::Lt => Test::Lt(value),
                Op::Le => Test::Le(value),
                Op::Gt => Test::Gt(value),
                Op::Ge => Test::Ge(value),
            });
        }
        let keyword = if token.kind == Kind::Word {
            self.raw(&token).to_ascii_lowercase()
        } else {
            String::new()
        };
        match keyword.as_str() {
            "contains" => {
                self.advance();
                Ok(Test::Contains(self.value("contains")?))
            }
            "in" => {
                self.advance();
                self.list().map(Test::In)
            }
            "exists" => {
                self.advance();
                Ok(Test::Exists)
            }
            "not" => {
                self.advance();
                if !self.at_keyword("exists") {
                    return Err(self.expected(&format!(
                        "exists after not (a test after {subject} can only be negated as \
                         not exists; to negate a condition, put not before it)"
                    )));
                }
                self.advance();
                Ok(Test::NotExists)
            }
            "before" => {
                self.advance();
                self.time("before").map(Test::Before)
            }
            "after" => {
                self.advance();
                self.time("after").map(Test::After)
            }
            "within" => {
                self.advance();
                self.duration("within").map(Test::Within)
            }
            _ => Err(self.expected(&format!("a comparison ({TESTS}) after {subject}"))),
        }
    }

    fn value(&mut self, after: &str) -> Result<Value, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Str(s) => {
                self.advance();
                Ok(Value::String(s.clone()))
            }
            Kind::Num => {
                let raw = self.raw(&token);
                match serde_json::from_str::<serde_json::Number>(raw) {
                    Ok(n) => {
                        self.advance();
                        Ok(Value::Number(n))
                    }
                    Err(_) if Duration::parse(raw).is_ok() => Err(self.error_at(
                        &token,
                        format!(
                            "expected a value after \"{after}\" ({VALUES}), found the duration \
                             \"{raw}\" (for times, write within {raw}, before {raw} ago or \
                             after {raw} ago)"
                        ),
                    )),
                    Err(_) => Err(self.error_at(
                        &token,
                        format!("invalid number \"{raw}\" (write numbers like 42, -12.5 or 1e6)"),
                    )),
                }
            }
            Kind::Word if self.is_keyword(&token, "true") => {
                self.advance();
                Ok(Value::Bool(true))
            }
            Kind::Word if self.is_keyword(&token, "false") => {
                self.advance();
                Ok(Value::Bool(false))
            }
            Kind::Word if self.is_keyword(&token, "null") => {
                self.advance();
                Ok(Value::Null)
            }
            Kind::Word if !is_keyword(self.raw(&token)) => {
                let raw = self.raw(&token);
                Err(self.error_at(
                    &token,
                    format!(
                        "expected a value after \"{after}\" ({VALUES}), found \"{raw}\" \
                         (quote text: \"{raw}\")"
                    ),
                ))
            }
            _ => Err(self.expected(&format!("a value after \"{after}\" ({VALUES})"))),
        }
    }

    fn list(&mut self) -> Result<Vec<Value>, ParseError> {
        if self.peek().kind != Kind::LBracket {
            return Err(self.expected("\"[\" after in (e.g. in [\"DE\", \"AT\"])"));
        }
        self.advance();
        let mut values = Vec::new();
        if self.peek().kind == Kind::RBracket {
            self.advance();
            return Ok(values);
        }
        loop {
            values.push(self.value(if values.is_empty() { "[" } else { "," })?);
            match self.peek().kind {
                Kind::Comma => {
                    self.advance();
                }
                Kind::RBracket => {
                    self.advance();
                    return Ok(values);
                }
                _ => return Err(self.expected("\",\" or \"]\" in the list")),
            }
        }
    }

    fn duration(&mut self, after: &str) -> Result<Duration, ParseError> {
        let token = self.peek().clone();
        if token.kind != Kind::Num {
            return Err(self.expected(&format!(
                "a duration after {after}: a number and a unit s, m, h, d or w (e.g. {after} \
                 7d)"
            )));
        }
        let raw = self.raw(&token).to_string();
        match Duration::parse(&raw) {
            Ok(d) => {
                self.advance();
                Ok(d)
            }
            Err(message) => {
                let next = self.peek_at(1);
                let unit = self.raw(next);
                let spaced = raw.bytes().all(|b| b.is_ascii_digit())
                    && next.kind == Kind::Word
                    && ["s", "m", "h", "d", "w"].contains(&unit);
                if spaced {
                    return Err(self.error_at(
                        &token,
                        format!("write the duration without a space: {raw}{unit}"),
                    ));
                }
                Err(self.error_at(&token, message))
            }
        }
    }

    fn time(&mut self, after: &str) -> Result<TimeRef, ParseError> {
        let token = self.peek().clone();
        match &token.kind {
            Kind::Str(s) => {
                if let Err(message) = check_time(s) {
                    return Err(self.error_at(&token, message));
                }
                self.advance();
                Ok(TimeRef::At(s.clone()))
            }
            Kind::Num => {
                let duration = self.duration(after)?;
                if !self.at_keyword("ago") {
                    return Err(self.expected(&format!(
                        "ago after the duration {duration} (e.g. {after} {duration} ago)"
                    )));
                }
                self.advance();
                Ok(TimeRef::Ago(duration))
            }
            _ => Err(self.expected(&format!(
                "a time after {after}: a date \"2026-01-31\", a timestamp \
                 \"2026-01-31T12:00:00Z\" or a duration and ago (e.g. {after} 30d ago)"
            ))),
        }
    }
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Checks a [`TimeRef::At`] string: an RFC 3339 timestamp with an offset, or a
/// `YYYY-MM-DD` date.
fn check_time(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let date_shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    let valid = if date_shaped {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
    } else {
        chrono::DateTime::parse_from_rfc3339(s).is_ok()
    };
    if valid {
        Ok(())
    } else {
        let mut shown = String::new();
        write_string(&mut shown, s);
        Err(format!(
            "invalid time {shown}: write a timestamp with an offset (\"2026-01-31T12:00:00Z\", \
             \"2026-01-31T12:00:00+01:00\") or a date (\"2026-01-31\")"
        ))
    }
}

/// Checks what the text form would reject but serde accepts: non-scalar values and
/// malformed times. On failure: a JSON snippet to locate the problem, and a message.
fn validate(condition: &Condition) -> Result<(), (Option<String>, String)> {
    fn check_value(value: &Value) -> Result<(), (Option<String>, String)> {
        match value {
            Value::Array(_) | Value::Object(_) => Err((
                None,
                format!("a value must be a string, a number, true, false or null, not {value}"),
            )),
            _ => Ok(()),
        }
    }
    fn check_test(test: &ValueTest) -> Result<(), (Option<String>, String)> {
        match &test.test {
            Test::Eq(v)
            | Test::Ne(v)
            | Test::Lt(v)
            | Test::Le(v)
            | Test::Gt(v)
            | Test::Ge(v)
            | Test::Contains(v) => check_value(v),
            Test::In(values) => values.iter().try_for_each(check_value),
            Test::Before(TimeRef::At(at)) | Test::After(TimeRef::At(at)) => {
                check_time(at).map_err(|message| {
                    let mut needle = String::new();
                    write_string(&mut needle, at);
                    (Some(needle), message)
                })
            }
            _ => Ok(()),
        }
    }
    let mut result = Ok(());
    condition.walk(&mut |c| {
        if result.is_err() {
            return;
        }
        result = match c {
            Condition::Trait(t) | Condition::Computed(t) => check_test(t),
            Condition::Event(e) => e.filters.iter().try_for_each(check_test),
            _ => Ok(()),
        };
    });
    result
}

// ---------------------------------------------------------------------------
// Printer
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Top,
    OrOperand,
    AndOperand,
    NotOperand,
}

fn write_condition(out: &mut String, condition: &Condition, context: Context) {
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
    }
}

fn write_list(
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

fn write_event(out: &mut String, event: &EventCondition) {
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

fn write_value_test(out: &mut String, test: &ValueTest) {
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

fn write_time(out: &mut String, keyword: &str, time: &TimeRef) {
    out.push_str(keyword);
    out.push(' ');
    match time {
        TimeRef::At(at) => write_string(out, at),
        TimeRef::Ago(duration) => out.push_str(&format!("{duration} ago")),
    }
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::String(s) => write_string(out, s),
        // Numbers, booleans and null print as JSON, which the parser reads back.
        other => out.push_str(&other.to_string()),
    }
}

/// Whether `name` can be printed without quotes.
fn is_bare(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(is_word_start) && chars.all(is_word_char) && !is_keyword(name)
}

fn write_name(out: &mut String, name: &str) {
    if is_bare(name) {
        out.push_str(name);
    } else {
        write_string(out, name);
    }
}

/// Writes `s` as a JSON string literal.
fn write_string(out: &mut String, s: &str) {
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
fn escape_char(c: char) -> String {
    match c {
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        '\u{8}' => "\\b".into(),
        '\u{c}' => "\\f".into(),
        c => format!("\\u{:04x}", c as u32),
    }
}

fn quoted(name: &str) -> String {
    let mut out = String::new();
    write_string(&mut out, name);
    out
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
