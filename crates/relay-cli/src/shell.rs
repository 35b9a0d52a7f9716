//! `relay shell host` and `relay shell client`: SSH (any TCP) to an experiment behind NAT.
//! Environment names are the reference's (`SHELLHOST_*`, `SHELLCLIENT_*`), every one also a
//! flag. The client listens on 127.0.0.1 by default (the reference listened on every
//! interface, opening the tunnel to the whole LAN).

use crate::boolean::GoBool;
use crate::logging::{self, LogFormat, LogLevel};
use clap::{ArgAction, Args, Subcommand};
use relay_common::shutdown::cancel_on_signal;
use relay_shell::client::{self, ClientConfig};
use relay_shell::host::{HostConfig, ShellHost};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
#[command(
    after_help = "Example:\n  experiment:  relay shell host --relay-session https://relay.example.io/access/shell/pendulum-01 --token $HOST_TOKEN\n  admin:       relay shell client --relay-session https://relay.example.io/access/shell/pendulum-01 --token $CLIENT_TOKEN --local-port 2222\n               ssh -p 2222 pi@localhost\nMint tokens with: relay token --role host|client --topic pendulum-01 ..."
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

pub fn run(args: ShellArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.command {
        ShellCommand::Host(a) => {
            init_logs(a.development);
            let config = HostConfig {
                access_url: a.relay_session,
                token: a.token,
                target: format!("{}:{}", a.local_host, a.local_port),
                extra_ca_file: a.ca_file,
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
            let addr = SocketAddr::new(a.bind, a.local_port);
            let config = ClientConfig {
                access_url: a.relay_session,
                token: a.token,
                extra_ca_file: a.ca_file,
                max_connections: a.max_connections,
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
    }
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
