//! Playfiles of `relay client file`: every line of a script, including conditions whose
//! regexps come from the file.

use relay_client::playfile::{Line, Playfile};

/// Parses the input as a playfile; every line becomes exactly one parsed line, and errors
/// point at real line numbers.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let playfile = Playfile::parse(&text);
    assert_eq!(playfile.lines.len(), text.lines().count());
    for error in playfile.errors() {
        assert!(error.line >= 1 && error.line <= playfile.lines.len());
        assert!(matches!(playfile.lines[error.line - 1], Line::Error(_)));
    }
    for line in &playfile.lines {
        if let Line::Send {
            condition: Some(condition),
            msg,
            ..
        } = line
        {
            // The compiled pattern is used on every received message; run it once.
            let _ = condition.pattern.is_match(msg);
        }
    }
}
