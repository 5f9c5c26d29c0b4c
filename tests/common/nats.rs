//! A NATS JetStream cluster for the tests: `nats-server` processes (Debian's
//! package) on loopback ports, clustered, JetStream on, each in a fresh
//! directory; killed and started again by index.

use std::process::{Child, Command, Stdio};

pub struct NatsCluster {
    procs: Vec<Option<Child>>,
    /// Client ports and cluster (route) ports, by index.
    ports: Vec<(u16, u16)>,
    dir: tempfile::TempDir,
}

/// A port free right now on 127.0.0.1.
/// A free port below Linux's ephemeral range (32768 and up): a port taken
/// from that range (bind to 0, then let go) could be handed to an outgoing
/// connection, such as another server's route, before its server binds it
/// (seen once in CI: "nats-server 2 did not listen"). Ports are handed out
/// once per test process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    // Each test binary starts at its own place (its pid), then counts up.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 1_000) as u16 * 12,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::AcqRel);
        assert!(port < 32_768, "no free port left below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The server binary: on the PATH, or where Debian's package puts it
/// (/usr/sbin is not on every user's PATH).
fn binary() -> &'static str {
    let on_path = Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        "nats-server"
    } else {
        "/usr/sbin/nats-server"
    }
}

/// Whether `nats-server` can be run here; under `CI=true` it must be.
pub fn installed() -> bool {
    let ok = Command::new(binary())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install nats-server (Debian package nats-server, see .ci/run)"
        );
        eprintln!("skipping: install nats-server (Debian package) to run the cluster tests");
    }
    ok
}

impl NatsCluster {
    /// `n` servers, clustered, with JetStream.
    pub fn start(n: usize) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let mut c = NatsCluster {
            procs: (0..n).map(|_| None).collect(),
            ports,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for i in 0..n {
            c.start_one(i);
        }
        c
    }

    /// The client URLs, comma-separated (what `--cluster` takes).
    pub fn urls(&self) -> String {
        self.ports
            .iter()
            .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts server `i` (again), on its ports and directory.
    pub fn start_one(&mut self, i: usize) {
        let (client, cluster) = self.ports[i];
        let routes: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (_, c))| format!("nats://127.0.0.1:{c}"))
            .collect();
        let store = self.dir.path().join(format!("n{i}"));
        // TALLY_NATS_LOGS=DIR keeps each server's log there (debugging).
        let log = std::env::var("TALLY_NATS_LOGS").ok().map(|d| {
            std::fs::create_dir_all(&d).expect("log dir");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(std::path::Path::new(&d).join(format!("n{i}.log")))
                .expect("log file")
        });
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &client.to_string()])
            .args(["-n", &format!("n{i}"), "-js", "-sd"])
            .arg(&store)
            .args(["--cluster_name", "tally-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{cluster}")])
            .args(["--routes", &routes.join(",")])
            .stdout(Stdio::null())
            .stderr(log.map_or_else(Stdio::null, Stdio::from))
            .spawn()
            .expect("spawn nats-server");
        self.procs[i] = Some(child);
        // Its client port answers once it listens.
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(
                started.elapsed().as_secs() < 20,
                "nats-server {i} did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Kills server `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.procs[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}
