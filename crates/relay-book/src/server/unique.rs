//! User names for `POST /users/unique` (spec §4.1): xids, as the reference makes them —
//! 20 characters of lowercase base32hex (`[0-9a-v]`) from time, machine, process and a
//! counter, so they sort by creation time. They are unique, not secret.

/// A new user name.
pub fn next() -> String {
    xid::new().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_twenty_base32hex_characters_different_each_time() {
        let a = next();
        let b = next();
        for name in [&a, &b] {
            assert_eq!(name.len(), 20, "{name}");
            assert!(
                name.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'v').contains(&c)),
                "{name}"
            );
        }
        assert_ne!(a, b);
        assert!(b > a, "later names sort after earlier ones");
    }
}
