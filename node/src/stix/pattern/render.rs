//! A pattern rendered back to canonical text (`Display` for the AST).

use std::fmt;

use super::*;

/// Writes `items` separated by `sep`, parenthesising those for which `paren` holds.
fn join<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    items: &[T],
    sep: &str,
    paren: fn(&T) -> bool,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        let sep = if i > 0 { sep } else { "" };
        if paren(item) {
            write!(f, "{sep}({item})")?
        } else {
            write!(f, "{sep}{item}")?
        }
    }
    Ok(())
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('\'')?;
    for c in s.chars() {
        if c == '\'' || c == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(c)?;
    }
    f.write_char('\'')
}

fn write_float(f: &mut fmt::Formatter<'_>, v: f64) -> fmt::Result {
    let text = v.to_string();
    if text.contains('.') {
        f.write_str(&text)
    } else {
        write!(f, "{text}.0")
    }
}

/// Renders canonical text: single spaces, minimal parentheses, `=`/`!=` spellings, property
/// names quoted only when they must be. `parse` of the result gives back an equal AST.
impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, qualifiers) = match self {
            Pattern::Observation {
                comparison,
                qualifiers,
            } => (format!("[{comparison}]"), qualifiers),
            Pattern::Grouped { inner, qualifiers } => (format!("({inner})"), qualifiers),
            Pattern::And(v) => {
                return join(f, v, " AND ", |p| {
                    !matches!(p, Pattern::Observation { .. } | Pattern::Grouped { .. })
                });
            }
            Pattern::Or(v) => {
                return join(f, v, " OR ", |p| {
                    matches!(p, Pattern::Or(_) | Pattern::FollowedBy(_))
                });
            }
            Pattern::FollowedBy(v) => {
                return join(f, v, " FOLLOWEDBY ", |p| {
                    matches!(p, Pattern::FollowedBy(_))
                });
            }
        };
        f.write_str(&head)?;
        qualifiers.iter().try_for_each(|q| write!(f, " {q}"))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let not = |negated: &bool| if *negated { "NOT " } else { "" };
        match self {
            Comparison::And(v) => join(f, v, " AND ", |c| {
                matches!(c, Comparison::And(_) | Comparison::Or(_))
            }),
            Comparison::Or(v) => join(f, v, " OR ", |c| matches!(c, Comparison::Or(_))),
            Comparison::Compare {
                path,
                negated,
                op,
                value,
            } => {
                write!(f, "{path} {}{} {value}", not(negated), op.as_str())
            }
            Comparison::In { path, negated, set } => {
                write!(f, "{path} {}IN (", not(negated))?;
                join(f, set, ", ", |_| false)?;
                f.write_char(')')
            }
            Comparison::Exists { path, negated } => write!(f, "{}EXISTS {path}", not(negated)),
        }
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.object_type)?;
        for (i, step) in self.steps.iter().enumerate() {
            match step {
                PathStep::Key(key) => {
                    f.write_str(if i > 0 { "." } else { "" })?;
                    let bare = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !KEYWORDS.iter().chain(&["true", "false"]).any(|k| k == key);
                    if bare {
                        f.write_str(key)?
                    } else {
                        write_quoted(f, key)?
                    }
                }
                PathStep::Index(n) => write!(f, "[{n}]")?,
                PathStep::AnyIndex => f.write_str("[*]")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write_quoted(f, s),
            Literal::Int(n) => write!(f, "{n}"),
            Literal::Float(v) => write_float(f, *v),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Hex(bytes) => {
                f.write_str("h'")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
                f.write_char('\'')
            }
            Literal::Binary(b64) => write!(f, "b'{b64}'"),
            Literal::Timestamp(t) => write!(f, "{t}"),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t'{}'", self.0)
    }
}

impl fmt::Display for Qualifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Qualifier::Within(Seconds::Int(n)) => write!(f, "WITHIN {n} SECONDS"),
            Qualifier::Within(Seconds::Float(v)) => {
                f.write_str("WITHIN ")?;
                write_float(f, *v)?;
                f.write_str(" SECONDS")
            }
            Qualifier::Repeats(n) => write!(f, "REPEATS {n} TIMES"),
            Qualifier::StartStop { start, stop } => write!(f, "START {start} STOP {stop}"),
        }
    }
}
