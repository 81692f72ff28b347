//! The `pairwise` binary: parses the command line, sets up logging, runs the command.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json_logs = std::env::var("PAIRWISE_LOG_FORMAT").is_ok_and(|f| f == "json");
    let subscriber = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json_logs {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
    match pairwise_server::cli::run(pairwise_server::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
