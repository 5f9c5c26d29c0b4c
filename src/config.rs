//! Server configuration and its limits. Every limit is a named constant with its
//! unit last, overridable from the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Largest request body accepted, bytes (admin batches and catalogs included).
pub const REQUEST_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Largest request head (request line plus headers), bytes.
pub const REQUEST_HEAD_BYTES_MAX: usize = 16 * 1024;
/// Time to receive a request's head before the connection is dropped.
pub const REQUEST_HEAD_TIMEOUT_MS: u64 = 10_000;
/// Time from a request's head to its response (body read included).
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// Time a keep-alive connection may wait with no request and no byte moving.
pub const KEEP_ALIVE_IDLE_MS: u64 = 60_000;
/// Time a response may stall unwritten (a client that does not read its
/// answers) before the connection is closed.
pub const RESPONSE_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Kernel send buffer of each client connection, bytes: what a client that
/// does not read its answers can have the server produce for it before its
/// writes stall (and the connection becomes evictable, then is closed).
pub const CONNECTION_SEND_BUFFER_BYTES: u32 = 256 * 1024;
/// Open client connections; the acceptor waits for a slot past this.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Admin list pages: default and largest page size.
pub const PAGE_LIMIT_DEFAULT: usize = 100;
pub const PAGE_LIMIT_MAX: usize = 1000;
/// Grace period for in-flight requests at shutdown.
pub const SHUTDOWN_GRACE_MS: u64 = 10_000;
/// How often expired floating seats are swept (they are also purged on access).
pub const LEASE_SWEEP_INTERVAL_MS: u64 = 10_000;

#[derive(Clone, Debug)]
pub struct Limits {
    pub request_body_bytes_max: usize,
    pub request_head_bytes_max: usize,
    pub request_head_timeout: Duration,
    pub request_timeout: Duration,
    pub keep_alive_idle: Duration,
    pub response_write_timeout: Duration,
    pub connection_send_buffer_bytes: u32,
    pub connections_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_body_bytes_max: REQUEST_BODY_BYTES_MAX,
            request_head_bytes_max: REQUEST_HEAD_BYTES_MAX,
            request_head_timeout: Duration::from_millis(REQUEST_HEAD_TIMEOUT_MS),
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS),
            keep_alive_idle: Duration::from_millis(KEEP_ALIVE_IDLE_MS),
            response_write_timeout: Duration::from_millis(RESPONSE_WRITE_TIMEOUT_MS),
            connection_send_buffer_bytes: CONNECTION_SEND_BUFFER_BYTES,
            connections_max: CONNECTIONS_MAX,
        }
    }
}

/// Everything `tally serve` was asked for.
#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub catalog: Option<PathBuf>,
    /// Sign LicenseSpring responses (LicenseSignature header).
    pub sign_responses: bool,
    /// The stamped signatures' memory budget (`--signature-cache-mb`).
    pub signature_cache_bytes: usize,
    /// Enforce vendors' documented rate limits (`--emulate-rate-limits`).
    pub emulate_rate_limits: bool,
    /// Certificates trusted for https:// webhook receivers (`--webhook-ca`).
    pub webhook_ca: Option<PathBuf>,
    /// Count requests and commits (`--no-metrics` turns it off), with a
    /// tenant label (`--metrics-per-tenant`); the scrape's bearer token.
    pub metrics: bool,
    pub metrics_per_tenant: bool,
    pub metrics_token: Option<String>,
    /// One line per request (`--access-log`).
    pub access_log: bool,
    /// Requests the journal keeps (`--journal`, 0: off).
    pub journal: usize,
    /// Durability: fsync mode, snapshot interval, repair policy.
    pub store: crate::storage::store::StoreOptions,
    pub limits: Limits,
}
