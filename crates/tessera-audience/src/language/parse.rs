//! The parser of the audience language: a recursive descent over the tokens, with
//! errors that say what was expected where, and the checks a JSON definition must
//! also pass.

use super::lex::*;
use super::*;

pub(super) struct Parser<'a> {
    pub(super) text: &'a str,
    pub(super) tokens: Vec<Token>,
    pub(super) pos: usize,
    pub(super) depth: usize,
    /// The token position just after an event with one filter written without
    /// parentheses, for a hint when `and` follows it with another filter.
    pub(super) bare_filter_end: Option<usize>,
}

impl Parser<'_> {
    pub(super) fn peek(&self) -> &Token {
        // The last token is always Eof, and `pos` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    pub(super) fn peek_at(&self, ahead: usize) -> &Token {
        &self.tokens[(self.pos + ahead).min(self.tokens.len() - 1)]
    }

    pub(super) fn advance(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::Eof {
            self.pos += 1;
        }
        token
    }

    pub(super) fn raw(&self, token: &Token) -> &str {
        &self.text[token.start..token.end]
    }

    pub(super) fn is_keyword(&self, token: &Token, keyword: &str) -> bool {
        token.kind == Kind::Word && self.raw(token).eq_ignore_ascii_case(keyword)
    }

    pub(super) fn at_keyword(&self, keyword: &str) -> bool {
        self.is_keyword(self.peek(), keyword)
    }

    /// A description of the next token for "found ..." in messages.
    pub(super) fn describe(&self, token: &Token) -> String {
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
    pub(super) fn expected_or_bad(&self, message: impl FnOnce(&str) -> String) -> ParseError {
        let token = self.peek();
        if let Kind::Bad { message, offset } = &token.kind {
            return ParseError::at(self.text, *offset, message.clone());
        }
        ParseError::at(self.text, token.start, message(&self.describe(token)))
    }

    pub(super) fn expected(&self, what: &str) -> ParseError {
        self.expected_or_bad(|found| format!("expected {what}, found {found}"))
    }

    pub(super) fn error_at(&self, token: &Token, message: impl Into<String>) -> ParseError {
        ParseError::at(self.text, token.start, message)
    }

    pub(super) fn expr(&mut self) -> Result<Condition, ParseError> {
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

    pub(super) fn and_expr(&mut self) -> Result<Condition, ParseError> {
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

    pub(super) fn enter(&mut self) -> Result<(), ParseError> {
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

    pub(super) fn unary(&mut self) -> Result<Condition, ParseError> {
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

    pub(super) fn atom(&mut self) -> Result<Condition, ParseError> {
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
            "profile" => {
                self.advance();
                if !self.at_keyword("in") {
                    return Err(self.expected("\"in\" after profile (e.g. profile in [12, 15])"));
                }
                self.advance();
                let values = self.list()?;
                if values.len() > crate::ast::MAX_PROFILE_LIST {
                    return Err(self.error_at(
                        &token,
                        format!(
                            "a profile list holds at most {} ids",
                            crate::ast::MAX_PROFILE_LIST
                        ),
                    ));
                }
                let ids = values
                    .iter()
                    .map(Value::as_i64)
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(|| {
                        self.error_at(
                            &token,
                            "profile ids are whole numbers, e.g. profile in [12, 15]",
                        )
                    })?;
                Ok(Condition::Profiles(ids))
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
    pub(super) fn name(&mut self, what: &str, after: &str) -> Result<String, ParseError> {
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

    pub(super) fn event(&mut self) -> Result<EventCondition, ParseError> {
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

    pub(super) fn filter(&mut self) -> Result<ValueTest, ParseError> {
        let name = self.name("an event property name", "where")?;
        let test = self.test(&format!("property name {}", quoted(&name)))?;
        Ok(ValueTest { name, test })
    }

    pub(super) fn count(&mut self, op: Op) -> Result<u32, ParseError> {
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
    pub(super) fn test(&mut self, subject: &str) -> Result<Test, ParseError> {
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

    pub(super) fn value(&mut self, after: &str) -> Result<Value, ParseError> {
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

    pub(super) fn list(&mut self) -> Result<Vec<Value>, ParseError> {
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

    pub(super) fn duration(&mut self, after: &str) -> Result<Duration, ParseError> {
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

    pub(super) fn time(&mut self, after: &str) -> Result<TimeRef, ParseError> {
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

pub(super) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Checks a [`TimeRef::At`] string: an RFC 3339 timestamp with an offset, or a
/// `YYYY-MM-DD` date.
pub(super) fn check_time(s: &str) -> Result<(), String> {
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
pub(super) fn validate(condition: &Condition) -> Result<(), (Option<String>, String)> {
    pub(super) fn check_value(value: &Value) -> Result<(), (Option<String>, String)> {
        match value {
            Value::Array(_) | Value::Object(_) => Err((
                None,
                format!("a value must be a string, a number, true, false or null, not {value}"),
            )),
            _ => Ok(()),
        }
    }
    pub(super) fn check_test(test: &ValueTest) -> Result<(), (Option<String>, String)> {
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
            Condition::Profiles(ids) if ids.len() > crate::ast::MAX_PROFILE_LIST => Err((
                None,
                format!(
                    "a profile list holds at most {} ids",
                    crate::ast::MAX_PROFILE_LIST
                ),
            )),
            _ => Ok(()),
        };
    });
    result
}
