//! SCIM filter expressions (RFC 7644 §3.4.2.2) over a fixed set of typed
//! attributes: `eq ne co sw ew gt ge lt le pr`, `and`, `or`, `not`, and
//! parentheses. Parsing checks attribute names and value types against the
//! list's schema, so a bad filter is refused before anything is read, with a
//! message that names the offset.

use crate::engine::time::{parse_instant, Millis};

/// Longest filter accepted, bytes; nesting deeper than this is refused too.
pub const FILTER_BYTES_MAX: usize = 2048;
const FILTER_DEPTH_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Time,
    Int,
}

/// A value of one attribute of one item.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    Str(&'a str),
    Bool(bool),
    Time(Millis),
    Int(i64),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Bool(bool),
    Time(Millis),
    Int(i64),
    Null,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    Present(usize),
    Cmp(usize, Op, Lit),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
}

/// A filter that failed to parse: where and why.
#[derive(Debug, PartialEq, Eq)]
pub struct FilterError(pub String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((i, Tok::Open));
                i += 1
            }
            b')' => {
                out.push((i, Tok::Close));
                i += 1
            }
            b'"' => {
                let start = i;
                i += 1;
                let mut v = String::new();
                loop {
                    match b.get(i) {
                        None => {
                            return Err(FilterError(format!(
                                "unterminated string starting at offset {start}"
                            )))
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match b.get(i + 1) {
                                Some(&e @ (b'"' | b'\\' | b'/')) => v.push(e as char),
                                _ => {
                                    return Err(FilterError(format!(
                                        "bad escape in string at offset {i}"
                                    )))
                                }
                            }
                            i += 2;
                        }
                        Some(_) => {
                            // Copy one UTF-8 character.
                            let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                            v.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                out.push((start, Tok::Str(v)));
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(b[i], b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b'"')
                {
                    i += 1;
                }
                out.push((start, Tok::Word(s[start..i].to_string())));
            }
        }
    }
    Ok(out)
}

struct Parser<'s> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    schema: &'s [(&'static str, Kind)],
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&(usize, Tok)> {
        self.toks.get(self.pos)
    }
    fn offset(&self) -> usize {
        self.peek().map_or(self.len, |t| t.0)
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some((_, Tok::Word(w))) if w.eq_ignore_ascii_case(k))
    }
    fn err<T>(&self, what: impl std::fmt::Display) -> Result<T, FilterError> {
        Err(FilterError(format!("{what} at offset {}", self.offset())))
    }

    fn or(&mut self) -> Result<Filter, FilterError> {
        let mut f = self.and()?;
        while self.keyword("or") {
            self.pos += 1;
            f = Filter::Or(Box::new(f), Box::new(self.and()?));
        }
        Ok(f)
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut f = self.unary()?;
        while self.keyword("and") {
            self.pos += 1;
            f = Filter::And(Box::new(f), Box::new(self.unary()?));
        }
        Ok(f)
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > FILTER_DEPTH_MAX {
            return self.err("filter nested too deeply");
        }
        let f = if self.keyword("not") {
            self.pos += 1;
            Filter::Not(Box::new(self.unary()?))
        } else if matches!(self.peek(), Some((_, Tok::Open))) {
            self.pos += 1;
            let f = self.or()?;
            if !matches!(self.peek(), Some((_, Tok::Close))) {
                return self.err("expected ')'");
            }
            self.pos += 1;
            f
        } else {
            self.comparison()?
        };
        self.depth -= 1;
        Ok(f)
    }

    fn comparison(&mut self) -> Result<Filter, FilterError> {
        let Some((at, Tok::Word(name))) = self.peek().cloned() else {
            return self.err("expected an attribute name");
        };
        let Some(attr) = self
            .schema
            .iter()
            .position(|(n, _)| n.eq_ignore_ascii_case(&name))
        else {
            let names: Vec<&str> = self.schema.iter().map(|(n, _)| *n).collect();
            return Err(FilterError(format!(
                "unknown attribute '{name}' at offset {at} (filterable: {})",
                names.join(", ")
            )));
        };
        let kind = self.schema[attr].1;
        self.pos += 1;
        let Some((op_at, Tok::Word(op))) = self.peek().cloned() else {
            return self.err("expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr)");
        };
        let op = match op.to_ascii_lowercase().as_str() {
            "pr" => {
                self.pos += 1;
                return Ok(Filter::Present(attr));
            }
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            other => {
                return Err(FilterError(format!(
                    "unknown operator '{other}' at offset {op_at}"
                )))
            }
        };
        self.pos += 1;
        let Some((v_at, tok)) = self.peek().cloned() else {
            return self.err("expected a value");
        };
        self.pos += 1;
        let bad = |why: &str| Err(FilterError(format!("{why} at offset {v_at}")));
        let lit = match (kind, tok) {
            (_, Tok::Word(w)) if w == "null" => Lit::Null,
            (Kind::Str, Tok::Str(s)) => Lit::Str(s),
            (Kind::Time, Tok::Str(s)) => match parse_instant(&s) {
                Some(t) => Lit::Time(t),
                None => return bad("expected an ISO 8601 date-time string"),
            },
            (Kind::Bool, Tok::Word(w)) if w == "true" || w == "false" => Lit::Bool(w == "true"),
            (Kind::Int, Tok::Word(w)) => match w.parse() {
                Ok(n) => Lit::Int(n),
                Err(_) => return bad("expected a number"),
            },
            (Kind::Str | Kind::Time, _) => return bad("expected a quoted string"),
            (Kind::Bool, _) => return bad("expected true or false"),
            (Kind::Int, _) => return bad("expected a number"),
        };
        let textual = matches!(op, Op::Co | Op::Sw | Op::Ew);
        if textual && kind != Kind::Str {
            return bad("co, sw and ew apply to string attributes only");
        }
        if kind == Kind::Bool && !matches!(op, Op::Eq | Op::Ne) {
            return bad("a boolean attribute compares with eq or ne only");
        }
        if lit == Lit::Null && !matches!(op, Op::Eq | Op::Ne) {
            return bad("null compares with eq or ne only");
        }
        Ok(Filter::Cmp(attr, op, lit))
    }
}

/// Parses `s` against `schema` (attribute name and type, in the order
/// [`Filter::matches`] is given values).
pub fn parse(s: &str, schema: &[(&'static str, Kind)]) -> Result<Filter, FilterError> {
    if s.len() > FILTER_BYTES_MAX {
        return Err(FilterError(format!(
            "filter longer than {FILTER_BYTES_MAX} bytes"
        )));
    }
    let toks = lex(s)?;
    if toks.is_empty() {
        return Err(FilterError("empty filter".into()));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        len: s.len(),
        schema,
        depth: 0,
    };
    let f = p.or()?;
    if p.pos < p.toks.len() {
        return p.err("unexpected token");
    }
    Ok(f)
}

impl Filter {
    /// Whether an item whose attribute values are `vals` (schema order) matches.
    pub fn matches(&self, vals: &[Val<'_>]) -> bool {
        match self {
            Filter::Present(a) => !matches!(vals.get(*a), None | Some(Val::Null)),
            Filter::And(a, b) => a.matches(vals) && b.matches(vals),
            Filter::Or(a, b) => a.matches(vals) || b.matches(vals),
            Filter::Not(f) => !f.matches(vals),
            Filter::Cmp(a, op, lit) => {
                let v = vals.get(*a).cloned().unwrap_or(Val::Null);
                compare(&v, *op, lit)
            }
        }
    }
}

fn compare(v: &Val<'_>, op: Op, lit: &Lit) -> bool {
    use std::cmp::Ordering::*;
    let ord = match (v, lit) {
        (Val::Null, Lit::Null) => Some(Equal),
        (Val::Null, _) | (_, Lit::Null) => None,
        (Val::Str(a), Lit::Str(b)) => {
            // SCIM compares strings case-insensitively unless the attribute is
            // case-exact; subjects and types are compared as the client sends them.
            match op {
                Op::Co => return a.contains(b.as_str()),
                Op::Sw => return a.starts_with(b.as_str()),
                Op::Ew => return a.ends_with(b.as_str()),
                _ => Some((*a).cmp(b.as_str())),
            }
        }
        (Val::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Val::Time(a), Lit::Time(b)) => Some(a.cmp(b)),
        (Val::Int(a), Lit::Int(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match (op, ord) {
        (Op::Eq, Some(o)) => o == Equal,
        (Op::Ne, Some(o)) => o != Equal,
        (Op::Ne, None) => true,
        (Op::Gt, Some(o)) => o == Greater,
        (Op::Ge, Some(o)) => o != Less,
        (Op::Lt, Some(o)) => o == Less,
        (Op::Le, Some(o)) => o != Greater,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &[(&str, Kind)] = &[
        ("subject", Kind::Str),
        ("type", Kind::Str),
        ("excess", Kind::Bool),
        ("created", Kind::Time),
    ];

    fn m(f: &str, subject: &str, ty: &str, excess: bool, created: &str) -> bool {
        let vals = [
            Val::Str(subject),
            Val::Str(ty),
            Val::Bool(excess),
            Val::Time(parse_instant(created).unwrap()),
        ];
        parse(f, SCHEMA).unwrap().matches(&vals)
    }

    #[test]
    fn operators_and_logic() {
        let t = "2024-01-02T00:00:00Z";
        assert!(m(
            r#"subject eq "qlik\\kalle""#,
            "qlik\\kalle",
            "x",
            false,
            t
        ));
        assert!(m(
            r#"subject sw "qlik" and not (type eq "analyzer")"#,
            "qlik\\a",
            "professional",
            false,
            t
        ));
        assert!(!m(
            r#"subject ew "b" or excess eq true"#,
            "a",
            "p",
            false,
            t
        ));
        assert!(m(
            r#"created gt "2024-01-01T00:00:00Z" and created le "2024-01-02T00:00:00Z""#,
            "a",
            "p",
            false,
            t
        ));
        assert!(m("excess pr", "a", "p", false, t));
        assert!(m(r#"SUBJECT CO "al""#, "kalle", "p", false, t));
        assert!(m(
            r#"(type eq "a" or type eq "p") and excess ne true"#,
            "s",
            "p",
            false,
            t
        ));
    }

    proptest::proptest! {
        /// Any text, however broken, parses or is refused: never a panic.
        #[test]
        fn any_text_parses_or_is_refused(f in "\\PC{0,80}") {
            let _ = parse(&f, SCHEMA);
        }

        /// Text built from the grammar's own pieces, shuffled.
        #[test]
        fn grammar_pieces_parse_or_are_refused(parts in proptest::collection::vec(
            proptest::sample::select(vec!["subject", "excess", "created", "eq", "co", "pr", "and", "or", "not",
                "(", ")", "\"a\"", "\"2024-01-01T00:00:00Z\"", "true", "null", "\"\\\"", "é"]), 0..16)) {
            let f = parts.join(" ");
            if let Ok(filter) = parse(&f, SCHEMA) {
                let vals = [Val::Str("a"), Val::Str("t"), Val::Bool(true), Val::Time(0)];
                let _ = filter.matches(&vals);
            }
        }
    }

    #[test]
    fn errors_say_where() {
        let e = parse(r#"subject eq "a" and nope eq "b""#, SCHEMA).unwrap_err();
        assert!(
            e.0.contains("unknown attribute 'nope' at offset 19"),
            "{}",
            e.0
        );
        let e = parse(r#"subject zz "a""#, SCHEMA).unwrap_err();
        assert!(e.0.contains("offset 8"), "{}", e.0);
        assert!(parse(r#"(subject eq "a""#, SCHEMA).is_err());
        assert!(parse(r#"subject eq "a"#, SCHEMA).is_err());
        assert!(parse(r#"excess co "t""#, SCHEMA).is_err());
        assert!(parse(r#"created gt "yesterday""#, SCHEMA).is_err());
        assert!(parse(r#"subject eq "a" )"#, SCHEMA).is_err());
        assert!(parse(&"(".repeat(100), SCHEMA).is_err());
        assert!(parse("", SCHEMA).is_err());
    }
}
