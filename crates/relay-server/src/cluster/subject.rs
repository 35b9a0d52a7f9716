//! How hub keys, booking ids and node names become NATS subjects and KV keys.
//!
//! A topic name may hold any character, and NATS gives `.`, `*`, `>` and whitespace a
//! meaning, so a name is never put in a subject as it is: its UTF-8 bytes are encoded
//! with URL-safe base64 without padding (`A–Z a–z 0–9 - _`, all valid in one subject
//! token and in a KV key). Base64 is injective, and an encoding is never a single
//! character, so the empty name gets the token `_` without colliding with any other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Prefix of every topic subject: `relay.t.<token>`.
pub const TOPIC_PREFIX: &str = "relay.t.";
/// Prefix of the shell-host presence subjects: `relay.h.<token>` (a request answered by
/// the node that holds that shell host's management connection).
pub const HOST_PREFIX: &str = "relay.h.";
/// Request subject every node answers with its local connections (`/status`, `stats`).
pub const STATUS_SUBJECT: &str = "relay.status";
/// Where every node says it is alive, once a second (its name as the payload).
pub const HELLO_SUBJECT: &str = "relay.hello";
/// JetStream KV bucket of one-time codes (key: the code; max age: the code lifetime).
pub const CODES_BUCKET: &str = "relay_codes";
/// JetStream KV bucket of the deny list (key: [`token`] of the booking id).
pub const DENIES_BUCKET: &str = "relay_denies";

/// One subject token (and KV key) for any string: URL-safe base64 of its bytes without
/// padding, or `_` for the empty string.
pub fn token(name: &str) -> String {
    if name.is_empty() {
        return "_".into();
    }
    URL_SAFE_NO_PAD.encode(name.as_bytes())
}

/// The string a [`token`] was made from; `None` if it is not one.
pub fn untoken(token: &str) -> Option<String> {
    if token == "_" {
        return Some(String::new());
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

/// The subject a hub key's messages travel on between nodes.
pub fn topic_subject(key: &str) -> String {
    format!("{TOPIC_PREFIX}{}", token(key))
}

/// The presence subject of the shell host `id` (the hub key `shell:<id>`).
pub fn host_subject(id: &str) -> String {
    format!("{HOST_PREFIX}{}", token(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What NATS allows in one subject token (and a KV key, minus the dot).
    fn is_plain_token(t: &str) -> bool {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    #[test]
    fn special_characters_become_one_plain_token() {
        for name in [
            "a.b",
            "*",
            ">",
            "a b",
            "a\tb",
            "x.>",
            "",
            "shell:id/conn",
            "é",
        ] {
            let t = token(name);
            assert!(is_plain_token(&t), "{name:?} -> {t:?}");
            assert_eq!(untoken(&t).as_deref(), Some(name));
            let subject = topic_subject(name);
            assert_eq!(subject.split('.').count(), 3, "{subject}");
        }
    }

    #[test]
    fn names_nats_would_confuse_stay_apart() {
        let names = [
            "a.b", "a", "a*", "a>", "a.*", "a.>", "a b", "a_b", "a-b", "", "_",
        ];
        let subjects: std::collections::HashSet<String> =
            names.iter().map(|n| topic_subject(n)).collect();
        assert_eq!(subjects.len(), names.len());
    }

    proptest! {
        #[test]
        fn the_mapping_is_injective_and_reversible(a in ".*", b in ".*") {
            prop_assert_eq!(untoken(&token(&a)), Some(a.clone()));
            prop_assert!(is_plain_token(&token(&a)));
            if a != b {
                prop_assert_ne!(topic_subject(&a), topic_subject(&b));
            }
        }
    }
}
