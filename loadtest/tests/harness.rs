//! The harness end to end: the real `tally` binary on a generated catalog,
//! driven by the real `loadtest` binary over HTTP; and a short `compare` with
//! the baseline, the Redis peer and wrk. Short runs: these prove the harness
//! works, the figures come from `loadtest/run-all.sh`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LICENSES: &str = "100";

fn loadtest() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_loadtest"))
}

/// The tally binary cargo built beside this package's binary.
fn tally() -> PathBuf {
    let p = loadtest().with_file_name("tally");
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace`",
        p.display()
    );
    p
}

/// Whether `program` runs here; under CI it must.
fn available(program: &str) -> bool {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{program} is required under CI (.ci/run installs it)");
    }
    ok
}

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_tally(dir: &Path) -> Server {
    let catalog = dir.join("catalog.json");
    let st = Command::new(tally())
        .args(["gen-catalog", "--licenses", LICENSES, "--out"])
        .arg(&catalog)
        .status()
        .expect("gen-catalog");
    assert!(st.success());
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let child = Command::new(tally())
        .args(["serve", "--listen", &addr, "--no-sign", "--data-dir"])
        .arg(dir.join("data"))
        .arg("--catalog")
        .arg(&catalog)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tally");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "tally did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child, addr)
}

fn run(addr: &str, dir: &Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let plot = dir.join(format!("{name}.svg"));
    let out = Command::new(loadtest())
        .args(["run", "--quiet", "--target", addr, "--licenses", LICENSES])
        .args(["--duration", "1.5", "--warmup", "0.3"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .output()
        .expect("loadtest run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&plot).expect("plot");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"));
    serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("report")
}

fn errors(v: &Value) -> Vec<String> {
    v["errors"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn scenarios_run_against_the_real_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let s = start_tally(dir.path());

    let check = run(
        &s.1,
        dir.path(),
        "check",
        &["--scenario", "check", "--connections", "8"],
    );
    assert!(check["responses"].as_u64().unwrap_or(0) > 100, "{check}");
    assert!(errors(&check).is_empty(), "{check}");
    assert_eq!(check["mode"], "closed");
    let l = &check["latency_us"];
    assert!(l["p50"].as_f64() <= l["p99"].as_f64() && l["p99"].as_f64() <= l["max"].as_f64());

    // 64 clients on a pool of 32 seats: some takes are refused, every
    // refusal is floating_not_available, nothing else fails.
    let floating = run(
        &s.1,
        dir.path(),
        "floating",
        &["--scenario", "floating", "--connections", "64"],
    );
    assert!(
        floating["statuses"]["200"].as_u64().unwrap_or(0) > 0,
        "{floating}"
    );
    for e in errors(&floating) {
        assert_eq!(e, "400 floating_not_available", "{floating}");
    }

    let consume = run(
        &s.1,
        dir.path(),
        "consume",
        &["--scenario", "consume", "--pipeline", "4"],
    );
    assert!(errors(&consume).is_empty(), "{consume}");
    assert_eq!(consume["pipeline"], 4);

    let mixed = run(&s.1, dir.path(), "mixed", &["--scenario", "mixed"]);
    assert!(
        mixed["statuses"]["200"].as_u64().unwrap_or(0) > 100,
        "{mixed}"
    );

    // Open loop: the schedule sets the throughput.
    let open = run(
        &s.1,
        dir.path(),
        "open",
        &["--rate", "2000", "--connections", "16"],
    );
    assert_eq!(open["mode"], "open");
    let rps = open["throughput_rps"].as_f64().unwrap_or(0.0);
    assert!((1600.0..=2400.0).contains(&rps), "{open}");
}

#[test]
fn compare_runs_every_peer() {
    let redis = available("redis-server");
    let wrk = available("wrk");
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(loadtest());
    cmd.args([
        "compare",
        "--rounds",
        "1",
        "--round-secs",
        "1",
        "--warmup-secs",
        "0.3",
    ])
    .args([
        "--licenses",
        LICENSES,
        "--connections",
        "16",
        "--tally-arg=--no-sign",
    ])
    .arg("--tally-bin")
    .arg(tally())
    .arg("--out")
    .arg(dir.path());
    if !redis {
        cmd.arg("--no-redis");
    }
    if !wrk {
        cmd.arg("--no-wrk");
    }
    let out = cmd.output().expect("compare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tally / baseline throughput"), "{stdout}");
    let summary: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("compare-check-p1.json")).expect("summary"),
    )
    .expect("json");
    let names: Vec<&str> = summary["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    let mut want = vec!["tally", "baseline"];
    if redis {
        want.push("redis-peer");
    }
    assert_eq!(names, want);
    for t in summary["targets"].as_array().expect("targets") {
        assert!(t["median_rps"].as_f64().unwrap_or(0.0) > 0.0, "{t}");
        // Every answer of every peer was a 200.
        assert!(t["errors"].as_object().is_some_and(|e| e.is_empty()), "{t}");
    }
    if wrk {
        assert_eq!(
            summary["wrk"].as_array().map(Vec::len),
            Some(2),
            "{summary}"
        );
    }
    assert!(dir.path().join("compare-check-p1.svg").exists());
}
