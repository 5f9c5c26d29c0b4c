//! Per-connection time limits, enforced on the socket itself: a client that
//! misbehaves loses its own connection and never holds a slot others need.
//!
//! hyper bounds what a connection may buffer (its read-ahead of pipelined
//! requests and its write buffer, `max_buf_size`) but not how long the
//! connection may sit on a slot. [`Guarded`] wraps the TCP stream and fails
//! its reads and writes (hyper then closes the connection) when:
//!
//! - **a head is slow**: the first byte of a request arrived more than
//!   `head` ago and the request has not started (slowloris, trickled heads);
//! - **the connection is idle**: no request in progress and no byte read or
//!   written for `idle` (a keep-alive connection nobody uses);
//! - **a write stalls**: a response could not be written for `write` (a client
//!   that pipelines requests and never reads the answers);
//! - **the server is full and the connection is evictable**: when every
//!   slot is taken the acceptor raises [`Pressure`], and connections that
//!   have been idle, stalled or reading a head for [`EVICTABLE_AFTER_MS`]
//!   close at once, so a well-behaved client waiting for a slot gets one.
//!
//! Bodies have their own limit (`http::read_body`), and a handler's own work
//! is not timed here: only waiting on the client is.
//!
//! One more service to the surfaces: raw bytes above 0x7F in a request line
//! are percent-encoded on their way to hyper, whose URI parser would refuse
//! them with an empty 400; the server then refuses the request in the
//! surface's own error shape (`http::Malformed::TargetNotUtf8`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::futures::OwnedNotified;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How long a connection must have been idle, stalled or reading a head
/// before it is closed to free a slot for a waiting client.
pub const EVICTABLE_AFTER_MS: u64 = 1_000;

/// The time limits of one connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub head: Duration,
    pub idle: Duration,
    pub write: Duration,
}

/// What the service tells the socket about requests; shared by the two.
#[derive(Default)]
pub struct ConnState {
    /// Requests whose handler is running (0 or 1: HTTP/1.1 answers in order).
    in_request: AtomicU32,
    /// Requests started on this connection: a change means a head was read.
    started: AtomicU64,
}

impl ConnState {
    /// A request's head was read and its handler starts.
    pub fn begin(&self) {
        self.started.fetch_add(1, Ordering::AcqRel);
        self.in_request.fetch_add(1, Ordering::AcqRel);
    }
    /// The handler returned its response (writing it is timed as writes).
    pub fn end(&self) {
        self.in_request.fetch_sub(1, Ordering::AcqRel);
    }
    fn idle(&self) -> bool {
        self.in_request.load(Ordering::Acquire) == 0
    }
}

/// Raised by the acceptor when every connection slot is taken.
#[derive(Default)]
pub struct Pressure {
    notify: Arc<Notify>,
}

impl Pressure {
    /// Wakes every connection waiting on its client, so the evictable ones
    /// close.
    pub fn raise(&self) {
        self.notify.notify_waiters();
    }
}

/// A stream with the limits above.
pub struct Guarded<S> {
    io: S,
    state: Arc<ConnState>,
    limits: ConnLimits,
    /// Last byte read or written.
    active_at: Instant,
    /// When the first byte of the request being read arrived, and the
    /// request count then (a change means the head was read).
    head: Option<(Instant, u64)>,
    /// Since when writes have made no progress.
    stalled_since: Option<Instant>,
    read_timer: Option<Pin<Box<Sleep>>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    pressure: Arc<Notify>,
    /// Registered while the connection waits on its client.
    evict: Option<Pin<Box<OwnedNotified>>>,
    /// Inside a request line (from a head's first byte to its first `\n`).
    in_request_line: bool,
    /// Rewritten bytes that did not fit the caller's buffer yet.
    pending: Vec<u8>,
}

impl<S> Guarded<S> {
    pub fn new(io: S, state: Arc<ConnState>, limits: ConnLimits, pressure: &Pressure) -> Self {
        Guarded {
            io,
            state,
            limits,
            active_at: Instant::now(),
            head: None,
            stalled_since: None,
            read_timer: None,
            write_timer: None,
            pressure: pressure.notify.clone(),
            evict: None,
            in_request_line: false,
            pending: Vec::new(),
        }
    }

    /// Percent-encodes bytes above 0x7F in the request line among the
    /// `from..` bytes just read into `buf` (see the module docs).
    fn encode_request_line(&mut self, buf: &mut ReadBuf<'_>, from: usize) {
        let fresh = &buf.filled()[from..];
        let line_end = fresh.iter().position(|&b| b == b'\n');
        let line = &fresh[..line_end.unwrap_or(fresh.len())];
        if line_end.is_some() {
            self.in_request_line = false;
        }
        if line.is_ascii() {
            return;
        }
        let mut out = Vec::with_capacity(fresh.len() + 2 * line.len());
        for &b in line {
            if b.is_ascii() {
                out.push(b);
            } else {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            }
        }
        out.extend_from_slice(&fresh[line.len()..]);
        buf.set_filled(from);
        let fit = out.len().min(buf.remaining());
        buf.put_slice(&out[..fit]);
        self.pending.extend_from_slice(&out[fit..]);
    }

    /// The head being read, if any (forgotten once its request started).
    fn head_started(&mut self) -> Option<Instant> {
        let started = self.state.started.load(Ordering::Acquire);
        match self.head {
            Some((at, n)) if n == started && self.state.idle() => Some(at),
            _ => {
                self.head = None;
                None
            }
        }
    }

    /// Whether the connection may be closed to free a slot now.
    fn evictable(&mut self, now: Instant) -> bool {
        let after = Duration::from_millis(EVICTABLE_AFTER_MS);
        let waited = |since: Instant| now.saturating_duration_since(since) >= after;
        if self.stalled_since.is_some_and(waited) {
            return true;
        }
        match self.head_started() {
            Some(at) => waited(at),
            None => self.state.idle() && waited(self.active_at),
        }
    }

    /// A wait on the client that began at `since` and may last until
    /// `deadline`: past it, give up; once it is evictable, listen for
    /// pressure; until then only a timer is armed (a busy connection never
    /// touches the shared pressure signal).
    fn wait(
        &mut self,
        cx: &mut Context<'_>,
        now: Instant,
        since: Instant,
        deadline: Instant,
        why: &'static str,
        side: Side,
    ) -> Wait {
        if now >= deadline {
            return Wait::GiveUp(why);
        }
        let evictable_at = since + Duration::from_millis(EVICTABLE_AFTER_MS);
        let wake_at = if now >= evictable_at {
            if self.poll_evicted(cx, now) {
                return Wait::GiveUp("closed to free a connection slot");
            }
            deadline
        } else {
            evictable_at.min(deadline)
        };
        let timer = match side {
            Side::Read => &mut self.read_timer,
            Side::Write => &mut self.write_timer,
        };
        arm(timer, wake_at, cx);
        Wait::Pending
    }

    /// Registers for pressure and answers whether it came and this
    /// connection should give its slot up.
    fn poll_evicted(&mut self, cx: &mut Context<'_>, now: Instant) -> bool {
        loop {
            let notified = self
                .evict
                .get_or_insert_with(|| Box::pin(self.pressure.clone().notified_owned()));
            match notified.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) => {
                    self.evict = None;
                    if self.evictable(now) {
                        return true;
                    }
                    // Not ours to give up: listen for the next time.
                }
            }
        }
    }
}

/// Makes sure the task is woken by `at` (a future instant). The timer is
/// moved only when it would fire too late or has fired: a connection that
/// stays busy pushes its deadlines forward with every request, and moving
/// the timer each time would cost a timer-wheel update per request; firing
/// early only means one more look (the task re-checks and re-arms).
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) {
    let t = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if t.is_elapsed() || t.deadline() > at {
        t.as_mut().reset(at);
    }
    if t.as_mut().poll(cx).is_ready() {
        // Fired in between: look again now.
        cx.waker().wake_by_ref();
    }
}

#[derive(Clone, Copy)]
enum Side {
    Read,
    Write,
}

/// What a connection waiting on its client should do: give up (its
/// deadline passed, or the server is full and it is evictable), or wait.
enum Wait {
    GiveUp(&'static str),
    Pending,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_string())
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let n = this.pending.len().min(buf.remaining());
            buf.put_slice(&this.pending[..n]);
            this.pending.drain(..n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        let now = Instant::now();
        match result {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.active_at = now;
                    if this.head_started().is_none() && this.state.idle() {
                        let started = this.state.started.load(Ordering::Acquire);
                        this.head = Some((now, started));
                        this.in_request_line = true;
                    }
                    if this.in_request_line {
                        this.encode_request_line(buf, before);
                    }
                }
                // A head trickled byte by byte is timed even though reads
                // keep succeeding.
                if this
                    .head_started()
                    .is_some_and(|at| now.saturating_duration_since(at) >= this.limits.head)
                {
                    return Poll::Ready(Err(timed_out("request head too slow")));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let waiting = match this.head_started() {
                    Some(at) => Some((at, at + this.limits.head, "request head too slow")),
                    None if this.state.idle() => Some((
                        this.active_at,
                        this.active_at + this.limits.idle,
                        "connection idle",
                    )),
                    // A handler is running; the body has its own limit.
                    None => None,
                };
                let Some((since, deadline, why)) = waiting else {
                    return Poll::Pending;
                };
                match this.wait(cx, now, since, deadline, why, Side::Read) {
                    Wait::GiveUp(why) => Poll::Ready(Err(timed_out(why))),
                    Wait::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Guarded<S> {
    /// Bookkeeping around one write attempt.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let now = Instant::now();
        match r {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active_at = now;
                    self.stalled_since = None;
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let since = *self.stalled_since.get_or_insert(now);
                let deadline = since + self.limits.write;
                match self.wait(
                    cx,
                    now,
                    since,
                    deadline,
                    "response not read by the client",
                    Side::Write,
                ) {
                    Wait::GiveUp(why) => Poll::Ready(Err(timed_out(why))),
                    Wait::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.after_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.after_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
