//! The `whispr` command: a thin shell over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

use whispr::config::{Config, LogFormat, Overrides};
use whispr::server::Server;

#[derive(Parser)]
#[command(
    name = "whispr",
    version,
    about = "WebSocket-first push relay for end-to-end-encrypted chat"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (in-memory store unless configured otherwise).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see whispr.example.toml).
    #[arg(long, env = "WHISPR_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8000].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Public host[:port] clients dial, bound into their signatures.
    #[arg(long)]
    origin: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or whispr=debug.
    #[arg(long)]
    log_level: Option<String>,
    /// PEM certificate chain: serve https:// and wss:// directly (with --tls-key).
    #[arg(long)]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    tls_key: Option<String>,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?} (text or json)")),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen,
        origin: args.origin,
        log_format: args.log_format,
        log_level: args.log_level,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    let config = Config::load(args.config.as_deref(), &overrides)?;
    whispr::telemetry::init(&config);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is another process using the port?)",
                    config.listen
                )
            })?;
        let server = Server::new(config);
        tokio::spawn(whispr::shutdown::forward_reloads(server.reload_handle()));
        server.run(listener, whispr::shutdown::signal()).await?;
        Ok(())
    })
}
