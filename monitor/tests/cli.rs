//! The `exfilmon` binary's contract for bad input: exit status 1 and a message naming the
//! file, line and key. No root needed: nothing is loaded into the kernel.

use std::process::Command;

fn check_config(text: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_exfilmon"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run exfilmon");
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "FILE");
    (out.status.code().expect("exit code"), stderr)
}

#[test]
fn bad_configs_exit_1_naming_file_line_and_key() {
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/lab/geoip.csv");
    let head = format!("[geoip]\nsources = [{{ format = \"csv\", path = \"{geo}\" }}]\n");
    // (config body, line within the body, the rest of the expected message)
    let cases = [
        (
            "[home]\nnetworks = [\"192.0.2.0/24\"]\ncolour = 1\n",
            3,
            " home.colour: unknown field `colour`",
        ),
        (
            "[home]\nnetworks = [\"192.0.2.300/24\"]\n",
            2,
            " home.networks[0]:",
        ),
        (
            "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"XZ\"]\n",
            3,
            " home.countries[0]: XZ is not an ISO 3166-1 alpha-2 code",
        ),
        (
            "[home]\nnetworks = [\"192.0.2.0/24\"]\n[[group]]\nname = \"a\"\nnetworks = [\"192.0.2.0/25\"]\n[[group]]\nname = \"b\"\nnetworks = [\"192.0.2.64/26\"]\n",
            8,
            " group[1].networks[0]:",
        ),
    ];
    for (body, line, msg) in cases {
        let (code, stderr) = check_config(&format!("{head}{body}"));
        assert_eq!(code, 1, "exit status for {body:?}: {stderr}");
        // Lines count from the top of the file: the two [geoip] lines come first.
        let want = format!("exfilmon: FILE:{}:{msg}", line + 2);
        assert!(
            stderr.starts_with(&want),
            "for {body:?}\nwant: {want}\ngot:  {stderr}"
        );
    }
}

#[test]
fn a_missing_interface_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/lab/geoip.csv");
    std::fs::write(
        &path,
        format!("[home]\nnetworks = [\"192.0.2.0/24\"]\n[geoip]\nsources = [{{ format = \"csv\", path = \"{geo}\" }}]\n[[interface]]\nname = \"exfnosuchif0\"\nhook = \"xdp\"\n"),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_exfilmon"))
        .args(["check-config", "--interfaces", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exfnosuchif0") && stderr.contains(":6:"),
        "{stderr}"
    );
}

#[test]
fn a_missing_geoip_file_is_an_error_naming_it() {
    let (code, stderr) = check_config(
        "[home]\nnetworks = [\"192.0.2.0/24\"]\n[geoip]\nsources = [{ format = \"csv\", path = \"/nonexistent/geo.csv\" }]\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("/nonexistent/geo.csv"), "{stderr}");
}

#[test]
fn geoip_inspect_prints_each_source_and_its_ranges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let geo = dir.path().join("small.csv");
    // Three IPv4 ranges (two adjacent ones of equal country coalesce in the table, not
    // in the source count) and one IPv6 range.
    std::fs::write(
        &geo,
        "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,AU\n8.8.8.0,8.8.8.255,US\n2001:db8::,2001:db8::ffff,DE\n",
    )
    .expect("write csv");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[home]\nnetworks = [\"192.0.2.0/24\"]\n[geoip]\nsources = [{{ format = \"csv\", path = \"{}\" }}]\n",
            geo.display()
        ),
    )
    .expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_exfilmon"))
        .args(["geoip", "inspect", "--config"])
        .arg(&path)
        .output()
        .expect("run exfilmon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let row = stdout
        .lines()
        .find(|l| l.contains(&geo.display().to_string()))
        .unwrap_or_else(|| panic!("no row for {} in\n{stdout}", geo.display()));
    let cells: Vec<&str> = row.split(['│', '┆']).map(str::trim).collect();
    // │ path ┆ format ┆ IPv4 ┆ IPv6 ┆ ...
    assert_eq!(cells[2..5], ["csv", "3", "1"], "{row}");
    // Root measures every map, others get the two computed IPv4 maps: both list GEO4_L1.
    assert!(
        stdout.contains("GEO4_L1") && stdout.contains(" MiB"),
        "{stdout}"
    );
}

/// `exfilmon lookup --config CONFIG ADDRS...`, which must succeed; its stdout.
fn lookup(config: &std::path::Path, addrs: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_exfilmon"))
        .args(["lookup", "--config"])
        .arg(config)
        .args(addrs)
        .output()
        .expect("run exfilmon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

#[test]
fn lookup_names_the_deciding_rule_and_the_drop_for_each_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/lab/geoip.csv");
    let path = dir.path().join("exfilmon.toml");
    std::fs::write(
        &path,
        format!(
            "[jurisdictions]\nsanctioned = [\"CN\"]\n\
             [home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
             [[group]]\nname = \"phones\"\nnetworks = [\"192.0.2.0/26\"]\n\
             allow = [\"SG\"]\ndeny = [\"@sanctioned\"]\nenforce = true\n\
             [geoip]\nsources = [{{ format = \"csv\", path = \"{geo}\" }}]\n"
        ),
    )
    .expect("write");
    let stdout = lookup(&path, &["203.0.113.10", "203.0.113.70", "192.0.2.10"]);
    assert_eq!(
        stdout,
        "203.0.113.10: remote, country CN, asn AS?\n\
         \x20 from ungrouped: violation (default: not allowed)\n\
         \x20 from phones: violation, dropped (group phones: deny @sanctioned (CN))\n\
         203.0.113.70: remote, country SG, asn AS?\n\
         \x20 from ungrouped: violation (default: not allowed)\n\
         \x20 from phones: allowed (group phones: allow SG)\n\
         192.0.2.10: inside, group phones\n"
    );
}

#[test]
fn lookup_names_the_watch_entry_by_prefix_then_asn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let geo = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/lab/geoip.csv");
    let asn = dir.path().join("ip2asn.tsv");
    std::fs::write(&asn, "203.0.113.32\t203.0.113.63\t64501\tCN\tEXAMPLE-B\n").expect("write");
    let path = dir.path().join("exfilmon.toml");
    std::fs::write(
        &path,
        format!(
            "[home]\nnetworks = [\"192.0.2.0/24\"]\ncountries = [\"IN\"]\n\
             [geoip]\nsources = [{{ format = \"csv\", path = \"{geo}\" }}, \
             {{ format = \"iptoasn\", path = \"{}\" }}]\n\
             [[watchlist]]\nname = \"xiaomi\"\nprefixes = [\"198.51.100.0/25\", \"198.51.100.0/26\"]\n\
             asns = [64501]\ndomains = [\"*.xiaomi.com\"]\n",
            asn.display()
        ),
    )
    .expect("write");
    let stdout = lookup(
        &path,
        &[
            "198.51.100.10",
            "198.51.100.100",
            "203.0.113.40",
            "203.0.113.70",
        ],
    );
    let watch: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  watch "))
        .collect();
    // The longest prefix decides; an ASN counts only where no prefix covers the address.
    assert_eq!(
        watch,
        [
            "xiaomi/198.51.100.0/26 (prefix)",
            "xiaomi/198.51.100.0/25 (prefix)",
            "xiaomi/AS64501 (asn)",
            "none",
        ],
        "{stdout}"
    );
}
