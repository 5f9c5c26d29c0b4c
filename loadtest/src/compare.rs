//! `loadtest compare`: Tally, the baseline B and the Redis peer side by side on
//! one machine in one run, in alternating rounds, with `wrk` as a cross-check
//! of this generator, and the medians and ratios printed at the end.
//!
//! Servers are pinned to one core and every load run to another with
//! `taskset` where it works; each round's load is a child process
//! (`loadtest run --json`), so the generator never shares a process, or a
//! core, with a server.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::report::svg;
use crate::scenario::{Op, Scenario};

/// How long a started server has to answer /healthz.
const SERVER_START_TIMEOUT_MS: u64 = 120_000;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    #[arg(long, value_enum, default_value = "check")]
    pub scenario: Scenario,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Measured seconds per target per round.
    #[arg(long, default_value_t = 10.0)]
    pub round_secs: f64,
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Licenses in the generated catalog (each with 4 features).
    #[arg(long, default_value_t = 1000)]
    pub licenses: u64,
    /// Core the servers (and redis-server) run on.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// Core the load generators run on.
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
    /// The tally binary (default: next to this one).
    #[arg(long)]
    pub tally_bin: Option<PathBuf>,
    /// Extra arguments for `tally serve` (e.g. --no-sign).
    #[arg(long, allow_hyphen_values = true)]
    pub tally_arg: Vec<String>,
    /// Runtime of Tally, the baseline and the Redis peer alike (Tally's
    /// default: one current-thread runtime per core).
    #[arg(long, default_value = "current-thread")]
    pub runtime: String,
    /// Leave out the Redis peer.
    #[arg(long)]
    pub no_redis: bool,
    /// Leave out the wrk cross-check.
    #[arg(long)]
    pub no_wrk: bool,
    /// Where the per-round JSON, the summary and the plot go.
    #[arg(long, default_value = "target/loadtest")]
    pub out: PathBuf,
}

#[derive(Serialize, Debug, Clone)]
pub struct TargetSummary {
    pub name: String,
    pub rounds_rps: Vec<f64>,
    pub rounds_p99_us: Vec<f64>,
    pub median_rps: f64,
    pub median_p99_us: f64,
    pub median_p50_us: f64,
    pub errors: Value,
}

#[derive(Serialize, Debug)]
pub struct Summary {
    pub scenario: String,
    pub pipeline: usize,
    pub connections: usize,
    pub licenses: u64,
    pub rounds: usize,
    pub round_secs: f64,
    pub pinned: bool,
    pub targets: Vec<TargetSummary>,
    pub ratios: Vec<(String, f64)>,
    pub wrk: Vec<TargetSummary>,
}

struct Server {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    l.local_addr()
}

fn pinned(cpu: usize, enabled: bool, program: &Path) -> Command {
    if enabled {
        let mut c = Command::new("taskset");
        c.arg("-c").arg(cpu.to_string()).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// `loadtest run` of the compared scenario against `target`, on the client core.
fn load_run(
    a: &CompareArgs,
    pin: bool,
    me: &Path,
    target: SocketAddr,
    duration_secs: f64,
    warmup_secs: f64,
) -> Command {
    let mut cmd = pinned(a.client_cpu, pin, me);
    cmd.args(["run", "--quiet", "--target", &target.to_string()])
        .args(["--scenario", a.scenario.name()])
        .args(["--licenses", &a.licenses.to_string()])
        .args(["--connections", &a.connections.to_string()])
        .args(["--pipeline", &a.pipeline.to_string()])
        .args(["--duration", &duration_secs.to_string()])
        .args(["--warmup", &warmup_secs.to_string()])
        .stdout(Stdio::null());
    cmd
}

fn taskset_works(cpus: &[usize]) -> bool {
    cpus.iter().all(|c| {
        Command::new("taskset")
            .args(["-c", &c.to_string(), "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    })
}

fn wait_healthy(addr: SocketAddr, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(SERVER_START_TIMEOUT_MS);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited at start: {status}"));
        }
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{what} did not become healthy on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "the rounds of a comparison, in the order they run"
)]
pub fn compare(a: &CompareArgs) -> Result<Summary, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let tally_bin = a
        .tally_bin
        .clone()
        .unwrap_or_else(|| me.with_file_name("tally"));
    if !tally_bin.exists() {
        return Err(format!(
            "no tally binary at {} (build it, or pass --tally-bin)",
            tally_bin.display()
        ));
    }
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let pin = taskset_works(&[a.server_cpu, a.client_cpu]);
    if !pin {
        eprintln!("warning: taskset unavailable; servers and load are not pinned");
    }
    let work = a.out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let catalog = work.join("catalog.json");
    {
        let f = std::fs::File::create(&catalog).map_err(|e| e.to_string())?;
        let mut w = std::io::BufWriter::new(f);
        tally::catalog::generate(&mut w, a.licenses, 4).map_err(|e| e.to_string())?;
        use std::io::Write;
        w.flush().map_err(|e| e.to_string())?;
    }

    let mut servers: Vec<Server> = Vec::new();
    // Tally.
    let addr = free_port().map_err(|e| e.to_string())?;
    let mut cmd = pinned(a.server_cpu, pin, &tally_bin);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(work.join("data"))
        .arg("--catalog")
        .arg(&catalog)
        .args(["--runtime", &a.runtime])
        .args(&a.tally_arg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    let child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", tally_bin.display()))?;
    let mut s = Server {
        name: "tally",
        addr,
        child,
    };
    wait_healthy(addr, &mut s.child, "tally")?;
    servers.push(s);

    // The baseline answers with a body the size of Tally's answer to the
    // scenario's main request.
    let probe_op = match a.scenario {
        Scenario::Check | Scenario::Mixed => Op::Check { license: 1 },
        Scenario::Floating => Op::SeatTake { device: 0 },
        Scenario::Consume => Op::Consume { license: 1 },
        Scenario::Qlik => Op::QlikOverview,
        Scenario::Yext => Op::YextPacks,
        Scenario::NativeCheck => Op::NativeCheck { license: 1 },
        Scenario::NativeReserve => Op::NativeReserve { license: 1 },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let (status, body) = rt
        .block_on(crate::client::probe(addr, probe_op))
        .map_err(|e| format!("probing tally: {e}"))?;
    if !(200..300).contains(&status) {
        return Err(format!(
            "tally answered the probe with {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    if matches!(a.scenario, Scenario::Floating) {
        // Give the probe's seat back.
        let _ = rt.block_on(crate::client::probe(addr, Op::SeatRelease { device: 0 }));
    }
    let addr = free_port().map_err(|e| e.to_string())?;
    let mut cmd = pinned(a.server_cpu, pin, &me);
    cmd.args([
        "baseline",
        "--runtime",
        &a.runtime,
        "--listen",
        &addr.to_string(),
        "--body-bytes",
    ])
    .arg(body.len().to_string())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut s = Server {
        name: "baseline",
        addr,
        child,
    };
    wait_healthy(addr, &mut s.child, "baseline")?;
    servers.push(s);

    // The Redis peer implements the LicenseSpring operations only.
    let with_redis = !a.no_redis
        && a.pipeline <= 1
        && !matches!(
            a.scenario,
            Scenario::Qlik | Scenario::Yext | Scenario::NativeCheck | Scenario::NativeReserve
        );
    let mut _redis_guard = None;
    if with_redis {
        let raddr = free_port().map_err(|e| e.to_string())?;
        let mut cmd = pinned(a.server_cpu, pin, Path::new("redis-server"));
        cmd.args([
            "--port",
            &raddr.port().to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| {
            format!("redis-server (install Debian's redis-server, or pass --no-redis): {e}")
        })?;
        _redis_guard = Some(Server {
            name: "redis-server",
            addr: raddr,
            child,
        });
        // Wait for its port.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(raddr).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let addr = free_port().map_err(|e| e.to_string())?;
        let mut cmd = pinned(a.server_cpu, pin, &me);
        cmd.args([
            "redis-peer",
            "--runtime",
            &a.runtime,
            "--listen",
            &addr.to_string(),
            "--redis",
        ])
        .arg(raddr.to_string())
        .arg("--licenses")
        .arg(a.licenses.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| e.to_string())?;
        let mut s = Server {
            name: "redis-peer",
            addr,
            child,
        };
        wait_healthy(addr, &mut s.child, "redis peer")?;
        servers.push(s);
    }

    let wrk = !a.no_wrk
        && a.pipeline <= 1
        && matches!(a.scenario, Scenario::Check)
        && Command::new("wrk")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
    let wrk_script = work.join("check.lua");
    if wrk {
        std::fs::write(&wrk_script, wrk_lua(a.licenses)).map_err(|e| e.to_string())?;
    }

    // One unrecorded pass per target first: Tally renders and signs each
    // distinct answer once (about a millisecond of RSA each), which belongs
    // to start-up, not to the rounds.
    for s in &servers {
        let _ = load_run(a, pin, &me, s.addr, 1.0, a.warmup_secs.max(1.0)).status();
    }
    let mut runs: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    let mut wrk_runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); 2];
    for round in 0..a.rounds {
        for (i, s) in servers.iter().enumerate() {
            let json_path = a.out.join(format!("round{round}-{}.json", s.name));
            let st = load_run(a, pin, &me, s.addr, a.round_secs, a.warmup_secs)
                .arg("--json")
                .arg(&json_path)
                .status()
                .map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!("load run against {} failed: {st}", s.name));
            }
            let v: Value =
                serde_json::from_slice(&std::fs::read(&json_path).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            eprintln!(
                "round {}/{} {:<10} {:>9.0} req/s  p99 {:>8.1} us",
                round + 1,
                a.rounds,
                s.name,
                v["throughput_rps"].as_f64().unwrap_or(0.0),
                v["latency_us"]["p99"].as_f64().unwrap_or(0.0)
            );
            runs[i].push(v);
        }
        if wrk {
            for (i, s) in servers.iter().take(2).enumerate() {
                let mut cmd = pinned(a.client_cpu, pin, Path::new("wrk"));
                cmd.args(["-t1", &format!("-c{}", a.connections)])
                    .arg(format!("-d{}s", a.round_secs.ceil() as u64))
                    .args(["--latency", "-s"])
                    .arg(&wrk_script)
                    .arg(format!("http://{}", s.addr));
                let out = cmd.output().map_err(|e| e.to_string())?;
                let text = String::from_utf8_lossy(&out.stdout);
                if let Some(r) = parse_wrk(&text) {
                    eprintln!(
                        "round {}/{} wrk {:<6} {:>9.0} req/s  p99 {:>8.1} us",
                        round + 1,
                        a.rounds,
                        s.name,
                        r.0,
                        r.2
                    );
                    wrk_runs[i].push(r);
                } else {
                    eprintln!("wrk output not understood:\n{text}");
                }
            }
        }
    }

    let targets: Vec<TargetSummary> = servers
        .iter()
        .zip(&runs)
        .map(|(s, rs)| {
            let rps: Vec<f64> = rs
                .iter()
                .map(|v| v["throughput_rps"].as_f64().unwrap_or(0.0))
                .collect();
            let p99: Vec<f64> = rs
                .iter()
                .map(|v| v["latency_us"]["p99"].as_f64().unwrap_or(0.0))
                .collect();
            let p50: Vec<f64> = rs
                .iter()
                .map(|v| v["latency_us"]["p50"].as_f64().unwrap_or(0.0))
                .collect();
            TargetSummary {
                name: s.name.into(),
                median_rps: median(&rps),
                median_p99_us: median(&p99),
                median_p50_us: median(&p50),
                rounds_rps: rps,
                rounds_p99_us: p99,
                errors: rs
                    .last()
                    .map(|v| v["errors"].clone())
                    .unwrap_or(Value::Null),
            }
        })
        .collect();
    let wrk_summary: Vec<TargetSummary> = wrk_runs
        .iter()
        .zip(["tally", "baseline"])
        .filter(|(r, _)| !r.is_empty())
        .map(|(r, name)| {
            let rps: Vec<f64> = r.iter().map(|x| x.0).collect();
            let p50: Vec<f64> = r.iter().map(|x| x.1).collect();
            let p99: Vec<f64> = r.iter().map(|x| x.2).collect();
            TargetSummary {
                name: name.into(),
                median_rps: median(&rps),
                median_p99_us: median(&p99),
                median_p50_us: median(&p50),
                rounds_rps: rps,
                rounds_p99_us: p99,
                errors: Value::Null,
            }
        })
        .collect();
    let mut ratios = Vec::new();
    let find = |n: &str| targets.iter().find(|t| t.name == n);
    if let (Some(t), Some(b)) = (find("tally"), find("baseline")) {
        ratios.push((
            "tally / baseline throughput".into(),
            t.median_rps / b.median_rps,
        ));
        ratios.push((
            "tally / baseline p99".into(),
            t.median_p99_us / b.median_p99_us,
        ));
    }
    if let (Some(t), Some(r)) = (find("tally"), find("redis-peer")) {
        ratios.push((
            "tally / redis-peer throughput".into(),
            t.median_rps / r.median_rps,
        ));
    }
    if wrk_summary.len() == 2 {
        ratios.push((
            "wrk: tally / baseline throughput".into(),
            wrk_summary[0].median_rps / wrk_summary[1].median_rps,
        ));
        if let Some(t) = find("tally") {
            ratios.push((
                "loadtest / wrk throughput on tally".into(),
                t.median_rps / wrk_summary[0].median_rps,
            ));
        }
    }
    let summary = Summary {
        scenario: a.scenario.name().into(),
        pipeline: a.pipeline,
        connections: a.connections,
        licenses: a.licenses,
        rounds: a.rounds,
        round_secs: a.round_secs,
        pinned: pin,
        targets,
        ratios,
        wrk: wrk_summary,
    };
    let stem = format!("compare-{}-p{}", summary.scenario, a.pipeline);
    let _ = std::fs::write(
        a.out.join(format!("{stem}.json")),
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    );
    let series: Vec<(String, Vec<(f64, f64)>)> = servers
        .iter()
        .zip(&runs)
        .filter_map(|(s, rs)| {
            let pts: Vec<(f64, f64)> =
                serde_json::from_value(rs.last()?["percentiles"].clone()).ok()?;
            Some((s.name.to_string(), pts))
        })
        .collect();
    let _ = std::fs::write(
        a.out.join(format!("{stem}.svg")),
        svg(
            &format!(
                "{} scenario, {} connections, pipeline {} (last round)",
                summary.scenario, a.connections, a.pipeline
            ),
            &series,
        ),
    );
    Ok(summary)
}

pub fn print_summary(s: &Summary) {
    println!(
        "scenario {}  pipeline {}  {} connections  {} licenses  {} rounds of {} s  {}",
        s.scenario,
        s.pipeline,
        s.connections,
        s.licenses,
        s.rounds,
        s.round_secs,
        if s.pinned {
            "servers and load pinned to separate cores"
        } else {
            "NOT pinned"
        }
    );
    println!(
        "{:<14} {:>12} {:>12} {:>12}",
        "target", "median rps", "p50 us", "p99 us"
    );
    for t in &s.targets {
        println!(
            "{:<14} {:>12.0} {:>12.1} {:>12.1}",
            t.name, t.median_rps, t.median_p50_us, t.median_p99_us
        );
    }
    for t in &s.wrk {
        println!(
            "{:<14} {:>12.0} {:>12.1} {:>12.1}",
            format!("wrk {}", t.name),
            t.median_rps,
            t.median_p50_us,
            t.median_p99_us
        );
    }
    for (k, v) in &s.ratios {
        println!("{k}: {v:.2}");
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// wrk script for the check scenario: random licenses, headers signed at
/// start (valid for 15 minutes, longer than any round).
fn wrk_lua(licenses: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let (date, auth) = tally::api::licensespring::client_headers(
        tally::catalog::GENERATED_API_KEY,
        tally::catalog::GENERATED_SHARED_KEY,
        now,
    );
    format!(
        r#"wrk.headers["Date"] = "{date}"
wrk.headers["Authorization"] = '{auth}'
math.randomseed(7)
request = function()
  local i = math.random(0, {} - 1)
  local path = string.format("/api/v4/check_license_feature?product={}&license_key=BENCH-%010d&hardware_id=hw-%010d&feature=f0", i, i)
  return wrk.format("GET", path)
end
"#,
        licenses.max(1),
        tally::catalog::GENERATED_PRODUCT
    )
}

/// (requests/s, p50 us, p99 us) from `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<(f64, f64, f64)> {
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let pct = |p: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.trim_start().starts_with(p))?;
        parse_wrk_duration(l.split_whitespace().nth(1)?)
    };
    Some((
        rps,
        pct("50.000%").or(pct("50%"))?,
        pct("99.000%").or(pct("99%"))?,
    ))
}

fn parse_wrk_duration(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v,
        "ms" => v * 1_000.0,
        "s" => v * 1_000_000.0,
        "m" => v * 60_000_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_latency_output() {
        let text = "Running 1s test @ http://x\n  Latency Distribution\n     50%  310.00us\n     75%  400.00us\n     90%  1.20ms\n     99%    2.50ms\n  1000 requests in 1.00s\nRequests/sec:  98765.43\nTransfer/sec: 1MB\n";
        assert_eq!(parse_wrk(text), Some((98765.43, 310.0, 2500.0)));
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
