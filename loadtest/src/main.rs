//! `loadtest`: Tally's load harness.
//!
//! # Layout
//! - [`scenario`]: what each connection sends (check, floating, consume, mixed).
//! - [`client`]: the generator: keep-alive connections, closed and open loop,
//!   pipelining, HDR histograms.
//! - [`report`]: text, JSON and SVG reports.
//! - [`peer`]: the reference servers: the bare-hyper baseline B and the Redis peer.
//! - [`compare`]: alternating rounds of Tally, B and the Redis peer, with wrk.
//! - [`lag`]: a cluster's replication lag, acknowledgement on one node to
//!   application on another.

mod client;
mod compare;
mod lag;
mod peer;
mod report;
mod scenario;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "loadtest", about = "Load harness for Tally")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Drive a running server and report throughput and latency.
    Run(RunArgs),
    /// Serve a fixed JSON body on Tally's runtime and HTTP settings (reference B).
    Baseline {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 400)]
        body_bytes: usize,
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, value_enum, default_value = "current-thread")]
        runtime: tally::server::RuntimeKind,
    },
    /// Serve the harness's LicenseSpring requests from Redis via EVALSHA.
    RedisPeer {
        #[arg(long, default_value = "127.0.0.1:8082")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:6379")]
        redis: SocketAddr,
        /// Licenses of the generated catalog to seed Redis with.
        #[arg(long, default_value_t = 1000)]
        licenses: u64,
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, value_enum, default_value = "current-thread")]
        runtime: tally::server::RuntimeKind,
    },
    /// Tally, B and the Redis peer in alternating rounds; medians and ratios.
    Compare(compare::CompareArgs),
    /// A cluster's replication lag: a change through one node, read with
    /// X-Tally-Min-Seq through another; percentiles of the wait.
    Lag(lag::LagArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// host:port of the server; several, comma-separated, spread the
    /// connections over them (the nodes of a cluster): connection i goes
    /// to target i mod n.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    #[arg(long, value_enum, default_value = "check")]
    scenario: scenario::Scenario,
    /// Licenses in the server's generated catalog (`tally gen-catalog --licenses`).
    #[arg(long, default_value_t = 1000)]
    licenses: u64,
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests in flight per connection (HTTP/1.1 pipelining).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Open loop at this many requests per second (closed loop if absent).
    #[arg(long)]
    rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the JSON report here ("-" for stdout instead of the text report).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG latency plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar and no text report.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(a) => run(a),
        Cmd::Baseline {
            listen,
            body_bytes,
            workers,
            runtime,
        } => peer::baseline(listen, body_bytes, workers, runtime).map_err(|e| e.to_string()),
        Cmd::RedisPeer {
            listen,
            redis,
            licenses,
            workers,
            runtime,
        } => peer::redis_peer(listen, redis, licenses, workers, runtime),
        Cmd::Compare(a) => compare::compare(&a).map(|s| compare::print_summary(&s)),
        Cmd::Lag(a) => lag::lag(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

fn secs(v: f64, what: &str) -> Result<Duration, String> {
    if v.is_finite() && (0.0..1e7).contains(&v) {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("--{what} must be a number of seconds"))
    }
}

fn run(a: RunArgs) -> Result<(), String> {
    let mut targets = Vec::new();
    for t in a.target.split(',') {
        targets.push(
            t.to_socket_addrs()
                .map_err(|e| format!("--target {t}: {e}"))?
                .next()
                .ok_or_else(|| format!("--target {t}: no address"))?,
        );
    }
    let target = targets[0];
    if a.connections == 0 || a.connections > client::CONNECTIONS_MAX {
        return Err(format!(
            "--connections must be 1..={}",
            client::CONNECTIONS_MAX
        ));
    }
    if a.pipeline == 0 || a.pipeline > client::PIPELINE_DEPTH_MAX {
        return Err(format!(
            "--pipeline must be 1..={}",
            client::PIPELINE_DEPTH_MAX
        ));
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number of requests per second".into());
        }
    }
    let cfg = client::RunConfig {
        target,
        also: targets[1..].to_vec(),
        scenario: a.scenario,
        licenses: a.licenses,
        connections: a.connections,
        pipeline: a.pipeline,
        rate: a.rate,
        warmup: secs(a.warmup, "warmup")?,
        duration: secs(a.duration, "duration")?,
        threads: a.threads.max(1),
        seed: a.seed,
        progress: !a.quiet && a.json.as_deref() != Some(std::path::Path::new("-")),
    };
    let result = client::run(&cfg);
    let report = report::Report::new(&cfg, &result);
    match a.json.as_deref() {
        Some(p) if p == std::path::Path::new("-") => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        Some(p) => {
            std::fs::write(p, serde_json::to_vec_pretty(&report).unwrap_or_default())
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        None => {}
    }
    if !a.quiet && a.json.as_deref() != Some(std::path::Path::new("-")) {
        print!("{}", report.text());
    }
    if let Some(p) = &a.plot {
        let title = format!(
            "{} scenario on {}, {} connections, pipeline {}",
            report.scenario, report.target, report.connections, report.pipeline
        );
        std::fs::write(
            p,
            report::svg(
                &title,
                &[(report.target.clone(), report.percentiles.clone())],
            ),
        )
        .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if result.responses == 0 {
        return Err(format!(
            "no responses recorded (errors: {:?})",
            result.errors
        ));
    }
    Ok(())
}
