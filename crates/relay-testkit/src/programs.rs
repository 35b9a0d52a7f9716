//! External programs the end-to-end tests drive (ffmpeg, websocat, ssh, curl, …): a loud
//! check that one is installed, so that a missing program fails the test instead of
//! silently skipping it.

use std::path::Path;

/// Whether `program` (a name looked up on `PATH`, or an absolute path) is an existing file.
pub fn installed(program: &str) -> bool {
    if Path::new(program).is_absolute() {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// Fails the test (never skips it) when `program` is missing; `hint` says how to install it.
pub fn require(program: &str, hint: &str) {
    assert!(
        installed(program),
        "{program} is required for this test but is not on PATH: {hint}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_is_found_and_a_made_up_program_is_not() {
        assert!(installed("sh"));
        assert!(!installed("relay-testkit-no-such-program"));
        assert!(!installed("/relay-testkit/no/such/program"));
    }
}
