//! Training straight from a Pairwise server: a stand-in server (one std TCP listener) checks
//! the request the trainer sends (path, `since`, bearer token) and answers with a TRL export
//! and an `X-Pairwise-Cursor` header; errors from the server reach the user verbatim.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use pairwise_trainer::data::remote::{ServerSource, fetch_export};
use pairwise_trainer::synthetic::{rule_pairs, tiny_config, write_tiny_model};
use pairwise_trainer::train::config::TrainConfig;

/// Serves one request with `status` and `body`; sends back the request line and headers.
fn serve_once(status: &'static str, body: String) -> (String, mpsc::Receiver<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            head.push(line.trim().to_string());
        }
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-ndjson\r\nX-Pairwise-Cursor: 42\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).unwrap();
        tx.send(head).unwrap();
    });
    (url, rx)
}

#[test]
fn trains_on_a_campaign_export_and_keeps_the_cursor() {
    let dir = tempfile::tempdir().unwrap();
    write_tiny_model(&dir.path().join("model"), &tiny_config(), 1).unwrap();
    let (url, request) = serve_once("200 OK", rule_pairs(24, 9).join("\n") + "\n");
    let config = TrainConfig {
        model: dir.path().join("model"),
        server: Some(url),
        campaign: Some("7".into()),
        token: Some("secret-token".into()),
        since: 5,
        output: dir.path().join("out"),
        max_steps: Some(2),
        progress: false,
        ..TrainConfig::default()
    };
    pairwise_trainer::methods::reward::run_reward(&config).unwrap();
    let head = request.recv().unwrap();
    assert_eq!(head[0], "GET /api/v1/campaigns/7/export?format=trl&since=5 HTTP/1.1");
    assert!(head.iter().any(|h| h.eq_ignore_ascii_case("authorization: Bearer secret-token")), "{head:?}");
    assert_eq!(std::fs::read_to_string(config.output.join("export-cursor.txt")).unwrap(), "42");
    let saved = std::fs::read_to_string(config.output.join("export.jsonl")).unwrap();
    assert_eq!(saved.lines().count(), 24);
}

#[test]
fn server_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _request) = serve_once("401 Unauthorized", r#"{"error":"invalid token"}"#.into());
    let source = ServerSource { server: url, campaign: "1".into(), token: "bad".into(), since: 0, format: "trl" };
    let err = fetch_export(&source, dir.path()).unwrap_err().to_string();
    assert!(err.contains("401") && err.contains("invalid token"), "{err}");
}
