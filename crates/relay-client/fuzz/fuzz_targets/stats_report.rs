//! Stats-topic frames come from the network: decoding must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = relay_client::status::parse_reports(data);
});
