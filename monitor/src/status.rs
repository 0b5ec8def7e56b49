//! `exfilmon status`: what a pinned exfilmon has counted, read from its pins (the counters,
//! the flow table and the slot names that label them) as tables for an operator. It reads
//! beside a running daemon, or after one stopped while its programs go on counting, and
//! takes nothing from either.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use comfy_table::Table;
use monitor_common::{
    class::ClassCounter,
    flow::{FlowKey, FlowState},
    pin::LAYOUT,
    reason,
};

use crate::{
    ebpf::{self, Counters, EbpfError},
    events::FlowRecord,
    pins::{self, PinError},
    tables::{Labels, Verdict},
    text,
};

/// Why there is no status to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "nothing pinned under {dir}: no exfilmon has run with this `[pin] dir` (or `exfilmon \
         cleanup` removed it); give the daemon's config with --config, or its directory with \
         --pin-dir"
    )]
    NothingPinned { dir: PathBuf },
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error("reading the pinned maps under {dir}")]
    Maps {
        dir: PathBuf,
        #[source]
        source: EbpfError,
    },
}

/// One reading of a pinned exfilmon.
#[derive(Debug)]
pub struct Status {
    pub dir: PathBuf,
    /// The version and map layout of the daemon that wrote the pins.
    pub writer: String,
    pub layout: u32,
    /// The pinned links (`xdp-inside`, `tc-egress-lan0@netns`, ...): the hooks counting.
    pub links: Vec<String>,
    pub labels: Labels,
    pub counters: Counters,
    pub flows: Vec<(FlowKey, FlowState)>,
}

/// Reads the pins under `dir`.
pub fn read(dir: &Path) -> Result<Status, StatusError> {
    let Some((meta, labels)) = pins::read_state(dir)? else {
        return Err(StatusError::NothingPinned {
            dir: dir.to_owned(),
        });
    };
    let (counters, flows) = ebpf::read_pinned(|name| {
        let path = pins::map_path(dir, name);
        MapData::from_pin(&path).map_err(|source| EbpfError::Map {
            map: name,
            what: format!("open the pin {}", path.display()),
            source,
        })
    })
    .map_err(|source| StatusError::Maps {
        dir: dir.to_owned(),
        source,
    })?;
    let links = pins::link_names(dir)?;
    Ok(Status {
        dir: dir.to_owned(),
        writer: pins::version_text(&meta.version),
        layout: meta.layout,
        links,
        labels,
        counters,
        flows,
    })
}

/// The status as text: a summary, then traffic, violations, drops and anomalies, and the
/// largest tracked flows; each table holds at most `top` rows, largest first.
#[must_use]
pub fn render(s: &Status, top: usize) -> String {
    let mut out = summary(s);
    let mut rows: Vec<_> = s
        .counters
        .classes
        .iter()
        .map(|(index, c)| (s.labels.class(*index), c))
        .collect();
    rows.sort_by_key(|(_, c)| std::cmp::Reverse(c.bytes));
    let _ = writeln!(
        out,
        "\ntraffic by group, country, direction and verdict ({} series, top {top} by bytes):",
        rows.len()
    );
    let t = text::classes(rows.iter().take(top).map(|(class, c)| {
        (
            class.group,
            class.country.as_str(),
            class.direction,
            class.verdict,
            c.packets,
            c.bytes,
        )
    }));
    let _ = writeln!(out, "{t}");

    // Both directions of a violation class, summed per group and country.
    let mut violations: BTreeMap<(&str, &str), ClassCounter> = BTreeMap::new();
    for (class, c) in rows
        .iter()
        .filter(|(cl, _)| cl.verdict == Verdict::Violation)
    {
        let sum = violations
            .entry((class.group, class.country.as_str()))
            .or_default();
        sum.packets += c.packets;
        sum.bytes += c.bytes;
    }
    let mut violations: Vec<_> = violations.into_iter().collect();
    violations.sort_by_key(|(_, c)| std::cmp::Reverse(c.bytes));
    let _ = writeln!(out, "\nviolations by group and country:");
    let mut t = text::table(&["group", "country", "packets", "bytes"]);
    for ((group, country), c) in violations.iter().take(top) {
        t.add_row([
            (*group).to_owned(),
            (*country).to_owned(),
            c.packets.to_string(),
            c.bytes.to_string(),
        ]);
    }
    out.push_str(&or_none(&t));

    let _ = writeln!(out, "\ndropped and anomalies (non-zero):");
    out.push_str(&or_none(&anomalies(s)));

    let mut flows: Vec<FlowRecord> = s
        .flows
        .iter()
        .map(|(k, st)| FlowRecord::new(k, st, &s.labels))
        .collect();
    flows.sort_by_key(|f| std::cmp::Reverse(f.bytes));
    let _ = writeln!(
        out,
        "\ntracked flows: {} (top {top} by bytes):",
        flows.len()
    );
    let mut t = text::table(&[
        "group", "inside", "remote", "proto", "port", "country", "verdict", "packets", "bytes",
    ]);
    for f in flows.iter().take(top) {
        t.add_row([
            f.group.clone(),
            f.src.to_string(),
            f.dst.to_string(),
            f.proto.to_string(),
            f.dport.to_string(),
            f.country.clone(),
            f.verdict.as_str().to_owned(),
            f.packets.to_string(),
            f.bytes.to_string(),
        ]);
    }
    out.push_str(&or_none(&t));
    out
}

/// Where the pins are, who wrote them, which hooks count, and the frames by outcome.
fn summary(s: &Status) -> String {
    let layout = if s.layout == LAYOUT {
        String::new()
    } else {
        format!(
            " (layout {}; the next `exfilmon run` migrates it)",
            s.layout
        )
    };
    let links = if s.links.is_empty() {
        "none (nothing is counting)".to_owned()
    } else {
        s.links.join(", ")
    };
    let get = |id| reason_count(s, id);
    let frames: u64 = (0..reason::OUTCOMES).map(get).sum();
    let classified =
        get(reason::OUTBOUND) + get(reason::INBOUND) + get(reason::INTERNAL) + get(reason::TRANSIT);
    format!(
        "{}: written by exfilmon {}{layout}\nhooks: {links}\nframes seen: {frames} \
         (outbound {}, inbound {}, internal {}, transit {}, not classified {})\n",
        s.dir.display(),
        s.writer,
        get(reason::OUTBOUND),
        get(reason::INBOUND),
        get(reason::INTERNAL),
        get(reason::TRANSIT),
        frames - classified,
    )
}

fn reason_count(s: &Status, id: u32) -> u64 {
    s.counters.reasons.get(id as usize).copied().unwrap_or(0)
}

/// Policy drops by group and every non-zero reason that is neither a classified outcome
/// nor a routine event (nor the policy totals, which the groups' rows break down).
fn anomalies(s: &Status) -> Table {
    let mut t = text::table(&["what", "count"]);
    crate::policy::drop_series(&s.counters, &s.labels, |group, mode, packets| {
        if packets > 0 {
            let what = if mode == "dry_run" {
                format!("would drop (dry run), group {group}")
            } else {
                format!("dropped by the policy, group {group}")
            };
            t.add_row([what, packets.to_string()]);
        }
    });
    for (id, name) in reason::NAMES {
        let classified = id <= reason::TRANSIT;
        let routine = matches!(
            id,
            reason::RINGBUF_SUBMITTED
                | reason::FLOW_CREATED
                | reason::WATCH_HIT
                | reason::POLICY_DROPPED
                | reason::POLICY_DRY_RUN
        );
        let n = reason_count(s, id);
        if n > 0 && !classified && !routine {
            t.add_row([name.to_owned(), n.to_string()]);
        }
    }
    t
}

/// The table, or "none" when it has no rows.
fn or_none(t: &Table) -> String {
    if t.row_count() == 0 {
        "none\n".to_owned()
    } else {
        format!("{t}\n")
    }
}

#[cfg(test)]
mod tests {
    use monitor_common::{
        class::class_index,
        flow::FAMILY_V4,
        policy::{MODE_DRY_RUN, drop_index},
    };

    use super::*;

    fn status() -> Status {
        let labels = Labels {
            groups: vec!["ungrouped".into(), "phones".into(), "laptops".into()],
            countries: vec![
                None,
                Some("CN".parse().unwrap()),
                Some("DE".parse().unwrap()),
            ],
            ..Labels::default()
        };
        let c = |packets, bytes| ClassCounter { packets, bytes };
        let mut reasons = vec![0; monitor_common::reason::REASON_ENTRIES as usize];
        reasons[reason::OUTBOUND as usize] = 170;
        reasons[reason::NON_IP as usize] = 4;
        reasons[reason::RINGBUF_DROPPED as usize] = 2;
        reasons[reason::FLOW_CREATED as usize] = 9;
        reasons[reason::POLICY_DRY_RUN as usize] = 100;
        let key = FlowKey {
            inside: [192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            remote: [203, 0, 113, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            inside_port: 40_000,
            remote_port: 443,
            proto: 6,
            family: FAMILY_V4,
            _pad: [0; 2],
        };
        let state = FlowState {
            packets_out: 100,
            bytes_out: 64_000,
            group: 1,
            country: 1,
            verdict: u8::try_from(Verdict::Violation.code()).unwrap(),
            ..FlowState::default()
        };
        Status {
            dir: "/sys/fs/bpf/exfilmon".into(),
            writer: "0.1.0".into(),
            layout: LAYOUT,
            links: vec!["xdp-inside".into()],
            labels,
            counters: Counters {
                classes: vec![
                    (
                        class_index(1, 1, 0, Verdict::Violation.code()),
                        c(100, 64_000),
                    ),
                    (class_index(2, 2, 0, Verdict::Allowed.code()), c(70, 7_000)),
                ],
                reasons,
                policy_drops: vec![(drop_index(1, MODE_DRY_RUN), c(100, 64_000))],
                ..Counters::default()
            },
            flows: vec![(key, state)],
        }
    }

    #[test]
    fn the_status_names_every_counter_by_its_labels() {
        let text = render(&status(), 10);
        assert!(
            text.contains("written by exfilmon 0.1.0\nhooks: xdp-inside"),
            "{text}"
        );
        assert!(
            text.contains("frames seen: 174 (outbound 170, inbound 0, internal 0, transit 0, not classified 4)"),
            "{text}"
        );
        let row = |cells: &[&str]| {
            text.lines().any(|l| {
                let got: Vec<&str> = l
                    .split(['│', '┆'])
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .collect();
                got == cells
            })
        };
        assert!(
            row(&["phones", "CN", "outbound", "violation", "100", "64000"]),
            "{text}"
        );
        assert!(
            row(&["laptops", "DE", "outbound", "allowed", "70", "7000"]),
            "{text}"
        );
        assert!(row(&["phones", "CN", "100", "64000"]), "violations: {text}");
        assert!(
            row(&["non_ip", "4"]) && row(&["ringbuf_dropped", "2"]),
            "{text}"
        );
        assert!(
            row(&["would drop (dry run), group phones", "100"]),
            "policy drops by group: {text}"
        );
        assert!(
            !text.contains("flow_created") && !text.contains("policy_dry_run"),
            "routine events and the policy totals are not rows: {text}"
        );
        assert!(
            row(&[
                "phones",
                "192.0.2.10",
                "203.0.113.5",
                "6",
                "443",
                "CN",
                "violation",
                "100",
                "64000"
            ]),
            "{text}"
        );
        // Largest first.
        assert!(text.find("64000").unwrap() < text.find("7000").unwrap());
    }

    #[test]
    fn top_bounds_every_table() {
        let text = render(&status(), 1);
        assert!(!text.contains("laptops"), "{text}");
        assert!(text.contains("(2 series, top 1 by bytes)"), "{text}");
    }
}
