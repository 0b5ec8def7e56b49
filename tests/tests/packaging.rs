//! The shipped systemd unit: hardened to an exposure score of at most 2.0 by
//! `systemd-analyze security --offline=yes`, granting CAP_BPF and CAP_NET_ADMIN and
//! nothing else (the confined run in host.rs shows these suffice), and
//! running the daemon as the README says. And the man pages and shell completions that
//! `exfilmon` generates from its CLI definitions. The Kubernetes manifests and the Helm
//! chart are in `packaging/kube.rs`. No root needed.

#[path = "packaging/kube.rs"]
mod kube;

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
fn the_systemd_unit_grants_only_cap_bpf_and_net_admin() {
    let want: BTreeSet<String> = ["CAP_BPF", "CAP_NET_ADMIN"].map(str::to_owned).into();
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

/// Every command of `exfilmon --help`, as the man pages name them.
const COMMANDS: [&str; 10] = [
    "run",
    "cleanup",
    "status",
    "check-config",
    "replay",
    "lookup",
    "geoip",
    "verify-log",
    "completions",
    "manpage",
];

#[test]
fn man_pages_and_completions_come_from_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(exfilmon_tests::exfilmon_bin())
        .args(["manpage", "--dir"])
        .arg(dir.path())
        .output()
        .expect("exfilmon manpage runs");
    assert!(out.status.success(), "{out:?}");
    let mut pages = 0;
    for page in std::iter::once("exfilmon.1".to_owned())
        .chain(COMMANDS.iter().map(|c| format!("exfilmon-{c}.1")))
        .chain(["exfilmon-geoip-inspect.1".to_owned()])
    {
        let path = dir.path().join(&page);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH exfilmon"), "{page} names exfilmon");
        // groff (Debian groff-base, the setup installs it) renders it without a warning.
        let render = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path)
            .output()
            .expect("groff runs");
        assert!(
            render.status.success() && render.stderr.is_empty(),
            "{page}: {}",
            String::from_utf8_lossy(&render.stderr)
        );
        pages += 1;
    }
    let main = std::fs::read_to_string(dir.path().join("exfilmon.1")).expect("exfilmon.1");
    for c in COMMANDS {
        assert!(
            main.contains(&format!("exfilmon\\-{}", c.replace('-', "\\-"))),
            "exfilmon.1 lists {c}"
        );
    }

    let mut shells = Vec::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(exfilmon_tests::exfilmon_bin())
            .args(["completions", shell])
            .output()
            .expect("exfilmon completions runs");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}: {out:?}");
        for c in COMMANDS {
            assert!(script.contains(c), "{shell} completes {c}");
        }
        if shell == "bash" {
            let mut check = Command::new("bash")
                .arg("-n")
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("bash");
            std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), &out.stdout)
                .expect("write");
            assert!(
                check.wait().expect("bash -n").success(),
                "bash -n accepts it"
            );
        }
        shells.push(shell);
    }
    println!(
        "man pages: {pages}, each rendered by groff without a warning; completions: {}",
        shells.join(", ")
    );
}

/// `make install`'s script, into a DESTDIR twice: every piece where systemd, man and the
/// shells look for it, the unit pointing at the installed binary, and a second run the
/// same as the first.
#[test]
fn the_install_script_puts_every_piece_where_it_is_looked_for() {
    let dest = tempfile::tempdir().expect("tempdir");
    let install = || {
        let out = Command::new(exfilmon_tests::workspace_root().join("scripts/install.sh"))
            .arg(exfilmon_tests::exfilmon_bin())
            .env("DESTDIR", dest.path())
            .env("PREFIX", "/usr")
            .output()
            .expect("install.sh runs");
        assert!(out.status.success(), "{out:?}");
    };
    install();
    install();
    let at = |p: &str| dest.path().join(p.trim_start_matches('/'));
    let bin = std::fs::read(at("/usr/bin/exfilmon")).expect("the binary");
    assert_eq!(
        bin,
        std::fs::read(exfilmon_tests::exfilmon_bin()).expect("built binary")
    );
    for page in std::iter::once("exfilmon".to_owned())
        .chain(COMMANDS.iter().map(|c| format!("exfilmon-{c}")))
    {
        assert!(
            at(&format!("/usr/share/man/man1/{page}.1")).is_file(),
            "{page}.1"
        );
    }
    for script in [
        "/usr/share/bash-completion/completions/exfilmon",
        "/usr/share/zsh/site-functions/_exfilmon",
        "/usr/share/fish/vendor_completions.d/exfilmon.fish",
    ] {
        let text = std::fs::read_to_string(at(script)).expect(script);
        assert!(
            text.contains("verify-log"),
            "{script} completes every command"
        );
    }
    let unit = std::fs::read_to_string(at("/etc/systemd/system/exfilmon.service")).expect("unit");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/exfilmon run --config /etc/exfilmon/exfilmon.toml"),
        "the unit runs the installed binary: {unit}"
    );
    for file in [
        "rules/exfilmon.rules.yml",
        "rules/exfilmon-sites.rules.yml",
        "dashboards/exfilmon.json",
        "docs/operator-guide.md",
        "dist/prometheus/sites.yml",
        "dist/helm/exfilmon/Chart.yaml",
    ] {
        assert!(
            at(&format!("/usr/share/exfilmon/{file}")).is_file(),
            "{file}"
        );
    }
    assert!(
        !at("/usr/share/exfilmon/rules/rules").exists(),
        "a second install replaces, it does not nest"
    );
}
