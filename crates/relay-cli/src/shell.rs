//! `relay shell host` and `relay shell client`: SSH (any TCP) to an experiment behind NAT;
//! `relay shell relay` (the relay they meet at, served exactly as `relay serve` serves it)
//! and `relay shell token` (through `relay token`'s minting). Environment names are the
//! reference's (`SHELLHOST_*`, `SHELLCLIENT_*`, `SHELLRELAY_*`, `SHELLTOKEN_*`), every one
//! also a flag. The client listens on 127.0.0.1 by default (the reference listened on every
//! interface, opening the tunnel to the whole LAN).

use crate::boolean::GoBool;
use crate::logging::{self, LogFormat, LogLevel};
use crate::serve::{Front, ServeArgs};
use crate::token::TokenArgs;
use clap::{ArgAction, Args, Subcommand};
use relay_common::connection::ConnectionType;
use relay_common::goduration::{check_settings, parse_setting, Zero};
use relay_common::shutdown::cancel_on_signal;
use relay_shell::client::{self, ClientConfig};
use relay_shell::host::{HostConfig, ShellHost};
use relay_shell::pipe::PipeTimeouts;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  experiment:  relay shell host --relay-session https://relay.example.io/access/shell/pendulum-01 --token $HOST_TOKEN\n  admin:       relay shell client --relay-session https://relay.example.io/access/shell/pendulum-01 --token $CLIENT_TOKEN --local-port 2222\n               ssh -p 2222 pi@localhost\nRelay (the reference's SHELLRELAY_* file): relay shell relay\nMint tokens with: relay shell token (SHELLTOKEN_*) or relay token --role host|client --topic pendulum-01 ..."
)]
pub struct ShellArgs {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    /// Experiment side: expose a local TCP service (sshd by default) through the relay.
    Host(HostArgs),
    /// Admin side: a local port whose every connection is tunnelled to the host.
    Client(ClientArgs),
    /// The reference's `shell relay` (`SHELLRELAY_*`): `relay serve` under its names.
    Relay(RelayArgs),
    /// The reference's `shell token` (`SHELLTOKEN_*`): mint a token and print it.
    Token(ShellTokenArgs),
}

#[derive(Args, Debug)]
#[command(
    after_help = "Serves exactly as `relay serve` does (the shell and session connection types). The audience,\n\
URL, secret, ports and logging come from SHELLRELAY_*; relay serve's other RELAY_* settings\n\
(bind address, buffers, limits, timeouts, state dir, TLS) apply as they do there. Example:\n  SHELLRELAY_ACCESSFQDN=https://access.example.io SHELLRELAY_RELAYFQDN=wss://relay-access.example.io \\\n  SHELLRELAY_SECRET=$SECRET relay shell relay"
)]
struct RelayArgs {
    /// Access API port (0: any free port, printed as "relay: access API listening on ADDR").
    #[arg(long, env = "SHELLRELAY_ACCESSPORT", default_value_t = 8080)]
    access_port: u16,
    /// Websocket relay port (0: any free port, printed as "relay: relay listening on ADDR").
    #[arg(long, env = "SHELLRELAY_RELAYPORT", default_value_t = 8081)]
    relay_port: u16,
    /// The access API's public URL; access tokens' `aud` must contain it.
    #[arg(long, env = "SHELLRELAY_ACCESSFQDN")]
    access_fqdn: Option<String>,
    /// The relay port's public base URL (e.g. wss://relay-access.example.io), put into the
    /// returned websocket URIs.
    #[arg(long, env = "SHELLRELAY_RELAYFQDN")]
    relay_fqdn: Option<String>,
    /// HMAC secret that access tokens are signed with.
    #[arg(long, env = "SHELLRELAY_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Text logs at info level on stdout (otherwise JSON at warn on stderr).
    #[arg(long, env = "SHELLRELAY_DEVELOPMENT", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    development: bool,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example: SHELLTOKEN_LIFETIME=3600 SHELLTOKEN_ROLE=host SHELLTOKEN_SECRET=$SECRET SHELLTOKEN_TOPIC=pendulum-01 \\\n  SHELLTOKEN_CONNECTIONTYPE=shell SHELLTOKEN_AUDIENCE=https://access.example.io relay shell token"
)]
struct ShellTokenArgs {
    /// Lifetime in seconds.
    #[arg(long, env = "SHELLTOKEN_LIFETIME", allow_negative_numbers = true)]
    lifetime: Option<i64>,
    /// host, client or stats (shell relay scopes), or read, write or readwrite.
    #[arg(long, env = "SHELLTOKEN_ROLE")]
    role: Option<String>,
    /// HMAC secret shared with the relay.
    #[arg(long, env = "SHELLTOKEN_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Topic: the shell id (`stats` for a stats token).
    #[arg(long, env = "SHELLTOKEN_TOPIC")]
    topic: Option<String>,
    /// Connection type written to `prefix`: `shell` (or `session` for read/write roles).
    #[arg(long, env = "SHELLTOKEN_CONNECTIONTYPE")]
    connection_type: Option<String>,
    /// Audience (`aud`): the access API's public URL.
    #[arg(long, env = "SHELLTOKEN_AUDIENCE")]
    audience: Option<String>,
}

/// Declares the ping, idle and write timings of one shell side under its environment
/// prefix (the two sides differ only in their variable names).
macro_rules! link_timings {
    ($name:ident, $ping:literal, $idle:literal, $write:literal) => {
        /// How this side watches its relay connections (management and tunnels).
        #[derive(Args, Debug)]
        struct $name {
            /// Ping the relay this often on every relay connection (more than 0).
            #[arg(long, env = $ping, default_value = "20s", value_parser = parse_setting)]
            ping_interval: Duration,
            /// Close a relay connection (and its TCP side) from which nothing, not even a
            /// pong, has arrived for this long: a link cut without a FIN (more than 0).
            #[arg(long, env = $idle, default_value = "60s", value_parser = parse_setting)]
            idle_timeout: Duration,
            /// Close a relay connection whose write blocks this long (more than 0).
            #[arg(long, env = $write, default_value = "10s", value_parser = parse_setting)]
            write_timeout: Duration,
        }

        impl $name {
            fn check(&self) -> Result<PipeTimeouts, Vec<String>> {
                check_timings([
                    (concat!($ping, " (--ping-interval)"), self.ping_interval),
                    (concat!($idle, " (--idle-timeout)"), self.idle_timeout),
                    (concat!($write, " (--write-timeout)"), self.write_timeout),
                ])
            }
        }
    };
}

link_timings!(
    HostTimings,
    "SHELLHOST_PING_INTERVAL",
    "SHELLHOST_IDLE_TIMEOUT",
    "SHELLHOST_WRITE_TIMEOUT"
);
link_timings!(
    ClientTimings,
    "SHELLCLIENT_PING_INTERVAL",
    "SHELLCLIENT_IDLE_TIMEOUT",
    "SHELLCLIENT_WRITE_TIMEOUT"
);

/// Ping, idle and write timings checked once at start-up: none zero or overlong.
fn check_timings(named: [(&str, Duration); 3]) -> Result<PipeTimeouts, Vec<String>> {
    let problems = check_settings(&named.map(|(name, value)| (name, value, Zero::Refused)));
    if !problems.is_empty() {
        return Err(problems);
    }
    let [(_, ping_interval), (_, idle_timeout), (_, write_timeout)] = named;
    Ok(PipeTimeouts {
        ping_interval,
        idle_timeout,
        write_timeout,
    })
}

#[derive(Args, Debug)]
struct HostArgs {
    /// Access URL of this shell, e.g. https://relay.example.io/access/shell/<id>.
    #[arg(long, env = "SHELLHOST_RELAYSESSION")]
    relay_session: String,
    /// Token with the `host` scope for this shell id.
    #[arg(long, env = "SHELLHOST_TOKEN", hide_env_values = true)]
    token: String,
    /// Local port of the service to expose.
    #[arg(long, env = "SHELLHOST_LOCALPORT", default_value_t = 22)]
    local_port: u16,
    /// Host of the service to expose.
    #[arg(long, env = "SHELLHOST_LOCALHOST", default_value = "localhost")]
    local_host: String,
    /// Extra PEM CA file trusted for https/wss besides the system roots.
    #[arg(long, env = "SHELLHOST_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Ping, idle and write timings (SHELLHOST_PING_INTERVAL, SHELLHOST_IDLE_TIMEOUT,
    /// SHELLHOST_WRITE_TIMEOUT).
    #[command(flatten, next_help_heading = "Link timings")]
    timings: HostTimings,
    /// Text logs at info level on stdout (otherwise JSON at warn on stderr).
    #[arg(long, env = "SHELLHOST_DEVELOPMENT", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    development: bool,
}

#[derive(Args, Debug)]
struct ClientArgs {
    /// Access URL of the shell, e.g. https://relay.example.io/access/shell/<id>.
    #[arg(long, env = "SHELLCLIENT_RELAYSESSION")]
    relay_session: String,
    /// Token with the `client` scope for that shell id.
    #[arg(long, env = "SHELLCLIENT_TOKEN", hide_env_values = true)]
    token: String,
    /// Local port to listen on (then `ssh -p <port> user@localhost`).
    #[arg(long, env = "SHELLCLIENT_LOCALPORT", default_value_t = 8082)]
    local_port: u16,
    /// Address to listen on.
    #[arg(long, env = "SHELLCLIENT_BIND", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Most tunnelled connections at once.
    #[arg(long, env = "SHELLCLIENT_MAX_CONNECTIONS", default_value_t = 256)]
    max_connections: usize,
    /// Extra PEM CA file trusted for https/wss besides the system roots.
    #[arg(long, env = "SHELLCLIENT_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// Ping, idle and write timings (SHELLCLIENT_PING_INTERVAL, SHELLCLIENT_IDLE_TIMEOUT,
    /// SHELLCLIENT_WRITE_TIMEOUT).
    #[command(flatten, next_help_heading = "Link timings")]
    timings: ClientTimings,
    /// Text logs at info level on stdout (otherwise JSON at warn on stderr).
    #[arg(long, env = "SHELLCLIENT_DEVELOPMENT", default_value_t = false, action = ArgAction::Set, value_parser = GoBool, num_args = 0..=1, default_missing_value = "true")]
    development: bool,
}

fn init_logs(development: bool) {
    if development {
        logging::init(LogLevel::Info, LogFormat::Text, "stdout");
    } else {
        logging::init(LogLevel::Warn, LogFormat::Json, "stderr");
    }
}

/// `relay shell relay`: check the three required settings under their own names, then
/// serve through `relay serve`'s configuration and start-up.
fn run_relay(a: RelayArgs) -> ExitCode {
    let mut missing = Vec::new();
    let mut required = |value: Option<String>, name: &str| {
        let value = value.filter(|v| !v.is_empty());
        if value.is_none() {
            missing.push(format!("{name} not set"));
        }
        value.unwrap_or_default()
    };
    let audience = required(a.access_fqdn, "SHELLRELAY_ACCESSFQDN");
    let relay_url = required(a.relay_fqdn, "SHELLRELAY_RELAYFQDN");
    let secret = required(a.secret, "SHELLRELAY_SECRET");
    if !missing.is_empty() {
        for m in missing {
            eprintln!("relay shell relay: {m}");
        }
        return ExitCode::FAILURE;
    }
    match ServeArgs::with_front(Front {
        audience,
        secret,
        relay_url,
        port_access: a.access_port,
        port_relay: a.relay_port,
        development: a.development,
    }) {
        Ok(args) => crate::serve::run(args),
        Err(e) => {
            eprintln!("relay shell relay: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `relay shell token`: every `SHELLTOKEN_*` is required; minted by `relay token`'s code.
fn run_token(a: ShellTokenArgs) -> ExitCode {
    let mut problems = Vec::new();
    let connection_type = match a.connection_type.as_deref() {
        None | Some("") => {
            problems.push("SHELLTOKEN_CONNECTIONTYPE not set".to_owned());
            ConnectionType::Shell
        }
        Some(text) => text.parse().unwrap_or_else(|e| {
            problems.push(format!("SHELLTOKEN_CONNECTIONTYPE: {e}"));
            ConnectionType::Shell
        }),
    };
    let role = a.role.filter(|r| !r.is_empty());
    if role.is_none() {
        problems.push("SHELLTOKEN_ROLE not set".to_owned());
    }
    if !problems.is_empty() {
        for p in problems {
            eprintln!("{p}");
        }
        return ExitCode::FAILURE;
    }
    let args = TokenArgs::for_role(
        a.audience,
        a.secret,
        a.lifetime,
        a.topic,
        connection_type,
        role.unwrap_or_default(),
    );
    crate::token::mint_and_print(args, "SHELLTOKEN_")
}

pub fn run(args: ShellArgs) -> ExitCode {
    // The relay and the token tools start (or need) no runtime of their own here.
    let runtime = match args.command {
        ShellCommand::Relay(a) => return run_relay(a),
        ShellCommand::Token(a) => return run_token(a),
        ShellCommand::Host(_) | ShellCommand::Client(_) => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("cannot start the async runtime: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    match args.command {
        ShellCommand::Host(a) => {
            init_logs(a.development);
            let timeouts = match a.timings.check() {
                Ok(timeouts) => timeouts,
                Err(problems) => return refuse("relay shell host", &problems),
            };
            let config = HostConfig {
                access_url: a.relay_session,
                token: a.token,
                target: format!("{}:{}", a.local_host, a.local_port),
                extra_ca_file: a.ca_file,
                timeouts,
            };
            runtime.block_on(async move {
                let Some(stop) = signal_token("relay shell host") else {
                    return ExitCode::FAILURE;
                };
                let mut host = ShellHost::start(config);
                tokio::select! {
                    () = host.run() => {}
                    () = stop.cancelled() => {}
                }
                host.close().await;
                ExitCode::SUCCESS
            })
        }
        ShellCommand::Client(a) => {
            init_logs(a.development);
            let timeouts = match a.timings.check() {
                Ok(timeouts) => timeouts,
                Err(problems) => return refuse("relay shell client", &problems),
            };
            let addr = SocketAddr::new(a.bind, a.local_port);
            let config = ClientConfig {
                access_url: a.relay_session,
                token: a.token,
                extra_ca_file: a.ca_file,
                max_connections: a.max_connections,
                timeouts,
            };
            runtime.block_on(async move {
                let Some(stop) = signal_token("relay shell client") else {
                    return ExitCode::FAILURE;
                };
                let listener = match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("relay shell client: cannot listen on {addr}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                tracing::info!(%addr, "shell client listening");
                // The bound address (the port may have been 0), for scripts and tests.
                if let Ok(bound) = listener.local_addr() {
                    println!("relay shell client listening on {bound}");
                }
                tokio::select! {
                    () = client::serve(listener, config) => {}
                    () = stop.cancelled() => {}
                }
                ExitCode::SUCCESS
            })
        }
        ShellCommand::Relay(_) | ShellCommand::Token(_) => ExitCode::FAILURE, // returned above
    }
}

/// Reports each bad setting and fails.
fn refuse(program: &str, problems: &[String]) -> ExitCode {
    for problem in problems {
        eprintln!("{program}: {problem}");
    }
    ExitCode::FAILURE
}

/// The SIGINT/SIGTERM token, or `None` after reporting why the handlers are missing.
fn signal_token(program: &str) -> Option<relay_common::shutdown::CancellationToken> {
    match cancel_on_signal() {
        Ok(stop) => Some(stop),
        Err(e) => {
            eprintln!("{program}: cannot install the SIGINT/SIGTERM handlers: {e}");
            None
        }
    }
}
