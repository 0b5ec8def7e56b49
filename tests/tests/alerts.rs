//! The alert pack: `rules/exfilmon.rules.yml` and `dashboards/exfilmon.json` are checked by
//! promtool and against the metric names exfilmon exports. No root needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use exfilmon_tests::prometheus::PROMTOOL_BIN;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

const RULES: &str = "rules/exfilmon.rules.yml";
const RULE_TESTS: &str = "rules/tests/exfilmon.rules.test.yml";
const DASHBOARD: &str = "dashboards/exfilmon.json";

fn promtool(args: &[&str]) -> String {
    let out = Command::new(PROMTOOL_BIN)
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap_or_else(|e| panic!("running {PROMTOOL_BIN}: {e} (make test installs it)"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

/// Every `exfilmon_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("exfilmon_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        // A word that merely contains the prefix (`my_exfilmon_x`) is not a metric.
        let preceded = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !preceded {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn assert_all_exported(file: &str, text: &str) {
    let exported = monitor::metrics::family_names();
    let used = metric_names(text);
    assert!(!used.is_empty(), "{file} uses no exfilmon metric");
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "{file} uses metrics exfilmon does not export: {unknown:?} (exported: {exported:?})"
    );
    println!("{file}: {} metric names, all exported", used.len());
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let check = promtool(&["check", "rules", RULES]);
    assert!(check.contains("SUCCESS"), "{check}");
    let tests = promtool(&["test", "rules", RULE_TESTS]);
    assert!(tests.contains("SUCCESS"), "{tests}");
    print!("{check}{tests}");
}

#[test]
fn alert_rules_use_only_exported_metrics() {
    let text = std::fs::read_to_string(repo(RULES)).expect("rules file");
    assert_all_exported(RULES, &text);
}

/// Each alert has a promtool case in which it fires and one in which it stays silent.
#[test]
fn every_alert_has_a_firing_and_a_silent_case() {
    let rules = std::fs::read_to_string(repo(RULES)).expect("rules file");
    let alerts: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "only {} alerts found", alerts.len());

    let tests = std::fs::read_to_string(repo(RULE_TESTS)).expect("rule tests");
    // (fires, silent) per alert name, from each `alertname:` and the `exp_alerts:` after it.
    let mut cases: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = line.strip_prefix("alertname: ") else {
            continue;
        };
        let expected = lines.get(i + 1).copied().unwrap_or_default();
        let entry = cases.entry(name).or_default();
        match expected {
            "exp_alerts: []" => entry.1 = true,
            "exp_alerts:" => entry.0 = true,
            other => panic!("{RULE_TESTS}: line after `alertname: {name}` is {other:?}"),
        }
    }
    for alert in &alerts {
        let (fires, silent) = cases.get(alert).copied().unwrap_or_default();
        assert!(fires, "{alert}: no promtool case in which it fires");
        assert!(silent, "{alert}: no promtool case in which it stays silent");
    }
    let stale: Vec<_> = cases.keys().filter(|n| !alerts.contains(*n)).collect();
    assert!(
        stale.is_empty(),
        "cases for alerts that do not exist: {stale:?}"
    );
    println!(
        "{} alerts, each with a firing and a silent case",
        alerts.len()
    );
}

/// Every panel expression of the dashboard parses as PromQL (promtool checks it as a
/// recording rule, Grafana's variables replaced by values) and names only exported metrics.
#[test]
fn dashboard_expressions_are_valid_promql_on_exported_metrics() {
    let text = std::fs::read_to_string(repo(DASHBOARD)).expect("dashboard");
    assert_all_exported(DASHBOARD, &text);
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut exprs = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets of every panel");
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for t in targets {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$group", ".*");
        assert!(!e.contains('$'), "unknown Grafana variable in {e}");
        writeln!(
            rules,
            "      - record: dashboard:panel{i}\n        expr: {}",
            serde_json::to_string(&e).expect("a JSON string is a YAML string")
        )
        .expect("writing to a String");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard.rules.yml");
    std::fs::write(&path, rules).expect("write rules");
    let out = promtool(&["check", "rules", path.to_str().expect("utf-8 path")]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{out}"
    );
    println!("{} dashboard expressions checked by promtool", exprs.len());
}
