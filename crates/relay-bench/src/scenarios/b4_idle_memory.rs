//! B4 memory per idle authorised connection: (RSS(N) − RSS(0)) / N for growing N.

use super::{close_all, connect_many, rss_mib, usage};
use crate::peers::Lab;
use crate::report::{dec, Table};
use anyhow::{bail, Result};
use std::time::Duration;

/// B4 parameters.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ascending connection counts; connections are added between samples.
    pub counts: Vec<usize>,
}

/// Connections share topics ten at a time (a viewer page and its experiment, roughly).
const PER_TOPIC: usize = 10;

pub async fn run(lab: &Lab, opts: &Options) -> Result<Table> {
    let most = opts.counts.iter().copied().max().unwrap_or(0);
    if let Some(limit) = crate::procs::open_files_limit() {
        if (limit as usize) < most + 500 {
            bail!("open files limit is {limit}; B4 needs {} (run `ulimit -n 20000` first, as scripts/bench-peers.sh does)", most + 500);
        }
    }
    let mut table = Table::new(
        "B4 memory per idle authorised connection",
        &[
            "peer",
            "connections",
            "server RSS MiB",
            "RSS(0) MiB",
            "KiB per connection",
        ],
    );
    for peer in &lab.peers {
        let Some(target) = super::start_or_note(lab, peer, &[], &mut table).await else {
            continue;
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss0 = usage(&target).map(|u| u.rss);
        let mut conns = Vec::new();
        let mut counts = opts.counts.clone();
        counts.sort_unstable();
        for &n in &counts {
            while conns.len() < n {
                let topic = format!("bench-b4-{}", conns.len() / PER_TOPIC);
                let batch = (n - conns.len()).min(PER_TOPIC - conns.len() % PER_TOPIC);
                match connect_many(&target, &topic, batch, batch).await {
                    Ok(mut more) => conns.append(&mut more),
                    Err(e) => {
                        table.row(vec![
                            peer.clone(),
                            n.to_string(),
                            format!("failed after {} connections: {e:#}", conns.len()),
                        ]);
                        break;
                    }
                }
            }
            if conns.len() < n {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = usage(&target);
            let per_conn = match (rss0, now) {
                (Some(r0), Some(u)) => (u.rss as f64 - r0 as f64) / n as f64 / 1024.0,
                _ => f64::NAN,
            };
            table.row(vec![
                peer.clone(),
                n.to_string(),
                dec(1)(rss_mib(now)),
                dec(1)(rss0.map(|r| r as f64 / 1048576.0).unwrap_or(f64::NAN)),
                dec(1)(per_conn),
            ]);
        }
        close_all(conns).await;
        super::stop(target).await;
    }
    table.notes.push(format!("Connections are opened {PER_TOPIC} per topic through the peer's full admission path (for the relay: access POST with a JWT, then the websocket with the one-time code), then left idle 1 s before sampling VmRSS."));
    Ok(table)
}
