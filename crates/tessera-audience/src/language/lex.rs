//! The lexer of the audience language: text to tokens, with exact byte offsets;
//! a lexical error becomes a token the parser reports when it reaches it.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub(super) fn text(self) -> &'static str {
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
pub(super) enum Kind {
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
pub(super) struct Token {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

pub(super) fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$' | '-')
}

pub(super) fn lex(text: &str) -> Vec<Token> {
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

pub(super) fn bad(offset: usize, message: impl Into<String>) -> Kind {
    Kind::Bad {
        message: message.into(),
        offset,
    }
}

pub(super) fn unexpected_character(c: char) -> String {
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

pub(super) fn quote_char(c: char) -> String {
    let mut out = String::new();
    write_string(&mut out, c.encode_utf8(&mut [0; 4]));
    out
}

/// Lexes a string whose opening quote is at `start` (already consumed).
pub(super) fn lex_string(
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
pub(super) fn lex_unicode_escape(
    text: &str,
    at: usize,
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
) -> Result<char, String> {
    pub(super) fn hex4(chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>) -> Option<u32> {
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
