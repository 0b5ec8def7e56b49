//! Pinning on bpffs, so that a restart or an upgrade of the daemon loses no count.
//!
//! Under `[pin] dir` (default `/sys/fs/bpf/exfilmon`):
//! - `maps/`: the counters, the flow table and the ring buffer (`monitor_common::pin`),
//!   plus `PIN_META` (the layout) and `PIN_LABELS` (the slot names that index the
//!   counters);
//! - `links/`: one link per attached hook, named after the hook, the interface and its
//!   namespace.
//!
//! A daemon that finds them reuses the maps (the loader opens the pins instead of making
//! new maps), restores the slot names so that every counter keeps its labels, fills its own
//! classification tables and then swaps its programs into the pinned links with one
//! `BPF_LINK_UPDATE` each: the old program counts every packet until then, the new one
//! every packet after. On exit it leaves everything attached; `exfilmon cleanup` removes it.
//!
//! What cannot be carried over is refused before anything is touched: pins of another
//! layout (a changed meaning of a pinned map), a flow table or ring buffer of another
//! size than the config asks for, and a second daemon on the same directory.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use aya::maps::{Array, Map, MapData, MapError, MapInfo};
use monitor_common::{
    class::NAMED_ASN_SLOTS,
    maps,
    pin::{LABEL_CHUNK, LABEL_CHUNKS, LAYOUT, MAGIC, PINNED_MAPS, PinMeta, TAKES_OVER},
};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, Interface},
    country::CountryCode,
    tables::Labels,
};

/// `statfs` type of bpffs.
const BPF_FS_MAGIC: libc::__fsword_t = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "{dir} is not on a bpffs mount, so nothing can be pinned there (mount one with \
         `mount -t bpf bpf /sys/fs/bpf`, or set `[pin] enabled = false`)"
    )]
    NotBpffs { dir: PathBuf },
    #[error("{what} {path} failed")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "another exfilmon runs with the pin directory {dir}: one daemon per directory (give \
         this one its own `[pin] dir`), or stop that one first"
    )]
    Busy { dir: PathBuf },
    #[error(
        "the maps pinned under {dir} were written by exfilmon {version} in map layout {found}, \
         and this exfilmon ({ours}) takes over layouts {oldest} to {LAYOUT}. They are left as \
         they are, so that no counter is misread: run `exfilmon cleanup --pin-dir {dir}` to \
         detach the old programs and remove them (the counters then start again from zero), \
         or go on with the version that wrote them",
        oldest = TAKES_OVER[0]
    )]
    Layout {
        dir: PathBuf,
        version: String,
        found: u32,
        ours: &'static str,
    },
    #[error(
        "{key} is {configured} in {config}, but the {what} pinned under {dir} holds {pinned}: \
         a pinned map keeps its size. Set {key} = {pinned} again, or run `exfilmon cleanup \
         --pin-dir {dir}` first (the counters then start again from zero)"
    )]
    SizeChanged {
        key: &'static str,
        what: &'static str,
        configured: u32,
        pinned: u32,
        config: PathBuf,
        dir: PathBuf,
    },
    #[error("reading the pinned map {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error(
        "the slot names pinned in {path} are unreadable ({problem}); run `exfilmon cleanup \
         --pin-dir {dir}` to start again from zero"
    )]
    Labels {
        path: PathBuf,
        dir: PathBuf,
        problem: String,
    },
}

/// An open, locked pin directory, and what the previous daemon left in it.
#[derive(Debug)]
pub struct Pins {
    dir: PathBuf,
    /// `flock` on the directory for the daemon's life: one daemon per directory.
    _lock: File,
    previous: Option<Labels>,
    /// Who wrote the previous state, for the log.
    writer: Option<String>,
}

impl Pins {
    /// Opens (creating it) and locks `config.pin.dir`, checks that what is pinned there can
    /// be carried over to `config`, and reads the slot names the last daemon left.
    pub fn open(config: &Config) -> Result<Self, PinError> {
        let dir = config.pin.dir.clone();
        for sub in [dir.clone(), dir.join("maps"), dir.join("links")] {
            std::fs::create_dir_all(&sub).map_err(|source| PinError::Io {
                what: "creating",
                path: sub.clone(),
                source,
            })?;
        }
        if !on_bpffs(&dir)? {
            return Err(PinError::NotBpffs { dir });
        }
        let lock = lock(&dir)?;
        let mut pins = Self {
            dir,
            _lock: lock,
            previous: None,
            writer: None,
        };
        pins.check_sizes(config)?;
        if let Some((meta, labels)) = pins.read_state()? {
            pins.writer = Some(version_text(&meta.version));
            pins.previous = Some(labels);
        }
        Ok(pins)
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The slot names of the daemon that pinned the maps, when there was one.
    #[must_use]
    pub fn previous(&self) -> Option<&Labels> {
        self.previous.as_ref()
    }

    /// The version of the daemon that pinned the maps, when there was one.
    #[must_use]
    pub fn writer(&self) -> Option<&str> {
        self.writer.as_deref()
    }

    /// Where the loader pins (or finds) each pinned map.
    #[must_use]
    pub fn map_paths(&self) -> Vec<(&'static str, PathBuf)> {
        map_names()
            .map(|name| (name, map_path(&self.dir, name)))
            .collect()
    }

    /// Where the link of `iface` is pinned.
    #[must_use]
    pub fn link_path(&self, iface: &Interface) -> PathBuf {
        link_path(&self.dir, iface)
    }

    /// Link pins that no interface of `config` names: left by an earlier config.
    pub fn stale_links(&self, config: &Config) -> Result<Vec<PathBuf>, PinError> {
        let wanted: BTreeSet<PathBuf> = config
            .interfaces
            .iter()
            .map(|i| self.link_path(i))
            .collect();
        let mut stale: Vec<PathBuf> = list(&self.dir.join("links"))?
            .into_iter()
            .map(|e| e.path())
            .filter(|p| !wanted.contains(p))
            .collect();
        stale.sort();
        Ok(stale)
    }

    /// The flow table and the ring buffer keep the size they were pinned with.
    fn check_sizes(&self, config: &Config) -> Result<(), PinError> {
        for (name, key, what, configured) in [
            (
                maps::FLOWS,
                "flows.max_entries",
                "flow table",
                config.flows.max_entries,
            ),
            (
                maps::EVENTS,
                "flows.ring_bytes",
                "ring buffer",
                config.flows.ring_bytes,
            ),
        ] {
            let path = map_path(&self.dir, name);
            if !path.exists() {
                continue;
            }
            let info = MapInfo::from_pin(&path).map_err(|source| PinError::Read {
                path: path.clone(),
                source,
            })?;
            if info.max_entries() != configured {
                return Err(PinError::SizeChanged {
                    key,
                    what,
                    configured,
                    pinned: info.max_entries(),
                    config: config.path.clone(),
                    dir: self.dir.clone(),
                });
            }
        }
        Ok(())
    }

    /// The header and the slot names, when a daemon wrote them.
    fn read_state(&self) -> Result<Option<(PinMeta, Labels)>, PinError> {
        read_state(&self.dir)
    }
}

/// The header and the slot names under `dir`, when a daemon wrote them; read without the
/// daemon's lock (`exfilmon status` reads beside a running daemon).
pub fn read_state(dir: &Path) -> Result<Option<(PinMeta, Labels)>, PinError> {
    let meta_path = map_path(dir, maps::PIN_META);
    if !meta_path.exists() {
        return Ok(None);
    }
    let read = |path: &Path| -> Result<Map, PinError> {
        let data = MapData::from_pin(path).map_err(|source| PinError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Map::Array(data))
    };
    let meta_map = read(&meta_path)?;
    let meta: PinMeta = Array::<_, PinMeta>::try_from(&meta_map)
        .and_then(|a| a.get(&0, 0))
        .map_err(|source| PinError::Read {
            path: meta_path.clone(),
            source,
        })?;
    if meta.magic != MAGIC {
        // Pinned, but the daemon stopped before it wrote the header: nothing was
        // attached yet, so nothing was counted.
        return Ok(None);
    }
    if !TAKES_OVER.contains(&meta.layout) {
        return Err(PinError::Layout {
            dir: dir.to_owned(),
            version: version_text(&meta.version),
            found: meta.layout,
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    let labels_path = map_path(dir, maps::PIN_LABELS);
    let labels_map = read(&labels_path)?;
    let chunks =
        Array::<_, [u8; LABEL_CHUNK]>::try_from(&labels_map).map_err(|source| PinError::Read {
            path: labels_path.clone(),
            source,
        })?;
    let len = meta.labels_len as usize;
    let mut bytes = Vec::with_capacity(len);
    for i in 0..len.div_ceil(LABEL_CHUNK) {
        let chunk = chunks
            .get(&u32::try_from(i).unwrap_or(u32::MAX), 0)
            .map_err(|source| PinError::Read {
                path: labels_path.clone(),
                source,
            })?;
        bytes.extend_from_slice(&chunk);
    }
    bytes.truncate(len);
    let labels = decode_labels(&bytes).map_err(|problem| PinError::Labels {
        path: labels_path.clone(),
        dir: dir.to_owned(),
        problem,
    })?;
    Ok(Some((meta, labels)))
}

/// Every map pinned under `maps/`.
fn map_names() -> impl Iterator<Item = &'static str> {
    PINNED_MAPS
        .into_iter()
        .chain([maps::PIN_META, maps::PIN_LABELS])
}

/// Where the map `name` is pinned under `dir`.
#[must_use]
pub fn map_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("maps").join(name)
}

/// `links/<hook>-<interface>`, with `@<netns>` when the interface is in one.
fn link_path(dir: &Path, iface: &Interface) -> PathBuf {
    let mut name = format!("{}-{}", iface.hook, iface.name);
    if let Some(netns) = &iface.netns {
        name.push('@');
        name.push_str(netns);
    }
    dir.join("links").join(name)
}

/// The entries of a directory.
/// The names of the links pinned under `dir` (`xdp-inside`, ...), sorted; none when no
/// link was pinned yet.
pub fn link_names(dir: &Path) -> Result<Vec<String>, PinError> {
    let links = dir.join("links");
    if !links.exists() {
        return Ok(Vec::new());
    }
    let mut names: Vec<String> = list(&links)?
        .into_iter()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn list(dir: &Path) -> Result<Vec<std::fs::DirEntry>, PinError> {
    let io = |source| PinError::Io {
        what: "listing",
        path: dir.to_owned(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<_, _>>()
        .map_err(io)
}

fn on_bpffs(dir: &Path) -> Result<bool, PinError> {
    use std::os::unix::ffi::OsStrExt as _;
    let io_err = |source| PinError::Io {
        what: "checking the file system of",
        path: dir.to_owned(),
        source,
    };
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: a valid NUL-terminated path and a zeroed struct for the kernel to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(path.as_ptr(), &raw mut st) } != 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    Ok(st.f_type == BPF_FS_MAGIC)
}

/// Takes the directory's `flock`; fails at once when another process holds it.
fn lock(dir: &Path) -> Result<File, PinError> {
    let file = File::open(dir).map_err(|source| PinError::Io {
        what: "opening",
        path: dir.to_owned(),
        source,
    })?;
    // SAFETY: a valid open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(PinError::Busy {
                dir: dir.to_owned(),
            });
        }
        return Err(PinError::Io {
            what: "locking",
            path: dir.to_owned(),
            source: e,
        });
    }
    Ok(file)
}

#[must_use]
pub fn version_text(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    match std::str::from_utf8(&bytes[..end]) {
        Ok(v) if !v.is_empty() => v.to_owned(),
        _ => "(unknown version)".to_owned(),
    }
}

/// The header this daemon writes.
#[must_use]
pub fn meta(labels_len: usize) -> PinMeta {
    let mut version = [0u8; 16];
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    let n = v.len().min(version.len());
    version[..n].copy_from_slice(&v[..n]);
    PinMeta {
        magic: MAGIC,
        layout: LAYOUT,
        labels_len: u32::try_from(labels_len).unwrap_or(u32::MAX),
        version,
    }
}

/// Capacity of `PIN_LABELS` in bytes.
pub const LABELS_CAPACITY: usize = LABEL_CHUNK * LABEL_CHUNKS as usize;

/// The slot names as pinned: what indexes the counters and the flows (groups, countries,
/// named ASNs, policy rules, watch entries). The ASN slots of the `GeoIP` data are not
/// kept: only the new tables use them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    groups: Vec<String>,
    /// "" for the slot without a code (0, unknown).
    countries: Vec<String>,
    named_asns: Vec<u32>,
    rules: Vec<String>,
    watch: Vec<(String, String)>,
}

/// `labels` as the bytes pinned in `PIN_LABELS`.
#[must_use]
pub fn encode_labels(labels: &Labels) -> Vec<u8> {
    let saved = Saved {
        groups: labels.groups.clone(),
        countries: labels
            .countries
            .iter()
            .map(|c| c.map(|c| c.to_string()).unwrap_or_default())
            .collect(),
        named_asns: labels
            .asns
            .iter()
            .copied()
            .take(NAMED_ASN_SLOTS as usize)
            .collect(),
        rules: labels.rules.clone(),
        watch: labels.watch.clone(),
    };
    serde_json::to_vec(&saved).unwrap_or_default()
}

/// The inverse of [`encode_labels`]; the error says what is wrong.
pub fn decode_labels(bytes: &[u8]) -> Result<Labels, String> {
    let saved: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if saved.named_asns.len() != NAMED_ASN_SLOTS as usize {
        return Err(format!(
            "{} named ASN slots, not {NAMED_ASN_SLOTS}",
            saved.named_asns.len()
        ));
    }
    if saved.groups.is_empty() || saved.countries.is_empty() {
        return Err("no group or country slot 0".to_owned());
    }
    let countries = saved
        .countries
        .iter()
        .map(|c| CountryCode::parse_data(c).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(Labels {
        groups: saved.groups,
        countries,
        asns: saved.named_asns,
        rules: saved.rules,
        watch: saved.watch,
    })
}

/// What `cleanup` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub links: usize,
    pub maps: usize,
    /// Entries exfilmon did not write, left where they are.
    pub unknown: Vec<PathBuf>,
    /// Whether the directory itself was removed (it was empty at the end).
    pub dir: bool,
}

/// Removes every link and map exfilmon pinned under `dir` (a link goes with its last pin,
/// detaching its program), then the directory when nothing else is in it. Refuses while
/// a daemon runs with it.
pub fn cleanup(dir: &Path) -> Result<Removed, PinError> {
    let mut removed = Removed::default();
    if !dir.exists() {
        return Ok(removed);
    }
    if !on_bpffs(dir)? {
        return Err(PinError::NotBpffs {
            dir: dir.to_owned(),
        });
    }
    let _lock = lock(dir)?;
    let remove = |path: &Path| {
        std::fs::remove_file(path).map_err(|source| PinError::Io {
            what: "removing",
            path: path.to_owned(),
            source,
        })
    };
    let links = dir.join("links");
    if links.is_dir() {
        for entry in list(&links)? {
            remove(&entry.path())?;
            removed.links += 1;
        }
    }
    let known: BTreeSet<&str> = map_names().collect();
    let maps = dir.join("maps");
    if maps.is_dir() {
        for entry in list(&maps)? {
            let path = entry.path();
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| known.contains(n))
            {
                remove(&path)?;
                removed.maps += 1;
            } else {
                removed.unknown.push(path);
            }
        }
    }
    // Empty directories go; anything else stays, and is named.
    for sub in [&links, &maps] {
        let _ = std::fs::remove_dir(sub);
    }
    for entry in list(dir)? {
        let path = entry.path();
        if path != links && path != maps {
            removed.unknown.push(path);
        }
    }
    removed.unknown.sort();
    removed.dir = std::fs::remove_dir(dir).is_ok();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        let mut asns = vec![0; NAMED_ASN_SLOTS as usize];
        asns[1] = 64_500;
        Labels {
            groups: vec!["ungrouped".into(), "phones".into()],
            countries: vec![
                None,
                CountryCode::parse_data("CN").expect("code"),
                CountryCode::parse_data("AP").expect("code"),
            ],
            // Data ASN slots beyond the named ones are not kept.
            asns: asns.into_iter().chain([64_501, 64_502]).collect(),
            rules: vec!["default".into(), "phones: allow SG".into()],
            watch: vec![
                (String::new(), String::new()),
                ("ads".into(), "x.example".into()),
            ],
        }
    }

    #[test]
    fn slot_names_round_trip_without_the_data_asn_slots() {
        let l = labels();
        let back = decode_labels(&encode_labels(&l)).expect("decodes");
        assert_eq!(back.groups, l.groups);
        assert_eq!(back.countries, l.countries);
        assert_eq!(back.asns, l.asns[..NAMED_ASN_SLOTS as usize]);
        assert_eq!(back.rules, l.rules);
        assert_eq!(back.watch, l.watch);
        let len = encode_labels(&l).len();
        assert!(len < LABELS_CAPACITY, "{len} bytes");
    }

    #[test]
    fn bad_slot_names_are_refused_with_the_reason() {
        let text = String::from_utf8(encode_labels(&labels())).expect("utf-8");
        for (bad, why) in [
            (text.replace("\"CN\"", "\"C\""), "two-letter"),
            (text.replace("\"groups\"", "\"teams\""), "unknown field"),
            (text[..text.len() / 2].to_owned(), "EOF"),
            (text.replace("[0,64500", "[64500"), "named ASN slots"),
        ] {
            let e = decode_labels(bad.as_bytes()).expect_err("refused");
            assert!(e.contains(why), "{e:?} should say {why:?}");
        }
    }

    #[test]
    fn the_header_names_this_layout_and_version() {
        let m = meta(1234);
        assert_eq!(m.magic, MAGIC);
        assert_eq!(m.layout, LAYOUT);
        assert_eq!(m.labels_len, 1234);
        assert_eq!(version_text(&m.version), env!("CARGO_PKG_VERSION"));
        assert_eq!(version_text(&[0; 16]), "(unknown version)");
    }

    #[test]
    fn link_pins_are_named_by_hook_interface_and_namespace() {
        let iface = |netns: Option<&str>| Interface {
            name: "inside".into(),
            hook: crate::config::Hook::TcEgress,
            mode: crate::config::XdpMode::Auto,
            netns: netns.map(str::to_owned),
            mirror: false,
            line: 1,
        };
        let dir = Path::new("/sys/fs/bpf/x");
        assert_eq!(
            link_path(dir, &iface(None)),
            Path::new("/sys/fs/bpf/x/links/tc-egress-inside")
        );
        assert_eq!(
            link_path(dir, &iface(Some("router"))),
            Path::new("/sys/fs/bpf/x/links/tc-egress-inside@router")
        );
    }
}
