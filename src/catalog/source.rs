//! The catalog's bytes, read by two parsers in turn.
//!
//! serde_json's streaming parser reads the document's skeleton (tenants,
//! products, keys, vendor sections) through [`SourceRead`], a byte at a
//! time. The licenses of a streamed `licenses` array, nearly all of a large
//! catalog, are taken out of the buffer whole by [`Source::next_license`]
//! and parsed as slices: serde_json scans a slice for a string's end many
//! bytes at a time where its reader path takes them one by one, and a
//! license's path (`features[2].name`) is tracked only when it fails to
//! parse. A generated million-license catalog spent a fifth of its load in
//! the byte-at-a-time reader and a tenth tracking paths.

use std::cell::RefCell;
use std::io::{self, Read};

use super::loader::LicenseParts;

/// Catalog bytes read from the input per read, bytes: the file streams
/// through one buffer instead of sitting whole in memory beside the engine
/// it fills (a generated million-license catalog is about 500 MB).
pub const CATALOG_READ_BYTES: usize = 1024 * 1024;

/// The largest license object the licenses reader holds whole, bytes: the
/// buffer grows to hold a license larger than [`CATALOG_READ_BYTES`] (one
/// with many devices) up to this size; a larger one is refused.
pub const CATALOG_LICENSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The input and its buffer. `buf[start..end]` holds the bytes read and
/// not yet consumed by either parser.
pub(super) struct Source<'i> {
    input: &'i mut dyn Read,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    /// Where `buf[start]` is in the document, for error messages: its line
    /// (from 1) and the bytes before it on that line, as serde_json counts.
    line: usize,
    column: usize,
    /// The same place as serde_json counts it: only the bytes it read.
    seen: (usize, usize),
    /// `seen` and the document's place where serde_json last resumed after
    /// bytes consumed here: its errors' places are moved by the difference.
    resumed: Option<((usize, usize), (usize, usize))>,
}

/// A license that failed to parse: the path inside it (`.` for the
/// license itself, `features[0].code`) and the message, with the error's
/// place in the whole document.
pub(super) struct LicenseFailed {
    pub(super) inner_path: String,
    pub(super) message: String,
}

impl<'i> Source<'i> {
    pub(super) fn new(input: &'i mut dyn Read) -> Self {
        Source {
            input,
            buf: vec![0; CATALOG_READ_BYTES],
            start: 0,
            end: 0,
            eof: false,
            line: 1,
            column: 0,
            seen: (1, 0),
            resumed: None,
        }
    }

    /// Reads more input after the unconsumed bytes, moving them to the
    /// buffer's front and growing it when they fill it. False at the end
    /// of the input, or when the buffer is at its limit and full.
    fn fill(&mut self) -> io::Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= CATALOG_LICENSE_BYTES_MAX {
                return Ok(false);
            }
            let grown = (self.buf.len() * 2).min(CATALOG_LICENSE_BYTES_MAX);
            self.buf.resize(grown, 0);
        }
        // Until the buffer is full or the input ends: a license cut by the
        // buffer's end is parsed again once per fill, so a short read (a
        // pipe) must not make a large one parse again per read.
        let before = self.end;
        while self.end < self.buf.len() {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end > before)
    }

    /// Moves past `n` bytes: serde_json's (`seen`) or not.
    fn step(&mut self, n: usize, seen: bool) {
        let taken = &self.buf[self.start..self.start + n];
        let mut at = (self.line, self.column);
        advance(&mut at, taken);
        (self.line, self.column) = at;
        if seen {
            advance(&mut self.seen, taken);
        } else {
            self.resumed = Some((self.seen, at));
        }
        self.start += n;
    }

    /// Consumes `n` bytes serde_json does not see.
    fn consume(&mut self, n: usize) {
        self.step(n, false);
    }

    /// `e`'s message, placed in the whole document: serde_json counted
    /// only the bytes it read.
    pub(super) fn placed(&self, e: &serde_json::Error) -> String {
        match self.resumed {
            Some((seen, at)) => relocated(e, seen, at),
            None => e.to_string(),
        }
    }

    /// The next byte that is not JSON whitespace, not consumed; None at the
    /// end of the input.
    fn peek_token(&mut self) -> io::Result<Option<u8>> {
        loop {
            while self.start < self.end {
                let b = self.buf[self.start];
                if !matches!(b, b' ' | b'\n' | b'\t' | b'\r') {
                    return Ok(Some(b));
                }
                self.consume(1);
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// The document position of the next unconsumed byte.
    fn position(&self) -> (usize, usize) {
        (self.line, self.column)
    }

    /// The place of the next unconsumed byte as serde_json reports a byte
    /// it peeked at: its column counts it.
    fn peeked(&self) -> (usize, usize) {
        (self.line, self.column + 1)
    }

    /// The next license of a `licenses` array whose `[` serde_json has
    /// just read (`first`: none taken yet). None at the `]` (or the end of
    /// the input), which is left for serde_json to read.
    pub(super) fn next_license(
        &mut self,
        first: bool,
    ) -> Result<Option<LicenseParts>, LicenseFailed> {
        let io_failed = |e: io::Error| LicenseFailed {
            inner_path: ".".into(),
            message: format!("reading the catalog: {e}"),
        };
        match self.peek_token().map_err(io_failed)? {
            None | Some(b']') => return Ok(None),
            Some(b',') if !first => {
                self.consume(1);
                if self.peek_token().map_err(io_failed)? == Some(b']') {
                    return Err(self.failed_at(self.peeked(), "trailing comma"));
                }
            }
            Some(_) if !first => return Err(self.failed_at(self.peeked(), "expected `,` or `]`")),
            Some(_) => {}
        }
        loop {
            let text = &self.buf[self.start..self.end];
            let mut stream = serde_json::Deserializer::from_slice(text).into_iter::<LicenseParts>();
            match stream.next() {
                Some(Ok(parts)) => {
                    let n = stream.byte_offset();
                    self.consume(n);
                    return Ok(Some(parts));
                }
                // The license runs past the bytes read: read more, then
                // parse it again from its start (once per fill of the
                // buffer, which grows when it is full).
                Some(Err(e)) if e.is_eof() => {
                    if !self.fill().map_err(io_failed)? {
                        return Err(self.cut_short(e));
                    }
                }
                None => {
                    if !self.fill().map_err(io_failed)? {
                        return Err(self.failed_at(self.position(), "EOF while parsing a value"));
                    }
                }
                Some(Err(_)) => return Err(self.failed_with_path()),
            }
        }
    }

    /// Consumes one JSON value without parsing it (the catalog's `tenants`,
    /// when only its `faults` are wanted). Strings and nesting are followed
    /// to find the value's end; nothing else is checked (a first start
    /// loads, and so checks, the whole document; later starts read only
    /// the faults). A value the input ends inside is left consumed, for
    /// serde_json to find the end.
    pub(super) fn skip_value(&mut self) -> io::Result<()> {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        if self.peek_token()?.is_none() {
            return Ok(());
        }
        loop {
            let text = &self.buf[self.start..self.end];
            let mut done = None;
            for (i, &b) in text.iter().enumerate() {
                if in_string {
                    match (escaped, b) {
                        (true, _) => escaped = false,
                        (false, b'\\') => escaped = true,
                        (false, b'"') => {
                            in_string = false;
                            if depth == 0 {
                                done = Some(i + 1);
                                break;
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 1 => depth -= 1,
                    b'}' | b']' if depth == 1 => {
                        done = Some(i + 1);
                        break;
                    }
                    // The end of a scalar (or a stray close, for serde_json
                    // to refuse).
                    b',' | b'}' | b']' | b' ' | b'\n' | b'\t' | b'\r' if depth == 0 => {
                        done = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let n = done.unwrap_or(text.len());
            self.consume(n);
            if done.is_some() || !self.fill()? {
                return Ok(());
            }
        }
    }

    /// A license the input ended inside, or one larger than the buffer's
    /// limit.
    fn cut_short(&self, e: serde_json::Error) -> LicenseFailed {
        if self.eof {
            return LicenseFailed {
                inner_path: ".".into(),
                message: relocated(&e, (1, 0), self.position()),
            };
        }
        self.failed_at(
            self.position(),
            &format!("a license object larger than {CATALOG_LICENSE_BYTES_MAX} bytes"),
        )
    }

    /// Parses the failed license again, tracking its path this time.
    fn failed_with_path(&self) -> LicenseFailed {
        let text = &self.buf[self.start..self.end];
        let mut de = serde_json::Deserializer::from_slice(text);
        match serde_path_to_error::deserialize::<_, LicenseParts>(&mut de) {
            Err(e) => LicenseFailed {
                inner_path: e.path().to_string(),
                message: relocated(e.inner(), (1, 0), self.position()),
            },
            // Not reached: the same bytes failed a moment ago.
            Ok(_) => self.failed_at(self.position(), "a license object that does not parse"),
        }
    }

    fn failed_at(&self, (line, column): (usize, usize), message: &str) -> LicenseFailed {
        LicenseFailed {
            inner_path: ".".into(),
            message: format!("{message} at line {line} column {column}"),
        }
    }
}

/// `e`'s message with its place, which serde_json counted from `from`,
/// moved to the same place counted from `to` (a license parsed as a slice
/// counts from (1, 0), its start in the document).
fn relocated(e: &serde_json::Error, from: (usize, usize), to: (usize, usize)) -> String {
    if e.line() == 0 {
        return e.to_string();
    }
    let (line, column) = if e.line() == from.0 {
        (to.0, to.1 + e.column().saturating_sub(from.1))
    } else {
        (to.0 + e.line().saturating_sub(from.0), e.column())
    };
    format!("{} at line {line} column {column}", without_place(e))
}

/// Moves a place (line from 1, bytes before it on its line) past `bytes`.
fn advance(at: &mut (usize, usize), bytes: &[u8]) {
    // Plain counts: the compiler vectorises them.
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(last) => {
            at.0 += bytes.iter().filter(|&&b| b == b'\n').count();
            at.1 = bytes.len() - last - 1;
        }
        None => at.1 += bytes.len(),
    }
}

/// A serde_json error's message without the " at line L column C" it ends
/// with.
fn without_place(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(m) => m.to_string(),
        None => full,
    }
}

/// serde_json's streaming parser's view of a [`Source`]: it reads a byte
/// at a time and never ahead of the byte it peeks, so after it reads a
/// `licenses` array's `[` the next license is still in the buffer for
/// [`Source::next_license`].
pub(super) struct SourceRead<'s, 'i>(pub(super) &'s RefCell<Source<'i>>);

impl Read for SourceRead<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        if s.start == s.end && !s.fill()? {
            return Ok(0);
        }
        let n = out.len().min(s.end - s.start);
        out[..n].copy_from_slice(&s.buf[s.start..s.start + n]);
        s.step(n, true);
        Ok(n)
    }
}
