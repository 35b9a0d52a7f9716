//! `ConnectionAction`: the JSON a shell host reads from its management connection.

use relay_common::action::ConnectionAction;

/// Parses the input as an action; a parsed action must write JSON that reads back as
/// itself and always carries a non-empty uuid.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(action) = ConnectionAction::parse(text) else {
        return;
    };
    assert!(
        !action.uuid().is_empty(),
        "an action without a uuid was accepted"
    );
    let json = action.to_json();
    assert_eq!(
        ConnectionAction::parse(&json).as_ref(),
        Some(&action),
        "{json} does not read back"
    );
}
