//! Several servers on one Postgres database behave as one: raters spread over two servers
//! get distinct pairs and never exceed the overlap, a session opened on one works on the
//! other, the login rate limit counts failures on both, a schedule fires once, a cancel
//! reaches the server that supervises the run, and a run whose server is killed is marked
//! interrupted by the other one. (The lease test runs on SQLite too.)

use std::collections::HashMap;
use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use pairwise_server::accounts::Role;
use pairwise_server::cluster::{hold_lease, release_lease};
use pairwise_tests::{
    ApiClient, Backend, TestServer, both_backends, create_campaign, import, numbered_pairs,
    rate_to_the_end_within_overlap, runs_once_one_succeeded, server_binary, site_root, trainer_binary, vote_all,
    with_threshold_schedule,
};
use pairwise_trainer::synthetic::{tiny_config, write_tiny_model};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_behave_as_one() {
    let first = TestServer::start_with(Backend::Postgres, |c| c.login_attempts_per_minute = 3).await;
    let second = first.start_sibling(|_| {}).await;
    let admin = first.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "shared", "overlap": 3, "status": "active"})).await;
    import(&admin, campaign, &numbered_pairs(12)).await;
    let mut raters = Vec::new();
    for i in 0..50 {
        let rater = first.client_for(&format!("rater{i}"), Role::Annotator).await;
        raters.push(if i % 2 == 0 { rater } else { rater.on(&second.base) });
    }

    // 50 raters, half on each server, ask at the same moment for 12 × 3 = 36 slots.
    let first_asks: Vec<Value> = futures::future::join_all(
        raters.iter().map(|r| async move { r.get(&format!("/api/v1/campaigns/{campaign}/next")).await.json }),
    )
    .await;
    let assigned: Vec<&Value> = first_asks.iter().filter(|n| n["status"] == "assigned").collect();
    assert_eq!(assigned.len(), 36, "exactly the open slots are leased, whichever server was asked");
    let mut per_pair: HashMap<i64, usize> = HashMap::new();
    for n in &assigned {
        *per_pair.entry(n["pair"]["pair_id"].as_i64().unwrap()).or_default() += 1;
    }
    assert!(per_pair.values().all(|&held| held == 3), "{per_pair:?}");

    rate_to_the_end_within_overlap(raters, campaign, &first.sql, 12, 3).await;

    // A session opened on one server works on the other (cookies ignore the port).
    let browser = first.anonymous();
    let login = browser.post("/api/v1/auth/login", &json!({"username": "admin", "password": "password-123"})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    let me = browser.on(&second.base).get("/api/v1/auth/me").await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.json["username"], "admin");

    // Failed logins count on both servers: 2 on one and 1 on the other use up the 3 allowed.
    let guesser = first.anonymous();
    let guess = json!({"username": "rater0", "password": "wrong-guess"});
    for client in [guesser.clone(), guesser.on(&second.base), guesser.clone()] {
        assert_eq!(client.post("/api/v1/auth/login", &guess).await.status, 401);
    }
    let right = json!({"username": "rater0", "password": "password-123"});
    for client in [guesser.clone(), guesser.on(&second.base)] {
        let blocked = client.post("/api/v1/auth/login", &right).await;
        assert_eq!(blocked.status, 429, "{}", blocked.text);
    }
    second.stop().await;
    first.stop().await;
}

/// A campaign of `pairs` pairs with overlap 1, each voted once.
async fn voted_campaign(server: &TestServer, admin: &ApiClient, pairs: usize) -> i64 {
    let campaign = create_campaign(admin, json!({"name": "runs", "status": "active", "overlap": 1})).await;
    import(admin, campaign, &numbered_pairs(pairs)).await;
    let rater = server.client_for("rater", Role::Annotator).await;
    vote_all(&rater, campaign, |pair| if pair["left"].as_str().unwrap().starts_with('a') { "left" } else { "right" })
        .await;
    campaign
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_fires_once_across_servers() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start_with(Backend::Postgres, with_threshold_schedule(dir.path())).await;
    let servers = [first.start_sibling(|_| {}).await, first.start_sibling(|_| {}).await];
    let admin = first.client_for("admin", Role::Admin).await;
    assert_eq!(voted_campaign(&first, &admin, 8).await, 1);
    let runs = runs_once_one_succeeded(&admin, 1).await;
    assert_eq!(runs.as_array().unwrap().len(), 1, "one run, not one per server: {runs}");
    assert_eq!(runs[0]["status"], "succeeded", "{runs}");
    // Three servers keep checking every second; none fires again on the same votes.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(admin.get("/api/v1/campaigns/1/runs").await.json.as_array().unwrap().len(), 1);
    for server in servers {
        server.stop().await;
    }
    first.stop().await;
}

/// The lease that elects the scheduler: one holder at a time, renewed by it, taken over by
/// another only once it has expired, and free again when given back.
async fn leases_have_one_holder(backend: Backend) {
    let server = TestServer::start(backend).await;
    let db = &server.db;
    assert!(hold_lease(db, "job", "a", 60_000).await.unwrap());
    assert!(!hold_lease(db, "job", "b", 60_000).await.unwrap(), "held by a");
    assert!(hold_lease(db, "job", "a", 60_000).await.unwrap(), "renewed by its holder");
    assert!(hold_lease(db, "other", "b", 60_000).await.unwrap(), "leases are per name");
    sqlx::query("UPDATE leases SET expires_at = 0 WHERE name = 'job'").execute(&server.sql).await.unwrap();
    assert!(hold_lease(db, "job", "b", 60_000).await.unwrap(), "an expired lease is taken over");
    assert!(!hold_lease(db, "job", "a", 60_000).await.unwrap());
    release_lease(db, "job", "a").await.unwrap();
    assert!(!hold_lease(db, "job", "a", 60_000).await.unwrap(), "only the holder can give it back");
    release_lease(db, "job", "b").await.unwrap();
    assert!(hold_lease(db, "job", "a", 60_000).await.unwrap());
    server.stop().await;
}
both_backends!(leases_have_one_holder);

/// A `pairwise serve` in a process of its own (and process group, so that killing it
/// kills the trainer it started too, as losing its machine would).
struct ServerProcess {
    child: std::process::Child,
    base: String,
}

impl ServerProcess {
    async fn start(database_url: &str, runs_dir: &std::path::Path) -> ServerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let bind = format!("127.0.0.1:{port}");
        let child = std::process::Command::new(server_binary())
            .args(["serve", "--bind", &bind])
            .env("DATABASE_URL", database_url)
            .env("PAIRWISE_SECRET", "test-secret")
            .env("PAIRWISE_TRAINER_COMMAND", trainer_binary())
            .env("PAIRWISE_RUNS_DIR", runs_dir)
            .env("PAIRWISE_RUN_HEARTBEAT_SECONDS", "1")
            .env("PAIRWISE_SITE_ROOT", site_root())
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start the pairwise binary");
        let server = ServerProcess { child, base: format!("http://{bind}") };
        for _ in 0..200 {
            if reqwest::get(format!("{}/healthz", server.base)).await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server process did not come up on {bind}");
    }
}

/// SIGKILL to the whole process group: no shutdown, no clean-up (also when a test fails,
/// so that no server outlives it).
impl Drop for ServerProcess {
    fn drop(&mut self) {
        let group = self.child.id() as libc::pid_t;
        // SAFETY: killpg only sends a signal; the group is the child's own (process_group(0)).
        unsafe { libc::killpg(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

async fn wait_for_status(admin: &ApiClient, run: i64, not: &str) -> Value {
    for _ in 0..200 {
        let reply = admin.get(&format!("/api/v1/runs/{run}")).await;
        if reply.json["status"] != not {
            return reply.json;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {run} stayed {not} for 20 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_are_supervised_by_one_server_and_outlive_none() {
    let dir = tempfile::tempdir().unwrap();
    let runs_dir = dir.path().join("runs");
    let first = TestServer::start_with(Backend::Postgres, |c| {
        c.trainer_command = trainer_binary();
        c.runs_dir = runs_dir.display().to_string();
        c.run_heartbeat_seconds = 1;
    })
    .await;
    let admin = first.client_for("admin", Role::Admin).await;
    let campaign = voted_campaign(&first, &admin, 8).await;
    let model = dir.path().join("model");
    write_tiny_model(&model, &tiny_config(), 2).unwrap();
    let long = json!({"method": "reward", "model": model.display().to_string(),
                      "args": ["--max-steps", "100000", "--batch-size", "4", "--max-length", "48"]});
    let other = ServerProcess::start(&first.config.database_url, &runs_dir).await;
    let remote = admin.on(&other.base);

    // A run started through the other server is its to supervise; a cancel asked of this
    // one reaches it through the database.
    let started = remote.post(&format!("/api/v1/campaigns/{campaign}/runs"), &long).await;
    assert_eq!(started.status, 201, "{}", started.text);
    let id = started.json["id"].as_i64().unwrap();
    let supervisor = started.json["supervisor"].as_str().unwrap().to_string();
    assert!(!supervisor.is_empty());
    let cancelled = admin.post(&format!("/api/v1/runs/{id}/cancel"), &json!({})).await;
    assert_eq!(cancelled.status, 200, "{}", cancelled.text);
    assert_eq!(cancelled.json["status"], "cancelled", "{}", cancelled.text);

    // Another run keeps running while its server beats: this server leaves it alone.
    let started = remote.post(&format!("/api/v1/campaigns/{campaign}/runs"), &long).await;
    assert_eq!(started.status, 201, "{}", started.text);
    let id = started.json["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(admin.get(&format!("/api/v1/runs/{id}")).await.json["status"], "running");

    // Its server dies: within a few heartbeats this server marks the run interrupted.
    let killed_at = std::time::Instant::now();
    drop(other);
    let run = wait_for_status(&admin, id, "running").await;
    assert_eq!(run["status"], "interrupted", "{run}");
    assert!(run["exit_reason"].as_str().unwrap().contains("server"), "{run}");
    assert!(killed_at.elapsed() < Duration::from_secs(10), "marked after {:?}", killed_at.elapsed());
    first.stop().await;
}
