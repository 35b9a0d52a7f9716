//! The demo manifest `relay book serve --dev` loads: two rigs (streams `data` and `video`
//! on one relay), one policy (book up to 2 h ahead, at most 2 bookings, 5 to 30 minutes,
//! grace 3 min with a 5 min penalty), one group `g-demo`, a window open at all times, and
//! one UI: a page (the relay's `/demo`) given the activity as `?streams=…&exp=…`.

/// The demo manifest (YAML) with `relay_access` as the relay's access URL (the audience
/// the relay must be configured with, e.g. `http://127.0.0.1:3000`) and `ui_page` as the
/// page of its UI (e.g. the relay's demo page, `http://127.0.0.1:3001/demo`), whose URL
/// template becomes `<ui_page>?streams={{streams}}&exp={{exp}}`.
pub fn manifest(relay_access: &str, ui_page: &str) -> String {
    DEMO.replace("RELAY_ACCESS_URL", relay_access.trim_end_matches('/'))
        .replace("UI_PAGE_URL", ui_page)
}

const DEMO: &str = r#"descriptions:
  d-g-demo: {name: "Demo group", type: group, short: "Everything in the demo"}
  d-p-demo: {name: "Demo policy", type: policy, short: "5 to 30 minutes, up to 2 hours ahead, at most 2 bookings"}
  d-r-demo: {name: "Demo rig", type: resource, short: "A rig with a data and a video stream"}
  d-sl-demo-1: {name: "Demo rig 1", type: slot, short: "Demo rig 1"}
  d-sl-demo-2: {name: "Demo rig 2", type: slot, short: "Demo rig 2"}
  d-ui-demo: {name: "Demo UI", type: ui, short: "The relay's demo page"}
display_guides:
  15m: {book_ahead: 2h, duration: 15m, max_slots: 8, label: "15 min"}
groups:
  g-demo: {description: d-g-demo, policies: [p-demo]}
policies:
  p-demo:
    description: d-p-demo
    display_guides: [15m]
    slots: [sl-demo-1, sl-demo-2]
    enforce_book_ahead: true
    book_ahead: 2h
    enforce_max_bookings: true
    max_bookings: 2
    enforce_min_duration: true
    min_duration: 5m
    enforce_max_duration: true
    max_duration: 30m
    enforce_allow_start_in_past: true
    allow_start_in_past_within: 1m
    enforce_grace_period: true
    grace_period: 3m
    grace_penalty: 5m
resources:
  r-demo-1: {description: d-r-demo, streams: [data, video], topic_stub: demo1}
  r-demo-2: {description: d-r-demo, streams: [data, video], topic_stub: demo2}
slots:
  sl-demo-1: {description: d-sl-demo-1, policy: p-demo, resource: r-demo-1, ui_set: us-demo, window: w-always}
  sl-demo-2: {description: d-sl-demo-2, policy: p-demo, resource: r-demo-2, ui_set: us-demo, window: w-always}
streams:
  data: {url: "RELAY_ACCESS_URL", connection_type: session, for: data, scopes: [read, write], topic: auto}
  video: {url: "RELAY_ACCESS_URL", connection_type: session, for: video, scopes: [read], topic: auto}
uis:
  ui-demo: {description: d-ui-demo, url: "UI_PAGE_URL?streams={{streams}}&exp={{exp}}", streams_required: [data, video]}
ui_sets:
  us-demo: {uis: [ui-demo]}
windows:
  w-always:
    allowed: [{start: "2000-01-01T00:00:00Z", end: "2100-01-01T00:00:00Z"}]
    denied: []
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    #[test]
    fn the_demo_manifest_passes_the_check() {
        let manifest = Manifest::parse(&manifest(
            "http://127.0.0.1:3000/",
            "http://127.0.0.1:3001/demo",
        ));
        let manifest = manifest.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(manifest.check(), Ok(()));
        assert_eq!(manifest.streams["data"].url, "http://127.0.0.1:3000");
        assert_eq!(
            manifest.uis["ui-demo"].url,
            "http://127.0.0.1:3001/demo?streams={{streams}}&exp={{exp}}"
        );
        assert_eq!(manifest.resources.len(), 2);
        assert_eq!(manifest.groups.len(), 1);
    }
}
