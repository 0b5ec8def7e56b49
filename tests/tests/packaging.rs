//! The shipped systemd unit: hardened to an exposure score of at most 2.0 by
//! `systemd-analyze security --offline=yes`, granting CAP_BPF, CAP_NET_ADMIN and
//! CAP_PERFMON and nothing else (the confined run in host.rs shows these suffice), and
//! running the daemon as the README says. No root needed.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use exfilmon_tests::workspace_root;

/// The highest exposure score the unit may have (issue: least privilege).
const MAX_EXPOSURE: f64 = 2.0;

fn unit_path() -> PathBuf {
    workspace_root().join("dist/systemd/exfilmon.service")
}

/// The values of `key=` in the unit's `[Service]` section, words split, in order.
fn service_values(key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(unit_path()).expect("the unit is readable");
    let mut in_service = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && let Some(value) = line.strip_prefix(&format!("{key}=")) {
            out.extend(value.split_whitespace().map(str::to_owned));
        }
    }
    out
}

#[test]
fn the_systemd_unit_scores_at_most_2_0_exposure() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit_path())
        .output()
        .expect("systemd-analyze runs (Debian package systemd; the setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no score in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score line: {line}"));
    println!("systemd-analyze security --offline: exposure {score} (at most {MAX_EXPOSURE})");
    assert!(score <= MAX_EXPOSURE, "{line}");
}

#[test]
fn the_systemd_unit_grants_only_cap_bpf_net_admin_and_perfmon() {
    let want: BTreeSet<String> = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]
        .map(str::to_owned)
        .into();
    for key in ["AmbientCapabilities", "CapabilityBoundingSet"] {
        let got: BTreeSet<String> = service_values(key).into_iter().collect();
        assert_eq!(got, want, "{key}");
    }
    assert_eq!(service_values("NoNewPrivileges"), ["yes"]);
    assert_eq!(service_values("DynamicUser"), ["yes"], "never root");
    let exec = service_values("ExecStart");
    assert!(
        exec.first().is_some_and(|p| p.ends_with("/exfilmon"))
            && exec[1..] == ["run", "--config", "/etc/exfilmon/exfilmon.toml"],
        "ExecStart runs the daemon with the packaged config: {exec:?}"
    );
    assert!(
        service_values("ExecReload")
            .join(" ")
            .contains("-HUP $MAINPID"),
        "a reload is the daemon's SIGHUP"
    );
}
