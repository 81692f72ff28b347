//! Store benchmark: votes per second through the HTTP API with concurrent clients,
//! latency of `GET /next`, a streamed export of 1,000,000 votes with the server's peak
//! memory, the backup and restore of that database, and (`--large-pairs`) a campaign of a
//! million pairs and millions of votes: import time, stats, leaderboard and `GET next` —
//! on SQLite and on Postgres. The server runs as its own process (the `pairwise` binary
//! next to this one), so its memory is measured alone.
//!
//! `cargo build --release -p pairwise-server -p pairwise-tests && target/release/store-bench`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use pairwise_api::campaigns::{CampaignStatus, NewCampaign};
use pairwise_api::import::PairingOptions;
use pairwise_server::accounts::{TOKEN_PREFIX, hash_password, sha256_hex};
use pairwise_server::campaigns::create_campaign;
use pairwise_server::config::Config;
use pairwise_server::import::{ImportItem, ItemBody, ResponseIn, import_items};
use pairwise_server::store::{Db, now_ms, restore_sqlite};
use pairwise_tests::postgres_admin_url;
use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::Connection;

#[derive(Parser, Debug)]
struct Args {
    /// sqlite, postgres or both.
    #[arg(long, default_value = "both")]
    database: String,
    /// Concurrent HTTP clients (each a different rater).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of voting.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Votes in the export measurement (and in the database the backup figures are of).
    #[arg(long, default_value_t = 1_000_000)]
    export_votes: usize,
    /// Skip the votes/s and `GET next` measurements (export and backup figures only).
    #[arg(long)]
    skip_votes: bool,
    /// Skip the export and backup measurements.
    #[arg(long)]
    skip_export: bool,
    /// Pairs of the large-campaign measurement (0: leave it out): import time, then stats,
    /// leaderboard and `GET next` on the campaign with `--large-votes` votes.
    #[arg(long, default_value_t = 0)]
    large_pairs: usize,
    /// Votes of the large campaign (inserted directly, `large_votes / large_pairs` a pair).
    #[arg(long, default_value_t = 5_000_000)]
    large_votes: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    async fn start(database_url: &str, port: u16) -> anyhow::Result<ServerProcess> {
        let binary: PathBuf = std::env::current_exe()?.with_file_name("pairwise");
        anyhow::ensure!(
            binary.exists(),
            "{} not found: build it with `cargo build --release -p pairwise-server`",
            binary.display()
        );
        let child = Command::new(binary)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(ServerProcess { child, base });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("server did not become healthy")
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        // SIGTERM: graceful shutdown.
        Command::new("kill").arg(self.child.id().to_string()).status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for ServerProcess {
    /// A bench that fails midway must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Users with API tokens, inserted directly (one argon2 hash shared: this is a bench).
async fn make_raters(sql: &AnyPool, prefix: &str, n: usize) -> anyhow::Result<Vec<(i64, String)>> {
    let hash = hash_password("bench-password")?;
    let mut tx = sql.begin().await?;
    let mut raters = Vec::new();
    for i in 0..n {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO users (username, password_hash, role, active, created_at) VALUES ($1, $2, 'annotator', 1, $3) RETURNING id",
        )
        .bind(format!("{prefix}{i}"))
        .bind(&hash)
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
        let token = format!("{TOKEN_PREFIX}bench{prefix}{i}");
        sqlx::query("INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at) VALUES ($1, 'bench', $2, 'pw_', $3)")
            .bind(id)
            .bind(sha256_hex(&token))
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        raters.push((id, token));
    }
    tx.commit().await?;
    Ok(raters)
}

async fn make_campaign(db: &Db, name: &str, pairs: usize, overlap: i64) -> anyhow::Result<i64> {
    let campaign = create_campaign(
        db,
        &NewCampaign {
            name: name.into(),
            guidelines: String::new(),
            overlap,
            gold_rate: 0.0,
            status: CampaignStatus::Active,
            lease_seconds: 600,
            free_votes: false,
            kind: Default::default(),
            arena: Default::default(),
            aspects: Vec::new(),
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let response =
        |text: String, model: &str| ResponseIn { text, model: model.into(), model_version: None, params: json!({}) };
    let items: Vec<ImportItem> = (0..pairs)
        .map(|i| ImportItem {
            line: i + 1,
            prompt: format!("Benchmark prompt number {i}: explain something in a paragraph."),
            messages: Vec::new(),
            metadata: json!({}),
            body: ItemBody::Pair {
                a: Box::new(response(format!("Response A to prompt {i}, a few sentences long. ").repeat(4), "model-a")),
                b: Box::new(response(format!("Response B to prompt {i}, a few sentences long. ").repeat(4), "model-b")),
                gold: None,
            },
            gold_ranks: None,
        })
        .collect();
    import_items(db, campaign.id, items, &PairingOptions::default()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(campaign.id)
}

struct VoteFigures {
    votes: usize,
    seconds: f64,
    vote_latencies: Vec<Duration>,
    next_latencies: Vec<Duration>,
}

async fn vote_loop(
    base: String,
    token: String,
    campaign: i64,
    until: Instant,
    phase: &'static str,
) -> anyhow::Result<(usize, Vec<Duration>)> {
    let http = reqwest::Client::new();
    let mut next: Value =
        http.get(format!("{base}/api/v1/campaigns/{campaign}/next")).bearer_auth(&token).send().await?.json().await?;
    let mut latencies = Vec::new();
    let mut votes = 0;
    while Instant::now() < until && next["status"] == "assigned" {
        let body = json!({"assignment_id": next["pair"]["assignment_id"], "choice": if votes % 3 == 0 { "left" } else { "right" },
            "strength": 2, "time_ms": 4200, "client_key": format!("{phase}{votes}")});
        let started = Instant::now();
        let reply = http.post(format!("{base}/api/v1/votes")).bearer_auth(&token).json(&body).send().await?;
        anyhow::ensure!(reply.status().is_success(), "vote failed: {}", reply.text().await?);
        let outcome: Value = reply.json().await?;
        latencies.push(started.elapsed());
        votes += 1;
        next = outcome["next"].clone();
    }
    Ok((votes, latencies))
}

async fn measure_votes(server: &ServerProcess, db: &Db, sql: &AnyPool, args: &Args) -> anyhow::Result<VoteFigures> {
    let pairs = 40_000;
    let started = Instant::now();
    let campaign = make_campaign(db, "votes", pairs, 3).await?;
    let raters = make_raters(sql, "rater", args.clients).await?;
    eprintln!("set up {pairs} pairs and {} raters in {:.1} s", args.clients, started.elapsed().as_secs_f64());
    // Warm-up: one vote per client, not counted.
    let warm = Instant::now() + Duration::from_millis(300);
    let handles: Vec<_> = raters
        .iter()
        .map(|(_, t)| tokio::spawn(vote_loop(server.base.clone(), t.clone(), campaign, warm, "warm")))
        .collect();
    for h in handles {
        h.await??;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let handles: Vec<_> = raters
        .iter()
        .map(|(_, t)| tokio::spawn(vote_loop(server.base.clone(), t.clone(), campaign, until, "timed")))
        .collect();
    let mut votes = 0;
    let mut vote_latencies = Vec::new();
    for h in handles {
        let (n, l) = h.await??;
        votes += n;
        vote_latencies.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    vote_latencies.sort();

    // `GET /next` for raters holding no lease: each call makes a fresh assignment.
    let next_latencies = fresh_next_latencies(server, sql, "fresh", args.clients * 20, campaign).await?;
    Ok(VoteFigures { votes, seconds, vote_latencies, next_latencies })
}

/// Inserts `n` votes directly (25 raters × n/25 pairs), in multi-row batches.
async fn bulk_votes(db: &Db, sql: &AnyPool, n: usize) -> anyhow::Result<i64> {
    let raters_n = 25;
    let pairs_n = n.div_ceil(raters_n);
    let campaign = make_campaign(db, "export", pairs_n, 3).await?;
    insert_votes(sql, campaign, "exporter", raters_n, raters_n, n).await?;
    Ok(campaign)
}

/// Inserts `n` votes on the campaign's pairs directly, `per_pair` a pair from distinct
/// raters of `raters_n` new ones, in multi-row batches; sets the pairs' vote counts.
async fn insert_votes(
    sql: &AnyPool,
    campaign: i64,
    rater_prefix: &str,
    raters_n: usize,
    per_pair: usize,
    n: usize,
) -> anyhow::Result<()> {
    let raters = make_raters(sql, rater_prefix, raters_n).await?;
    let pair_ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM pairs WHERE campaign_id = $1 ORDER BY id")
        .bind(campaign)
        .fetch_all(sql)
        .await?;
    let batch = 500;
    let mut seq = 0i64;
    let now = now_ms();
    let mut tx = sql.begin().await?;
    let mut pending = 0;
    for chunk_start in (0..n).step_by(batch) {
        let rows = batch.min(n - chunk_start);
        let placeholders: Vec<String> = (0..rows)
            .map(|r| {
                let b = r * 9;
                format!(
                    "($1, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9,
                    b + 10
                )
            })
            .collect();
        let statement = format!(
            "INSERT INTO comparisons (campaign_id, seq, pair_id, rater_id, choice, strength, time_ms, swapped, client_key, created_at) VALUES {}",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(statement)).bind(campaign);
        for r in 0..rows {
            let k = chunk_start + r;
            seq += 1;
            let choice = ["a", "b", "a", "tie"][k % 4];
            query = query
                .bind(seq)
                .bind(pair_ids[k / per_pair])
                .bind(raters[k % raters_n].0)
                .bind(choice)
                .bind(if choice == "tie" { None } else { Some((k % 3) as i64 + 1) })
                .bind((1000 + k % 9000) as i64)
                .bind((k % 2) as i64)
                .bind(format!("k{k}"))
                .bind(now);
        }
        query.execute(&mut *tx).await?;
        pending += rows;
        if pending >= 50_000 {
            tx.commit().await?;
            tx = sql.begin().await?;
            pending = 0;
        }
    }
    sqlx::query("UPDATE campaigns SET vote_seq = $1 WHERE id = $2").bind(seq).bind(campaign).execute(&mut *tx).await?;
    sqlx::query(
        "UPDATE pairs SET vote_count = (SELECT COUNT(*) FROM comparisons c WHERE c.pair_id = pairs.id), \
         claimed = (SELECT COUNT(*) FROM comparisons c WHERE c.pair_id = pairs.id) WHERE campaign_id = $1",
    )
    .bind(campaign)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // Postgres: the bulk update above left a dead version of every pair (and its index
    // entries) that steady voting would have had vacuumed away long ago.
    if sql.connect_options().database_url.scheme() != "sqlite" {
        sqlx::query("VACUUM ANALYZE pairs, comparisons").execute(sql).await?;
    }
    Ok(())
}

/// Times of `rounds` sequential GETs of `path` (each must succeed).
async fn time_gets(server: &ServerProcess, token: &str, path: &str, rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let reply = http.get(format!("{}{path}", server.base)).bearer_auth(token).send().await?;
        anyhow::ensure!(reply.status().is_success(), "{path}: {}", reply.text().await?);
        reply.bytes().await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

/// `GET next` for `raters` fresh raters, 64 at a time: each call makes a fresh assignment.
async fn fresh_next_latencies(
    server: &ServerProcess,
    sql: &AnyPool,
    prefix: &str,
    raters: usize,
    campaign: i64,
) -> anyhow::Result<Vec<Duration>> {
    let fresh = make_raters(sql, prefix, raters).await?;
    let per_client = raters.div_ceil(64);
    let chunks: Vec<Vec<String>> =
        fresh.chunks(per_client).map(|c| c.iter().map(|(_, t)| t.clone()).collect()).collect();
    // Each client's connection, and the server's pool behind it, open before the timing: a
    // rater's browser keeps its connection, and this measures assignments, not connects.
    let warm: Vec<_> = chunks
        .iter()
        .map(|_| {
            let base = server.base.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                anyhow::ensure!(http.get(format!("{base}/healthz")).send().await?.status().is_success());
                Ok::<_, anyhow::Error>(http)
            })
        })
        .collect();
    let mut clients = Vec::new();
    for h in warm {
        clients.push(h.await??);
    }
    let handles: Vec<_> = chunks
        .into_iter()
        .zip(clients)
        .map(|(tokens, http)| {
            let base = server.base.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for token in tokens {
                    let started = Instant::now();
                    let reply =
                        http.get(format!("{base}/api/v1/campaigns/{campaign}/next")).bearer_auth(&token).send().await?;
                    anyhow::ensure!(reply.status().is_success());
                    let body: Value = reply.json().await?;
                    anyhow::ensure!(body["status"] == "assigned", "no pair: {body}");
                    latencies.push(started.elapsed());
                }
                Ok::<_, anyhow::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.await??);
    }
    latencies.sort();
    Ok(latencies)
}

/// A campaign of `large_pairs` pairs and `large_votes` votes: the import's time, then on a
/// server: the first stats (which fold every vote into the tallies), stats and leaderboard
/// with the tallies up to date, and `GET next` for fresh raters.
async fn measure_large(
    name: &str,
    db: &Db,
    sql: &AnyPool,
    database_url: &str,
    port: u16,
    args: &Args,
) -> anyhow::Result<()> {
    let per_pair = args.large_votes.div_ceil(args.large_pairs);
    let started = Instant::now();
    let campaign = make_campaign(db, "large", args.large_pairs, per_pair as i64 + 1).await?;
    let import_s = started.elapsed().as_secs_f64();
    println!("{name}: import of {} pairs: {import_s:.1} s; load average {}", args.large_pairs, load_average());
    let started = Instant::now();
    insert_votes(sql, campaign, "large", 25.max(per_pair), per_pair, args.large_votes).await?;
    eprintln!("{name}: inserted {} votes in {:.1} s", args.large_votes, started.elapsed().as_secs_f64());
    let token = admin_token(sql).await?;
    let mut server = ServerProcess::start(database_url, port).await?;
    let stats = format!("/api/v1/campaigns/{campaign}/stats");
    let leaderboard = format!("/api/v1/campaigns/{campaign}/leaderboard");
    let first = time_gets(&server, &token, &stats, 1).await?;
    println!(
        "{name}: first stats of {} votes (folds them all into the tallies): {:.1} s",
        args.large_votes,
        first[0].as_secs_f64()
    );
    let load_before = load_average();
    let stats_times = time_gets(&server, &token, &stats, 10).await?;
    let board_times = time_gets(&server, &token, &leaderboard, 10).await?;
    let next = fresh_next_latencies(&server, sql, "largefresh", 1280, campaign).await?;
    println!(
        "{name}: {} pairs, {} votes: stats p50 {:.0} ms, max {:.0} ms; leaderboard (200 bootstrap rounds) p50 {:.0} ms, \
         max {:.0} ms [10 each]; GET next (fresh assignment, 64 concurrent) p50 {:.2} ms, p99 {:.2} ms [{} samples]; \
         load average before {load_before}, after {}",
        args.large_pairs,
        args.large_votes,
        percentile(&stats_times, 0.5),
        percentile(&stats_times, 1.0),
        percentile(&board_times, 0.5),
        percentile(&board_times, 1.0),
        percentile(&next, 0.5),
        percentile(&next, 0.99),
        next.len(),
        load_average()
    );
    server.stop()?;
    Ok(())
}

async fn measure_export(
    server: &ServerProcess,
    token: &str,
    campaign: i64,
    format: &str,
) -> anyhow::Result<(usize, usize, f64)> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut response = http
        .get(format!("{}/api/v1/campaigns/{campaign}/export?format={format}", server.base))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "export failed: {}", response.status());
    let (mut bytes, mut lines) = (0usize, 0usize);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    Ok((lines, bytes, started.elapsed().as_secs_f64()))
}

/// Backup and restore of the database the export figures were of: SQLite through the
/// store (what `pairwise backup` / `pairwise restore` run), Postgres with `pg_dump -Fc` and
/// `pg_restore` into a new database.
async fn measure_backup(
    name: &str,
    db: &Db,
    database_url: &str,
    dir: &std::path::Path,
    votes: usize,
) -> anyhow::Result<()> {
    let run = |program: &str, args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new(program).args(args).status().with_context(|| format!("running {program}"))?;
        anyhow::ensure!(status.success(), "{program} failed: {status}");
        Ok(())
    };
    let (backup_s, restore_s, bytes) = if name == "sqlite" {
        let out = dir.join("backup.db");
        let started = Instant::now();
        let report = db.backup(&out).await?;
        let backup_s = started.elapsed().as_secs_f64();
        let restored = format!("sqlite://{}", dir.join("restored.db").display());
        let started = Instant::now();
        restore_sqlite(&restored, &out, false).await?;
        (backup_s, started.elapsed().as_secs_f64(), report.bytes)
    } else {
        let dump = dir.join("pairwise.dump");
        let dump_path = dump.to_str().context("dump path")?;
        let started = Instant::now();
        run("pg_dump", &["-Fc", "-f", dump_path, database_url])?;
        let backup_s = started.elapsed().as_secs_f64();
        let restored = format!("pairwise_bench_restored_{}", std::process::id());
        let mut conn = sqlx::AnyConnection::connect(&postgres_admin_url()).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {restored}"))).execute(&mut conn).await?;
        let restored_url = format!("{}/{restored}", postgres_admin_url().rsplit_once('/').context("postgres url")?.0);
        let started = Instant::now();
        run("pg_restore", &["--no-owner", "-d", &restored_url, dump_path])?;
        let restore_s = started.elapsed().as_secs_f64();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {restored} WITH (FORCE)"))).execute(&mut conn).await?;
        (backup_s, restore_s, std::fs::metadata(&dump)?.len())
    };
    println!(
        "{name}: backup of {votes} votes: {:.0} MB in {backup_s:.2} s; restore in {restore_s:.2} s; load average {}",
        bytes as f64 / 1e6,
        load_average()
    );
    Ok(())
}

async fn admin_token(sql: &AnyPool) -> anyhow::Result<String> {
    let (id, token) = make_raters(sql, "benchadmin", 1).await?.remove(0);
    sqlx::query("UPDATE users SET role = 'admin' WHERE id = $1").bind(id).execute(sql).await?;
    Ok(token)
}

async fn run_backend(name: &str, args: &Args, port: u16) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut pg_database = None;
    let database_url = if name == "sqlite" {
        format!("sqlite://{}", dir.path().join("bench.db").display())
    } else {
        sqlx::any::install_default_drivers();
        let db_name = format!("pairwise_bench_{}", std::process::id());
        let mut conn = sqlx::AnyConnection::connect(&postgres_admin_url()).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}"))).execute(&mut conn).await?;
        pg_database = Some(db_name.clone());
        format!("{}/{db_name}", postgres_admin_url().rsplit_once('/').context("postgres url")?.0)
    };
    let config = Config { database_url: database_url.clone(), ..Config::default() };
    let db = Db::connect(&config.db_settings()).await?;
    // Bulk set-up rows go in through a pool of the bench's own (multi-row inserts, 50,000
    // rows a transaction); everything measured goes through the server.
    let sql = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&database_url).await?;

    if !args.skip_votes {
        let mut server = ServerProcess::start(&database_url, port).await?;
        let load_before = load_average();
        let figures = measure_votes(&server, &db, &sql, args).await?;
        server.stop()?;
        println!(
            "{name}: {} clients, {:.0} votes/s ({} votes in {:.1} s); vote+next round trip p50 {:.2} ms, p99 {:.2} ms; \
             GET next (fresh assignment) p50 {:.2} ms, p99 {:.2} ms [{} samples]; load average before {load_before}, after {}",
            args.clients,
            figures.votes as f64 / figures.seconds,
            figures.votes,
            figures.seconds,
            percentile(&figures.vote_latencies, 0.5),
            percentile(&figures.vote_latencies, 0.99),
            percentile(&figures.next_latencies, 0.5),
            percentile(&figures.next_latencies, 0.99),
            figures.next_latencies.len(),
            load_average()
        );
    }

    if args.large_pairs > 0 {
        measure_large(name, &db, &sql, &database_url, port, args).await?;
    }
    if !args.skip_export {
        measure_export_and_backup(name, &db, &sql, &database_url, dir.path(), port, args).await?;
    }
    sql.close().await;
    db.close().await;
    if let Some(db_name) = pg_database {
        let mut conn = sqlx::AnyConnection::connect(&postgres_admin_url()).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db_name} WITH (FORCE)"))).execute(&mut conn).await?;
    }
    Ok(())
}

async fn measure_export_and_backup(
    name: &str,
    db: &Db,
    sql: &AnyPool,
    database_url: &str,
    dir: &std::path::Path,
    port: u16,
    args: &Args,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let campaign = bulk_votes(db, sql, args.export_votes).await?;
    let token = admin_token(sql).await?;
    eprintln!("{name}: inserted {} votes in {:.1} s", args.export_votes, started.elapsed().as_secs_f64());
    for format in ["raw", "trl"] {
        // A fresh server process per export, so its peak RSS is the export's.
        let mut server = ServerProcess::start(database_url, port).await?;
        let rss_idle = peak_rss_mb(server.child.id());
        let (lines, bytes, seconds) = measure_export(&server, &token, campaign, format).await?;
        let rss_peak = peak_rss_mb(server.child.id());
        println!(
            "{name}: export {format} of {} votes: {lines} lines, {:.0} MB in {seconds:.2} s; server peak RSS {rss_peak:.0} MB \
             (idle {rss_idle:.0} MB); load average {}",
            args.export_votes,
            bytes as f64 / 1e6,
            load_average()
        );
        server.stop()?;
    }
    measure_backup(name, db, database_url, dir, args.export_votes).await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let backends: Vec<&str> = match args.database.as_str() {
        "both" => vec!["sqlite", "postgres"],
        "sqlite" => vec!["sqlite"],
        "postgres" => vec!["postgres"],
        other => anyhow::bail!("--database must be sqlite, postgres or both, got {other}"),
    };
    for (i, backend) in backends.into_iter().enumerate() {
        run_backend(backend, &args, 39_300 + i as u16).await?;
    }
    Ok(())
}
