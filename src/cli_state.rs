//! `tally state save|restore|reset|list|delete`: the state fixtures of a
//! running server, through its admin API (`/admin/v1/state`), for scripts
//! that reset a server between benchmark rounds or test cases.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};

/// How long one call may take, connecting included (a restore of a large
/// state takes as long as loading it).
pub const STATE_CALL_TIMEOUT_MS: u64 = 600_000;
/// Largest answer read, bytes.
pub const STATE_ANSWER_BYTES_MAX: usize = 1024 * 1024;

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    #[command(subcommand)]
    pub action: StateAction,
    /// The server (http://host:port).
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:8080",
        env = "TALLY_URL"
    )]
    pub url: String,
    /// The admin token; without it, $TALLY_ADMIN_TOKEN, else the
    /// `admin_token` file of --data-dir.
    #[arg(long, global = true, env = "TALLY_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Where to read the admin token when none is given.
    #[arg(
        long,
        global = true,
        default_value = "./tally-data",
        env = "TALLY_DATA_DIR"
    )]
    pub data_dir: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum StateAction {
    /// Store the current state as fixture NAME (replacing one of that name).
    Save { name: String },
    /// Replace the live state with fixture NAME's.
    Restore { name: String },
    /// Go back to the state right after the catalog was loaded.
    Reset,
    /// List the fixtures.
    List,
    /// Delete fixture NAME.
    Delete { name: String },
}

pub fn run(args: StateArgs) -> ExitCode {
    let token = match args.token.clone().filter(|t| !t.is_empty()) {
        Some(t) => t,
        None => {
            let path = args.data_dir.join(crate::storage::ADMIN_TOKEN_FILE);
            match std::fs::read_to_string(&path) {
                Ok(t) => t.trim().to_string(),
                Err(e) => {
                    eprintln!(
                        "tally state: no --token and {} cannot be read: {e}",
                        path.display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let name_body = |name: &str| serde_json::json!({ "name": name }).to_string();
    let (method, path, body) = match &args.action {
        StateAction::Save { name } => (
            Method::POST,
            "/admin/v1/state/save".to_string(),
            name_body(name),
        ),
        StateAction::Restore { name } => (
            Method::POST,
            "/admin/v1/state/restore".to_string(),
            name_body(name),
        ),
        StateAction::Reset => (
            Method::POST,
            "/admin/v1/state/reset".to_string(),
            String::new(),
        ),
        StateAction::List => (Method::GET, "/admin/v1/state".to_string(), String::new()),
        StateAction::Delete { name } => (
            Method::DELETE,
            format!("/admin/v1/state/{name}"),
            String::new(),
        ),
    };
    if let StateAction::Save { name }
    | StateAction::Restore { name }
    | StateAction::Delete { name } = &args.action
    {
        if !crate::storage::fixtures::valid_name(name) {
            eprintln!(
                "tally state: {}",
                crate::storage::fixtures::FixtureError::BadName
            );
            return ExitCode::FAILURE;
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tally state: {e}");
            return ExitCode::FAILURE;
        }
    };
    let call = call(&args.url, &token, method, &path, body);
    let answer = runtime.block_on(async {
        tokio::time::timeout(Duration::from_millis(STATE_CALL_TIMEOUT_MS), call)
            .await
            .unwrap_or_else(|_| Err("the server did not answer in time".into()))
    });
    match answer {
        Ok((status, text)) if status.is_success() => {
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Ok((status, text)) => {
            eprintln!("tally state: {status}: {text}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("tally state: {}: {e}", args.url);
            ExitCode::FAILURE
        }
    }
}

/// One admin API call over plain HTTP/1.1; the answer's status and body.
async fn call(
    url: &str,
    token: &str,
    method: Method,
    path: &str,
    body: String,
) -> Result<(hyper::StatusCode, String), String> {
    let base: hyper::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if base.scheme_str() != Some("http") {
        return Err("only http:// URLs are served by tally".into());
    }
    let authority = base.authority().ok_or("the URL names no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let prefix = base.path().trim_end_matches('/');
    let req = Request::builder()
        .method(method)
        .uri(format!("{prefix}{path}"))
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), STATE_ANSWER_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| format!("answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
