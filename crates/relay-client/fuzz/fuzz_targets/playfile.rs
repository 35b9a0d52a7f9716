//! The playfile parser must never panic, whatever the file holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay_client::playfile::Playfile;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let playfile = Playfile::parse(&text);
    let _ = playfile.errors();
    let _ = relay_common::goduration::parse(&text);
});
