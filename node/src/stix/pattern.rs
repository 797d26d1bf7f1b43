//! STIX 2.1 patterning language: a recursive-descent parser that builds an AST, checks it the
//! way the OASIS validator (`stix2-patterns`) does, and renders it back to canonical text.
//!
//! The grammar is STIX 2.1 part 9 (Patterning) as the OASIS ANTLR grammar `STIXPattern.g4`
//! writes it:
//!
//! - pattern: observation expressions joined by `AND`, `OR` and `FOLLOWEDBY` (`AND` binds
//!   tightest, `FOLLOWEDBY` loosest), with parentheses; each `[ … ]` or `( … )` may be followed by
//!   qualifiers `WITHIN n SECONDS`, `REPEATS n TIMES` and `START t'…' STOP t'…'`;
//! - inside `[ … ]`: comparisons joined by `AND` / `OR` (`AND` tighter), with parentheses; a
//!   comparison is `path [NOT] op literal`, `path [NOT] IN (lit, …)` or `[NOT] EXISTS path`;
//! - literals: `'strings'` (escapes `\'` and `\\` only), signed integers and decimals (no
//!   exponent), `true`/`false`, `h'hex'`, `b'base64'`, `t'YYYY-MM-DDTHH:MM:SS[.frac]Z'`;
//! - keywords are upper case and case-sensitive; `==` and `<>` are read as `=` and `!=`;
//!   whitespace includes the Unicode spaces the grammar lists, and `/* … */` and `// …` comments
//!   are skipped, as the grammar does.
//!
//! On top of the grammar it refuses what the OASIS validator refuses (a malformed value compared
//! by `=`, `!=` or `IN` with a known hash such as `file:hashes.MD5`; the same qualifier twice on
//! one `[ … ]`, though `( … )` may repeat them to nest windows), and what the spec forbids but
//! the grammar lets through: object types that are not lower case (`File`, `x_foo`),
//! `WITHIN`/`REPEATS` values that are not positive, `START` not before `STOP`, an empty `IN ()`
//! set, negative list indexes, dates that do not exist (`t'2016-02-30…'`), and integers or
//! decimals that do not fit 64 bits. It does not check that `MATCHES` patterns are valid
//! regular expressions, nor that object types and properties exist in the STIX object model.
//!
//! Nesting of brackets and parentheses is limited to [`MAX_DEPTH`] levels so that hostile input
//! cannot exhaust the stack; limiting the input's length is the caller's job.
//!
//! The AST and the parser are here; the lexer is in `lexer`, the canonical rendering in `render`.

use std::fmt::{self, Write as _};

mod lexer;
mod render;

use lexer::{Lexer, Tok, Token, snippet};

/// Deepest nesting of `[`/`(` accepted; deeper input is an error, not a stack overflow.
pub const MAX_DEPTH: usize = 64;

/// Words the lexer reads as keywords (besides `true`/`false`); a property so named must be quoted.
#[rustfmt::skip]
const KEYWORDS: [&str; 17] = [
    "AND", "OR", "NOT", "FOLLOWEDBY", "LIKE", "MATCHES", "ISSUPERSET", "ISSUBSET", "EXISTS",
    "LAST", "IN", "START", "STOP", "SECONDS", "WITHIN", "REPEATS", "TIMES",
];

const OPERATORS: &str = "(=, !=, <, <=, >, >=, IN, LIKE, MATCHES, ISSUBSET, ISSUPERSET)";

/// A parsed STIX pattern (the AST).
///
/// `And`, `Or` and `FollowedBy` hold two or more operands, in order: `a AND b AND c` is one
/// `And` of three, while `a AND (b AND c)` keeps its nesting. Parentheses without a qualifier
/// are not kept, so `Grouped` always has at least one qualifier.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// `[ comparison ]` followed by qualifiers (at most one of each kind), in source order.
    Observation {
        comparison: Comparison,
        qualifiers: Vec<Qualifier>,
    },
    /// `( inner )` followed by one or more qualifiers, in source order.
    Grouped {
        inner: Box<Pattern>,
        qualifiers: Vec<Qualifier>,
    },
    /// Operands joined by `AND`.
    And(Vec<Pattern>),
    /// Operands joined by `OR`.
    Or(Vec<Pattern>),
    /// Operands joined by `FOLLOWEDBY`.
    FollowedBy(Vec<Pattern>),
}

/// A comparison expression, the inside of `[ … ]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Comparison {
    /// Two or more comparisons joined by `AND`.
    And(Vec<Comparison>),
    /// Two or more comparisons joined by `OR`.
    Or(Vec<Comparison>),
    /// `path [NOT] op value`; `value` is a string for `LIKE`, `MATCHES`, `ISSUBSET`, `ISSUPERSET`.
    Compare {
        path: ObjectPath,
        negated: bool,
        op: Operator,
        value: Literal,
    },
    /// `path [NOT] IN (value, …)`, with at least one value.
    In {
        path: ObjectPath,
        negated: bool,
        set: Vec<Literal>,
    },
    /// `[NOT] EXISTS path`.
    Exists { path: ObjectPath, negated: bool },
}

/// A comparison operator other than `IN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `=` (also written `==`).
    Eq,
    /// `!=` (also written `<>`).
    Ne,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `LIKE` (SQL-style wildcards).
    Like,
    /// `MATCHES` (PCRE regular expression).
    Matches,
    /// `ISSUBSET` (IP address or CIDR range).
    IsSubset,
    /// `ISSUPERSET` (IP address or CIDR range).
    IsSuperset,
}

/// An object path such as `file:extensions.'windows-pebinary-ext'.sections[*].entropy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    /// The object type, e.g. `file` or `ipv4-addr`.
    pub object_type: String,
    /// The property steps after the colon; the first is always a [`PathStep::Key`].
    pub steps: Vec<PathStep>,
}

/// One step of an object path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    /// A property name (`.name` or `.'quoted-name'`).
    Key(String),
    /// A list index `[n]`.
    Index(u64),
    /// Any list member, `[*]`.
    AnyIndex,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `'text'`, unescaped.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// A decimal such as `7.0` or `-.5` (always finite).
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// `h'ffd8'`, decoded.
    Hex(Vec<u8>),
    /// `b'…'`: the base64 text between the quotes, validated but not decoded.
    Binary(String),
    /// `t'…'`.
    Timestamp(Timestamp),
}

/// A validated RFC 3339 UTC timestamp, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp(String);

/// A qualifier on an observation expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Qualifier {
    /// `WITHIN n SECONDS`, n positive.
    Within(Seconds),
    /// `REPEATS n TIMES`, n at least 1.
    Repeats(u64),
    /// `START t'…' STOP t'…'`, `start` strictly before `stop`.
    StartStop { start: Timestamp, stop: Timestamp },
}

/// The positive duration of a `WITHIN` qualifier, as written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seconds {
    /// A whole number of seconds.
    Int(u64),
    /// A decimal number of seconds (finite, positive).
    Float(f64),
}

/// Why a pattern was refused: where (a byte offset into the input) and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// Byte offset into the input where the problem was found.
    pub offset: usize,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for PatternError {}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError {
        offset,
        message: message.into(),
    })
}

/// Parses a STIX 2.1 pattern into its AST, or says where and why it is not one.
pub fn parse(input: &str) -> Result<Pattern, PatternError> {
    let mut lexer = Lexer { src: input, pos: 0 };
    let tok = lexer.next_token()?;
    let mut parser = Parser {
        lexer,
        tok,
        depth: 0,
    };
    if parser.tok.tok == Tok::Eof {
        return err(
            0,
            "empty pattern: expected an observation expression such as [x:y = 1]",
        );
    }
    let pattern = parser.followed_by()?;
    if parser.tok.tok != Tok::Eof {
        return parser.expected(
            "AND, OR, FOLLOWEDBY, a qualifier (WITHIN, REPEATS, START) or the end of the pattern",
        );
    }
    Ok(pattern)
}

impl Pattern {
    /// The object types the pattern compares (e.g. `["file", "ipv4-addr"]`), sorted, deduplicated.
    pub fn object_types(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_types(&mut out);
        out.sort();
        out.dedup();
        out
    }

    fn collect_types(&self, out: &mut Vec<String>) {
        match self {
            Pattern::Observation { comparison, .. } => comparison.collect_types(out),
            Pattern::Grouped { inner, .. } => inner.collect_types(out),
            Pattern::And(v) | Pattern::Or(v) | Pattern::FollowedBy(v) => {
                v.iter().for_each(|p| p.collect_types(out));
            }
        }
    }
}

impl Comparison {
    fn collect_types(&self, out: &mut Vec<String>) {
        match self {
            Comparison::And(v) | Comparison::Or(v) => v.iter().for_each(|c| c.collect_types(out)),
            Comparison::Compare { path, .. }
            | Comparison::In { path, .. }
            | Comparison::Exists { path, .. } => out.push(path.object_type.clone()),
        }
    }
}

impl Timestamp {
    /// Ordering key: the fixed-width date and time, then the fraction without trailing zeros.
    fn key(&self) -> (&str, &str) {
        let s = self.0.as_str();
        let frac = s.get(20..s.len().saturating_sub(1)).unwrap_or("");
        (s.get(..19).unwrap_or(s), frac.trim_end_matches('0'))
    }

    fn parse(body: &str) -> Result<Timestamp, String> {
        let b = body.as_bytes();
        let num = |from: usize, to: usize| -> Option<u32> {
            let digits = b.get(from..to)?;
            let fold =
                |acc: u32, c: &u8| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'));
            digits.iter().try_fold(0, fold)
        };
        let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        let tail_ok = match b.get(19..).unwrap_or(&[]) {
            [b'Z'] => true,
            [b'.', frac @ .., b'Z'] => !frac.is_empty() && frac.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        let fields = (
            num(0, 4),
            num(5, 7),
            num(8, 10),
            num(11, 13),
            num(14, 16),
            num(17, 19),
        );
        let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = fields else {
            return Err(format!(
                "invalid timestamp t'{}': expected {TS_FORM}",
                snippet(body)
            ));
        };
        if !tail_ok || seps.iter().any(|&(i, c)| b.get(i) != Some(&c)) {
            return Err(format!(
                "invalid timestamp t'{}': expected {TS_FORM}",
                snippet(body)
            ));
        }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let days = match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let time_ok = hour <= 23 && min <= 59 && sec <= 60;
        if !(1..=12).contains(&month) || !(1..=days).contains(&day) || !time_ok {
            return Err(format!(
                "invalid timestamp t'{}': no such date or time",
                snippet(body)
            ));
        }
        Ok(Timestamp(body.to_string()))
    }
}

const TS_FORM: &str = "YYYY-MM-DDTHH:MM:SS[.fraction]Z (UTC)";

impl Operator {
    fn as_str(self) -> &'static str {
        match self {
            Operator::Eq => "=",
            Operator::Ne => "!=",
            Operator::Lt => "<",
            Operator::Le => "<=",
            Operator::Gt => ">",
            Operator::Ge => ">=",
            Operator::Like => "LIKE",
            Operator::Matches => "MATCHES",
            Operator::IsSubset => "ISSUBSET",
            Operator::IsSuperset => "ISSUPERSET",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Token,
    depth: usize,
}

type Parsed<T> = Result<T, PatternError>;

impl Parser<'_> {
    fn advance(&mut self) -> Parsed<()> {
        self.tok = self.lexer.next_token()?;
        Ok(())
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.tok.tok, Tok::Kw(k) if k == kw)
    }

    fn is_punct(&self, c: char) -> bool {
        self.tok.tok == Tok::Punct(c)
    }

    fn eat_kw(&mut self, kw: &str) -> Parsed<bool> {
        let found = self.is_kw(kw);
        if found {
            self.advance()?;
        }
        Ok(found)
    }

    fn expect_kw(&mut self, kw: &str, what: &str) -> Parsed<()> {
        if self.eat_kw(kw)? {
            Ok(())
        } else {
            self.expected(what)
        }
    }

    fn found(&self) -> String {
        match self.tok.tok {
            Tok::Eof => "end of input".to_string(),
            _ => format!(
                "\"{}\"",
                snippet(
                    self.lexer
                        .src
                        .get(self.tok.start..self.tok.end)
                        .unwrap_or("")
                )
            ),
        }
    }

    fn expected<T>(&self, what: impl fmt::Display) -> Parsed<T> {
        err(
            self.tok.start,
            format!("expected {what}, found {}", self.found()),
        )
    }

    /// Consumes an opening `[` or `(`, counting nesting depth; returns its offset.
    fn open(&mut self) -> Parsed<usize> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return err(
                self.tok.start,
                format!("nesting deeper than {MAX_DEPTH} levels of [ and ("),
            );
        }
        let at = self.tok.start;
        self.advance()?;
        Ok(at)
    }

    fn close(&mut self, c: char, opened_at: usize, what: &str) -> Parsed<()> {
        if !self.is_punct(c) {
            let opener = if c == ']' { '[' } else { '(' };
            return self.expected(format_args!(
                "{what} to close the \"{opener}\" opened at byte {opened_at}"
            ));
        }
        self.depth = self.depth.saturating_sub(1);
        self.advance()
    }

    /// `item (kw item)*`: a single item as is, more wrapped by `wrap`.
    fn chain<T>(
        &mut self,
        kw: &str,
        item: fn(&mut Self) -> Parsed<T>,
        wrap: fn(Vec<T>) -> T,
    ) -> Parsed<T> {
        let mut items = vec![item(self)?];
        while self.eat_kw(kw)? {
            items.push(item(self)?);
        }
        match items.len() {
            1 => items.pop().map_or_else(|| self.expected("an operand"), Ok),
            _ => Ok(wrap(items)),
        }
    }

    fn followed_by(&mut self) -> Parsed<Pattern> {
        self.chain("FOLLOWEDBY", Self::observation_or, Pattern::FollowedBy)
    }

    fn observation_or(&mut self) -> Parsed<Pattern> {
        self.chain("OR", Self::observation_and, Pattern::Or)
    }

    fn observation_and(&mut self) -> Parsed<Pattern> {
        self.chain("AND", Self::observation, Pattern::And)
    }

    fn observation(&mut self) -> Parsed<Pattern> {
        if self.is_punct('[') {
            let at = self.open()?;
            if self.is_punct(']') {
                return err(
                    self.tok.start,
                    "empty observation expression: expected a comparison",
                );
            }
            let comparison = self.comparison_or()?;
            self.close(']', at, "AND, OR or \"]\"")?;
            let qualifiers = self.qualifiers(true)?;
            Ok(Pattern::Observation {
                comparison,
                qualifiers,
            })
        } else if self.is_punct('(') {
            let at = self.open()?;
            let inner = Box::new(self.followed_by()?);
            self.close(')', at, "AND, OR, FOLLOWEDBY, a qualifier or \")\"")?;
            let qualifiers = self.qualifiers(false)?;
            Ok(if qualifiers.is_empty() {
                *inner
            } else {
                Pattern::Grouped { inner, qualifiers }
            })
        } else {
            self.expected("an observation expression (\"[\" or \"(\")")
        }
    }

    /// Qualifiers after an observation expression; on a bare `[ … ]` each kind at most once.
    fn qualifiers(&mut self, bracketed: bool) -> Parsed<Vec<Qualifier>> {
        let mut out: Vec<Qualifier> = Vec::new();
        loop {
            let at = self.tok.start;
            let (kind, qualifier) = if self.eat_kw("WITHIN")? {
                let seconds = match self.tok.tok {
                    Tok::Lit(Literal::Int(n @ 1..)) => Seconds::Int(n.unsigned_abs()),
                    Tok::Lit(Literal::Float(v)) if v > 0.0 => Seconds::Float(v),
                    _ => return self.expected("a positive number of seconds after WITHIN"),
                };
                self.advance()?;
                self.expect_kw("SECONDS", "SECONDS after the WITHIN value")?;
                ("WITHIN", Qualifier::Within(seconds))
            } else if self.eat_kw("REPEATS")? {
                let Tok::Lit(Literal::Int(n @ 1..)) = self.tok.tok else {
                    return self.expected("a positive integer after REPEATS");
                };
                self.advance()?;
                self.expect_kw("TIMES", "TIMES after the REPEATS count")?;
                ("REPEATS", Qualifier::Repeats(n.unsigned_abs()))
            } else if self.eat_kw("START")? {
                let start = self.timestamp("START")?;
                self.expect_kw("STOP", "STOP after the START timestamp")?;
                let stop_at = self.tok.start;
                let stop = self.timestamp("STOP")?;
                if start.key() >= stop.key() {
                    return err(
                        stop_at,
                        format!("STOP {stop} must be later than START {start}"),
                    );
                }
                ("START/STOP", Qualifier::StartStop { start, stop })
            } else {
                return Ok(out);
            };
            let kind_of = std::mem::discriminant::<Qualifier>;
            if bracketed && out.iter().any(|q| kind_of(q) == kind_of(&qualifier)) {
                let msg =
                    format!("duplicate {kind} qualifier on one [ … ] (nest it in parentheses)");
                return err(at, msg);
            }
            out.push(qualifier);
        }
    }

    fn timestamp(&mut self, after: &str) -> Parsed<Timestamp> {
        let Tok::Lit(Literal::Timestamp(t)) = &self.tok.tok else {
            return self.expected(format_args!(
                "a timestamp such as t'2016-01-01T00:00:00Z' after {after}"
            ));
        };
        let t = t.clone();
        self.advance()?;
        Ok(t)
    }

    fn comparison_or(&mut self) -> Parsed<Comparison> {
        self.chain("OR", Self::comparison_and, Comparison::Or)
    }

    fn comparison_and(&mut self) -> Parsed<Comparison> {
        self.chain("AND", Self::comparison, Comparison::And)
    }

    fn comparison(&mut self) -> Parsed<Comparison> {
        if self.is_punct('(') {
            let at = self.open()?;
            let inner = self.comparison_or()?;
            self.close(')', at, "AND, OR or \")\"")?;
            return Ok(inner);
        }
        if self.is_kw("NOT") || self.is_kw("EXISTS") {
            let negated = self.eat_kw("NOT")?;
            self.expect_kw(
                "EXISTS",
                "EXISTS after a leading NOT (else NOT goes before the operator)",
            )?;
            let path = self.object_path()?;
            return Ok(Comparison::Exists { path, negated });
        }
        if !matches!(self.tok.tok, Tok::Ident(_)) {
            return self
                .expected("a comparison (an object path such as file:name, EXISTS, or \"(\")");
        }
        let path = self.object_path()?;
        let negated = self.eat_kw("NOT")?;
        let op = match self.tok.tok {
            Tok::Op(op) => op,
            Tok::Kw("LIKE") => Operator::Like,
            Tok::Kw("MATCHES") => Operator::Matches,
            Tok::Kw("ISSUBSET") => Operator::IsSubset,
            Tok::Kw("ISSUPERSET") => Operator::IsSuperset,
            Tok::Kw("IN") => {
                self.advance()?;
                let set = self.literal_set(&path)?;
                return Ok(Comparison::In { path, negated, set });
            }
            _ => {
                return self.expected(format_args!(
                    "a comparison operator {OPERATORS} after object path \"{path}\""
                ));
            }
        };
        self.advance()?;
        let (at, name) = (self.tok.start, op.as_str());
        let value = match &self.tok.tok {
            Tok::Lit(value) => value.clone(),
            _ => return self.expected(format_args!("a literal value after {name}")),
        };
        match (op, &value) {
            (Operator::Like | Operator::Matches | Operator::IsSubset | Operator::IsSuperset, v)
                if !matches!(v, Literal::Str(_)) =>
            {
                return err(
                    at,
                    format!("{name} needs a string literal, found {}", self.found()),
                );
            }
            (Operator::Lt | Operator::Le | Operator::Gt | Operator::Ge, Literal::Bool(_)) => {
                return err(
                    at,
                    format!("{name} cannot order a boolean, found {}", self.found()),
                );
            }
            (Operator::Eq | Operator::Ne, _) => check_hash(&path, &value, at)?,
            _ => {}
        }
        self.advance()?;
        Ok(Comparison::Compare {
            path,
            negated,
            op,
            value,
        })
    }

    fn literal_set(&mut self, path: &ObjectPath) -> Parsed<Vec<Literal>> {
        if !self.is_punct('(') {
            return self.expected("\"(\" to start the IN set, as in IN ('a', 'b')");
        }
        self.advance()?;
        if self.is_punct(')') {
            return err(
                self.tok.start,
                "empty IN set: expected at least one literal",
            );
        }
        let mut set = Vec::new();
        loop {
            let Tok::Lit(value) = &self.tok.tok else {
                return self.expected("a literal in the IN set");
            };
            check_hash(path, value, self.tok.start)?;
            set.push(value.clone());
            self.advance()?;
            if self.is_punct(')') {
                self.advance()?;
                return Ok(set);
            }
            if !self.is_punct(',') {
                return self.expected("\",\" or \")\" in the IN set");
            }
            self.advance()?;
        }
    }

    fn object_path(&mut self) -> Parsed<ObjectPath> {
        let Tok::Ident(object_type) = &self.tok.tok else {
            return self.expected("an object type such as file or ipv4-addr");
        };
        let lower = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !object_type.starts_with(|c: char| c.is_ascii_lowercase())
            || !object_type.chars().all(lower)
        {
            let msg = format!(
                "invalid object type \"{}\": expected lowercase letters, digits and hyphens, \
                 starting with a letter (e.g. ipv4-addr)",
                snippet(object_type)
            );
            return err(self.tok.start, msg);
        }
        let mut path = ObjectPath {
            object_type: object_type.clone(),
            steps: Vec::new(),
        };
        self.advance()?;
        if !self.is_punct(':') {
            return self.expected(format_args!(
                "\":\" after object type \"{}\"",
                path.object_type
            ));
        }
        self.advance()?;
        let first = self.key(&path)?;
        path.steps.push(first);
        loop {
            let step = if self.is_punct('.') {
                self.advance()?;
                self.key(&path)?
            } else if self.is_punct('[') {
                self.advance()?;
                let step = match self.tok.tok {
                    Tok::Lit(Literal::Int(n @ 0..)) => PathStep::Index(n.unsigned_abs()),
                    Tok::Punct('*') => PathStep::AnyIndex,
                    _ => return self.expected("a list index (a non-negative integer or *)"),
                };
                self.advance()?;
                if !self.is_punct(']') {
                    return self.expected("\"]\" after the list index");
                }
                self.advance()?;
                step
            } else {
                return Ok(path);
            };
            path.steps.push(step);
        }
    }

    fn key(&mut self, path: &ObjectPath) -> Parsed<PathStep> {
        let key = match &self.tok.tok {
            Tok::Ident(s) if s.contains('-') => {
                let s = snippet(s);
                return err(
                    self.tok.start,
                    format!("property \"{s}\" contains a hyphen: quote it, '{s}'"),
                );
            }
            Tok::Ident(s) | Tok::Lit(Literal::Str(s)) => s.clone(),
            _ => {
                return self.expected(format_args!(
                    "a property name (identifier or 'quoted') after \"{path}\""
                ));
            }
        };
        self.advance()?;
        Ok(PathStep::Key(key))
    }
}

/// The OASIS validator's check of values compared with a known hash (`file:hashes.MD5 = '…'`).
fn check_hash(path: &ObjectPath, value: &Literal, at: usize) -> Parsed<()> {
    let in_hashes = path
        .steps
        .iter()
        .any(|s| matches!(s, PathStep::Key(k) if k == "hashes"));
    let (true, Some(PathStep::Key(algo))) = (in_hashes, path.steps.last()) else {
        return Ok(());
    };
    let hex_lengths: &[usize] = match algo.to_ascii_uppercase().replace('-', "").as_str() {
        "MD5" => &[32],
        "MD6" => &[32, 40, 56, 64, 96, 128],
        "RIPEMD160" | "SHA1" => &[40],
        "SHA224" | "SHA3224" => &[56],
        "SHA256" | "SHA3256" => &[64],
        "SHA384" | "SHA3384" => &[96],
        "SHA512" | "SHA3512" | "WHIRLPOOL" => &[128],
        "SSDEEP" => &[],
        _ => return Ok(()),
    };
    let ssdeep = |c: u8| c.is_ascii_alphanumeric() || b"/+:.".contains(&c);
    let valid = match value {
        Literal::Str(s) if hex_lengths.is_empty() => {
            (1..=128).contains(&s.len()) && s.bytes().all(ssdeep)
        }
        Literal::Str(s) => {
            hex_lengths.contains(&s.len()) && s.bytes().all(|c| c.is_ascii_hexdigit())
        }
        _ => false,
    };
    let wanted = match hex_lengths {
        [] => "a string of up to 128 characters from A-Z a-z 0-9 / + : .".to_string(),
        [n] => format!("a string of {n} hex digits"),
        _ => "a string of 32, 40, 56, 64, 96 or 128 hex digits".to_string(),
    };
    let (value, algo) = (snippet(&value.to_string()), snippet(algo));
    let msg = format!("{value} is not a valid {algo} hash: expected {wanted}");
    if valid { Ok(()) } else { err(at, msg) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Valid patterns: the STIX 2.1 spec's examples (as in stix2-patterns' spec_examples.txt),
    /// then more covering each construct. Lines marked `// not in corpus` disagree with
    /// stix2-patterns and are left out of tests/stix/patterns.txt.
    const VALID: &[&str] = &[
        r#"[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']"#,
        r#"[email-message:from_ref.value MATCHES '.+\\@example\\.com$' AND email-message:body_multipart[*].body_raw_ref.name MATCHES '^Final Report.+\\.exe$']"#,
        r#"[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f' AND file:mime_type = 'application/x-pdf']"#,
        r#"[file:hashes.'SHA-256' = 'bf07a7fbb825fc0aae7bf4a1177b2b31fcf8a3feeaf7092761e18c859ee52a9c' OR file:hashes.MD5 = 'cead3f77f6cda6ec00f57d76c9a6879f'] AND [file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']"#,
        r#"([file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4'] FOLLOWEDBY [windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\foo\\bar']) WITHIN 300 SECONDS"#,
        r#"[user-account:account_type = 'unix' AND user-account:user_id = '1007' AND user-account:account_login = 'Peter'] AND [user-account:account_type = 'unix' AND user-account:user_id = '1008' AND user-account:account_login = 'Paul'] AND [user-account:account_type = 'unix' AND user-account:user_id = '1009' AND user-account:account_login = 'Mary']"#,
        r#"[artifact:mime_type = 'application/vnd.tcpdump.pcap' AND artifact:payload_bin MATCHES '\\xd4\\xc3\\xb2\\xa1\\x02\\x00\\x04\\x00']"#,
        r#"[file:name = 'foo.dll' AND file:parent_directory_ref.path = 'C:\\Windows\\System32']"#,
        r#"[file:extensions.'windows-pebinary-ext'.sections[*].entropy > 7.0]"#,
        r#"[file:mime_type = 'image/bmp' AND file:magic_number_hex = h'ffd8']"#,
        r#"[network-traffic:dst_ref.type = 'ipv4-addr' AND network-traffic:dst_ref.value = '203.0.113.33/32']"#,
        r#"[network-traffic:dst_ref.type = 'domain-name' AND network-traffic:dst_ref.value = 'example.com'] REPEATS 5 TIMES WITHIN 1800 SECONDS"#,
        r#"[domain-name:value = 'www.5z8.info' AND domain-name:resolves_to_refs[*].value = '198.51.100.1/32']"#,
        r#"[url:value = 'http://example.com/foo' OR url:value = 'http://example.com/bar']"#,
        r#"[x509-certificate:issuer = 'CN=WEBMAIL' AND x509-certificate:serial_number = '4c:0b:1d:19:74:86:a7:66:b4:1a:bf:40:27:21:76:28']"#,
        r#"[windows-registry-key:key = 'HKEY_CURRENT_USER\\Software\\CryptoLocker\\Files' OR windows-registry-key:key = 'HKEY_CURRENT_USER\\Software\\Microsoft\\CurrentVersion\\Run\\CryptoLocker_0388']"#,
        r#"[(file:name = 'pdf.exe' OR file:size = '371712') AND file:created = t'2014-01-13T07:03:17Z']"#,
        r#"[email-message:sender_ref.value = 'jdoe@example.com' AND email-message:subject = 'Conference Info']"#,
        r#"[x-usb-device:usbdrive.serial_number = '575833314133343231313937']"#,
        r#"[process:command_line MATCHES '^.+>-add GlobalSign.cer -c -s -r localMachine Root$'] FOLLOWEDBY [process:command_line MATCHES'^.+>-add GlobalSign.cer -c -s -r localMachineTrustedPublisher$'] WITHIN 300 SECONDS"#,
        r#"[network-traffic:dst_ref.value ISSUBSET '2001:0db8:dead:beef:0000:0000:0000:0000/64']"#,
        r#"([file:name = 'foo.dll'] AND [windows-registry-key:key = 'HKEY_LOCAL_MACHINE\\foo\\bar']) OR [process:name = 'fooproc' OR process:name = 'procfoo']"#,
        r#"([file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4' AND file:size IN (1024, 2048)]) REPEATS 5 TIMES WITHIN 1800 SECONDS"#,
        r#"[ipv4-addr:value = '198.51.100.1/32' OR ipv4-addr:value = '203.0.113.33/32' OR ipv6-addr:value = '2001:0db8:dead:beef:dead:beef:dead:0001/128'] FOLLOWEDBY [domain-name:value = 'example.com'] WITHIN 600 SECONDS"#,
        r#"[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f'] START t'2016-06-01T00:00:00Z' STOP t'2016-07-01T00:00:00Z'"#,
        r#"[network-traffic:src_port = 37020 AND user-account:user_id = 'root'] START t'2016-06-01T01:30:00.123Z' STOP t'2016-06-01T02:20:00.123Z' OR [ipv4-addr:value = '192.168.122.83'] START t'2016-06-01T03:55:00.123Z' STOP t'2016-06-01T04:30:24.743Z'"#,
        r#"[EXISTS windows-registry-key:values[*].name]"#,
        r#"[NOT EXISTS file:hashes.MD5 AND file:name = 'setup.exe']"#,
        r#"[file:name NOT = 'good.exe' AND file:size NOT IN (0, 1) AND file:name NOT LIKE '%.tmp']"#,
        r#"[ipv4-addr:value NOT ISSUBSET '10.0.0.0/8' OR ipv4-addr:value ISSUPERSET '198.51.100.0/24']"#,
        r#"[file:size < 1024 OR file:size <= 1024 OR file:size > 1024 OR file:size >= 1024 OR file:size != 1024]"#,
        r#"[file:name == 'a.exe' AND file:name <> 'b.exe']"#,
        r#"[x-acme-widget:enabled = true AND x-acme-widget:broken = false AND x-acme-widget:delta = -12.5 AND x-acme-widget:ratio = .5 AND x-acme-widget:count = +3]"#,
        r#"[artifact:payload_bin = b'dGhpcyBpcyBhIHRlc3Q=' OR file:magic_number_hex = h'FFD8FFE0']"#,
        r#"[file:created > t'2016-01-01T00:00:00.000Z' AND file:modified <= t'2016-12-31T23:59:60Z']"#,
        r#"[network-traffic:extensions.'http-request-ext'.request_header.'Accept-Encoding' = 'gzip' AND windows-registry-key:values[0].data = 'x']"#,
        r#"[file:name = 'résumé.pdf' OR file:name = 'it\'s.exe']"#,
        r#"[file:name = 'a'] /* comment */ AND [file:name = 'b'] // trailing comment"#,
        r#"( [(network-traffic:dst_port IN(443,6443,8443) AND network-traffic:src_packets != 0) ])"#,
        r#"[domain-name:value = 'a.example'] AND [domain-name:value = 'b.example'] OR [domain-name:value = 'c.example'] FOLLOWEDBY [domain-name:value = 'd.example'] WITHIN 5.5 SECONDS"#,
        r#"([file:name = 'a'] REPEATS 2 TIMES) REPEATS 3 TIMES"#,
        r#"([windows-registry-key:key = 'x']) WITHIN 5 SECONDS WITHIN 6 SECONDS"#,
        r#"[file:hashes.SSDEEP = '3:AXGBicFlgVNhBGcL6wCrFQEv:AXGHsNhxLsr2C' AND file:hashes.'SHA-1' = '2fd4e1c67a2d28fced849ee1bb76e7391b93eb12']"#,
        r#"[file:hashes.MD5 IN ('cead3f77f6cda6ec00f57d76c9a6879f', '79054025255fb1a26e4bc422aef54eb4')]"#, // not in corpus
        r#"[autonomous-system:number >= 64512 AND autonomous-system:number <= 65534]"#,
        r#"[software:cpe = 'cpe:2.3:a:microsoft:word:2000:*:*:*:*:*:*:*' OR software:name LIKE 'Microsoft%']"#,
        r#"[email-message:is_multipart = true AND email-message:body_multipart[0].content_type LIKE 'application/%']"#,
        r#"[x-acme-thing:v IN (1024, 2048.5, 'big', true, h'00', b'AAAA', t'2016-01-01T00:00:00Z')]"#,
        r#"[x509-certificate:validity_not_after < t'2016-12-31T23:59:59.999999Z']"#,
        r#"[network-traffic:protocols[*] = 'tcp' AND network-traffic:dst_port NOT IN (80, 443)] REPEATS 10 TIMES"#,
        r#"([ipv4-addr:value = '198.51.100.5'] OR [ipv6-addr:value = '2001:db8::1']) FOLLOWEDBY ([url:value LIKE 'http://%/gate.php'] AND [file:name = 'a.exe']) WITHIN 3600 SECONDS START t'2020-01-01T00:00:00Z' STOP t'2020-12-31T00:00:00Z'"#,
        r#"[domain-name:value = 'example.com'] START t'2016-06-01T00:00:00Z' STOP t'2016-06-01T00:00:00.001Z'"#,
        r#"[process:pid = 4 AND process:name = 'System'] FOLLOWEDBY [process:pid > 100] WITHIN .5 SECONDS"#,
        "[file:name = 'a']\u{3000}AND\u{a0}[file:name = 'b']",
        r#"[file:hashes.MD5 LIKE 'cead%']"#, // not in corpus
    ];

    /// Invalid patterns with a fragment of the expected message. Lines marked
    /// `// not in corpus` disagree with stix2-patterns (see the module doc).
    const INVALID: &[(&str, &str)] = &[
        (r#"file:size = 1280"#, "expected an observation expression"),
        (
            r#"[file:name = 'x'"#,
            "to close the \"[\" opened at byte 0, found end of input",
        ),
        (r#"[file:name = 'x]"#, "unterminated string literal"),
        (r#"[File:name = 'x']"#, "invalid object type \"File\""), // not in corpus
        (r#"[x_whatever:name = 'x']"#, "invalid object type"),    // not in corpus
        (r#"[file:name 'x']"#, "expected a comparison operator"),
        (
            r#"[file:name foo 'x']"#,
            "expected a comparison operator (=, !=, <, <=, >, >=, IN, LIKE, MATCHES, ISSUBSET, ISSUPERSET) after object path \"file:name\", found \"foo\"",
        ),
        (
            r#"[file:name = 'x'] WITHIN 0 SECONDS"#,
            "positive number of seconds",
        ), // not in corpus
        (
            r#"[file:name = 'x'] WITHIN -5 SECONDS"#,
            "positive number of seconds",
        ),
        (
            r#"[file:name = 'x'] REPEATS -1 TIMES"#,
            "positive integer after REPEATS",
        ),
        (
            r#"[file:name = 'x'] REPEATS 0 TIMES"#,
            "positive integer after REPEATS",
        ), // not in corpus
        (
            r#"[file:name = 'x'] REPEATS 2.5 TIMES"#,
            "positive integer after REPEATS",
        ),
        (
            r#"[file:name = 'x'] START t'2017-01-01T00:00:00Z' STOP t'2016-01-01T00:00:00Z'"#,
            "must be later than START",
        ), // not in corpus
        (
            r#"[file:name = 'x'] START t'2016-01-01T00:00:00.5Z' STOP t'2016-01-01T00:00:00.50Z'"#,
            "must be later than START",
        ), // not in corpus
        (
            r#"[file:name = 'x'] START t'2016-01-01T00:00:00Z'"#,
            "STOP after the START timestamp",
        ),
        (
            r#"[file:magic_number_hex = h'ffd']"#,
            "odd number of hex digits",
        ),
        (
            r#"[file:magic_number_hex = h'fg']"#,
            "invalid character 'g' in hex literal",
        ),
        (
            r#"[file:name = 'x'] garbage"#,
            "or the end of the pattern, found \"garbage\"",
        ),
        (
            r#"[file:name = 'x'] and [file:name = 'y']"#,
            "end of the pattern, found \"and\"",
        ),
        (r#"[foo:bar = 1] within 2 seconds"#, "end of the pattern"),
        (
            r#"[file:name = 'x'] [file:name = 'y']"#,
            "end of the pattern",
        ),
        (r#"[a-b:c = 1]]"#, "end of the pattern"),
        (r#"[]"#, "empty observation expression"),
        (r#"[file:size = ]"#, "expected a literal value after ="),
        (
            r#"[file:hashes.MD5 = cead3f77f6cda6ec00f57d76c9a6879f]"#,
            "expected a literal value after =",
        ),
        (
            r#"[file.size = 1280]"#,
            "expected \":\" after object type \"file\"",
        ),
        (
            r#"[file:name MATCHES /.*\\.dll/]"#,
            "unexpected character '/'",
        ),
        (
            r#"[file:name = 'x'] WITHIN ]"#,
            "positive number of seconds",
        ),
        (
            r#"[file:name = 'x'] WITHIN 5 HOURS"#,
            "SECONDS after the WITHIN value",
        ),
        (
            r#"[network-traffic:dst_ref.value ISSUBSET ]"#,
            "expected a literal value after ISSUBSET",
        ),
        (
            r#"[file:hashes.MD5 =? 'cead3f77f6cda6ec00f57d76c9a6879f']"#,
            "unexpected character '?'",
        ),
        (
            r#"[x-whatever:detected == t'2457-73-22T32:81:84.1Z']"#,
            "invalid timestamp",
        ),
        (
            r#"[file:created = t'2016-01-01T00:00:00+01:00']"#,
            "invalid timestamp",
        ),
        (
            r#"[file:created = t'2016-02-30T00:00:00Z']"#,
            "no such date",
        ), // not in corpus
        (
            r#"[artifact:payload_bin = b'====']"#,
            "invalid binary literal",
        ),
        (r#"[artifact:payload_bin = b'']"#, "invalid binary literal"),
        (
            r#"[file:hashes.'SHA-256' = 'f00']"#,
            "is not a valid SHA-256 hash",
        ),
        (
            r#"[file:hashes.MD5 = 'cead3f77f6cda6ec00f57d76c9a6879g']"#,
            "is not a valid MD5 hash",
        ),
        (
            r#"[windows-registry-key:key = 'x'] WITHIN 5 SECONDS WITHIN 6 SECONDS"#,
            "duplicate WITHIN qualifier",
        ),
        (
            r#"([windows-registry-key:key = 'x'] REPEATS 2 TIMES REPEATS 3 TIMES)"#,
            "duplicate REPEATS qualifier",
        ),
        (r#"[file:name LIKE 5]"#, "LIKE needs a string literal"),
        (
            r#"[file:name MATCHES h'00']"#,
            "MATCHES needs a string literal",
        ),
        (r#"[file:size > true]"#, "cannot order a boolean"),
        (r#"[file:name IN ()]"#, "empty IN set"), // not in corpus
        (r#"[file:name IN 'x']"#, "to start the IN set"),
        (
            r#"[file:name IN ('x' 'y')]"#,
            "\",\" or \")\" in the IN set",
        ),
        (r#"[file:name = '\d']"#, "invalid escape"),
        (
            r#"[file:name = 'a'] AND"#,
            "expected an observation expression (\"[\" or \"(\"), found end of input",
        ),
        (
            r#"[file:name = 'a'] FOLLOWEDBY"#,
            "expected an observation expression",
        ),
        (r#"[file:name = 'a' AND]"#, "expected a comparison"),
        (
            r#"[file:name = 'a' AND NOT file:size = 1]"#,
            "EXISTS after a leading NOT",
        ),
        (r#"[file:hashes.SHA-256 = 'x']"#, "contains a hyphen"),
        (r#"[file:size = 007]"#, "leading zero"),
        (r#"[file:size = 1e5]"#, "found \"e5\""),
        (r#"[file:name[-1] = 'x']"#, "non-negative integer"), // not in corpus
        (
            r#"[file:size = 99999999999999999999]"#,
            "does not fit in 64 bits",
        ), // not in corpus
        (
            r#"[file:name = 'x'] /* unterminated"#,
            "unterminated comment",
        ),
        (r#"[file:true = 1]"#, "expected a property name"),
        (r#"[file:AND = 1]"#, "expected a property name"),
        (r#"[x-foo:bar = True]"#, "expected a literal value"),
        (
            r#"[file:name = 'a' OR (file:name = 'b']"#,
            "to close the \"(\" opened at byte 20",
        ),
        (
            r#"([file:name = 'a']"#,
            "to close the \"(\" opened at byte 0",
        ),
        (
            r#"[file:name = 'x'] WITHIN 1 SECONDS)"#,
            "end of the pattern",
        ),
        (
            r#"[file:name = 'x'] START '2016-01-01T00:00:00Z' STOP t'2017-01-01T00:00:00Z'"#,
            "a timestamp such as",
        ),
        (
            r#"[file:name NOT NOT = 'x']"#,
            "expected a comparison operator",
        ),
        (r#"[file:name = - 1]"#, "expected a number after the sign"),
        ("", "empty pattern"),    // not in corpus
        ("   ", "empty pattern"), // not in corpus
    ];

    fn must_parse(input: &str) -> Pattern {
        match parse(input) {
            Ok(p) => p,
            Err(e) => panic!("{input:?} should parse, got {e}"),
        }
    }

    fn leaf(object_type: &str, key: &str, value: i64) -> Comparison {
        Comparison::Compare {
            path: ObjectPath {
                object_type: object_type.into(),
                steps: vec![PathStep::Key(key.into())],
            },
            negated: false,
            op: Operator::Eq,
            value: Literal::Int(value),
        }
    }

    fn obs(value: i64) -> Pattern {
        Pattern::Observation {
            comparison: leaf("x-a", "b", value),
            qualifiers: vec![],
        }
    }

    #[test]
    fn valid_examples_parse_and_round_trip() {
        for input in VALID {
            let parsed = must_parse(input);
            let text = parsed.to_string();
            assert_eq!(
                parse(&text).as_ref(),
                Ok(&parsed),
                "round trip of {input:?} via {text:?}"
            );
            assert_eq!(
                must_parse(&text).to_string(),
                text,
                "rendering is not stable for {input:?}"
            );
        }
    }

    #[test]
    fn invalid_examples_are_refused_with_a_useful_message() {
        for (input, fragment) in INVALID {
            match parse(input) {
                Ok(p) => panic!("{input:?} should be refused, parsed as {p}"),
                Err(e) => {
                    assert!(
                        e.message.contains(fragment),
                        "{input:?}: {e} lacks {fragment:?}"
                    );
                    assert!(
                        e.offset <= input.len(),
                        "{input:?}: offset {} out of range",
                        e.offset
                    );
                    assert!(
                        e.to_string()
                            .starts_with(&format!("at byte {}: ", e.offset))
                    );
                }
            }
        }
    }

    #[test]
    fn error_offsets_point_at_the_problem() {
        let e = parse("[file:name foo 'x']").err();
        assert_eq!(e.map(|e| e.offset), Some(11));
        let e = parse("[file:name = 'x'] WITHIN 0 SECONDS").err();
        assert_eq!(e.map(|e| e.offset), Some(25));
        let e = parse("[File:name = 'x']").err();
        assert_eq!(e.map(|e| e.offset), Some(1));
        let e = parse("[file:name = 'é'] ?").err();
        assert_eq!(e.map(|e| e.offset), Some(19));
    }

    #[test]
    fn precedence_and_beats_or_beats_followedby() {
        let p = must_parse(
            "[x-a:b = 1] AND [x-a:b = 2] OR [x-a:b = 3] FOLLOWEDBY [x-a:b = 4] AND [x-a:b = 5]",
        );
        let expected = Pattern::FollowedBy(vec![
            Pattern::Or(vec![Pattern::And(vec![obs(1), obs(2)]), obs(3)]),
            Pattern::And(vec![obs(4), obs(5)]),
        ]);
        assert_eq!(p, expected);
        let p = must_parse("[x-a:b = 1] AND ([x-a:b = 2] OR [x-a:b = 3])");
        assert_eq!(
            p,
            Pattern::And(vec![obs(1), Pattern::Or(vec![obs(2), obs(3)])])
        );
        assert_eq!(
            p.to_string(),
            "[x-a:b = 1] AND ([x-a:b = 2] OR [x-a:b = 3])"
        );
        let c = must_parse("[x-a:b = 1 OR x-a:b = 2 AND x-a:b = 3]");
        let expected = Comparison::Or(vec![
            leaf("x-a", "b", 1),
            Comparison::And(vec![leaf("x-a", "b", 2), leaf("x-a", "b", 3)]),
        ]);
        assert_eq!(
            c,
            Pattern::Observation {
                comparison: expected,
                qualifiers: vec![]
            }
        );
    }

    #[test]
    fn qualifiers_bind_to_the_nearest_observation_expression() {
        let p = must_parse("[x-a:b = 1] AND [x-a:b = 2] WITHIN 5 SECONDS");
        let Pattern::And(items) = &p else {
            panic!("not an AND: {p:?}")
        };
        assert_eq!(items.first(), Some(&obs(1)));
        let within = Pattern::Observation {
            comparison: leaf("x-a", "b", 2),
            qualifiers: vec![Qualifier::Within(Seconds::Int(5))],
        };
        assert_eq!(items.get(1), Some(&within));
        let p = must_parse("(([x-a:b = 1] AND [x-a:b = 2])) REPEATS 2 TIMES WITHIN 1.5 SECONDS");
        assert_eq!(
            p,
            Pattern::Grouped {
                inner: Box::new(Pattern::And(vec![obs(1), obs(2)])),
                qualifiers: vec![
                    Qualifier::Repeats(2),
                    Qualifier::Within(Seconds::Float(1.5))
                ],
            }
        );
        assert_eq!(
            p.to_string(),
            "([x-a:b = 1] AND [x-a:b = 2]) REPEATS 2 TIMES WITHIN 1.5 SECONDS"
        );
    }

    #[test]
    fn canonical_rendering_normalises_spelling_and_spacing() {
        let p = must_parse(
            "( [(network-traffic:dst_port IN(443,6443,8443) AND network-traffic:src_packets <> 0) ])",
        );
        assert_eq!(
            p.to_string(),
            "[network-traffic:dst_port IN (443, 6443, 8443) AND network-traffic:src_packets != 0]"
        );
        let p = must_parse(
            r"[file:'name' == 'it\'s' AND file:extensions.'x-ext' NOT = h'FF00' AND file:x.'AND'[*] = +.50]",
        );
        assert_eq!(
            p.to_string(),
            r"[file:name = 'it\'s' AND file:extensions.'x-ext' NOT = h'ff00' AND file:x.'AND'[*] = 0.5]"
        );
        let p = must_parse("[x-a:b = 2.0] WITHIN 3.0 SECONDS");
        assert_eq!(p.to_string(), "[x-a:b = 2.0] WITHIN 3.0 SECONDS");
    }

    #[test]
    fn object_types_are_sorted_and_deduplicated() {
        let p = must_parse(
            "[ipv4-addr:value = '1.2.3.4' OR file:name = 'a'] FOLLOWEDBY ([EXISTS x509-certificate:issuer] AND [file:size > 1]) WITHIN 9 SECONDS",
        );
        assert_eq!(
            p.object_types(),
            vec!["file", "ipv4-addr", "x509-certificate"]
        );
    }

    #[test]
    fn depth_is_limited_not_a_stack_overflow() {
        for bomb in [
            "(".repeat(10_000),
            format!("[{}", "(".repeat(10_000)),
            "([x-a:b = 1] AND ".repeat(10_000),
        ] {
            let e = parse(&bomb).err().map(|e| e.message);
            assert!(
                e.is_some_and(|m| m.contains("nesting deeper than 64")),
                "{bomb:.20}"
            );
        }
        let ok = format!(
            "{}[x-a:b = 1]{}",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(parse(&ok), Ok(obs(1)));
        let too_deep = format!("({ok})");
        assert!(parse(&too_deep).is_err());
        let inside = format!(
            "[{}x-a:b = 1{}]",
            "(".repeat(MAX_DEPTH - 1),
            ")".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(parse(&inside), Ok(obs(1)));
        // Long flat chains are not nesting: one n-ary node, no recursion per operand.
        let long = vec!["[x-a:b = 1]"; 5_000].join(" OR ");
        assert!(matches!(parse(&long), Ok(Pattern::Or(items)) if items.len() == 5_000));
    }

    #[test]
    fn literals_decode() {
        let value = |text: &str| match must_parse(&format!("[x-a:b = {text}]")) {
            Pattern::Observation {
                comparison: Comparison::Compare { value, .. },
                ..
            } => value,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(value("h'00fF'"), Literal::Hex(vec![0, 255]));
        assert_eq!(value("h''"), Literal::Hex(vec![]));
        assert_eq!(value(r"'a\\b\'c'"), Literal::Str(r"a\b'c".into()));
        assert_eq!(value("-9223372036854775808"), Literal::Int(i64::MIN));
        assert_eq!(value("-.25"), Literal::Float(-0.25));
        assert_eq!(value("00.5"), Literal::Float(0.5));
        assert_eq!(value("b'AAA='"), Literal::Binary("AAA=".into()));
        assert_eq!(
            value("t'2016-02-29T00:00:00Z'"),
            Literal::Timestamp(Timestamp("2016-02-29T00:00:00Z".into()))
        );
        assert!(parse("[x-a:b = t'2017-02-29T00:00:00Z']").is_err());
        assert!(parse("[x-a:b = t'2016-01-01T24:00:00Z']").is_err());
        assert!(parse("[x-a:b = t'2016-01-01T00:00:00.Z']").is_err());
        assert!(parse("[x-a:b = 1.]").is_err());
    }

    // ----- property tests -----

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![3 => "[a-z_][a-z0-9_]{0,7}", 1 => "\\PC{0,6}", 1 => Just("AND".to_string()), 1 => Just("true".to_string())]
    }

    fn path() -> impl Strategy<Value = ObjectPath> {
        let step = prop_oneof![
            key().prop_map(PathStep::Key),
            (0u64..1000).prop_map(PathStep::Index),
            Just(PathStep::AnyIndex)
        ];
        (
            "[a-z][a-z0-9-]{0,10}",
            key(),
            proptest::collection::vec(step, 0..3),
        )
            .prop_map(|(object_type, first, rest)| {
                let mut steps = vec![PathStep::Key(first)];
                steps.extend(rest);
                ObjectPath { object_type, steps }
            })
            .prop_filter("no hash paths", |p| {
                !p.steps.contains(&PathStep::Key("hashes".into()))
            })
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (
            0u32..10_000,
            1u32..=12,
            1u32..=28,
            0u32..24,
            0u32..60,
            0u32..=60,
            proptest::option::of("[0-9]{1,4}"),
        )
            .prop_map(|(y, mo, d, h, mi, s, frac)| {
                let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
                Timestamp(format!(
                    "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}Z"
                ))
            })
    }

    fn literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            "\\PC{0,8}".prop_map(Literal::Str),
            any::<i64>().prop_map(Literal::Int),
            any::<f64>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(Literal::Float),
            any::<bool>().prop_map(Literal::Bool),
            proptest::collection::vec(any::<u8>(), 0..5).prop_map(Literal::Hex),
            "([A-Za-z0-9+/]{4}){0,2}([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)"
                .prop_map(Literal::Binary),
            timestamp().prop_map(Literal::Timestamp),
        ]
    }

    fn test_leaf() -> impl Strategy<Value = Comparison> {
        let ops = [
            Operator::Eq,
            Operator::Ne,
            Operator::Lt,
            Operator::Le,
            Operator::Gt,
            Operator::Ge,
        ];
        prop_oneof![
            (
                path(),
                any::<bool>(),
                proptest::sample::select(ops.to_vec()),
                literal()
            )
                .prop_filter("booleans are not ordered", |(_, _, op, v)| {
                    matches!(op, Operator::Eq | Operator::Ne) || !matches!(v, Literal::Bool(_))
                })
                .prop_map(|(path, negated, op, value)| Comparison::Compare {
                    path,
                    negated,
                    op,
                    value
                }),
            (
                path(),
                any::<bool>(),
                proptest::sample::select(vec![
                    Operator::Like,
                    Operator::Matches,
                    Operator::IsSubset,
                    Operator::IsSuperset
                ]),
                "\\PC{0,8}"
            )
                .prop_map(|(path, negated, op, s)| Comparison::Compare {
                    path,
                    negated,
                    op,
                    value: Literal::Str(s)
                }),
            (
                path(),
                any::<bool>(),
                proptest::collection::vec(literal(), 1..4)
            )
                .prop_map(|(path, negated, set)| Comparison::In { path, negated, set }),
            (path(), any::<bool>())
                .prop_map(|(path, negated)| Comparison::Exists { path, negated }),
        ]
    }

    fn comparison() -> impl Strategy<Value = Comparison> {
        test_leaf().prop_recursive(3, 16, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Comparison::And),
                proptest::collection::vec(inner, 2..4).prop_map(Comparison::Or),
            ]
        })
    }

    fn qualifier() -> impl Strategy<Value = Qualifier> {
        prop_oneof![
            (1u64..100_000).prop_map(|n| Qualifier::Within(Seconds::Int(n))),
            (0.001f64..1e9).prop_map(|v| Qualifier::Within(Seconds::Float(v))),
            (1u64..1000).prop_map(Qualifier::Repeats),
            (timestamp(), timestamp()).prop_filter_map("distinct", |(a, b)| {
                match a.key().cmp(&b.key()) {
                    std::cmp::Ordering::Less => Some(Qualifier::StartStop { start: a, stop: b }),
                    std::cmp::Ordering::Greater => Some(Qualifier::StartStop { start: b, stop: a }),
                    std::cmp::Ordering::Equal => None,
                }
            }),
        ]
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        let distinct_kinds = |mut qs: Vec<Qualifier>| {
            let mut seen = Vec::new();
            qs.retain(|q| {
                let kind = std::mem::discriminant(q);
                let fresh = !seen.contains(&kind);
                seen.push(kind);
                fresh
            });
            qs
        };
        let observation = (comparison(), proptest::collection::vec(qualifier(), 0..3)).prop_map(
            move |(comparison, qs)| Pattern::Observation {
                comparison,
                qualifiers: distinct_kinds(qs),
            },
        );
        observation.prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Pattern::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Pattern::Or),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Pattern::FollowedBy),
                (inner, proptest::collection::vec(qualifier(), 1..3)).prop_map(
                    |(inner, qualifiers)| Pattern::Grouped {
                        inner: Box::new(inner),
                        qualifiers
                    }
                ),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn pattern_like_strings_never_panic(s in "[\\[\\]()':. =!<>*,0-9a-zA-Z_\\\\/+-é ]{0,80}") {
            if let Ok(p) = parse(&s) {
                prop_assert_eq!(parse(&p.to_string()), Ok(p));
            }
        }

        #[test]
        fn rendered_asts_parse_back_equal(p in pattern()) {
            let text = p.to_string();
            prop_assert_eq!(parse(&text), Ok(p), "rendered as {}", text);
        }

        #[test]
        fn deleting_a_character_never_panics(which in 0..VALID.len(), at in any::<prop::sample::Index>()) {
            let input = VALID.get(which).copied().unwrap_or_default();
            let mut chars: Vec<char> = input.chars().collect();
            if !chars.is_empty() {
                chars.remove(at.index(chars.len()));
            }
            let mutated: String = chars.into_iter().collect();
            if let Ok(p) = parse(&mutated) {
                prop_assert_eq!(parse(&p.to_string()), Ok(p));
            }
        }
    }
}
