//! What a run happened on: cores, CPU model, rustc version, load average, open-file limit.

/// A markdown paragraph describing the machine and its load right now.
pub fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    // Count from /proc/cpuinfo: available_parallelism follows this process's pinning.
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "Machine: {cores} cores, {cpu}, {rustc}; load average {} at start; open files limit {}.",
        load_average(),
        crate::procs::open_files_limit()
            .map(|l| l.to_string())
            .unwrap_or_else(|| "?".into()),
    )
}

/// The 1/5/15-minute load averages as written in /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
