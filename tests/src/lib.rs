//! Harness for the end-to-end tests: starts the real server on a loopback port against a
//! fresh database (a temporary SQLite file, or a new Postgres database per test), and
//! gives tests HTTP clients authenticated as admins or annotators.
//!
//! Postgres comes from `PAIRWISE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); it must be running — the Postgres
//! tests fail rather than skip, so CI cannot pass without exercising Postgres.

pub mod arena;
pub mod browser;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use pairwise_server::accounts::Role;
use pairwise_server::accounts::{tokens, users};
use pairwise_server::config::Config;
use pairwise_server::http::{self, state::AppState};
use pairwise_server::store::Db;
use serde_json::Value;
use sqlx::Connection;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend: `both_backends!(name)` expands to
/// `name::sqlite` and `name::postgres` test functions calling `name(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    };
}

/// The built web assets (`scripts/build-site.sh` writes them; `scripts/test.sh` runs it).
pub fn site_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/site")
}

/// The `pairwise-train` binary `cargo test` builds next to the test binaries
/// (`PAIRWISE_TEST_TRAINER` overrides).
pub fn trainer_binary() -> String {
    std::env::var("PAIRWISE_TEST_TRAINER").unwrap_or_else(|_| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pairwise-train");
        assert!(path.exists(), "{} is missing: run `cargo build -p pairwise-trainer` first", path.display());
        path.display().to_string()
    })
}

/// The `pairwise` server binary (`scripts/test.sh` builds it before the tests), for tests
/// that need a server in a process of its own, to kill it.
pub fn server_binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pairwise");
    assert!(path.exists(), "{} is missing: run `cargo build --bin pairwise` first", path.display());
    path
}

pub fn postgres_admin_url() -> String {
    std::env::var("PAIRWISE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static DATABASES: AtomicU32 = AtomicU32::new(0);

pub struct TestServer {
    pub base: String,
    pub db: Db,
    /// A connection pool of the test's own to the same database, for looking at (and
    /// setting up) rows directly, beside the server's store.
    pub sql: sqlx::AnyPool,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    postgres_database: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            Config { secret: "test-secret".into(), sqlite_synchronous: "normal".into(), ..Config::default() };
        let mut postgres_database = None;
        config.database_url = match backend {
            Backend::Sqlite => format!("sqlite://{}", dir.path().join("pairwise.db").display()),
            Backend::Postgres => {
                let name = format!(
                    "pairwise_test_{}_{}_{}",
                    std::process::id(),
                    DATABASES.fetch_add(1, Ordering::SeqCst),
                    rand::random::<u32>()
                );
                sqlx::any::install_default_drivers();
                let admin = postgres_admin_url();
                let mut conn = sqlx::AnyConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("Postgres at {admin} is needed for this test: {e}"));
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
                postgres_database = Some(name.clone());
                format!("{base}/{name}")
            }
        };
        config.site_root = site_root().display().to_string();
        adjust(&mut config);
        let mut server = TestServer::serve(config, dir).await;
        server.postgres_database = postgres_database;
        server
    }

    /// Another server on this server's (Postgres) database, as a second `pairwise serve`
    /// behind the same load balancer would be: same config but for `adjust`, its own
    /// store, background tasks and port. Stopping it leaves the database alone.
    pub async fn start_sibling(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = self.config.clone();
        adjust(&mut config);
        TestServer::serve(config, tempfile::tempdir().expect("temp dir")).await
    }

    async fn serve(config: Config, dir: tempfile::TempDir) -> TestServer {
        let db = Db::connect(&config.db_settings()).await.expect("connect test database");
        let sql = sqlx::any::AnyPoolOptions::new()
            .max_connections(4)
            .connect(&config.database_url)
            .await
            .expect("connect the test's own pool");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let state = AppState::new(db.clone(), config.clone());
        let handle = tokio::spawn(http::serve(listener, state, async move {
            let _ = rx.await;
        }));
        // Serving has begun (the SQLite file is claimed, the router answers) before the test
        // goes on: a test that starts a second server on the same file must find it taken.
        let health = reqwest::Client::new();
        let mut up = false;
        for _ in 0..200 {
            if health.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert!(up, "the test server at {base} did not come up");
        TestServer {
            base,
            db,
            sql,
            config,
            shutdown: Some(tx),
            handle: Some(handle),
            postgres_database: None,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a user and an API token; returns an HTTP client that sends it.
    pub async fn client_for(&self, username: &str, role: Role) -> ApiClient {
        let user = users::create_user(&self.db, username, "password-123", role).await.expect("create user");
        let token = tokens::create_token(&self.db, user.id, "test").await.expect("create token");
        ApiClient { http: reqwest::Client::new(), base: self.base.clone(), token: Some(token.token), user_id: user.id }
    }

    /// An HTTP client with a cookie jar and no token.
    pub fn anonymous(&self) -> ApiClient {
        let http = reqwest::Client::builder().cookie_store(true).build().unwrap();
        ApiClient { http, base: self.base.clone(), token: None, user_id: 0 }
    }

    /// Asks the server to shut down gracefully (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Shuts the server down gracefully and drops the Postgres database.
    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
        self.sql.close().await;
        self.db.close().await;
        if let Some(name) = self.postgres_database.take() {
            drop_database(&name).await;
        }
    }
}

async fn drop_database(name: &str) {
    let mut conn = sqlx::AnyConnection::connect(&postgres_admin_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A test that ends without [`TestServer::stop`] still drops its Postgres database (`FORCE`
/// ends the server's connections), on a thread of its own: `Drop` cannot await, and the
/// test's runtime may be the one dropping.
impl Drop for TestServer {
    fn drop(&mut self) {
        let Some(name) = self.postgres_database.take() else { return };
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime to drop the test database")
                .block_on(drop_database(&name))
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("dropping the test's Postgres database failed");
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Option<String>,
    pub user_id: i64,
}

/// Status and parsed JSON body (Null when the body is not JSON).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl ApiClient {
    /// The same client (token, cookies) talking to another server.
    pub fn on(&self, server_base: &str) -> ApiClient {
        ApiClient { base: server_base.to_string(), ..self.clone() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(builder: reqwest::RequestBuilder) -> Reply {
        let response = builder.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, text, json }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::send(self.request(reqwest::Method::GET, path)).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        Self::send(self.request(reqwest::Method::POST, path).json(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        Self::send(self.request(reqwest::Method::PATCH, path).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        Self::send(self.request(reqwest::Method::DELETE, path)).await
    }

    pub async fn post_body(&self, path: &str, body: impl Into<reqwest::Body>) -> Reply {
        Self::send(self.request(reqwest::Method::POST, path).body(body)).await
    }
}

/// Creates an active campaign through the API and returns its id.
pub async fn create_campaign(admin: &ApiClient, settings: Value) -> i64 {
    let reply = admin.post("/api/v1/campaigns", &settings).await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.json["id"].as_i64().unwrap()
}

/// Imports JSONL lines into a campaign, asserting success.
pub async fn import(admin: &ApiClient, campaign: i64, lines: &[Value]) -> Value {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let reply = admin.post_body(&format!("/api/v1/campaigns/{campaign}/import"), body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json
}

/// Votes on every pair the campaign serves `rater`, choosing with `choose(pair)` (an
/// on-screen choice: `left`, `right`, `tie`, `both_bad`); each vote reports 4.2 s spent.
pub async fn vote_all(rater: &ApiClient, campaign: i64, mut choose: impl FnMut(&Value) -> &'static str) {
    let mut next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    while next["status"] == "assigned" {
        let pair = &next["pair"];
        let body = serde_json::json!({"assignment_id": pair["assignment_id"], "choice": choose(pair), "time_ms": 4200,
                                      "client_key": format!("{}-{}", rater.user_id, pair["assignment_id"])});
        let reply = rater.post("/api/v1/votes", &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        next = reply.json["next"].clone();
    }
}

/// Each rater asks for work and votes until nothing is left; returns acknowledged votes.
pub async fn rate_until_done(rater: ApiClient, campaign: i64) -> Vec<(i64, i64)> {
    let mut acknowledged = Vec::new();
    let mut next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
    let mut waits = 0;
    loop {
        match next["status"].as_str().unwrap() {
            "assigned" => {
                let pair = &next["pair"];
                let choice = if pair["left"].as_str().unwrap().starts_with('a') { "left" } else { "right" };
                let reply = rater
                    .post("/api/v1/votes", &serde_json::json!({"assignment_id": pair["assignment_id"], "choice": choice,
                        "strength": 2, "time_ms": 1500, "client_key": format!("{}-{}", rater.user_id, pair["pair_id"])}))
                    .await;
                assert_eq!(reply.status, 200, "{}", reply.text);
                acknowledged.push((
                    reply.json["vote"]["id"].as_i64().unwrap(),
                    reply.json["vote"]["pair_id"].as_i64().unwrap(),
                ));
                next = reply.json["next"].clone();
            }
            "waiting" if waits < 1000 => {
                waits += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                next = rater.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json;
            }
            "done" => return acknowledged,
            other => panic!("unexpected next status {other}: {next}"),
        }
    }
}

/// Every rater rates `campaign` to the end, all at once; then checks what the store kept:
/// every acknowledged vote, exactly `overlap` votes on each of the `pairs` pairs, no rater
/// twice on a pair, and a gap-free vote sequence.
pub async fn rate_to_the_end_within_overlap(
    raters: Vec<ApiClient>,
    campaign: i64,
    sql: &sqlx::AnyPool,
    pairs: usize,
    overlap: usize,
) {
    use std::collections::{HashMap, HashSet};
    let handles: Vec<_> = raters.into_iter().map(|r| tokio::spawn(rate_until_done(r, campaign))).collect();
    let mut acknowledged = Vec::new();
    for handle in handles {
        acknowledged.extend(handle.await.unwrap());
    }
    let votes = pairs * overlap;
    assert_eq!(acknowledged.len(), votes);
    let rows: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT id, pair_id, rater_id FROM comparisons").fetch_all(sql).await.unwrap();
    let stored: HashSet<i64> = rows.iter().map(|r| r.0).collect();
    assert!(acknowledged.iter().all(|(id, _)| stored.contains(id)), "every acknowledged vote is stored");
    let mut votes_per_pair: HashMap<i64, usize> = HashMap::new();
    let mut rater_pair = HashSet::new();
    for (_, pair, rater) in &rows {
        *votes_per_pair.entry(*pair).or_default() += 1;
        assert!(rater_pair.insert((*pair, *rater)), "rater {rater} voted twice on pair {pair}");
    }
    assert_eq!(votes_per_pair.len(), pairs);
    assert!(votes_per_pair.values().all(|&v| v == overlap), "{votes_per_pair:?}");
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM comparisons ORDER BY seq").fetch_all(sql).await.unwrap();
    assert_eq!(seqs, (1..=votes as i64).collect::<Vec<i64>>(), "vote sequence is gap-free");
}

/// `prompts` ready pairs: prompt `i` with responses `a{i}` (model `ma`) and `b{i}` (`mb`).
pub fn numbered_pairs(prompts: usize) -> Vec<Value> {
    (0..prompts)
        .map(|i| {
            serde_json::json!({"prompt": format!("prompt {i}"), "response_a": format!("a{i}"),
                               "response_b": format!("b{i}"), "model_a": "ma", "model_b": "mb"})
        })
        .collect()
}

/// A server that runs training runs: the trainer built by this workspace, runs in `dir/runs`.
pub fn with_trainer(dir: &std::path::Path) -> impl FnOnce(&mut Config) {
    let runs_dir = dir.join("runs");
    move |c: &mut Config| {
        c.trainer_command = trainer_binary();
        c.runs_dir = runs_dir.display().to_string();
    }
}

/// Sets up a server to run the real trainer into `dir/runs` and to check, every second, a
/// schedule that trains a 2-step reward model (on a tiny model written to `dir/model`) for
/// campaign 1 once 8 of its pairs are aggregated.
pub fn with_threshold_schedule(dir: &std::path::Path) -> impl FnOnce(&mut Config) {
    use pairwise_api::runs::{Method, RunSpec};
    use pairwise_server::runs::schedule::Schedule;
    use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
    let model = dir.join("model");
    write_tiny_model(&model, &tiny_config(), 2).expect("write the tiny model");
    let spec = RunSpec {
        method: Method::Reward,
        model: model.display().to_string(),
        args: ["--max-steps", "2", "--batch-size", "4", "--max-length", "48"].map(String::from).to_vec(),
        ..RunSpec::default()
    };
    let runs_dir = dir.join("runs");
    move |c: &mut Config| {
        c.trainer_command = trainer_binary();
        c.runs_dir = runs_dir.display().to_string();
        c.schedule_check_seconds = 1;
        c.schedules = vec![Schedule { campaign: 1, spec, daily_at: None, min_new_pairs: Some(8) }];
    }
}

/// The runs of `campaign` once one of them has succeeded (or after 30 s, whatever they are).
pub async fn runs_once_one_succeeded(admin: &ApiClient, campaign: i64) -> Value {
    let mut runs = Value::Null;
    for _ in 0..300 {
        runs = admin.get(&format!("/api/v1/campaigns/{campaign}/runs")).await.json;
        if runs.as_array().is_some_and(|r| r.iter().any(|r| r["status"] == "succeeded")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    runs
}

/// Parses a JSONL body.
pub fn jsonl(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.is_empty()).map(|l| serde_json::from_str(l).expect("JSONL line")).collect()
}
