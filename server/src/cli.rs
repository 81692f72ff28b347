//! The `pairwise` command line: serve, migrate, demo, and admin tasks (users, tokens,
//! campaigns, import, export, stats, backup and restore) that act on the database directly.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use pairwise_api::accounts::{Role, UserUpdate};
use pairwise_api::campaigns::{Aspect, CampaignKind, CampaignStatus, CampaignUpdate, NewCampaign};
use pairwise_api::export::{ExportParams, Format, InducedPairs, RaterIds};
use pairwise_api::import::PairingOptions;

use crate::accounts::tokens::{create_token, list_tokens, revoke_token};
use crate::accounts::users::{create_user, find_user, list_users, update_user};
use crate::campaigns::{create_campaign, list_campaigns, update_campaign};
use crate::config::Config;
use crate::error::ApiError;
use crate::export::start_export;
use crate::http::state::AppState;
use crate::import::import_jsonl;
use crate::store::{Db, restore_sqlite};
use crate::{demo, http, leaderboard, stats, store};

/// Pairwise: collect human preference votes on model responses and export them as
/// training data. Database from DATABASE_URL (default sqlite://pairwise.db).
#[derive(Parser, Debug)]
#[command(name = "pairwise", version, about)]
pub struct Cli {
    /// TOML configuration file (also PAIRWISE_CONFIG).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Database URL, overriding DATABASE_URL and the config file.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server (applies migrations first).
    Serve {
        /// Listen address, e.g. 127.0.0.1:3000 (also PAIRWISE_BIND).
        #[arg(long)]
        bind: Option<String>,
        /// Seed the demo users and campaign first if they are missing.
        #[arg(long)]
        demo: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Seed demo users and a demo campaign.
    Demo,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage campaigns.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Import a JSONL file of prompts with responses (or ready pairs) into a campaign.
    Import {
        #[arg(long)]
        campaign: i64,
        /// JSONL file; `-` reads standard input.
        file: PathBuf,
        /// Sample at most this many pairs per prompt instead of all K·(K−1)/2.
        #[arg(long)]
        max_pairs_per_prompt: Option<usize>,
        /// Seed of the pair sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Export a campaign's votes as JSONL (stdout unless --out).
    Export(ExportArgs),
    /// Print campaign statistics as JSON.
    Stats {
        #[arg(long)]
        campaign: i64,
    },
    /// Back up a SQLite database into a new file, safely while servers keep writing to it
    /// (for Postgres use pg_dump).
    Backup {
        /// The backup file to write (it must not exist yet).
        #[arg(long)]
        out: PathBuf,
    },
    /// Replace a SQLite database with a backup, after checking it; refused while a server
    /// is serving the database (for Postgres use pg_restore or psql).
    Restore {
        /// The backup file, written by `pairwise backup`.
        #[arg(long)]
        from: PathBuf,
        /// Replace a database that already holds pairs.
        #[arg(long)]
        force: bool,
    },
    /// Print the Bradley–Terry model leaderboard as JSON.
    Leaderboard {
        #[arg(long)]
        campaign: i64,
        /// Bootstrap rounds for the 95% intervals.
        #[arg(long, default_value_t = 200)]
        bootstrap: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user. The password is read from standard input unless --password is given.
    Add {
        username: String,
        #[arg(long, value_parser = parse_role, default_value = "annotator")]
        role: Role,
        #[arg(long)]
        password: Option<String>,
    },
    /// List users.
    List,
    /// Disable a user: they can no longer log in and their sessions end.
    Disable { username: String },
    /// Re-enable a disabled user.
    Enable { username: String },
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token for a user and print it (it is shown only this once).
    Create {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// Revoke a token by id.
    Revoke { id: i64 },
    /// List tokens (never the secrets).
    List,
}

#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Create a campaign.
    Create {
        #[arg(long)]
        name: String,
        /// Votes wanted per pair.
        #[arg(long, default_value_t = 3)]
        overlap: i64,
        /// Share of served pairs that are gold checks (0..1).
        #[arg(long, default_value_t = 0.0)]
        gold_rate: f64,
        /// Markdown file with the rating guidelines.
        #[arg(long)]
        guidelines_file: Option<PathBuf>,
        /// draft, active, paused or closed.
        #[arg(long, value_parser = parse_status, default_value = "active")]
        status: CampaignStatus,
        /// Lease on a handed-out pair, in seconds.
        #[arg(long, default_value_t = 600)]
        lease_seconds: i64,
        /// Accept votes without a lease.
        #[arg(long)]
        free_votes: bool,
        /// An aspect raters also choose on, `name: description` (repeat for several).
        #[arg(long = "aspect", value_parser = parse_aspect)]
        aspects: Vec<Aspect>,
        /// Raters order all of each prompt's 2-6 responses instead of choosing between two.
        #[arg(long, conflicts_with_all = ["thumbs", "scale"])]
        ranking: bool,
        /// Raters give each response thumbs up or down, one at a time.
        #[arg(long, conflicts_with = "scale")]
        thumbs: bool,
        /// Raters rate each response 1-5, one at a time.
        #[arg(long)]
        scale: bool,
    },
    /// List campaigns with their progress.
    List,
    /// Close a campaign: no more pairs are handed out or votes accepted.
    Close { id: i64 },
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[arg(long)]
    campaign: i64,
    /// trl, messages, raw, kto, sft or ranking (ranking campaigns).
    #[arg(long, value_parser = parse_format)]
    format: Format,
    /// Keep pairs with at least this many votes (trl/messages/kto/sft).
    #[arg(long, default_value_t = 1)]
    min_votes: i64,
    /// Keep pairs whose majority has at least this share of votes (trl/messages/kto/sft).
    #[arg(long, default_value_t = 0.0)]
    min_agreement: f64,
    /// Only what is new since this cursor (printed by the previous export).
    #[arg(long, default_value_t = 0)]
    since: i64,
    /// Add pair_id, votes, agreement, strength, seq to trl/messages rows.
    #[arg(long)]
    meta: bool,
    /// Include gold-check pairs.
    #[arg(long)]
    include_gold: bool,
    /// raw: identify raters by user id instead of a pseudonym.
    #[arg(long)]
    rater_ids: bool,
    /// kto: only both-bad verdicts, not the winners and losers of decided pairs.
    #[arg(long)]
    only_both_bad: bool,
    /// Per-aspect campaigns: the choices on this aspect instead of the overall ones.
    #[arg(long)]
    aspect: Option<String>,
    /// Ranking campaigns, trl/messages: only pairs of neighbouring ranks (default: all pairs).
    #[arg(long)]
    adjacent_pairs: bool,
    /// Thumbs and scale campaigns, kto/sft: the mean rating a response must be above to be
    /// desirable (below it: undesirable; default the scale's middle, 0.5 or 3).
    #[arg(long)]
    threshold: Option<f64>,
    /// Output file (default: standard output).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("role must be admin or annotator, got `{s}`"))
}

fn parse_status(s: &str) -> Result<CampaignStatus, String> {
    CampaignStatus::parse(s).ok_or_else(|| format!("status must be draft, active, paused or closed, got `{s}`"))
}

fn parse_aspect(s: &str) -> Result<Aspect, String> {
    let (name, description) = s.split_once(':').unwrap_or((s, ""));
    Ok(Aspect { name: name.trim().to_string(), description: description.trim().to_string() })
}

fn parse_format(s: &str) -> Result<Format, String> {
    Format::parse(s).ok_or_else(|| format!("format must be trl, messages, raw, kto, sft or ranking, got `{s}`"))
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Turns API errors into readable CLI errors, listing every import problem.
fn explain(error: ApiError) -> anyhow::Error {
    if let ApiError::BadRequest { message, details: Some(details) } = &error {
        let lines: Vec<String> = details
            .errors
            .iter()
            .map(|e| {
                let field = if e.field.is_empty() { String::new() } else { format!(" field `{}`", e.field) };
                format!("  line {}{}: {}", e.line, field, e.message)
            })
            .collect();
        return anyhow::anyhow!("{message}\n{}", lines.join("\n"));
    }
    anyhow::anyhow!("{error}")
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database_url = url;
    }
    // A restore replaces the file the store would open: it runs with no connection of ours.
    if let Command::Restore { from, force } = &cli.command {
        let report = restore_sqlite(&config.database_url, from, *force).await?;
        eprintln!("restored {} votes and {} pairs from {}", report.votes, report.pairs, from.display());
        return print_json(&report);
    }
    // On SQLite a server claims the file before it connects, so a second server is refused
    // before its migrations or demo seed could touch a database another one is serving.
    let serve_lock = match &cli.command {
        Command::Serve { bind, .. } => {
            let bind = bind.as_deref().unwrap_or(&config.bind);
            let holder = format!("pairwise serve (pid {}, binding {bind})", std::process::id());
            store::lock_sqlite_for_serving(&config.database_url, &holder)?
        }
        _ => None,
    };
    let db = Db::connect(&config.db_settings()).await?;
    let result = run_command(cli.command, &db, config, serve_lock).await;
    db.close().await;
    result
}

async fn run_command(
    command: Command,
    db: &Db,
    mut config: Config,
    serve_lock: Option<store::ServeLock>,
) -> anyhow::Result<()> {
    match command {
        Command::Serve { bind, demo } => {
            if let Some(bind) = bind {
                config.bind = bind;
            }
            if demo && demo::seed_demo(db).await.map_err(explain)?.is_some() {
                print_demo_logins();
            }
            let listener = tokio::net::TcpListener::bind(&config.bind)
                .await
                .with_context(|| format!("binding {}", config.bind))?;
            tracing::info!(address = %listener.local_addr()?, "pairwise listening");
            let state = AppState::new(db.clone(), config);
            http::serve_holding(listener, state, http::shutdown_signal(), serve_lock).await?;
        }
        Command::Migrate => println!("database is up to date"),
        Command::Demo => match demo::seed_demo(db).await.map_err(explain)? {
            Some(report) => {
                print_json(&report)?;
                print_demo_logins();
            }
            None => println!("demo campaign already present"),
        },
        Command::User(command) => user_command(command, db).await?,
        Command::Token(command) => token_command(command, db).await?,
        Command::Campaign(command) => campaign_command(command, db).await?,
        Command::Import { campaign, file, max_pairs_per_prompt, seed } => {
            let data = if file.as_os_str() == "-" {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut data)?;
                data
            } else {
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
            };
            if data.len() > config.max_import_bytes {
                anyhow::bail!(
                    "{} is {} bytes, over the import limit of {} (max_import_bytes)",
                    file.display(),
                    data.len(),
                    config.max_import_bytes
                );
            }
            let options = PairingOptions { max_pairs_per_prompt, seed };
            let report = import_jsonl(db, campaign, &data, &options)
                .await
                .map_err(explain)
                .with_context(|| format!("importing {}", file.display()))?;
            print_json(&report)?;
        }
        Command::Export(args) => export_command(args, db, &config).await?,
        Command::Backup { out } => print_json(&db.backup(&out).await?)?,
        Command::Restore { .. } => unreachable!("restores run before connecting"),
        Command::Stats { campaign } => print_json(&stats::campaign_stats(db, campaign).await.map_err(explain)?)?,
        Command::Leaderboard { campaign, bootstrap } => {
            print_json(&leaderboard::campaign_leaderboard(db, campaign, None, bootstrap, 0).await.map_err(explain)?)?
        }
    }
    Ok(())
}

fn print_demo_logins() {
    println!(
        "demo logins: {} / {} (admin), {} / {} (annotator)",
        demo::DEMO_ADMIN.0,
        demo::DEMO_ADMIN.1,
        demo::DEMO_ANNOTATOR.0,
        demo::DEMO_ANNOTATOR.1
    );
}

async fn user_command(command: UserCommand, db: &Db) -> anyhow::Result<()> {
    match command {
        UserCommand::Add { username, role, password } => {
            let password = match password {
                Some(p) => p,
                None => {
                    eprintln!("password for {username}:");
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            print_json(&create_user(db, &username, &password, role).await.map_err(explain)?)?;
        }
        UserCommand::List => print_json(&list_users(db).await.map_err(explain)?)?,
        UserCommand::Disable { username } => set_active(db, &username, false).await?,
        UserCommand::Enable { username } => set_active(db, &username, true).await?,
    }
    Ok(())
}

async fn set_active(db: &Db, username: &str, active: bool) -> anyhow::Result<()> {
    let user = find_user(db, username).await.map_err(explain)?;
    let update = UserUpdate { active: Some(active), ..UserUpdate::default() };
    print_json(&update_user(db, user.id, update).await.map_err(explain)?)
}

async fn token_command(command: TokenCommand, db: &Db) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { user, name } => {
            let user = find_user(db, &user).await.map_err(explain)?;
            let token = create_token(db, user.id, &name).await.map_err(explain)?;
            eprintln!("token {} created for {}; store it now, it is not shown again:", token.info.id, user.username);
            println!("{}", token.token);
        }
        TokenCommand::Revoke { id } => {
            revoke_token(db, id, None).await.map_err(explain)?;
            println!("token {id} revoked");
        }
        TokenCommand::List => print_json(&list_tokens(db, None).await.map_err(explain)?)?,
    }
    Ok(())
}

async fn campaign_command(command: CampaignCommand, db: &Db) -> anyhow::Result<()> {
    match command {
        CampaignCommand::Create {
            name,
            overlap,
            gold_rate,
            guidelines_file,
            status,
            lease_seconds,
            free_votes,
            aspects,
            ranking,
            thumbs,
            scale,
        } => {
            let guidelines = match guidelines_file {
                Some(path) => std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
                None => String::new(),
            };
            let new = NewCampaign {
                name,
                guidelines,
                overlap,
                gold_rate,
                status,
                lease_seconds,
                free_votes,
                kind: match (ranking, thumbs, scale) {
                    (true, _, _) => CampaignKind::Ranking,
                    (_, true, _) => CampaignKind::Thumbs,
                    (_, _, true) => CampaignKind::Scale,
                    _ => CampaignKind::Pairwise,
                },
                arena: Default::default(),
                aspects,
            };
            print_json(&create_campaign(db, &new).await.map_err(explain)?)?;
        }
        CampaignCommand::List => print_json(&list_campaigns(db, 0, false).await.map_err(explain)?)?,
        CampaignCommand::Close { id } => {
            let update = CampaignUpdate { status: Some(CampaignStatus::Closed), ..CampaignUpdate::default() };
            print_json(&update_campaign(db, id, &update).await.map_err(explain)?)?;
        }
    }
    Ok(())
}

async fn export_command(args: ExportArgs, db: &Db, config: &Config) -> anyhow::Result<()> {
    let params = ExportParams {
        format: args.format,
        min_votes: args.min_votes,
        min_agreement: args.min_agreement,
        since: args.since,
        meta: args.meta,
        include_gold: args.include_gold,
        raters: if args.rater_ids { RaterIds::Id } else { RaterIds::Pseudonym },
        decisive: !args.only_both_bad,
        aspect: args.aspect,
        pairs: if args.adjacent_pairs { InducedPairs::Adjacent } else { InducedPairs::All },
        threshold: args.threshold,
    };
    let (cursor, mut rx) = start_export(db, args.campaign, params, config.secret.clone()).await.map_err(explain)?;
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(chunk) = rx.recv().await {
        out.write_all(&chunk.context("export failed")?)?;
    }
    out.flush()?;
    eprintln!("cursor: {cursor} (pass --since {cursor} next time for only new votes)");
    Ok(())
}
