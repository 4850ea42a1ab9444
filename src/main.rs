//! The `whispr` command: a thin shell over the library.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use whispr::cli;
use whispr::config::{Config, LogFormat, Overrides, StoreKind};
use whispr::protocol::Codec;
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
    /// Create an identity file and print its public key (your address).
    Keygen(KeygenArgs),
    /// Encrypt a message to a public key and hand it to the relay.
    Send(SendArgs),
    /// Print messages as they arrive, decrypted; reconnects until stopped.
    Listen(ListenArgs),
    /// Print what is queued for you (one HTTP read) and acknowledge it.
    Inbox(ListenArgs),
    /// Load-test a relay: throughput, latency, losses, duplicates, memory.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    #[command(flatten)]
    relay: RelayArgs,
    /// Recipient sessions. Not given: fewer if the relay's max_connections_per_ip (in
    /// its /v1/info) would refuse them, said on stderr.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Sender sessions.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Target messages per second (open loop); without it, as fast as accepted. Neither
    /// --rate nor --messages given: the relay's per-IP and per-sender rates (from its
    /// /v1/info) when they would refuse a max-rate run, said on stderr.
    #[arg(long)]
    rate: Option<u64>,
    /// Messages to send without --rate.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Body bytes per message.
    #[arg(long, default_value_t = 256)]
    size: usize,
    /// Seconds of sending with --rate.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Frame encoding: json or msgpack.
    #[arg(long, default_value = "msgpack", value_parser = parse_codec)]
    codec: Codec,
    /// Share of recipients (0 to 1) that connect only after sending: offline queues.
    #[arg(long, default_value_t = 0.0)]
    offline: f64,
    /// Seconds to wait for the last deliveries after sending.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Seconds at the start of sending reported apart (warm-up), beside the rest.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds after the start when every receiver drops its connection and connects
    /// again at once (a reconnect storm, as after a relay restart); the report says
    /// when p99 was back under 5 ms.
    #[arg(long, value_name = "SECONDS")]
    storm_at: Option<f64>,
    /// The relay's pid, to report its resident memory.
    #[arg(long)]
    relay_pid: Option<u32>,
    /// Several nodes: senders connect to this relay URL, recipients to --server, so
    /// every message crosses nodes (through Redis).
    #[arg(long, value_name = "URL")]
    send_via: Option<String>,
    /// One JSON line instead of the table.
    #[arg(long)]
    json: bool,
    /// First measure this machine's signature verification ceiling (one core and all
    /// cores, verify_strict, single and batched ZIP-215; about 6 s), then run, and print
    /// the relay's rate as ratios to it.
    #[arg(long)]
    verify_ceiling: bool,
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    match s {
        "json" => Ok(Codec::Json),
        "msgpack" => Ok(Codec::MsgPack),
        other => Err(format!("unknown codec {other:?} (json or msgpack)")),
    }
}

/// Where the relay is (shared by the chat commands).
#[derive(clap::Args)]
struct RelayArgs {
    /// Relay URL: http(s):// or ws(s)://.
    #[arg(long, env = "WHISPR_SERVER", default_value = cli::DEFAULT_SERVER)]
    server: String,
    /// PEM file of CA or self-signed certificates to trust for https/wss.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

impl From<RelayArgs> for cli::RelayOptions {
    fn from(a: RelayArgs) -> Self {
        cli::RelayOptions {
            server: a.server,
            ca: a.ca,
        }
    }
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Identity file to create (mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing identity file (the old identity is lost).
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct SendArgs {
    #[command(flatten)]
    relay: RelayArgs,
    /// Your identity file.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The recipient's public key (64 hex characters).
    #[arg(long, value_name = "PUBKEY")]
    to: String,
    /// The message; read from standard input when absent.
    text: Option<String>,
}

#[derive(clap::Args)]
struct ListenArgs {
    #[command(flatten)]
    relay: RelayArgs,
    /// Your identity file; the cursor is kept in FILE.cursor.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// One JSON object per line: id, seq, epoch, from, timestamp, text.
    #[arg(long)]
    json: bool,
    /// Use MessagePack on the WebSocket instead of JSON.
    #[arg(long)]
    msgpack: bool,
}

impl From<ListenArgs> for cli::ListenOptions {
    fn from(a: ListenArgs) -> Self {
        cli::ListenOptions {
            relay: a.relay.into(),
            key: a.key,
            json: a.json,
            msgpack: a.msgpack,
        }
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (see whispr.example.toml).
    #[arg(long, env = "WHISPR_CONFIG")]
    config: Option<PathBuf>,
    /// A Whispr v1 settings.json (max_messages_per_recipient, max_messages_per_second,
    /// message_ttl_seconds, attachment_max_size_bytes), read after --config.
    #[arg(long, value_name = "FILE")]
    settings: Option<PathBuf>,
    /// Address to listen on: ip:port or host:port [default: 127.0.0.1:8000].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Public host[:port] clients dial, bound into their signatures.
    #[arg(long)]
    origin: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or whispr=debug.
    #[arg(long)]
    log_level: Option<String>,
    /// Message store: memory, redis or auto.
    #[arg(long, value_parser = parse_store)]
    store: Option<StoreKind>,
    /// Redis URL for --store redis|auto (redis://[:password@]host:port[/db], rediss://).
    #[arg(long, env = "WHISPR_REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (redis://host:port,...); replaces --redis-url.
    #[arg(long, env = "WHISPR_REDIS_CLUSTER_URLS", hide_env_values = true)]
    redis_cluster_urls: Option<String>,
    /// PEM certificate chain: serve https:// and wss:// directly (with --tls-key).
    #[arg(long)]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long)]
    tls_key: Option<String>,
}

fn parse_store(s: &str) -> Result<StoreKind, String> {
    match s {
        "memory" => Ok(StoreKind::Memory),
        "redis" => Ok(StoreKind::Redis),
        "auto" => Ok(StoreKind::Auto),
        other => Err(format!("unknown store {other:?} (memory, redis or auto)")),
    }
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("unknown log format {other:?} (text or json)")),
    }
}

fn main() -> ExitCode {
    // Usage errors exit 1 like every other input error (clap's own default is 2,
    // which the chat commands use for "the relay refused").
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match cli.command {
        Command::Serve(args) => match serve(args, matches.subcommand_matches("serve")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                // One line, printed once: `{:#}` joins the causes with ": ".
                eprintln!("whispr: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Keygen(a) => chat("keygen", async move {
            cli::keygen(&cli::KeygenOptions {
                out: a.out,
                force: a.force,
            })
        }),
        Command::Send(a) => chat("send", async move {
            cli::send(&cli::SendOptions {
                relay: a.relay.into(),
                key: a.key,
                to: a.to,
                text: a.text,
            })
            .await
        }),
        Command::Listen(a) => chat("listen", async move {
            cli::listen(&a.into(), whispr::shutdown::signal()).await
        }),
        Command::Inbox(a) => chat("inbox", async move { cli::inbox(&a.into()).await }),
        Command::Bench(a) => {
            // Values left at their defaults are fitted to the relay's limits.
            let given = |id: &str| {
                matches.subcommand_matches("bench").is_some_and(|m| {
                    m.value_source(id)
                        .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
                })
            };
            let defaulted = whispr::bench::Defaulted {
                connections: !given("connections"),
                rate: !given("rate") && !given("messages"),
            };
            bench(a, defaulted)
        }
    }
}

/// Runs `whispr bench` on a multi-threaded runtime and prints its report.
fn bench(a: BenchArgs, defaulted: whispr::bench::Defaulted) -> ExitCode {
    let config = whispr::bench::BenchConfig {
        server: a.relay.server,
        send_via: a.send_via,
        connections: a.connections,
        senders: a.senders,
        rate: a.rate.unwrap_or(0),
        max_messages: a.messages,
        size: a.size,
        duration: std::time::Duration::from_secs(a.duration),
        codec: a.codec,
        offline_share: a.offline,
        drain: std::time::Duration::from_secs(a.drain),
        warmup: std::time::Duration::from_secs_f64(a.warmup.max(0.0)),
        storm_at: std::time::Duration::from_secs_f64(a.storm_at.unwrap_or(0.0).max(0.0)),
        relay_pid: a.relay_pid,
        ca: a.relay.ca,
        progress: true,
        defaulted,
        verify_ceiling: a.verify_ceiling,
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(whispr::bench::run(config))
                .map_err(|e| e.to_string())
        });
    let text = match &result {
        Ok(report) if a.json => format!("{}\n", serde_json::to_string(report).unwrap_or_default()),
        Ok(report) => report.to_string(),
        Err(_) => String::new(),
    };
    // The report is the command's output: stdout, not the log.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whispr bench: {e}");
            ExitCode::from(3)
        }
    }
}

/// Runs a chat command; a failure is one line on stderr and its exit status.
fn chat(name: &str, command: impl Future<Output = Result<(), cli::CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("whispr {name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whispr {name}: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn serve(args: ServeArgs, matches: Option<&clap::ArgMatches>) -> anyhow::Result<()> {
    // --redis-url and --redis-cluster-urls also read WHISPR_REDIS_URL and
    // WHISPR_REDIS_CLUSTER_URLS (shown in --help); a value clap took from there is
    // left to the configuration's environment layer, which reads the same variables,
    // so its place in the layers and in error messages is the environment's.
    let given = |id: &str| {
        matches.and_then(|m| m.value_source(id)) == Some(clap::parser::ValueSource::CommandLine)
    };
    let overrides = Overrides {
        listen: args.listen,
        origin: args.origin,
        log_format: args.log_format,
        log_level: args.log_level,
        store: args.store,
        redis_url: args.redis_url.filter(|_| given("redis_url")),
        redis_cluster_urls: args
            .redis_cluster_urls
            .filter(|_| given("redis_cluster_urls")),
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
    };
    let (config, ignored) =
        Config::load_with_settings(args.config.as_deref(), args.settings.as_deref(), &overrides)?;
    whispr::telemetry::init(&config);
    if !ignored.is_empty() {
        tracing::warn!(keys = ?ignored, "settings file: these keys are not relay settings and were ignored");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's lines for `whispr NAME`: each line starting so in a code block, with
    /// the lines that continue it (indented, or after a trailing backslash).
    fn usage_lines(readme: &str, name: &str) -> String {
        let mut found = String::new();
        let mut continuing = false;
        for line in readme.lines() {
            let starts = line.starts_with(&format!("whispr {name} "));
            if starts || (continuing && line.starts_with(' ')) {
                found.push_str(line);
                found.push('\n');
                continuing = true;
            } else {
                continuing = false;
            }
        }
        found
    }

    #[test]
    fn the_readme_usage_lines_list_every_flag() {
        let readme = include_str!("../README.md");
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let usage = usage_lines(readme, sub.get_name());
            assert!(
                !usage.is_empty(),
                "no usage line for whispr {}",
                sub.get_name()
            );
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if ["help", "version"].contains(&long) {
                    continue;
                }
                assert!(
                    usage.contains(&format!("--{long}")),
                    "the README's usage of whispr {} lacks --{long}:\n{usage}",
                    sub.get_name()
                );
            }
        }
    }
}
