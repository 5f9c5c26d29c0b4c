//! The load generator: N keep-alive HTTP/1.1 connections spread over a few
//! current-thread runtimes, each connection keeping up to `pipeline` requests
//! in flight.
//!
//! Closed loop (no `rate`): a connection sends its next request as soon as a
//! window slot frees; latency is send-to-response. Open loop (`rate` requests
//! per second over all connections): every request has an *intended* start on
//! a fixed schedule and its latency is counted from that intended start, so a
//! stalled server is charged for the requests it kept the generator from
//! sending (the coordinated-omission correction of wrk2 and HdrHistogram).
//!
//! Only requests that start after the warm-up and finish before the end of the
//! measured window are recorded.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenario::{write_request, AuthHeaders, Scenario, Script};

/// Longest latency the histograms hold, nanoseconds (longer ones saturate).
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Histogram precision, significant decimal digits.
pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;
/// Deepest pipelining accepted.
pub const PIPELINE_DEPTH_MAX: usize = 1024;
/// Connections accepted on the command line.
pub const CONNECTIONS_MAX: usize = 16_384;
/// Response headers parsed per response.
const RESPONSE_HEADERS_MAX: usize = 32;
/// After the measured window, how long in-flight answers are awaited.
const DRAIN_MS: u64 = 2_000;
/// A connection's read buffer starts at this size, bytes, and grows as needed.
const READ_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub target: SocketAddr,
    /// More targets (a cluster's other nodes): connection i goes to the
    /// i mod n-th of `target` and these.
    pub also: Vec<SocketAddr>,
    pub scenario: Scenario,
    /// Licenses of the generated catalog the server holds.
    pub licenses: u64,
    pub connections: usize,
    pub pipeline: usize,
    /// Open loop at this many requests per second; closed loop when `None`.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub duration: Duration,
    /// Generator threads (each a current-thread runtime).
    pub threads: usize,
    pub seed: u64,
    pub progress: bool,
}

/// What a run measured.
pub struct RunResult {
    pub hist: Histogram<u64>,
    /// Responses recorded in the measured window, whatever their status.
    pub responses: u64,
    pub statuses: BTreeMap<u16, u64>,
    /// Error responses by "status code" (code from the body where it has one)
    /// and transport failures by kind.
    pub errors: BTreeMap<String, u64>,
    pub measured: Duration,
}

impl RunResult {
    fn new() -> Self {
        RunResult {
            hist: new_histogram(),
            responses: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            measured: Duration::ZERO,
        }
    }

    fn merge(&mut self, other: ConnStats) {
        let _ = self.hist.add(&other.hist);
        self.responses += other.responses;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }

    pub fn throughput(&self) -> f64 {
        let secs = self.measured.as_secs_f64();
        if secs > 0.0 {
            self.responses as f64 / secs
        } else {
            0.0
        }
    }
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Per-connection counters; merged at the end, so the hot loop shares nothing
/// but the progress counter.
struct ConnStats {
    hist: Histogram<u64>,
    responses: u64,
    statuses: Vec<(u16, u64)>,
    errors: Vec<(String, u64)>,
}

impl ConnStats {
    fn new() -> Self {
        ConnStats {
            hist: new_histogram(),
            responses: 0,
            statuses: Vec::new(),
            errors: Vec::new(),
        }
    }
    fn status(&mut self, s: u16) {
        match self.statuses.iter_mut().find(|(k, _)| *k == s) {
            Some((_, n)) => *n += 1,
            None => self.statuses.push((s, 1)),
        }
    }
    fn error(&mut self, key: &str) {
        match self.errors.iter_mut().find(|(k, _)| k == key) {
            Some((_, n)) => *n += 1,
            None => self.errors.push((key.to_string(), 1)),
        }
    }
}

/// Runs the load and blocks until it is over.
pub fn run(cfg: &RunConfig) -> RunResult {
    let cfg = Arc::new(cfg.clone());
    let done = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(50);
    let threads = cfg.threads.clamp(1, cfg.connections.max(1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let cfg = cfg.clone();
        let done = done.clone();
        handles.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let local = tokio::task::LocalSet::new();
                local
                    .run_until(async move {
                        let mut tasks = Vec::new();
                        for c in (t..cfg.connections).step_by(threads) {
                            let cfg = cfg.clone();
                            let done = done.clone();
                            tasks.push(tokio::task::spawn_local(async move {
                                connection(&cfg, c as u64, t0, &done).await
                            }));
                        }
                        let mut out = Vec::new();
                        for t in tasks {
                            if let Ok(s) = t.await {
                                out.push(s);
                            }
                        }
                        out
                    })
                    .await
            })
        }));
    }
    if cfg.progress {
        progress(&cfg, t0, &done);
    }
    let mut result = RunResult::new();
    for h in handles {
        if let Ok(stats) = h.join() {
            for s in stats {
                result.merge(s);
            }
        }
    }
    result.measured = cfg.duration;
    result
}

fn progress(cfg: &RunConfig, t0: Instant, done: &AtomicU64) {
    let total = cfg.warmup + cfg.duration;
    let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < t0 + total {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        let n = done.load(Ordering::Relaxed);
        let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, n);
        let phase = if now < t0 + cfg.warmup {
            "warm-up"
        } else {
            "measuring"
        };
        bar.set_position(now.saturating_duration_since(t0).as_millis() as u64);
        bar.set_message(format!("{phase}: {rate:.0} req/s, {n} answers"));
    }
    bar.finish_and_clear();
}

#[allow(
    clippy::too_many_lines,
    reason = "one connection's loop (send, read, time, classify) in one place"
)]
async fn connection(cfg: &RunConfig, index: u64, t0: Instant, done: &AtomicU64) -> ConnStats {
    let mut st = ConnStats::new();
    tokio::time::sleep_until(t0.into()).await;
    let all = 1 + cfg.also.len() as u64;
    let target = match index % all {
        0 => cfg.target,
        i => cfg.also[i as usize - 1],
    };
    let mut stream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(_) => {
            st.error("connect failed");
            return st;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.split();
    let host = target.to_string();
    let measure_start = t0 + cfg.warmup;
    let measure_end = measure_start + cfg.duration;
    let drain_end = measure_end + Duration::from_millis(DRAIN_MS);
    let depth = cfg.pipeline.clamp(1, PIPELINE_DEPTH_MAX);
    let interval = cfg
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(cfg.connections as f64 / r));
    // Spread the connections' schedules over one interval.
    let mut next_at = match interval {
        Some(iv) => t0 + iv.mul_f64((index as f64 / cfg.connections as f64).fract()),
        None => t0,
    };
    let mut script = Script::new(cfg.scenario, cfg.licenses, index, cfg.seed);
    let mut auth = AuthHeaders::new();
    let mut wbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut rbuf: Vec<u8> = Vec::with_capacity(READ_BUFFER_BYTES);
    let mut rpos = 0usize;
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(depth);
    loop {
        let now = Instant::now();
        let sending = now < measure_end;
        while sending && inflight.len() < depth {
            let start = match interval {
                None => now,
                Some(iv) => {
                    if next_at > now {
                        break;
                    }
                    let s = next_at;
                    next_at += iv;
                    s
                }
            };
            inflight.push_back(start);
            write_request(&mut wbuf, &host, &mut auth, script.next_op());
        }
        if !wbuf.is_empty() {
            if wr.write_all(&wbuf).await.is_err() {
                st.error("write failed");
                return st;
            }
            wbuf.clear();
        }
        if inflight.is_empty() {
            if !sending {
                return st;
            }
            tokio::time::sleep_until(next_at.into()).await;
            continue;
        }
        let wait_for_schedule = interval.is_some() && sending && inflight.len() < depth;
        let read = if wait_for_schedule {
            tokio::select! {
                r = rd.read_buf(&mut rbuf) => r,
                _ = tokio::time::sleep_until(next_at.into()) => continue,
            }
        } else {
            let deadline = if sending {
                drain_end.max(now + Duration::from_millis(DRAIN_MS))
            } else {
                drain_end
            };
            match tokio::time::timeout_at(deadline.into(), rd.read_buf(&mut rbuf)).await {
                Ok(r) => r,
                Err(_) => {
                    st.error("timeout");
                    return st;
                }
            }
        };
        match read {
            Ok(0) => {
                st.error("connection closed");
                return st;
            }
            Ok(_) => {}
            Err(_) => {
                st.error("read failed");
                return st;
            }
        }
        loop {
            match parse_response(&rbuf[rpos..]) {
                Ok(Some(r)) => {
                    script.observe(r.status, &rbuf[rpos + r.len - r.body_len..rpos + r.len]);
                    rpos += r.len;
                    let started = inflight.pop_front().unwrap_or(now);
                    let finished = Instant::now();
                    done.fetch_add(1, Ordering::Relaxed);
                    if started >= measure_start && finished <= measure_end {
                        st.responses += 1;
                        st.status(r.status);
                        let ns = finished.duration_since(started).as_nanos() as u64;
                        st.hist.saturating_record(ns.max(1));
                        if r.status >= 400 {
                            let key = match r.code {
                                Some(c) => format!("{} {}", r.status, c),
                                None => r.status.to_string(),
                            };
                            st.error(&key);
                        }
                    }
                }
                Ok(None) => break,
                Err(()) => {
                    st.error("malformed response");
                    return st;
                }
            }
        }
        if rpos == rbuf.len() {
            rbuf.clear();
            rpos = 0;
        } else if rpos > READ_BUFFER_BYTES / 2 {
            rbuf.drain(..rpos);
            rpos = 0;
        }
    }
}

pub struct Parsed<'a> {
    /// Bytes of the whole response; the body is the last `body_len` of them.
    pub len: usize,
    pub body_len: usize,
    pub status: u16,
    pub code: Option<&'a str>,
}

/// One complete response at the start of `buf`, `Ok(None)` if more bytes are
/// needed. Bodies must be framed by Content-Length (Tally, the baseline and
/// the Redis peer all answer so).
pub fn parse_response(buf: &[u8]) -> Result<Option<Parsed<'_>>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let mut len = None;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(());
        }
    }
    let len = len.ok_or(())?;
    if buf.len() < head + len {
        return Ok(None);
    }
    let status = r.code.unwrap_or(0);
    let code = if status >= 400 {
        error_code(&buf[head..head + len])
    } else {
        None
    };
    Ok(Some(Parsed {
        len: head + len,
        body_len: len,
        status,
        code,
    }))
}

/// The `"code"` string of an error body, if it has one (LicenseSpring's shape).
fn error_code(body: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"code\":\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let end = body[at..].iter().position(|b| *b == b'"')? + at;
    std::str::from_utf8(&body[at..end]).ok()
}

/// Sends one request of `op` and returns (status, body); used to size the
/// baseline's body and by checks.
pub async fn probe(target: SocketAddr, op: crate::scenario::Op) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(target).await?;
    let mut req = Vec::new();
    write_request(&mut req, &target.to_string(), &mut AuthHeaders::new(), op);
    s.write_all(&req).await?;
    let mut buf = Vec::new();
    loop {
        if s.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        match parse_response(&buf) {
            Ok(Some(p)) => return Ok((p.status, buf[p.len - p.body_len..p.len].to_vec())),
            Ok(None) => continue,
            Err(()) => return Err(std::io::Error::other("malformed response")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_and_partial_responses() {
        let body = r#"{"status":400,"code":"floating_not_available","message":""}"#;
        let one = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let one = one.as_bytes();
        let mut two = one.to_vec();
        two.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        let p = parse_response(&two).expect("ok").expect("complete");
        assert_eq!((p.status, p.code), (400, Some("floating_not_available")));
        assert_eq!(p.len, one.len());
        let q = parse_response(&two[p.len..])
            .expect("ok")
            .expect("complete");
        assert_eq!((q.status, q.len), (200, two.len() - one.len()));
        assert!(parse_response(&two[..one.len() - 1]).expect("ok").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
    }
}
