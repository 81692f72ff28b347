//! Page-load benchmark: server-side render of the rating page (`GET /rate/{id}`: session
//! check, the rater's current pair, Markdown rendering, the whole HTML document) under
//! concurrent clients, each logged in as a different annotator. Prints p50/p99 latency
//! and pages per second. The server runs in this process on a fresh SQLite database.
//!
//! `cargo build --release -p pairwise-tests --bin page-bench && target/release/page-bench`

use std::time::{Duration, Instant};

use clap::Parser;
use pairwise_server::accounts::Role;
use pairwise_server::accounts::users;
use pairwise_tests::{Backend, TestServer, create_campaign, import};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Concurrent clients (each a different annotator with its own session).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Seconds of measurement (after a short warm-up).
    #[arg(long, default_value_t = 15)]
    seconds: u64,
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = TestServer::start(Backend::Sqlite).await;
    let admin = server.client_for("bench-admin", Role::Admin).await;
    let campaign = create_campaign(
        &admin,
        json!({"name": "bench", "status": "active", "overlap": 1, "guidelines": "Prefer **correct** answers."}),
    )
    .await;
    // Realistic responses: a few paragraphs with a code block each.
    let body = "Here is how.\n\n".to_string() + &"Some explanation with `inline code` and *emphasis*. ".repeat(12);
    let lines: Vec<Value> = (0..args.clients * 2)
        .map(|i| {
            json!({"prompt": format!("Question {i}: how do I reverse a list in Python?"),
                   "response_a": format!("{body}\n\n```python\nxs = [{i}, 2, 3]\nxs.reverse()\n```"),
                   "response_b": format!("{body}\n\n```python\nxs = [{i}, 2, 3][::-1]\n```"),
                   "model_a": "m1", "model_b": "m2"})
        })
        .collect();
    import(&admin, campaign, &lines).await;

    let mut clients = Vec::new();
    for i in 0..args.clients {
        let name = format!("rater{i}");
        users::create_user(&server.db, &name, "bench-password", Role::Annotator).await?;
        let http = reqwest::Client::builder().cookie_store(true).build()?;
        let login = http
            .post(server.url("/api/v1/auth/login"))
            .json(&json!({"username": name, "password": "bench-password"}))
            .send()
            .await?;
        anyhow::ensure!(login.status() == 200, "login failed");
        clients.push(http);
    }
    let url = server.url(&format!("/rate/{campaign}"));
    let sample = clients[0].get(&url).send().await?;
    anyhow::ensure!(sample.status() == 200, "GET /rate answered {}", sample.status());
    let page = sample.text().await?;
    anyhow::ensure!(page.contains("id=\"response-a\""), "the rating page shows a pair");
    let page_kb = page.len() as f64 / 1024.0;

    let run = |duration: Duration| {
        let tasks: Vec<_> = clients
            .iter()
            .cloned()
            .map(|http| {
                let url = url.clone();
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let end = Instant::now() + duration;
                    while Instant::now() < end {
                        let start = Instant::now();
                        let reply = http.get(&url).send().await.expect("request");
                        assert_eq!(reply.status(), 200);
                        reply.bytes().await.expect("body");
                        latencies.push(start.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        async move {
            let mut all = Vec::new();
            for task in tasks {
                all.extend(task.await.expect("client"));
            }
            all
        }
    };
    run(Duration::from_secs(2)).await;
    let started = Instant::now();
    let mut latencies = run(Duration::from_secs(args.seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "rating page SSR, {} clients, {:.1} KB page: {} pages in {:.1} s = {:.0} pages/s; p50 {:.1} ms, p99 {:.1} ms (load average {})",
        args.clients,
        page_kb,
        latencies.len(),
        elapsed,
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );
    server.stop().await;
    Ok(())
}
