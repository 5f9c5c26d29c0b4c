#![recursion_limit = "256"]
// A server must not panic on what it can report: no unwrap outside tests
// (an `expect` states the invariant that makes it safe).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
//! # Tally
//!
//! An in-memory entitlement engine that speaks vendors' license APIs.
//!
//! # Layout
//!
//! - [`engine`]: the core. Pure state and accounting (tenants, keys, products,
//!   customers, users, licenses, features, devices; seat pools, lease pools,
//!   meters). No I/O, no clock: `now` is passed in. Every mutation is a
//!   [`engine::Command`].
//! - [`storage`]: the data directory: write-ahead log (commit lock, group
//!   commit, fsync modes, latch), snapshots, recovery, lock file; signing
//!   key and admin token.
//! - [`cluster`]: several nodes on one NATS JetStream stream (the
//!   replicated log): proposals, the applier, bootstrap snapshots.
//! - [`http`]: what every surface and the server share of HTTP: bodies
//!   read with limits, queries, JSON answers, requests refused before routing.
//! - [`server`]: the hyper front-end: connection limits and the socket's
//!   time limits (`server::guard`), routing by path prefix, panic isolation.
//! - [`api`]: one module per surface, each translating its wire format to
//!   engine commands: [`api::licensespring`] (License API v4),
//!   [`api::qlik`] (Qlik Cloud Licenses), [`api::yext`] (Yext License Packs),
//!   [`api::infa`] (Informatica IICS license resource), [`api::admin`]
//!   (the native admin API) and [`api::native`] (Tally's own API, `/v1/`).
//! - [`faults`]: the harness's fault rules (latency, errors in a surface's
//!   shape, closed connections, trickling bodies), looked at before routing.
//! - [`gate`]: what every request passes while its handler runs, and a
//!   state restore shuts (atomic restores at no measurable cost).
//! - [`journal`]: the request journal (`--journal N`), credentials masked.
//! - [`ratelimit`]: the vendors' documented rate limits, emulated
//!   (LicenseSpring, Yext; Informatica by override), with tenants' overrides.
//! - [`metrics`]: what the server counts (per-thread shards) and `GET
//!   /metrics` (the Prometheus text format, written by `prometheus-client`).
//! - [`webhooks`]: the dispatcher that delivers the outbox's events
//!   (Standard Webhooks signatures, retries, attempts logged as commands).
//! - [`fuzzing`]: one entry point per parser, for the fuzz targets (`fuzz/`).
//! - [`catalog`]: loading a JSON catalog at start; generating synthetic ones.
//! - [`app`]: the state a running server shares across requests, and
//!   `App::commit`, the one path by which surfaces change state.
//! - [`clock`], [`config`], [`credentials`], [`signing`], [`tokens`],
//!   [`util`]: services the surfaces share ([`tokens`]: offline tokens, JWS
//!   signed with Ed25519).
//! - [`cli`]: the `tally` command line (`serve`, `auth-headers`, `sign`,
//!   `public-key`, `inspect`, `gen-catalog`; [`cli_state`]: `state`, the
//!   fixtures of a running server).

pub mod api;
pub mod app;
pub mod catalog;
pub mod cli;
pub mod cli_cluster;
pub mod cli_state;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod gate;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod ratelimit;
pub mod server;
pub mod signing;
pub mod storage;
pub mod tokens;
pub mod util;
pub mod webhooks;
