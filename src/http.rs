//! HTTP plumbing shared by every surface: body reading with a limit, query
//! parsing, JSON responses.

use std::borrow::Cow;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

pub type Resp = Response<Body>;

/// An answer's body: whole (every answer but streams), or a stream of
/// chunks from a channel (Server-Sent Events), which ends when the sender
/// is dropped. A stream may hold a value for as long as it runs (the server
/// keeps its connection counted as busy with it).
pub enum Body {
    Full(Full<Bytes>),
    Stream {
        rx: tokio::sync::mpsc::Receiver<Bytes>,
        hold: Option<Box<dyn std::any::Any + Send + Sync>>,
    },
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Full::new(bytes.into()))
    }

    /// Keeps `h` alive until a streaming body ends (nothing for a whole one).
    pub fn hold(&mut self, h: Box<dyn std::any::Any + Send + Sync>) {
        if let Body::Stream { hold, .. } = self {
            *hold = Some(h);
        }
    }

    pub fn is_stream(&self) -> bool {
        matches!(self, Body::Stream { .. })
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::full(Bytes::new())
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Full(f) => std::pin::Pin::new(f).poll_frame(cx),
            Body::Stream { rx, .. } => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(hyper::body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(f) => f.is_end_stream(),
            Body::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(f) => f.size_hint(),
            Body::Stream { .. } => hyper::body::SizeHint::default(),
        }
    }
}

/// A request the server refuses before a surface reads it; each surface
/// answers it in its own error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// HTTP/1.1 without a `Host` header (RFC 9112 §3.2).
    MissingHost,
    /// More than one `Host` header.
    DuplicateHost,
    /// The path or query holds bytes that are not UTF-8 (raw or
    /// percent-encoded).
    TargetNotUtf8,
    /// `X-Tally-Min-Seq` is not a stream sequence.
    BadMinSeq,
}

/// The header a client sends to read its own writes on any cluster node:
/// the node answers once it has applied this stream sequence.
pub const MIN_SEQ_HEADER: &str = "x-tally-min-seq";
/// The header of every cluster node's answer: the stream sequence it had
/// applied.
pub const SEQ_HEADER: &str = "x-tally-seq";

/// The `X-Tally-Min-Seq` of a request (None: absent or not a number).
pub fn min_seq<B>(req: &Request<B>) -> Option<u64> {
    req.headers()
        .get(MIN_SEQ_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Malformed {
    pub fn message(self) -> &'static str {
        match self {
            Malformed::MissingHost => "An HTTP/1.1 request needs a Host header.",
            Malformed::DuplicateHost => "A request may carry one Host header only.",
            Malformed::TargetNotUtf8 => "The path and query must be UTF-8.",
            Malformed::BadMinSeq => {
                "X-Tally-Min-Seq must be a stream sequence (an unsigned integer)."
            }
        }
    }

    /// What is wrong with `req`'s framing, if anything.
    pub fn of<B>(req: &Request<B>) -> Option<Malformed> {
        let hosts = req.headers().get_all(hyper::header::HOST).iter().count();
        if hosts > 1 {
            return Some(Malformed::DuplicateHost);
        }
        if hosts == 0 && req.version() == hyper::Version::HTTP_11 {
            return Some(Malformed::MissingHost);
        }
        // hyper's URIs are ASCII: only percent-escapes can decode to bytes
        // that are not UTF-8.
        let utf8 = |s: &str| {
            !s.contains('%')
                || percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .is_ok()
        };
        let uri = req.uri();
        if !utf8(uri.path()) || !uri.query().is_none_or(utf8) {
            return Some(Malformed::TargetNotUtf8);
        }
        if req.headers().contains_key(MIN_SEQ_HEADER) && min_seq(req).is_none() {
            return Some(Malformed::BadMinSeq);
        }
        None
    }
}

pub const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

pub fn json_value(status: StatusCode, v: &impl serde::Serialize) -> Resp {
    json(
        status,
        serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec()),
    )
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge(usize),
    /// The body did not arrive within the request time limit.
    TimedOut,
    Read,
}

impl BodyError {
    /// The status and sentence that refuse this body, for each surface to put
    /// in its own error shape.
    pub fn status_and_message(&self) -> (StatusCode, String) {
        match self {
            BodyError::TooLarge(n) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Body over {n} bytes."),
            ),
            BodyError::TimedOut => (
                StatusCode::REQUEST_TIMEOUT,
                "The body did not arrive in time.".into(),
            ),
            BodyError::Read => (
                StatusCode::BAD_REQUEST,
                "The body could not be read.".into(),
            ),
        }
    }
}

/// Reads the whole body, refusing more than `max` bytes or a body that has
/// not arrived within `timeout`. Body reading is the only wait a request
/// makes after its head (handlers do no I/O), so this is where the request
/// time limit is enforced; requests without a body never touch a timer.
pub async fn read_body(
    req: Request<Incoming>,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    read_incoming(req.into_body(), max, timeout).await
}

tokio::task_local! {
    /// The body a request's handler read, for the request journal (only
    /// inside [`with_body_tap`]).
    static BODY_TAP: std::cell::RefCell<Option<Bytes>>;
}

/// Runs `f` (a request's handling) and returns, with its output, the body
/// the handler read (if it read one).
pub async fn with_body_tap<F: std::future::Future>(f: F) -> (F::Output, Option<Bytes>) {
    let scoped = BODY_TAP.scope(std::cell::RefCell::new(None), f);
    tokio::pin!(scoped);
    let out = (&mut scoped).await;
    let body = scoped
        .as_mut()
        .take_value()
        .and_then(std::cell::RefCell::into_inner);
    (out, body)
}

/// [`read_body`] for a body taken from its request (whose head the caller keeps).
pub async fn read_incoming(
    body: Incoming,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    // A declared length over the limit is refused before the body is polled,
    // so that a client that sent `Expect: 100-continue` is not invited to
    // send it.
    if hyper::body::Body::size_hint(&body).lower() > max as u64 {
        return Err(BodyError::TooLarge(max));
    }
    // A small body usually arrives with its head: take it without arming
    // the timer (one poll; a body still on its way is then timed).
    let mut collect = std::pin::pin!(Limited::new(body, max).collect());
    let first = futures_util::FutureExt::now_or_never(&mut collect);
    let done = match first {
        Some(r) => Ok(r),
        None => tokio::time::timeout(timeout, collect).await,
    };
    match done {
        Ok(Ok(c)) => {
            let bytes = c.to_bytes();
            // The request journal's copy (a reference count), when it taps.
            let _ = BODY_TAP.try_with(|t| *t.borrow_mut() = Some(bytes.clone()));
            Ok(bytes)
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge(max)),
        Ok(Err(_)) => Err(BodyError::Read),
        Err(_) => Err(BodyError::TimedOut),
    }
}

// Why a request was answered with an error before its surface handled it:
// the message of [`fault_words`].

/// A fault rule of the harness answered.
pub const FAULT_INJECTED: &str = "Injected by a fault rule of this Tally server (its harness)";
/// An emulated vendor rate limit refused.
pub const RATE_LIMITED: &str =
    "Too many requests: this Tally server emulates the vendor's rate limit";
/// A cluster node has not applied the request's `X-Tally-Min-Seq`.
pub const NOT_CAUGHT_UP: &str = "This cluster node has not applied the stream sequence X-Tally-Min-Seq names yet: retry, or ask another node";
/// A state restore failed half-way (the gate is broken).
pub const STATE_BROKEN: &str =
    "A state restore failed half-way: this server answers nothing until it is restarted";

/// An answer made before a surface handled the request (an injected fault,
/// a rate limit, a node not caught up), for the surfaces to write in their
/// own shape: the status's code in snake case, and `why` as its message.
pub fn fault_words(status: StatusCode, why: &'static str) -> (&'static str, &'static str) {
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 => "request_timeout",
        409 => "conflict",
        429 => "too_many_requests",
        500 => "internal_server_error",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        _ => "injected_fault",
    };
    (code, why)
}

/// Query pairs allocated for up front (a LicenseSpring check sends 4 or 5).
const QUERY_PAIRS_EXPECTED: usize = 8;

/// Query parameters, percent-decoded, in order.
pub struct Query<'a>(Vec<(Cow<'a, str>, Cow<'a, str>)>);

impl<'a> Query<'a> {
    pub fn parse(q: Option<&'a str>) -> Self {
        let Some(q) = q else {
            return Query(Vec::new());
        };
        let mut pairs = Vec::with_capacity(QUERY_PAIRS_EXPECTED);
        pairs.extend(form_urlencoded::parse(q.as_bytes()));
        Query(pairs)
    }
    /// First value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

/// A path segment, percent-decoded as a path (`+` and `&` are themselves;
/// invalid UTF-8 becomes U+FFFD). Ids in paths may hold reserved characters.
pub fn percent_decode_segment(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

/// The request's `Host` header (for links and URLs that point back here).
pub fn host_of<B>(req: &Request<B>) -> String {
    req.headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string()
}
