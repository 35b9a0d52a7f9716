//! The AFL++ harness: `relay-fuzz-afl <target>` runs the named target in AFL's persistent
//! mode. Built only by `cargo afl build -p relay-fuzz --features afl` (see fuzz/README.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = relay_fuzz::target(&name) else {
        eprintln!("usage: relay-fuzz-afl <target>; targets:");
        for target in relay_fuzz::TARGETS {
            eprintln!("  {:<18} {}", target.name, target.covers);
        }
        return ExitCode::from(2);
    };
    let run = target.run;
    afl::fuzz!(|data: &[u8]| run(data));
    ExitCode::SUCCESS
}
