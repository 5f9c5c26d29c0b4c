//! `loadtest lag`: a cluster's replication lag as a client sees it. Each
//! sample consumes one unit through node A (LicenseSpring's
//! `add_feature_consumption`), takes the `X-Tally-Seq` of its answer, and
//! at once asks node B for a check with `X-Tally-Min-Seq` set to it: B
//! answers once it has applied that sequence. The time from A's answer to
//! B's is the lag from acknowledgement on one node to application on
//! another (an upper bound: it includes one local request to B, tens of
//! microseconds). Run it beside a load (`loadtest run --scenario consume
//! --target a,b,c`) to see the lag under load.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::scenario::{write_request, AuthHeaders, Op};

/// Samples one run takes at most.
pub const LAG_SAMPLES_MAX: usize = 1_000_000;
/// Response headers read, at most.
const RESPONSE_HEADERS_MAX: usize = 32;

#[derive(clap::Args, Debug)]
pub struct LagArgs {
    /// host:port of the node that takes the changes.
    #[arg(long)]
    from: String,
    /// host:port of the node that must apply them.
    #[arg(long)]
    to: String,
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Pause between two samples, milliseconds.
    #[arg(long, default_value_t = 5)]
    pause_ms: u64,
    /// Licenses in the server's generated catalog.
    #[arg(long, default_value_t = 1000)]
    licenses: u64,
}

fn addr(s: &str) -> Result<SocketAddr, String> {
    s.to_socket_addrs()
        .map_err(|e| format!("{s}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s}: no address"))
}

pub fn lag(a: &LagArgs) -> Result<(), String> {
    if a.samples == 0 || a.samples > LAG_SAMPLES_MAX {
        return Err(format!("--samples must be 1..={LAG_SAMPLES_MAX}"));
    }
    let (from, to) = (addr(&a.from)?, addr(&a.to)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let h = rt
        .block_on(sample(a, from, to))
        .map_err(|e| e.to_string())?;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "lag from {from} to {to}: {} samples, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        h.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    Ok(())
}

async fn sample(a: &LagArgs, from: SocketAddr, to: SocketAddr) -> std::io::Result<Histogram<u64>> {
    let mut h = crate::client::new_histogram();
    let (mut sa, mut sb) = (
        TcpStream::connect(from).await?,
        TcpStream::connect(to).await?,
    );
    sa.set_nodelay(true)?;
    sb.set_nodelay(true)?;
    let mut auth = AuthHeaders::new();
    let (mut buf_a, mut buf_b) = (Vec::new(), Vec::new());
    for i in 0..a.samples {
        let license = i as u64 % a.licenses.max(1);
        let mut req = Vec::new();
        write_request(
            &mut req,
            &from.to_string(),
            &mut auth,
            Op::Consume { license },
        );
        sa.write_all(&req).await?;
        let (status, seq) = read_one(&mut sa, &mut buf_a).await?;
        let acked = Instant::now();
        let Some(seq) = seq.filter(|_| status == 200) else {
            return Err(std::io::Error::other(format!(
                "the change answered {status} without X-Tally-Seq (is {from} a cluster node?)"
            )));
        };
        let mut req = Vec::new();
        write_request(&mut req, &to.to_string(), &mut auth, Op::Check { license });
        // The check has no body: its head ends the request.
        req.truncate(req.len() - 2);
        req.extend_from_slice(format!("X-Tally-Min-Seq: {seq}\r\n\r\n").as_bytes());
        sb.write_all(&req).await?;
        let (status, _) = read_one(&mut sb, &mut buf_b).await?;
        if status != 200 {
            return Err(std::io::Error::other(format!(
                "{to} answered {status} for sequence {seq}"
            )));
        }
        let _ = h.record(acked.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
    }
    Ok(h)
}

/// Reads one response from `s` (its leftover stays in `buf`): its status
/// and `X-Tally-Seq`.
async fn read_one(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<(u16, Option<u64>)> {
    loop {
        if let Some((len, status, seq)) = parse(buf)? {
            buf.drain(..len);
            return Ok((status, seq));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
    }
}

fn parse(buf: &[u8]) -> std::io::Result<Option<(usize, u16, Option<u64>)>> {
    let mut headers = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    let value = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let len = value("content-length").unwrap_or(0) as usize;
    if buf.len() < head + len {
        return Ok(None);
    }
    Ok(Some((
        head + len,
        r.code.unwrap_or(0),
        value("x-tally-seq"),
    )))
}
