//! `relay lab --dev`: a whole remote lab in one process on 127.0.0.1, to try everything
//! within a minute of cloning. It runs the relay (as `relay serve --dev` does), the booking
//! server with its demo manifest (as `relay book serve --dev` does, sharing the relay's
//! secret, its streams on the relay's access URL and its UI on the relay's `/demo` page),
//! and one simulated rig per demo resource: a `relay host` whose `video` feed is ffmpeg's
//! test pattern and whose `data` feed answers each command with
//! `{"echo": <command>, "count": n}`. It prints the student page's link; SIGINT/SIGTERM
//! stop everything.

use crate::book::serve::{dev_admin_token, load_demo_manifest, open_store};
use crate::logging::{self, LogFormat, LogLevel};
use crate::serve::{random_secret, use_temporary_state_dir};
use crate::until_signal::run_until_signal;
use clap::Args;
use relay_auth::{mint, Claims, SCOPE_READ, SCOPE_WRITE};
use relay_book::manifest::{Manifest, Resource};
use relay_book::server::activity::{stream_session_url, stream_topic};
use relay_book::server::{self as book_server, Clock, Config, RunningBookServer};
use relay_common::shutdown::{wait_for_tasks, CancellationToken, TaskTracker};
use relay_host::hub::{Message, Subscription};
use relay_host::{DestinationRule, HostConfig, RunningHost, SessionConnector};
use relay_server::{RunningServer, ServerConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Everything listens here: a lab for one person's machine.
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The stream (and the rig's local feed) that carries commands and their echoes.
const DATA: &str = "data";
/// The stream (and the rig's local feed) that carries the camera.
const VIDEO: &str = "video";
/// The rigs' tokens outlive any lab session: a token that expired would drop the rig off
/// the relay (close 4001) while the lab still runs.
const RIG_TOKEN_LIFETIME_SECS: i64 = 365 * 24 * 3600;
/// Commands that may wait for the echo before newer ones are dropped.
const ECHO_QUEUE: usize = 64;
/// A camera (ffmpeg) that stopped is started again after this pause.
const CAMERA_RESTART: Duration = Duration::from_secs(1);
/// How long ffmpeg may take to finish its upload when asked to quit.
const CAMERA_QUIT_GRACE: Duration = Duration::from_secs(1);
/// How long the ffmpeg probe may take before the counter overlay is given up.
const CAMERA_PROBE_LIMIT: Duration = Duration::from_secs(10);
/// How long a rig's own tasks (echo, camera) may take to stop.
const RIG_STOP_GRACE: Duration = Duration::from_secs(2);
/// The test pattern at the camera's size and rate (lavfi source).
const TEST_PATTERN: &str = "testsrc=size=480x360:rate=25";

#[derive(Args, Debug)]
#[command(
    after_help = "Open the printed link, book \"now\", press Start: the demo page shows the rig's \
video and echoes your commands.\nThe rigs' video needs ffmpeg; without it they run with data only."
)]
pub struct LabArgs {
    /// Development mode (the only one): 127.0.0.1, generated secrets, storage in temporary
    /// directories removed at exit, the demo manifest (group g-demo, two rigs).
    #[arg(long, required = true)]
    dev: bool,
    /// The relay's access API port (0: any free port; printed as
    /// "relay lab: relay access API listening on ADDR").
    #[arg(long, default_value_t = 3000)]
    port_access: u16,
    /// The relay's websocket port, which also serves its /demo page (0: any free port;
    /// printed as "relay lab: relay listening on ADDR").
    #[arg(long, default_value_t = 3001)]
    port_relay: u16,
    /// The booking server's port, which also serves the student and admin pages (0: any
    /// free port; printed as "relay lab: booking API listening on ADDR").
    #[arg(long, default_value_t = 4000)]
    port_book: u16,
    /// Log level (logs go to stderr).
    #[arg(long, value_enum, ignore_case = true, default_value = "warn")]
    log_level: LogLevel,
}

pub fn run(args: LabArgs) -> ExitCode {
    logging::init(args.log_level, LogFormat::Text, "stderr");
    run_until_signal("relay lab", |stop| async move {
        let lab = match Lab::start(&args).await {
            Ok(lab) => lab,
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("relay lab: {e}");
                return ExitCode::FAILURE;
            }
        };
        lab.print_banner();
        stop.cancelled().await;
        tracing::info!("shutting down the lab");
        lab.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The running lab. Its temporary directories are removed when it is dropped.
struct Lab {
    relay: RunningServer,
    _relay_state: tempfile::TempDir,
    book: Booking,
    rigs: Vec<Rig>,
}

/// The booking server and what the banner needs from it.
struct Booking {
    server: RunningBookServer,
    admin_token: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    /// Starts the relay, then the booking server, then the rigs; whatever started is shut
    /// down again if a later part fails.
    async fn start(args: &LabArgs) -> Result<Lab, String> {
        let secret = random_secret();
        let mut config = ServerConfig::new(secret.clone().into_bytes());
        config.access_listen = SocketAddr::new(LOCALHOST, args.port_access);
        config.relay_listen = SocketAddr::new(LOCALHOST, args.port_relay);
        config.allow_no_booking_id = true;
        let relay_state = use_temporary_state_dir(&mut config)?;
        let relay = RunningServer::start(config)
            .await
            .map_err(|e| format!("relay: {e}"))?;
        println!(
            "relay lab: relay access API listening on {}",
            relay.access_addr()
        );
        println!("relay lab: relay listening on {}", relay.relay_addr());
        let (book, manifest) = match start_booking(args.port_book, &relay, &secret).await {
            Ok(started) => started,
            Err(e) => {
                relay.shutdown().await;
                return Err(e);
            }
        };
        println!("relay lab: booking API listening on {}", book.server.addr());
        let camera = Camera::probe().await;
        if camera.is_none() {
            println!("relay lab: ffmpeg is not installed, so the rigs run without video");
        }
        let mut lab = Lab {
            relay,
            _relay_state: relay_state,
            book,
            rigs: Vec::new(),
        };
        for resource in manifest.resources.values() {
            match Rig::start(resource, &manifest, secret.as_bytes(), camera).await {
                Ok(rig) => {
                    println!(
                        "relay lab: rig {} (relay host) listening on {}",
                        rig.stub,
                        rig.host.local_addr()
                    );
                    lab.rigs.push(rig);
                }
                Err(e) => {
                    lab.shutdown().await;
                    return Err(e);
                }
            }
        }
        Ok(lab)
    }

    fn print_banner(&self) {
        let book = self.book.server.url();
        let lines = [
            String::new(),
            format!(
                "A whole lab is running (127.0.0.1 only): a relay, a booking server and {} simulated rigs.",
                self.rigs.len()
            ),
            "Open this link, book \"now\" and press Start:".into(),
            String::new(),
            format!("  {book}/?group=g-demo"),
            String::new(),
            format!("  admin page   {book}/admin?token={}", self.book.admin_token),
            format!(
                "  relay        {} (access API), {} (websocket relay, demo page {})",
                self.relay.access_url(),
                self.relay.relay_url(),
                demo_page(&self.relay)
            ),
            format!("  booking API  {book}/api/v1"),
            String::new(),
            "Stop with Ctrl-C.".into(),
        ];
        println!("{}", lines.join("\n"));
    }

    /// Stops the rigs first (so nothing reconnects), then the booking server, then the relay.
    async fn shutdown(self) {
        for rig in self.rigs {
            rig.shutdown().await;
        }
        self.book.server.shutdown().await;
        self.relay.shutdown().await;
    }
}

/// The relay's own demo page (on its websocket port), the demo manifest's UI.
fn demo_page(relay: &RunningServer) -> String {
    format!("http://{}/demo", relay.relay_addr())
}

/// The booking server on `port`, with SQLite in a temporary directory, fresh secrets (the
/// relay secret is the relay's own) and the demo manifest pointing at `relay`; returns it
/// with the manifest it loaded.
async fn start_booking(
    port: u16,
    relay: &RunningServer,
    relay_secret: &str,
) -> Result<(Booking, Manifest), String> {
    let dir = tempfile::Builder::new()
        .prefix("relay-book-dev-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    // Bound first: the booking server's audience names its port.
    let wanted = SocketAddr::new(LOCALHOST, port);
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .map_err(|e| format!("booking server: cannot listen on {wanted}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("booking server: cannot listen on {wanted}: {e}"))?;
    let audience = format!("http://{bound}");
    let admin_secret = random_secret();
    let mut config = Config::new(&audience, &admin_secret, relay_secret);
    config.bind = LOCALHOST;
    config.port = bound.port();
    config.persist_dir = dir.path().to_owned();
    let store = open_store(&config).await?;
    let manifest = load_demo_manifest(&store, relay.access_url(), &demo_page(relay)).await?;
    let server = book_server::start_on(listener, config, store, Clock::wall())
        .await
        .map_err(|e| format!("booking server: {e}"))?;
    let booking = Booking {
        server,
        admin_token: dev_admin_token(&audience, &admin_secret),
        _dir: dir,
    };
    Ok((booking, manifest))
}

/// One simulated rig: a `relay host` with a destination per stream of its resource, the
/// echo on its data feed and, with ffmpeg, the camera on its video feed.
struct Rig {
    stub: String,
    host: RunningHost,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Rig {
    /// Starts the host for `resource` on a free port, connects each of the resource's
    /// streams to its relay topic with a token signed by `relay_secret`, and starts the echo
    /// and (given a `camera`) ffmpeg.
    async fn start(
        resource: &Resource,
        manifest: &Manifest,
        relay_secret: &[u8],
        camera: Option<Camera>,
    ) -> Result<Rig, String> {
        let stub = resource.topic_stub.clone();
        let config = HostConfig {
            listen: SocketAddr::new(LOCALHOST, 0),
            ..HostConfig::default()
        };
        let host = RunningHost::start(config, Arc::new(SessionConnector::default()))
            .await
            .map_err(|e| format!("rig {stub}: {e}"))?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let rig = Rig {
            stub,
            host,
            stop,
            tasks,
        };
        if let Err(e) = rig.connect_streams(resource, manifest, relay_secret) {
            rig.shutdown().await;
            return Err(e);
        }
        let state = rig.host.state();
        rig.tasks.spawn(echo_commands(
            state.hub.subscribe(DATA, ECHO_QUEUE),
            rig.stop.clone(),
        ));
        if let Some(camera) = camera {
            let ingest = format!("{}/ts/{VIDEO}", rig.host.url());
            rig.tasks.spawn(run_camera(
                camera.graph(&rig.stub),
                ingest,
                rig.stop.clone(),
            ));
        }
        Ok(rig)
    }

    /// One destination per stream of the resource: local feed `<stream>` ↔ relay topic
    /// `<topic_stub>-<stream>`, as the booking server hands the topic to users.
    fn connect_streams(
        &self,
        resource: &Resource,
        manifest: &Manifest,
        relay_secret: &[u8],
    ) -> Result<(), String> {
        let now = relay_common::clock::unix_now();
        for key in resource.streams.iter().flatten() {
            let stream = manifest
                .streams
                .get(key)
                .ok_or_else(|| format!("rig {}: stream {key} is not in the manifest", self.stub))?;
            let topic = stream_topic(&resource.topic_stub, key);
            let claims = Claims {
                booking_id: format!("lab-{}", self.stub),
                ..Claims::grant(
                    &stream.connection_type,
                    &topic,
                    &[SCOPE_READ, SCOPE_WRITE],
                    &stream.url,
                    now,
                    RIG_TOKEN_LIFETIME_SECS,
                )
            };
            let rule = DestinationRule {
                id: key.clone(),
                stream: key.clone(),
                destination: stream_session_url(stream, &topic),
                token: mint(&claims, relay_secret),
                file: String::new(),
            };
            self.host
                .state()
                .destinations
                .add(rule)
                .map_err(|e| format!("rig {}: {e}", self.stub))?;
        }
        Ok(())
    }

    async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        if wait_for_tasks(&self.tasks, RIG_STOP_GRACE).await > 0 {
            tracing::warn!(rig = %self.stub, "the rig's echo or camera did not stop in time");
        }
        self.host.shutdown().await;
    }
}

/// Answers every message on the data feed with `{"echo": <command>, "count": n}` (n counts
/// from 1), which the feed's destination carries back to the relay.
async fn echo_commands(mut feed: Subscription, stop: CancellationToken) {
    let mut count: u64 = 0;
    loop {
        let command = tokio::select! {
            command = feed.recv() => command,
            () = stop.cancelled() => break,
        };
        let Some(command) = command else { break };
        count += 1;
        feed.publish(Message::text(echo_reply(&command.data, count)));
    }
}

/// The echo of `command`: as JSON when it is JSON, else as a string.
fn echo_reply(command: &[u8], count: u64) -> String {
    let text = String::from_utf8_lossy(command);
    let command = serde_json::from_str::<serde_json::Value>(&text)
        .unwrap_or_else(|_| serde_json::Value::String(text.into_owned()));
    format!(r#"{{"echo":{command},"count":{count}}}"#)
}

/// What the rigs' cameras show: ffmpeg's test pattern, with a frame counter drawn on it
/// when this ffmpeg can draw text (drawtext needs a font), else bare (its own clock still
/// moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Camera {
    WithCounter,
    Bare,
}

impl Camera {
    /// Whether this machine's ffmpeg can draw the counter; `None` when ffmpeg is not
    /// installed (the rigs then run without video).
    async fn probe() -> Option<Camera> {
        let probe = tokio::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg(Camera::WithCounter.graph("probe"))
            .args(["-frames:v", "1", "-f", "null", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status();
        match tokio::time::timeout(CAMERA_PROBE_LIMIT, probe).await {
            Ok(Ok(status)) if status.success() => Some(Camera::WithCounter),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot run ffmpeg; the rigs run without video");
                None
            }
            Ok(Ok(_)) | Err(_) => {
                tracing::info!(
                    "ffmpeg cannot draw text here; the rigs' video has no frame counter"
                );
                Some(Camera::Bare)
            }
        }
    }

    /// The lavfi graph of the camera of rig `stub`.
    fn graph(self, stub: &str) -> String {
        match self {
            Camera::WithCounter => format!("{TEST_PATTERN},{}", counter_overlay(stub)),
            Camera::Bare => TEST_PATTERN.to_owned(),
        }
    }
}

/// ffmpeg's drawtext filter writing "<rig> frame <n>" in the top left corner. The rig name
/// is reduced to characters that need no escaping in a filter graph.
fn counter_overlay(stub: &str) -> String {
    let name: String = stub
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    format!(
        "drawtext=text='{name} frame %{{n}}':fontsize=24:x=10:y=10:fontcolor=white:box=1:boxcolor=black@0.6"
    )
}

/// Runs ffmpeg encoding `graph` as MPEG-TS (mpeg1video, for JSMpeg) into the host's
/// `ingest` URL, as docs/host.md shows for a real camera; starts it again if it stops,
/// until `stop`.
async fn run_camera(graph: String, ingest: String, stop: CancellationToken) {
    loop {
        let spawned = tokio::process::Command::new("ffmpeg")
            .args([
                "-v", "error", "-nostats", "-re", "-f", "lavfi", "-i", &graph,
            ])
            .args([
                "-c:v",
                "mpeg1video",
                "-b:v",
                "1000k",
                "-bf",
                "0",
                "-f",
                "mpegts",
            ])
            .arg(&ingest)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut ffmpeg = match spawned {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start ffmpeg; this rig runs without video");
                return;
            }
        };
        // Held here: `wait` would close it, and with it the way to ask ffmpeg to quit.
        let keyboard = ffmpeg.stdin.take();
        tokio::select! {
            status = ffmpeg.wait() => {
                tracing::warn!(?status, %ingest, "ffmpeg stopped; starting it again");
            }
            () = stop.cancelled() => {
                stop_ffmpeg(ffmpeg, keyboard).await;
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(CAMERA_RESTART) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Asks ffmpeg to finish (`q` on its standard input, `keyboard`), so that it ends its upload and the
/// host sees a clean end of the feed; kills it if it has not exited within
/// [`CAMERA_QUIT_GRACE`].
async fn stop_ffmpeg(
    mut ffmpeg: tokio::process::Child,
    keyboard: Option<tokio::process::ChildStdin>,
) {
    use tokio::io::AsyncWriteExt;
    if let Some(mut keyboard) = keyboard {
        // A failed write means ffmpeg is already gone; the wait below sees it.
        let _ = keyboard.write_all(b"q").await;
    }
    if tokio::time::timeout(CAMERA_QUIT_GRACE, ffmpeg.wait())
        .await
        .is_err()
    {
        let _ = ffmpeg.kill().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_carries_the_command_as_json_or_text_and_the_count() {
        assert_eq!(
            echo_reply(br#"{"set":"speed","to":2}"#, 1),
            r#"{"echo":{"set":"speed","to":2},"count":1}"#
        );
        assert_eq!(echo_reply(b"start", 7), r#"{"echo":"start","count":7}"#);
    }

    #[test]
    fn the_counter_overlay_names_the_rig_without_characters_to_escape() {
        assert_eq!(
            counter_overlay("demo1':x"),
            "drawtext=text='demo1x frame %{n}':fontsize=24:x=10:y=10:fontcolor=white:box=1:boxcolor=black@0.6"
        );
    }
}
