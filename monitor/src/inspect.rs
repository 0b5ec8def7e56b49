//! `exfilmon geoip inspect`: what the GeoIP sources hold, what the kernel tables built from
//! them look like, and what those tables cost in kernel memory.

use std::{
    fmt::Write as _,
    time::{Duration, SystemTime},
};

use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use monitor::{
    config::Config, ebpf::Sizes, error_chain, geoip::SourceInfo, load_monitor, tables::Plan,
};
use monitor_common::{
    geo::{L1_ENTRIES, V6_ROOT_ENTRIES},
    maps,
};

/// The whole report: sources, totals and kernel memory.
pub fn report(config: &Config, sources: &[SourceInfo], plan: &Plan) -> String {
    let mut out = sources_table(sources, SystemTime::now());
    let geo = &plan.tables.geo;
    let _ = write!(
        out,
        "\n\nIPv4 ranges:       {}\nIPv4 prefixes:     {}\nlevel-2 blocks:    {}\nIPv6 ranges:       {}\nIPv6 prefixes:     {}\nIPv6 nodes:        {} ({} words)\nIPv6 trie:         {} prefixes\ncountries:         {}\nASNs:              {}\n\n",
        geo.v4.len(),
        geo.prefix_count_v4(),
        geo.l2_blocks(),
        geo.v6.len(),
        geo.prefix_count_v6(),
        geo.v6_table.node_count,
        geo.v6_table.nodes.len(),
        geo.v6_table.trie.len(),
        plan.labels.countries.len() - 1,
        plan.labels.asn_count(),
    );
    out.push_str(&memory(config, plan));
    out
}

fn sources_table(sources: &[SourceInfo], now: SystemTime) -> String {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "source", "format", "IPv4", "IPv6", "IPv4 ASN", "IPv6 ASN", "file age", "built",
    ]);
    for s in sources {
        let built = s.built.map_or_else(
            || "-".to_owned(),
            |b| format!("{} ({})", humantime::format_rfc3339_seconds(b), age(now, b)),
        );
        t.add_row([
            s.path.display().to_string(),
            s.format.to_string(),
            s.ranges_v4.to_string(),
            s.ranges_v6.to_string(),
            s.asn_ranges_v4.to_string(),
            s.asn_ranges_v6.to_string(),
            s.modified.map_or_else(|| "-".to_owned(), |m| age(now, m)),
            built,
        ]);
    }
    right_align(&mut t, 2..6);
    t.to_string()
}

/// Measured sizes when the programs can be loaded (root), computed ones for the array
/// maps of the address tables otherwise.
fn memory(config: &Config, plan: &Plan) -> String {
    let sizes = Sizes::for_geo(
        config.flows.max_entries,
        config.flows.ring_bytes,
        &plan.tables.geo,
    );
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let measured = if root {
        // Loaded and filled as `run` does (tries allocate per prefix), but not attached.
        load_monitor(config, plan)
            .map(|m| m.map_memory())
            .map_err(|e| error_chain(&e))
    } else {
        Err("not running as root".to_owned())
    };
    let (title, rows, note) = match measured {
        Ok(rows) => (
            "kernel map memory (measured: the kernel's memlock per map)",
            rows,
            None,
        ),
        Err(why) => (
            "kernel map memory (computed: the array maps of the address tables only)",
            vec![
                (maps::GEO4_L1.to_owned(), u64::from(L1_ENTRIES) * 8),
                (
                    maps::GEO4_L2.to_owned(),
                    u64::from(sizes.l2_blocks.max(1)) * 2 * 256 * 4,
                ),
                (maps::GEO6_ROOT.to_owned(), u64::from(V6_ROOT_ENTRIES) * 8),
                (
                    maps::GEO6_NODES.to_owned(),
                    u64::from(sizes.geo6_words.max(1)) * 2 * 4,
                ),
            ],
            Some(format!(
                "the other maps need root to measure ({why}); run as root for the full figure"
            )),
        ),
    };
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_header(["map", "bytes", "size"]);
    for (name, bytes) in &rows {
        t.add_row([name.clone(), bytes.to_string(), mib(*bytes)]);
    }
    let total: u64 = rows.iter().map(|(_, b)| b).sum();
    t.add_row(["total".to_owned(), total.to_string(), mib(total)]);
    right_align(&mut t, 1..3);
    let mut out = format!("{title}\n{t}");
    if let Some(note) = note {
        let _ = write!(out, "\n{note}");
    }
    out
}

fn right_align(t: &mut Table, columns: std::ops::Range<usize>) {
    for i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Bytes as MiB with one decimal, rounded to nearest.
fn mib(bytes: u64) -> String {
    let tenths = (u128::from(bytes) * 10 + (1 << 19)) >> 20;
    format!("{}.{} MiB", tenths / 10, tenths % 10)
}

/// How long ago `then` was: whole days past a day (humantime's months are 30.44 days,
/// which reads oddly for a file age), humantime below.
fn age(now: SystemTime, then: SystemTime) -> String {
    let Ok(d) = now.duration_since(then) else {
        return "in the future".to_owned();
    };
    let secs = d.as_secs();
    match secs / 86_400 {
        0 => {
            let unit = if secs < 3_600 { 1 } else { 60 };
            let d = Duration::from_secs(secs / unit * unit);
            format!("{} ago", humantime::format_duration(d))
        }
        1 => "1 day ago".to_owned(),
        days => format!("{days} days ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_mib_with_one_decimal() {
        assert_eq!(mib(0), "0.0 MiB");
        assert_eq!(mib(8 << 20), "8.0 MiB");
        assert_eq!(mib(1_572_864), "1.5 MiB");
        assert_eq!(mib(104_857), "0.1 MiB");
    }

    #[test]
    fn ages_are_rounded_to_their_scale() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let ago = |s| age(now, now - Duration::from_secs(s));
        assert_eq!(ago(42), "42s ago");
        assert_eq!(ago(2 * 3_600 + 61), "2h 1m ago");
        assert_eq!(ago(86_400 + 7_000), "1 day ago");
        assert_eq!(ago(150 * 86_400 + 7_000), "150 days ago");
        assert_eq!(age(now, now + Duration::from_secs(5)), "in the future");
    }
}
