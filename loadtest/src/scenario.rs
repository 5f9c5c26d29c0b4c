//! What a connection sends: the scenarios of the harness, as raw HTTP/1.1
//! requests against a generated catalog (see `tally::catalog::generate`).
//!
//! Requests are written into a reused buffer; the only per-request work is
//! formatting a path or a small JSON body. The LicenseSpring Date and
//! Authorization headers are recomputed once per second.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use tally::catalog::{
    generated_license, generated_pool_device, GENERATED_API_KEY, GENERATED_POOL_FEATURE,
    GENERATED_POOL_LICENSE, GENERATED_PRODUCT, GENERATED_SHARED_KEY, GENERATED_YEXT_ACCOUNT,
    GENERATED_YEXT_PACK,
};

/// The share of `consume` requests that go to the one hot license, percent.
pub const CONSUME_HOT_PERCENT: u64 = 50;
/// Mixed scenario: check, floating (a check and a release count as one
/// floating round) and consume shares, percent.
pub const MIXED_CHECK_PERCENT: u64 = 90;
pub const MIXED_FLOATING_PERCENT: u64 = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Signed `check_license_feature` on random licenses (feature f0).
    Check,
    /// Check (take a seat) then release on the shared pool, whose seats are
    /// fewer than the clients.
    Floating,
    /// `add_feature_consumption` of 1 unit on feature f2, half on one hot license.
    Consume,
    /// 90 % check, 5 % floating, 5 % consume.
    Mixed,
    /// Qlik: half the requests read the license overview, half churn an
    /// assignment (add this connection's subject, then delete it).
    Qlik,
    /// Yext: half the steps list the account's packs, half assign this
    /// connection's entity a license of the pack and then remove it.
    Yext,
    /// Native API: `POST /v1/check` with a bearer key on random licenses
    /// (feature f0, the license's device), as `check` does.
    NativeCheck,
    /// Native API: reserve 1 unit of feature f2 on a random license, then
    /// commit the reservation (two changes per pair).
    NativeReserve,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Check => "check",
            Scenario::Floating => "floating",
            Scenario::Consume => "consume",
            Scenario::Mixed => "mixed",
            Scenario::Qlik => "qlik",
            Scenario::Yext => "yext",
            Scenario::NativeCheck => "native-check",
            Scenario::NativeReserve => "native-reserve",
        }
    }
}

/// Small, fast, per-connection PRNG (xorshift64*); load generation needs
/// spread, not cryptographic quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// LicenseSpring auth headers, refreshed when the wall-clock second changes.
pub struct AuthHeaders {
    second: u64,
    date: String,
    authorization: String,
}

impl AuthHeaders {
    pub fn new() -> Self {
        let mut a = AuthHeaders {
            second: u64::MAX,
            date: String::new(),
            authorization: String::new(),
        };
        a.refresh();
        a
    }

    fn refresh(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let second = (now / 1000) as u64;
        if second != self.second {
            let (date, auth) = tally::api::licensespring::client_headers(
                GENERATED_API_KEY,
                GENERATED_SHARED_KEY,
                now,
            );
            self.second = second;
            self.date = date;
            self.authorization = auth;
        }
    }

    pub fn date(&self) -> &str {
        &self.date
    }
    pub fn authorization(&self) -> &str {
        &self.authorization
    }
}

impl Default for AuthHeaders {
    fn default() -> Self {
        Self::new()
    }
}

/// One request the scenario wants sent.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Check {
        license: u64,
    },
    SeatTake {
        device: u64,
    },
    SeatRelease {
        device: u64,
    },
    Consume {
        license: u64,
    },
    QlikOverview,
    QlikAssign {
        subject: u64,
    },
    QlikUnassign {
        subject: u64,
    },
    YextPacks,
    YextAssign {
        entity: u64,
    },
    YextRemove {
        entity: u64,
    },
    NativeCheck {
        license: u64,
    },
    NativeReserve {
        license: u64,
    },
    /// Commit the reservation with this id (from a `NativeReserve` answer).
    NativeCommit {
        id: u64,
    },
}

/// The Qlik scenario's share of overview reads, percent.
pub const QLIK_OVERVIEW_PERCENT: u64 = 50;

/// Per-connection scenario state: which request comes next.
pub struct Script {
    scenario: Scenario,
    licenses: u64,
    /// This connection's pool device (connections share devices modulo the pool).
    device: u64,
    /// A release owed after a seat take.
    owed_release: bool,
    /// A Qlik delete (or Yext removal) owed after an add.
    owed_unassign: bool,
    /// Reservations made and not yet committed (native-reserve), by id.
    owed_commits: std::collections::VecDeque<u64>,
    rng: Rng,
}

impl Script {
    pub fn new(scenario: Scenario, licenses: u64, connection: u64, seed: u64) -> Self {
        Script {
            scenario,
            licenses: licenses.max(1),
            device: connection,
            owed_release: false,
            owed_unassign: false,
            owed_commits: std::collections::VecDeque::new(),
            rng: Rng::new(seed ^ connection.wrapping_mul(0x1000_0001)),
        }
    }

    /// Sees an answer (in request order): a reservation's id is committed next.
    pub fn observe(&mut self, status: u16, body: &[u8]) {
        if self.scenario != Scenario::NativeReserve || status != 201 {
            return;
        }
        if let Some(id) = reservation_id(body) {
            self.owed_commits.push_back(id);
        }
    }

    pub fn next_op(&mut self) -> Op {
        if let Some(id) = self.owed_commits.pop_front() {
            return Op::NativeCommit { id };
        }
        if self.owed_release {
            self.owed_release = false;
            return Op::SeatRelease {
                device: self.device,
            };
        }
        if self.owed_unassign {
            self.owed_unassign = false;
            return if self.scenario == Scenario::Yext {
                Op::YextRemove {
                    entity: self.device,
                }
            } else {
                Op::QlikUnassign {
                    subject: self.device,
                }
            };
        }
        let floating = |s: &mut Self| {
            s.owed_release = true;
            Op::SeatTake { device: s.device }
        };
        match self.scenario {
            Scenario::Check => Op::Check {
                license: self.rng.below(self.licenses),
            },
            Scenario::Floating => floating(self),
            Scenario::NativeCheck => Op::NativeCheck {
                license: self.rng.below(self.licenses),
            },
            Scenario::NativeReserve => Op::NativeReserve {
                license: self.rng.below(self.licenses),
            },
            Scenario::Consume => self.consume(),
            Scenario::Yext => {
                if self.rng.below(100) < QLIK_OVERVIEW_PERCENT {
                    Op::YextPacks
                } else {
                    self.owed_unassign = true;
                    Op::YextAssign {
                        entity: self.device,
                    }
                }
            }
            Scenario::Qlik => {
                if self.rng.below(100) < QLIK_OVERVIEW_PERCENT {
                    Op::QlikOverview
                } else {
                    self.owed_unassign = true;
                    Op::QlikAssign {
                        subject: self.device,
                    }
                }
            }
            Scenario::Mixed => {
                let r = self.rng.below(100);
                if r < MIXED_CHECK_PERCENT {
                    Op::Check {
                        license: self.rng.below(self.licenses),
                    }
                } else if r < MIXED_CHECK_PERCENT + MIXED_FLOATING_PERCENT {
                    floating(self)
                } else {
                    self.consume()
                }
            }
        }
    }

    fn consume(&mut self) -> Op {
        let license = if self.rng.below(100) < CONSUME_HOT_PERCENT {
            0
        } else {
            self.rng.below(self.licenses)
        };
        Op::Consume { license }
    }
}

/// The `"id"` of a reservation answer (the first `"id":` member).
fn reservation_id(body: &[u8]) -> Option<u64> {
    let at = body.windows(5).position(|w| w == b"\"id\":")? + 5;
    let digits: Vec<u8> = body[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Native API requests (bearer key); false for other operations.
fn write_native(out: &mut Vec<u8>, host: &str, op: Op) -> bool {
    let mut body = [0u8; 256];
    let (path, n) = match op {
        Op::NativeCheck { license } => {
            let (key, hw) = generated_license(license);
            let n = json_body(
                &mut body,
                format_args!(r#"{{"license_key":"{key}","feature":"f0","device":"{hw}"}}"#),
            );
            (String::from("/v1/check"), n)
        }
        Op::NativeReserve { license } => {
            let (key, _) = generated_license(license);
            let n = json_body(
                &mut body,
                format_args!(r#"{{"units":1,"timeout_ms":60000}}"#),
            );
            (format!("/v1/licenses/{key}/features/f2/reservations"), n)
        }
        Op::NativeCommit { id } => (format!("/v1/reservations/{id}/commit"), 0),
        _ => return false,
    };
    let _ = write!(
        out,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GENERATED_API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
    );
    out.extend_from_slice(&body[..n]);
    true
}

/// Appends the HTTP/1.1 request for `op` to `out`.
pub fn write_request(out: &mut Vec<u8>, host: &str, auth: &mut AuthHeaders, op: Op) {
    if write_vendor(out, host, op) || write_native(out, host, op) {
        return;
    }
    auth.refresh();
    let mut body = [0u8; 256];
    let (method, path_kind, body_len) = match op {
        Op::Check { license } => {
            let (key, hw) = generated_license(license);
            let _ = write!(
                out,
                "GET /api/v4/check_license_feature?product={GENERATED_PRODUCT}&license_key={key}&hardware_id={hw}&feature=f0 HTTP/1.1\r\n"
            );
            ("GET", "", 0)
        }
        Op::SeatTake { device } => {
            let hw = generated_pool_device(device);
            let _ = write!(
                out,
                "GET /api/v4/check_license_feature?product={GENERATED_PRODUCT}&license_key={GENERATED_POOL_LICENSE}&hardware_id={hw}&feature={GENERATED_POOL_FEATURE} HTTP/1.1\r\n"
            );
            ("GET", "", 0)
        }
        Op::SeatRelease { device } => {
            let hw = generated_pool_device(device);
            let n = json_body(
                &mut body,
                format_args!(
                    r#"{{"product":"{GENERATED_PRODUCT}","license_key":"{GENERATED_POOL_LICENSE}","hardware_id":"{hw}","feature":"{GENERATED_POOL_FEATURE}"}}"#
                ),
            );
            ("POST", "floating/feature_release", n)
        }
        Op::QlikOverview
        | Op::QlikAssign { .. }
        | Op::QlikUnassign { .. }
        | Op::YextPacks
        | Op::YextAssign { .. }
        | Op::YextRemove { .. }
        | Op::NativeCheck { .. }
        | Op::NativeReserve { .. }
        | Op::NativeCommit { .. } => return,
        Op::Consume { license } => {
            let (key, hw) = generated_license(license);
            let n = json_body(
                &mut body,
                format_args!(
                    r#"{{"product":"{GENERATED_PRODUCT}","license_key":"{key}","hardware_id":"{hw}","feature":"f2","consumptions":1}}"#
                ),
            );
            ("POST", "add_feature_consumption", n)
        }
    };
    if method == "POST" {
        let _ = write!(out, "POST /api/v4/{path_kind} HTTP/1.1\r\n");
    }
    let _ = write!(
        out,
        "Host: {host}\r\nDate: {}\r\nAuthorization: {}\r\n",
        auth.date(),
        auth.authorization()
    );
    if method == "POST" {
        let _ = write!(
            out,
            "Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
        );
        out.extend_from_slice(&body[..body_len]);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// Qlik requests (bearer API key) and Yext requests (`api_key` in the
/// query); false for other operations.
fn write_vendor(out: &mut Vec<u8>, host: &str, op: Op) -> bool {
    let mut body = [0u8; 256];
    let yext = |out: &mut Vec<u8>, method: &str, path: std::fmt::Arguments<'_>| {
        let _ = write!(
            out,
            "{method} /v2/accounts/{GENERATED_YEXT_ACCOUNT}/licensepacks{path}?v=20261125&api_key={GENERATED_API_KEY} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
        );
    };
    let (path, n) = match op {
        Op::YextPacks => {
            yext(out, "GET", format_args!(""));
            return true;
        }
        Op::YextAssign { entity } => {
            yext(
                out,
                "POST",
                format_args!("/{GENERATED_YEXT_PACK}/assignments/c{entity}"),
            );
            return true;
        }
        Op::YextRemove { entity } => {
            yext(
                out,
                "DELETE",
                format_args!("/{GENERATED_YEXT_PACK}/assignments/c{entity}"),
            );
            return true;
        }
        Op::QlikOverview => {
            let _ = write!(
                out,
                "GET /api/v1/licenses/overview HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GENERATED_API_KEY}\r\n\r\n"
            );
            return true;
        }
        Op::QlikAssign { subject } => (
            "add",
            json_body(
                &mut body,
                format_args!(
                    r#"{{"add":[{{"type":"professional","subject":"bench\\c{subject}"}}]}}"#
                ),
            ),
        ),
        Op::QlikUnassign { subject } => (
            "delete",
            json_body(
                &mut body,
                format_args!(
                    r#"{{"delete":[{{"type":"professional","subject":"bench\\c{subject}"}}]}}"#
                ),
            ),
        ),
        _ => return false,
    };
    let _ = write!(
        out,
        "POST /api/v1/licenses/assignments/actions/{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {GENERATED_API_KEY}\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n"
    );
    out.extend_from_slice(&body[..n]);
    true
}

fn json_body(buf: &mut [u8; 256], args: std::fmt::Arguments<'_>) -> usize {
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = cursor.write_fmt(args);
    cursor.position() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floating_alternates_take_and_release() {
        let mut s = Script::new(Scenario::Floating, 10, 3, 1);
        assert!(matches!(s.next_op(), Op::SeatTake { device: 3 }));
        assert!(matches!(s.next_op(), Op::SeatRelease { device: 3 }));
        assert!(matches!(s.next_op(), Op::SeatTake { device: 3 }));
    }

    #[test]
    fn qlik_churns_its_own_subject() {
        let mut s = Script::new(Scenario::Qlik, 10, 5, 1);
        let mut auth = AuthHeaders::new();
        for _ in 0..20 {
            let op = s.next_op();
            let mut out = Vec::new();
            write_request(&mut out, "h", &mut auth, op);
            let text = String::from_utf8(out).expect("utf8");
            assert!(text.contains("Authorization: Bearer "), "{text}");
            if let Op::QlikAssign { subject } = op {
                assert_eq!(subject, 5);
                assert!(
                    text.ends_with(r#"{"add":[{"type":"professional","subject":"bench\\c5"}]}"#),
                    "{text}"
                );
                assert!(matches!(s.next_op(), Op::QlikUnassign { subject: 5 }));
            }
        }
    }

    #[test]
    fn yext_churns_its_own_entity() {
        let mut s = Script::new(Scenario::Yext, 10, 7, 3);
        let mut auth = AuthHeaders::new();
        let mut assigned = 0;
        for _ in 0..40 {
            let op = s.next_op();
            let mut out = Vec::new();
            write_request(&mut out, "h", &mut auth, op);
            let text = String::from_utf8(out).expect("utf8");
            assert!(
                text.contains("api_key=") && text.ends_with("\r\n\r\n"),
                "{text}"
            );
            if let Op::YextAssign { entity } = op {
                assigned += 1;
                assert!(text.starts_with(&format!(
                    "POST /v2/accounts/{GENERATED_YEXT_ACCOUNT}/licensepacks/{GENERATED_YEXT_PACK}/assignments/c{entity}?"
                )));
                assert!(matches!(s.next_op(), Op::YextRemove { entity: 7 }));
            }
        }
        assert!(assigned > 0);
    }

    #[test]
    fn native_reserve_commits_the_reservation_it_was_given() {
        let mut s = Script::new(Scenario::NativeReserve, 10, 1, 1);
        assert!(matches!(s.next_op(), Op::NativeReserve { .. }));
        s.observe(
            201,
            br#"{"committed_units":null,"id":12345,"license_id":3}"#,
        );
        assert!(matches!(s.next_op(), Op::NativeCommit { id: 12345 }));
        assert!(matches!(s.next_op(), Op::NativeReserve { .. }));
        let mut out = Vec::new();
        write_request(
            &mut out,
            "h",
            &mut AuthHeaders::new(),
            Op::NativeCommit { id: 7 },
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(
            text.starts_with("POST /v1/reservations/7/commit HTTP/1.1\r\n"),
            "{text}"
        );
    }

    #[test]
    fn requests_are_well_formed() {
        let mut auth = AuthHeaders::new();
        let mut out = Vec::new();
        write_request(&mut out, "h", &mut auth, Op::Consume { license: 7 });
        let text = String::from_utf8(out).expect("utf8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("POST /api/v4/add_feature_consumption HTTP/1.1\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["license_key"], "BENCH-0000000007");
    }
}
