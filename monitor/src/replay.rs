//! `exfilmon replay`: the same kernel program run over every frame of pcap/pcapng captures
//! with `BPF_PROG_TEST_RUN`, and what the daemon would have counted.

use std::{
    cell::Cell,
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    fs::File,
    io::{BufReader, Read as _, Seek as _},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use indicatif::{ProgressBar, ProgressStyle};
use monitor_common::{flow::FlowKey, reason};
use pcap_file::{
    DataLink,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};
use serde::Serialize;

use crate::{
    detect::{Detection, drive::Replay as Detections},
    ebpf::{Counters, EbpfError, Monitor},
    events::{self, FlowRecord},
    tables::{Direction, Labels, Verdict},
};

/// `XDP_DROP`: what the program returns for a packet an enforcing group drops.
const XDP_DROP: u32 = 1;

/// Frames shorter than an Ethernet header are counted, not run (the test run refuses them).
pub const MIN_FRAME: usize = 14;
/// The XDP test run takes at most about a page; longer frames (GRO/TSO captures) are run
/// on their first bytes, which hold every header the program reads.
pub const MAX_TEST_FRAME: usize = 3072;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot open capture {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a pcap or pcapng capture: {len} bytes, shorter than any header")]
    Short { path: PathBuf, len: usize },
    #[error("{path}: not a pcap or pcapng capture")]
    Format {
        path: PathBuf,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: frame {frame}: unreadable")]
    Frame {
        path: PathBuf,
        frame: u64,
        #[source]
        source: pcap_file::PcapError,
    },
    #[error("{path}: link type {link:?} is not supported (Ethernet, raw IPv4/IPv6 are)")]
    LinkType { path: PathBuf, link: DataLink },
    #[error("{path}: frame {frame}")]
    Run {
        path: PathBuf,
        frame: u64,
        #[source]
        source: EbpfError,
    },
    #[error("cannot register the watchlist metrics")]
    Metrics(#[source] prometheus::Error),
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
}

/// One (group, country, direction, verdict) total.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Aggregate {
    pub group: String,
    pub country: String,
    pub direction: Direction,
    pub verdict: Verdict,
    pub packets: u64,
    pub bytes: u64,
}

/// Violation packets of one group: dropped by its enforcement, or dry run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyDrops {
    pub group: String,
    /// `dropped` or `dry_run`, as `exfilmon_policy_drops_total` names them.
    pub mode: String,
    pub packets: u64,
}

/// What `replay` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Frames read from the captures.
    pub frames: u64,
    /// Classified packets and their layer-3 bytes (the sums of `aggregates`).
    pub packets: u64,
    pub bytes: u64,
    pub aggregates: Vec<Aggregate>,
    /// Flows the daemon would have reported (violations), with their final totals.
    pub flows: Vec<FlowRecord>,
    /// Frames the program returned `XDP_DROP` for (violations of enforcing groups).
    pub dropped: u64,
    /// The policy drop counters of every group, zeros included.
    pub policy_drops: Vec<PolicyDrops>,
    /// Kernel counters by name, plus the replay's own (`short_frames`, `clipped_frames`).
    pub counters: BTreeMap<String, u64>,
    /// Watchlist hits: `{watchlist, entry, group, direction, packets, bytes}`.
    pub watch: Vec<WatchHit>,
    /// The detections the daemon would have made, on the captures' clock, in time order
    /// (the event log's detection lines without `v` and `event`).
    pub detections: Vec<Detection>,
}

/// One (watchlist entry, group, direction) total.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct WatchHit {
    pub watchlist: String,
    pub entry: String,
    pub group: String,
    pub direction: Direction,
    pub packets: u64,
    pub bytes: u64,
}

/// Runs every frame of `captures`, in order, through a freshly loaded `monitor`.
/// DNS answers and ClientHellos are learned as the daemon learns them, before the next
/// frame runs, so a capture gives the watchlist hits that live traffic gave (more, by the
/// few packets that pass live while the daemon is still learning). The detections run on
/// the frames' timestamps and start with no known contacts (no state file is read or
/// written).
pub fn run(
    monitor: &mut Monitor,
    labels: &Labels,
    watch: crate::watch::Plan,
    config: &crate::config::Config,
    captures: &[PathBuf],
) -> Result<Report, ReplayError> {
    run_with_progress(
        monitor,
        labels,
        watch,
        config,
        captures,
        &ProgressBar::hidden(),
    )
}

/// The bar `exfilmon replay` shows on a terminal: bytes of the captures replayed, with the
/// file, the time so far and the time left.
#[must_use]
pub fn progress_bar(captures: &[PathBuf]) -> ProgressBar {
    let total = captures
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template(
            "replay {msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {elapsed} (eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    )
}

/// [`run`], advancing `bar` by the bytes of the captures read.
pub fn run_with_progress(
    monitor: &mut Monitor,
    labels: &Labels,
    watch: crate::watch::Plan,
    config: &crate::config::Config,
    captures: &[PathBuf],
    bar: &ProgressBar,
) -> Result<Report, ReplayError> {
    let mut detect = Detections::new(config);
    let mut events = monitor.take_events()?;
    let registry = prometheus::Registry::new();
    let metrics = crate::watch::WatchMetrics::register(&registry).map_err(ReplayError::Metrics)?;
    let mut watcher = crate::watch::Watcher::new(monitor.take_watch()?, watch, metrics)?;
    let mut seen: HashMap<FlowKey, FlowRecord> = HashMap::new();
    let mut frames = 0u64;
    let mut short = 0u64;
    let mut clipped = 0u64;
    let mut dropped = 0u64;
    let mut done = 0u64;
    for path in captures {
        bar.set_message(path.display().to_string());
        let read = Cell::new(0u64);
        for_each_frame(path, &read, |index, ts, frame| {
            frames += 1;
            bar.set_position(done + read.get());
            let run_err = |source| ReplayError::Run {
                path: path.clone(),
                frame: index,
                source,
            };
            detect
                .before_frame(ts, || monitor.read_counters_of(labels), labels)
                .map_err(run_err)?;
            if frame.len() < MIN_FRAME {
                short += 1;
                return Ok(());
            }
            let data = if frame.len() > MAX_TEST_FRAME {
                clipped += 1;
                &frame[..MAX_TEST_FRAME]
            } else {
                frame
            };
            let out = monitor
                .test_run(monitor.sizes().programs.xdp, data)
                .map_err(run_err)?;
            if out.action == XDP_DROP {
                dropped += 1;
            }
            // Drain after every frame: events keep their order and the ring never fills.
            while let Some(item) = events.next() {
                apply(&item, ts, labels, &mut watcher, &mut detect, &mut seen);
            }
            Ok(())
        })?;
        done += std::fs::metadata(path).map_or(read.get(), |m| m.len());
        bar.set_position(done);
    }
    bar.finish_and_clear();

    // Final totals come from the flow table; flows it no longer holds keep their last event.
    let open = monitor.flows()?;
    for (key, st) in &open {
        seen.insert(*key, FlowRecord::new(key, st, labels));
    }
    let detections = detect.finish(&open, || monitor.read_counters_of(labels), labels)?;
    let mut flows: Vec<FlowRecord> = seen.into_values().collect();
    flows.sort_by(|a, b| {
        (a.src, a.dst, a.proto, a.sport, a.dport).cmp(&(b.src, b.dst, b.proto, b.sport, b.dport))
    });

    let counters = monitor.read_counters_of(labels)?;
    let aggregates = aggregates(&counters, labels);
    let watch = watch_hits(&counters, labels);
    let mut by_name: BTreeMap<String, u64> = reason::NAMES
        .iter()
        .map(|(id, name)| {
            (
                (*name).to_owned(),
                counters.reasons.get(*id as usize).copied().unwrap_or(0),
            )
        })
        .collect();
    let mut policy_drops = Vec::new();
    crate::policy::drop_series(&counters, labels, |group, mode, packets| {
        policy_drops.push(PolicyDrops {
            group: group.to_owned(),
            mode: mode.to_owned(),
            packets,
        });
    });
    *by_name.entry("malformed_l2".to_owned()).or_default() += short;
    by_name.insert("short_frames".to_owned(), short);
    by_name.insert("clipped_frames".to_owned(), clipped);

    Ok(Report {
        frames,
        packets: aggregates.iter().map(|a| a.packets).sum(),
        bytes: aggregates.iter().map(|a| a.bytes).sum(),
        aggregates,
        flows,
        dropped,
        policy_drops,
        counters: by_name,
        watch,
        detections,
    })
}

/// Applies one ring record drained after the frame captured at `ts`, as the daemon would.
fn apply(
    item: &[u8],
    ts: std::time::SystemTime,
    labels: &Labels,
    watcher: &mut crate::watch::Watcher,
    detect: &mut Detections,
    seen: &mut HashMap<FlowKey, FlowRecord>,
) {
    match events::decode_record(item) {
        Ok(events::Record::Flow(kind, key, st)) => {
            detect.on_flow(kind, &key, &st, ts, labels);
            seen.insert(key, FlowRecord::new(&key, &st, labels));
        }
        Ok(events::Record::Dns {
            payload,
            tcp,
            cut,
            server,
            client,
        }) => {
            if let Some(parsed) = watcher.answer(payload, tcp, cut) {
                detect.on_dns(ts, server, client, &parsed);
            }
        }
        Ok(events::Record::Hello { packet, cut }) => watcher.hello(packet, cut),
        Err(_) => {}
    }
}

/// The class counters as (group, country, direction, verdict) totals, sorted.
fn aggregates(counters: &Counters, labels: &Labels) -> Vec<Aggregate> {
    let mut aggregates: Vec<Aggregate> = counters
        .classes
        .iter()
        .map(|(index, c)| {
            let class = labels.class(*index);
            Aggregate {
                group: class.group.to_owned(),
                country: class.country,
                direction: class.direction,
                verdict: class.verdict,
                packets: c.packets,
                bytes: c.bytes,
            }
        })
        .collect();
    aggregates.sort();
    aggregates
}

/// The watch counters as (watchlist entry, group, direction) totals, sorted.
fn watch_hits(counters: &Counters, labels: &Labels) -> Vec<WatchHit> {
    let mut watch: Vec<WatchHit> = counters
        .watch
        .iter()
        .filter_map(|(index, c)| {
            let (entry, group, dir) = monitor_common::watch::watch_counter_parts(*index);
            let (list, name) = labels.watch.get(entry as usize).filter(|_| entry != 0)?;
            Some(WatchHit {
                watchlist: list.clone(),
                entry: name.clone(),
                group: labels.group(group).to_owned(),
                direction: Direction::from_code(dir),
                packets: c.packets,
                bytes: c.bytes,
            })
        })
        .collect();
    watch.sort();
    watch
}

/// Calls `f` with every frame of a pcap or pcapng file as an Ethernet frame, with its
/// capture time (a pcapng simple packet, which has none, takes the previous frame's).
/// `read` counts the bytes of the frames' records so far (the readers buffer megabytes
/// ahead, so their reads would move a progress bar in jumps).
fn for_each_frame(
    path: &Path,
    read: &Cell<u64>,
    mut f: impl FnMut(u64, SystemTime, &[u8]) -> Result<(), ReplayError>,
) -> Result<(), ReplayError> {
    let at = |d: Duration| UNIX_EPOCH + d;
    let mut last = UNIX_EPOCH;
    let open_err = |source| ReplayError::Open {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    // The first four bytes tell pcapng from pcap.
    let mut magic = Vec::with_capacity(4);
    (&mut file)
        .take(4)
        .read_to_end(&mut magic)
        .map_err(open_err)?;
    if magic.len() < 4 {
        return Err(ReplayError::Short {
            path: path.to_owned(),
            len: magic.len(),
        });
    }
    file.rewind().map_err(open_err)?;
    let reader = BufReader::new(file);
    let format = |source| ReplayError::Format {
        path: path.to_owned(),
        source,
    };
    let frame_err = |frame, source| ReplayError::Frame {
        path: path.to_owned(),
        frame,
        source,
    };
    let mut buf = Vec::new();
    let mut index = 0u64;

    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut reader = PcapNgReader::new(reader).map_err(format)?;
        let mut links: Vec<DataLink> = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.map_err(|e| frame_err(index, e))? {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    read.set(read.get() + 32 + epb.data.len().next_multiple_of(4) as u64);
                    let link = links
                        .get(epb.interface_id as usize)
                        .copied()
                        .unwrap_or(DataLink::ETHERNET);
                    let frame = ethernet(path, link, &epb.data, &mut buf)?;
                    last = at(epb.timestamp);
                    f(index, last, frame)?;
                    index += 1;
                }
                Block::SimplePacket(spb) => {
                    read.set(read.get() + 16 + spb.data.len().next_multiple_of(4) as u64);
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    let frame = ethernet(path, link, &spb.data, &mut buf)?;
                    f(index, last, frame)?;
                    index += 1;
                }
                _ => {}
            }
        }
    } else {
        let mut reader = PcapReader::new(reader).map_err(format)?;
        let link = reader.header().datalink;
        while let Some(packet) = reader.next_packet() {
            let packet = packet.map_err(|e| frame_err(index, e))?;
            read.set(read.get() + 16 + packet.data.len() as u64);
            let frame = ethernet(path, link, &packet.data, &mut buf)?;
            f(index, at(packet.timestamp), frame)?;
            index += 1;
        }
    }
    Ok(())
}

/// Ethernet frames pass as they are; raw IP gets a synthetic Ethernet header.
fn ethernet<'a>(
    path: &Path,
    link: DataLink,
    data: &'a [u8],
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], ReplayError> {
    match link {
        DataLink::ETHERNET => Ok(data),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let ethertype: [u8; 2] = match data.first().map(|b| b >> 4) {
                Some(6) => [0x86, 0xdd],
                _ => [0x08, 0x00],
            };
            buf.clear();
            buf.extend_from_slice(&[0; 12]);
            buf.extend_from_slice(&ethertype);
            buf.extend_from_slice(data);
            Ok(buf)
        }
        link => Err(ReplayError::LinkType {
            path: path.to_owned(),
            link,
        }),
    }
}

/// Renders a report as human-readable tables.
#[must_use]
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "{} frames; {} classified packets, {} layer-3 bytes\n\n",
        report.frames, report.packets, report.bytes
    );
    let t = crate::text::classes(report.aggregates.iter().map(|a| {
        (
            a.group.as_str(),
            a.country.as_str(),
            a.direction,
            a.verdict,
            a.packets,
            a.bytes,
        )
    }));
    out.push_str(&t.to_string());
    if !report.flows.is_empty() {
        let mut t = crate::text::table(&[
            "src", "dst", "proto", "sport", "dport", "group", "country", "asn", "rule", "packets",
            "bytes",
        ]);
        for fl in &report.flows {
            t.add_row([
                fl.src.to_string(),
                fl.dst.to_string(),
                fl.proto.to_string(),
                fl.sport.to_string(),
                fl.dport.to_string(),
                fl.group.clone(),
                fl.country.clone(),
                crate::text::asn(Some(fl.asn).filter(|&n| n != 0)),
                fl.rule.clone(),
                fl.packets.to_string(),
                fl.bytes.to_string(),
            ]);
        }
        out.push_str("\n\nviolation flows\n");
        out.push_str(&t.to_string());
    }
    let drops: Vec<String> = report
        .policy_drops
        .iter()
        .filter(|d| d.packets != 0)
        .map(|d| format!("{} {}={}", d.group, d.mode, d.packets))
        .collect();
    if !drops.is_empty() {
        let _ = write!(
            out,
            "\n\npolicy: {} frames dropped; {}",
            report.dropped,
            drops.join(", ")
        );
    }
    if !report.detections.is_empty() {
        let mut t = crate::text::table(&["time", "detection", "group", "country", "details"]);
        for d in &report.detections {
            let mut fields = serde_json::to_value(&d.what).unwrap_or_default();
            if let Some(map) = fields.as_object_mut() {
                map.remove("detection");
            }
            t.add_row([
                humantime::format_rfc3339_millis(d.time.0).to_string(),
                d.what.name().to_owned(),
                d.group.clone(),
                d.country.clone(),
                fields.to_string(),
            ]);
        }
        out.push_str("\n\ndetections\n");
        out.push_str(&t.to_string());
    }
    out.push_str("\n\ncounters: ");
    let nonzero: Vec<String> = report
        .counters
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    out.push_str(if nonzero.is_empty() { "all zero" } else { "" });
    out.push_str(&nonzero.join(" "));
    out.push('\n');
    out
}
