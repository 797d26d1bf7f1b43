//! The patterning language's lexer: keywords, identifiers, punctuation and literals as the
//! grammar writes them, whitespace and comments skipped, each token with its offset.

use super::*;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// `[A-Za-z_][A-Za-z0-9_-]*` that is not a keyword (may contain hyphens).
    Ident(String),
    Kw(&'static str),
    Lit(Literal),
    /// One of `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Op(Operator),
    /// One of `: . , ( ) [ ] *`.
    Punct(char),
    Eof,
}

pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) pos: usize,
}

/// Whitespace as the grammar's `WS` rule lists it.
pub(super) fn is_ws(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\r' | '\n' | '\u{0B}' | '\u{0C}' | '\u{85}' | '\u{A0}' | '\u{1680}'
    ) || matches!(
        c,
        '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}'
    ) || matches!(c, '\u{205F}' | '\u{3000}')
}

/// At most 40 characters of `s`, for error messages.
pub(super) fn snippet(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or("")),
        None => s.to_string(),
    }
}

impl<'a> Lexer<'a> {
    pub(super) fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    pub(super) fn skip_trivia(&mut self) -> Result<(), PatternError> {
        loop {
            let rest = self.rest();
            if let Some(c) = rest.chars().next().filter(|&c| is_ws(c)) {
                self.pos += c.len_utf8();
            } else if let Some(body) = rest.strip_prefix("/*") {
                let Some(close) = body.find("*/") else {
                    return err(self.pos, "unterminated comment: expected \"*/\"");
                };
                self.pos += close + 4;
            } else if rest.starts_with("//") {
                self.pos += rest.find(['\r', '\n']).unwrap_or(rest.len());
            } else {
                return Ok(());
            }
        }
    }

    pub(super) fn next_token(&mut self) -> Result<Token, PatternError> {
        self.skip_trivia()?;
        let start = self.pos;
        let rest = self.rest();
        let Some(c) = rest.chars().next() else {
            return Ok(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
        };
        let starts = |s: &str| rest.starts_with(s);
        let (tok, len) = match c {
            '\'' => string_literal(rest, start)?,
            'h' | 'b' | 't' if rest.as_bytes().get(1) == Some(&b'\'') => {
                prefixed_literal(c, rest).or_else(|m| err(start, m))?
            }
            'a'..='z' | 'A'..='Z' | '_' => {
                let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
                let len = rest.find(|c| !ident(c)).unwrap_or(rest.len());
                let word = rest.get(..len).unwrap_or("");
                let tok = match (word, KEYWORDS.iter().find(|k| **k == word)) {
                    ("true" | "false", _) => Tok::Lit(Literal::Bool(word == "true")),
                    (_, Some(&keyword)) => Tok::Kw(keyword),
                    _ => Tok::Ident(word.to_string()),
                };
                (tok, len)
            }
            '0'..='9' | '+' | '-' | '.' => number(rest, start)?,
            '=' => (Tok::Op(Operator::Eq), if starts("==") { 2 } else { 1 }),
            '!' if starts("!=") => (Tok::Op(Operator::Ne), 2),
            '<' if starts("<=") => (Tok::Op(Operator::Le), 2),
            '<' if starts("<>") => (Tok::Op(Operator::Ne), 2),
            '<' => (Tok::Op(Operator::Lt), 1),
            '>' if starts(">=") => (Tok::Op(Operator::Ge), 2),
            '>' => (Tok::Op(Operator::Gt), 1),
            ':' | ',' | '(' | ')' | '[' | ']' | '*' => (Tok::Punct(c), 1),
            _ => return err(start, format!("unexpected character {c:?}")),
        };
        self.pos = start + len;
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }
}

/// `'…'` at the start of `rest` (at byte `start` of the input), and its length in bytes.
pub(super) fn string_literal(rest: &str, start: usize) -> Result<(Tok, usize), PatternError> {
    let mut out = String::new();
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' => return Ok((Tok::Lit(Literal::Str(out)), i + 1)),
            '\\' => match chars.next() {
                Some((_, e @ ('\'' | '\\'))) => out.push(e),
                Some((_, e)) => {
                    let msg = format!(
                        "invalid escape \"\\{e}\" in a string: only \\' and \\\\ are allowed"
                    );
                    return err(start + i, msg);
                }
                None => break,
            },
            _ => out.push(c),
        }
    }
    err(start, "unterminated string literal: expected a closing '")
}

/// `h'…'`, `b'…'` or `t'…'` at the start of `rest`, and its length in bytes.
pub(super) fn prefixed_literal(kind: char, rest: &str) -> Result<(Tok, usize), String> {
    let after = rest.get(2..).unwrap_or("");
    let Some(close) = after.find('\'') else {
        return Err(format!(
            "unterminated {kind}'…' literal: expected a closing '"
        ));
    };
    let body = after.get(..close).unwrap_or("");
    let lit = match kind {
        'h' => {
            if let Some(c) = body.chars().find(|c| !c.is_ascii_hexdigit()) {
                return Err(format!(
                    "invalid character {c:?} in hex literal h'{}'",
                    snippet(body)
                ));
            }
            if body.len() % 2 != 0 {
                return Err(format!(
                    "hex literal h'{}' has an odd number of hex digits",
                    snippet(body)
                ));
            }
            let digits: Vec<u8> = body
                .bytes()
                .filter_map(|c| (c as char).to_digit(16))
                .map(|d| d as u8)
                .collect();
            Literal::Hex(
                digits
                    .chunks_exact(2)
                    .map(|p| p.iter().fold(0, |acc, d| (acc << 4) | d))
                    .collect(),
            )
        }
        'b' => {
            let pad = body.bytes().rev().take_while(|&c| c == b'=').count();
            let data = body.get(..body.len() - pad).unwrap_or("");
            let alphabet = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
            if body.is_empty() || body.len() % 4 != 0 || pad > 2 || !data.bytes().all(alphabet) {
                return Err(format!(
                    "invalid binary literal b'{}': expected base64 padded to a multiple of 4",
                    snippet(body)
                ));
            }
            Literal::Binary(body.to_string())
        }
        _ => Literal::Timestamp(Timestamp::parse(body)?),
    };
    Ok((Tok::Lit(lit), close + 3))
}

/// A number (or a lone `.`) at the start of `rest`, as the grammar's longest match reads it.
pub(super) fn number(rest: &str, start: usize) -> Result<(Tok, usize), PatternError> {
    let b = rest.as_bytes();
    let digits_at = |i: usize| b.iter().skip(i).take_while(|c| c.is_ascii_digit()).count();
    let sign = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let int_len = digits_at(sign);
    let after = sign + int_len;
    let frac_len = if b.get(after) == Some(&b'.') {
        digits_at(after + 1)
    } else {
        0
    };
    if frac_len > 0 {
        let len = after + 1 + frac_len;
        let text = rest.get(..len).unwrap_or("");
        return match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok((Tok::Lit(Literal::Float(v)), len)),
            _ => err(
                start,
                format!("decimal literal {} is out of range", snippet(text)),
            ),
        };
    }
    let text = rest.get(..after).unwrap_or("");
    match (int_len, b.get(sign)) {
        (0, _) if sign == 0 => Ok((Tok::Punct('.'), 1)),
        (0, _) => err(start, "expected a number after the sign"),
        (2.., Some(b'0')) => err(
            start,
            format!("integer literal {} has a leading zero", snippet(text)),
        ),
        _ => match text.parse::<i64>() {
            Ok(v) => Ok((Tok::Lit(Literal::Int(v)), after)),
            Err(_) => err(
                start,
                format!("integer literal {} does not fit in 64 bits", snippet(text)),
            ),
        },
    }
}
