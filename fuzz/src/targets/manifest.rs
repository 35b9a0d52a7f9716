//! The booking manifest (relay-book): YAML or JSON, its two-stage check, the window
//! filters, and the export form the store saves.

use relay_book::interval::availability;
use relay_book::manifest::Manifest;
use relay_book::timefmt::DISTANT_FUTURE;

/// Parses the input as a manifest and checks it. A parsed manifest's JSON export must read
/// back and export to the same text (the store saves it so), and every free gap that a
/// window's filter leaves must be one the filter allows.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };
    let checked = manifest.check();
    let exported = match serde_json::to_string(&manifest) {
        Ok(json) => json,
        Err(e) => panic!("a parsed manifest does not export: {e}"),
    };
    let reread = match Manifest::parse(&exported) {
        Ok(m) => m,
        Err(e) => panic!("the export does not read back: {e}\n{exported}"),
    };
    assert_eq!(
        serde_json::to_string(&reread).ok().as_ref(),
        Some(&exported),
        "the export is not stable"
    );
    assert_eq!(
        reread.check().is_ok(),
        checked.is_ok(),
        "the export checks differently"
    );
    let Ok(filters) = manifest.filters() else {
        return;
    };
    for filter in filters.values() {
        for gap in availability(&[], filter, 0, DISTANT_FUTURE) {
            assert!(gap.start <= gap.end, "gap {gap:?} ends before it starts");
            if gap.start < gap.end {
                assert!(filter.allows(&gap), "gap {gap:?} is blocked");
            }
        }
    }
}
