//! Corpus replay: every committed input of every target (`fuzz/corpus/<target>/`) and
//! every minimised crash (`fuzz/regressions/<target>/`) runs through its target under
//! ordinary `cargo test`, so a regression in any parser fails CI in seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(kind);
    let mut count = 0;
    for target in relay_fuzz::TARGETS {
        for file in inputs(&root.join(target.name)) {
            let data = std::fs::read(&file).unwrap();
            let result = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(
                result.is_ok(),
                "{} fails on {}",
                target.name,
                file.display()
            );
            count += 1;
        }
    }
    count
}

#[test]
fn every_target_has_a_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for target in relay_fuzz::TARGETS {
        let n = inputs(&root.join(target.name)).len();
        assert!(n > 0, "fuzz/corpus/{} is empty", target.name);
    }
    // No stray corpus directory: each one belongs to a target.
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            relay_fuzz::target(&name).is_some(),
            "fuzz/corpus/{name} has no target"
        );
    }
}

#[test]
fn the_corpora_replay_cleanly() {
    assert!(replay("corpus") > 0);
}

#[test]
fn the_regressions_replay_cleanly() {
    replay("regressions");
}
