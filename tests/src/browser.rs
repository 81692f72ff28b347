//! Headless Chromium for the browser tests: a private chromedriver per test, a fresh
//! profile, JavaScript on or off, and helpers to wait, type keys and save screenshots.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use serde_json::json;
use tokio::process::{Child, Command};

/// Where the test run saves its screenshots.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots")
}

/// Runs `body` with a fresh headless browser and always closes it afterwards (a browser
/// left open would outlive the test run), then fails the test if the body failed.
pub async fn with_browser<F, Fut>(javascript: bool, body: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    assert!(
        crate::site_root().join("pkg/pairwise_bg.wasm").exists(),
        "the web assets are not built: run scripts/build-site.sh (scripts/test.sh does)"
    );
    let (mut driver, client, _profile) = start(javascript).await.expect("start chromedriver and Chromium");
    let outcome = std::panic::AssertUnwindSafe(body(client.clone())).catch_unwind().await;
    let _ = client.close().await;
    let _ = driver.kill().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) => panic!("browser test failed: {error:?}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn start(javascript: bool) -> Result<(Child, Client, tempfile::TempDir)> {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("chromedriver not found (scripts/setup.sh installs Debian's chromium-driver)")?;
    let profile = tempfile::tempdir()?;
    let mut options = json!({
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display()),
        ],
    });
    if !javascript {
        options["prefs"] = json!({"profile.managed_default_content_settings.javascript": 2});
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    let url = format!("http://127.0.0.1:{port}");
    let mut last_error = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
            Ok(client) => return Ok((driver, client, profile)),
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("could not start a browser session: {last_error:?}")
}

/// Waits (up to 20 s) for an element.
pub async fn wait_for(client: &Client, css: &str) -> Result<fantoccini::elements::Element> {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("waiting for `{css}`"))
}

/// Waits until the WASM has hydrated the page.
pub async fn wait_hydrated(client: &Client) -> Result<()> {
    wait_for(client, "#app[data-hydrated='true']").await.map(|_| ())
}

/// Polls `check` until it returns `Some` (up to 20 s). An error counts as "not yet": while a
/// page navigates, elements found a moment ago go stale.
pub async fn eventually<T, Fut: Future<Output = Result<Option<T>>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> Result<T> {
    let mut last_error = None;
    for _ in 0..200 {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("timed out waiting for {what} (last error: {last_error:?})")
}

/// Waits until the rating page shows another task than lease `assignment` (or no work).
pub async fn next_task_after(client: &Client, assignment: &str) -> Result<()> {
    eventually("the next task", || async {
        let now = client.find(Locator::Css("section.prompt[data-assignment], #no-pair")).await?;
        Ok((now.attr("data-assignment").await?.as_deref() != Some(assignment)).then_some(()))
    })
    .await
}

/// Presses and releases one key, as typed on the keyboard (to the focused element).
pub async fn press(client: &Client, key: char) -> Result<()> {
    let keys =
        KeyActions::new("keyboard".into()).then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
    client.perform_actions(keys).await?;
    Ok(())
}

pub const ENTER: char = '\u{e007}';
pub const CONTROL: char = '\u{e009}';

/// Presses a key with Control held down.
pub async fn press_with_control(client: &Client, key: char) -> Result<()> {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: CONTROL })
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key })
        .then(KeyAction::Up { value: CONTROL });
    client.perform_actions(keys).await?;
    Ok(())
}

/// Saves a PNG of the page at the given window size, scrolled to the element with id
/// `scroll_to` if given.
pub async fn screenshot(
    client: &Client,
    name: &str,
    (width, height): (u32, u32),
    scroll_to: Option<&str>,
) -> Result<PathBuf> {
    client.set_window_size(width, height).await?;
    if let Some(id) = scroll_to {
        client.execute("document.getElementById(arguments[0]).scrollIntoView()", vec![json!(id)]).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = client.screenshot().await?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png)?;
    client.set_window_size(1280, 900).await?;
    Ok(path)
}

/// Logs in through the login form.
pub async fn log_in(client: &Client, base: &str, username: &str, password: &str) -> Result<()> {
    client.goto(&format!("{base}/login")).await?;
    wait_for(client, "#login-form input[name=username]").await?.send_keys(username).await?;
    client.find(Locator::Css("#login-form input[name=password]")).await?.send_keys(password).await?;
    client.find(Locator::Css("#login-form button[type=submit]")).await?.click().await?;
    eventually("the login to finish", || async {
        let url = client.current_url().await?;
        Ok((url.path() != "/login").then_some(()))
    })
    .await
}
