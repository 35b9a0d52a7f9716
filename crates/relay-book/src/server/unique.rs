//! User names for `POST /users/unique` (spec §4.1): 20 characters of lowercase base32hex
//! (`[0-9a-v]`) in the layout of an xid (4 bytes of time, 3 of machine, 2 of process id,
//! 3 of counter), so they sort by creation time like the reference's. They are unique,
//! not secret.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// Per-process random machine bytes and counter start.
fn process_seed() -> &'static ([u8; 3], AtomicU32) {
    static SEED: OnceLock<([u8; 3], AtomicU32)> = OnceLock::new();
    SEED.get_or_init(|| {
        let machine: [u8; 3] = rand::random();
        (machine, AtomicU32::new(rand::random::<u32>()))
    })
}

/// A new name made at unix second `now_secs`.
pub fn next(now_secs: i64) -> String {
    let (machine, counter) = process_seed();
    let count = counter.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let time = u32::try_from(now_secs.max(0))
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let pid = u16::try_from(std::process::id() & 0xffff)
        .unwrap_or(0)
        .to_be_bytes();
    let mut raw = [0u8; 12];
    raw[..4].copy_from_slice(&time);
    raw[4..7].copy_from_slice(machine);
    raw[7..9].copy_from_slice(&pid);
    raw[9..].copy_from_slice(&count[1..]);
    encode(&raw)
}

/// Base32hex of 96 bits: 20 characters, the last one padded with zero bits.
fn encode(raw: &[u8; 12]) -> String {
    let mut out = String::with_capacity(20);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for byte in raw {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_twenty_base32hex_characters_different_each_time_and_sorted_by_time() {
        let a = next(1_700_000_000);
        let b = next(1_700_000_000);
        let later = next(1_700_000_100);
        for name in [&a, &b, &later] {
            assert_eq!(name.len(), 20, "{name}");
            assert!(name.bytes().all(|c| ALPHABET.contains(&c)), "{name}");
        }
        assert_ne!(a, b);
        assert!(later > a);
        assert_eq!(encode(&[0; 12]), "00000000000000000000");
        assert_eq!(encode(&[0xff; 12]), "vvvvvvvvvvvvvvvvvvvg");
    }
}
