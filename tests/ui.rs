//! The web console in a real browser: `tests/sdk/ui/console.py` drives
//! headless Chromium (Selenium with the system's chromium and chromedriver)
//! against the server on the demo catalog: a wrong token refused, sign-in,
//! the overview, a search, a license page, a floating seat released with a
//! confirmation (checked here in the engine too), a tenant page.
//!
//! Needs `TALLY_UI_PYTHON` (a Python with `selenium`) and Debian's
//! `chromium` and `chromium-driver`; `.ci/run` installs them.
//! `TALLY_UI_SCREENSHOTS=DIR` keeps the screenshots (docs/ has them).

mod common;

use common::native::{n, STUDIO};
use common::TestServer;
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let python = std::env::var("TALLY_UI_PYTHON").unwrap_or_default();
    if !common::client_installed(
        &python,
        "TALLY_UI_PYTHON=<python with `pip install selenium==4.27.1`>, and apt-get install chromium chromium-driver",
    ) {
        return;
    }
    let s = TestServer::start().await;
    let seat = format!("/v1/licenses/{STUDIO}/features/export-4k/seats/browser-seat");
    assert_eq!(
        n(&s, Method::PUT, &seat, None).await.status,
        StatusCode::CREATED
    );
    let hook =
        serde_json::json!({"url": "http://127.0.0.1:9/console", "events": ["seats.available"]});
    assert_eq!(
        n(&s, Method::POST, "/v1/webhooks", Some(hook)).await.status,
        StatusCode::CREATED
    );
    let shots = std::env::var("TALLY_UI_SCREENSHOTS").map_or_else(
        |_| tempfile::tempdir().expect("tempdir").keep(),
        std::path::PathBuf::from,
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/ui/console.py");
    let base = s.url("");
    let base = base.trim_end_matches('/').to_string();
    let out = tokio::process::Command::new(&python)
        .args([
            script,
            &base,
            common::ADMIN_TOKEN,
            &shots.display().to_string(),
        ])
        .output()
        .await
        .expect("run the browser");
    common::assert_client_passed(&out);
    let hit = s
        .app
        .engine
        .search(STUDIO, 5)
        .into_iter()
        .find(|h| h.kind == "license")
        .expect("the license");
    let studio = s.app.engine.license(hit.id).expect("license");
    let pool = &studio.feature("export-4k").expect("export-4k").floating;
    assert_eq!(pool.in_use(s.now()), 0, "the browser released the seat");
    for page in ["signin", "overview", "license", "tenant"] {
        assert!(shots.join(format!("console-{page}.png")).exists(), "{page}");
    }
}
