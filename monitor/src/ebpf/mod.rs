//! Loading the kernel programs, filling their tables, attaching them, and reading their maps.

mod barrier;
mod bench;
mod counters;
mod geo;
mod watch;

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, ProgramArray, RingBuf},
    programs::{
        Program, ProgramError, ProgramFd, SchedClassifier, TcAttachType, TestRun as _,
        TestRunOptions, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, SchedClassifierLink, TcError},
        xdp::XdpLink,
    },
};
pub use bench::{BenchSizes, Hash6Plan};
use counters::read_counters_from;
pub use counters::{CounterMaps, Counters, Extent};
pub use geo::{GeoTables, InstallError, Installed};
use monitor_common::{
    config::KernelConfig,
    flow::{FlowKey, FlowState},
    geo::{GENERATIONS, L2_BLOCK_WORDS},
    maps,
    pin::{LABEL_CHUNK, LABEL_CHUNKS, PinMeta},
    programs,
};
pub use watch::WatchMaps;

/// The kernel object, built by build.rs with aya-build.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor-ebpf"));

/// The kernel object as embedded (for tools that load its programs one by one).
#[must_use]
pub fn object() -> &'static [u8] {
    OBJECT
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "loading the eBPF object failed (are you root, or do you have CAP_BPF and CAP_NET_ADMIN?)"
    )]
    Load(#[source] aya::EbpfError),
    #[error("the kernel refused program {program}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {map} is missing from the eBPF object")]
    MissingMap { map: &'static str },
    #[error("map {map}: {what}")]
    Map {
        map: &'static str,
        what: String,
        #[source]
        source: MapError,
    },
    #[error("attaching {program} to interface {interface} failed")]
    Attach {
        program: &'static str,
        interface: String,
        #[source]
        source: ProgramError,
    },
    #[error(
        "interface {interface} already has an XDP program, which exfilmon will not replace: \
         it never detaches what it did not attach. Remove the other program first \
         (`ip link set dev {interface} xdp off` if nothing else needs it; `bpftool net` \
         shows who attached it), or hook this interface with tc-egress/tc-ingress, which \
         runs beside other programs"
    )]
    XdpOccupied {
        interface: String,
        #[source]
        source: ProgramError,
    },
    #[error("interface name {interface:?} contains a NUL byte")]
    InterfaceName { interface: String },
    #[error(
        "putting the mirror port {interface} in promiscuous mode failed (its copies for other \
         machines' addresses would not reach XDP)"
    )]
    Promiscuous {
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("adding the clsact qdisc to {interface} failed")]
    Clsact {
        interface: String,
        #[source]
        source: TcError,
    },
    #[error("reading map {map} in batches failed")]
    Batch {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("map {map} would exceed 4 GiB entries; lower its size")]
    TooLarge { map: &'static str },
    #[error("test run of {program} failed")]
    TestRun {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error(
        "the pinned map {map} has {property} {actual}, and this exfilmon needs {expected}: it \
         was pinned by another version or with another config. It is left as it is, so that \
         no counter is misread; run `exfilmon cleanup` to remove the pins (the counters then \
         start again from zero), or go on with the version and config that pinned it"
    )]
    PinnedIncompatible {
        map: String,
        property: &'static str,
        expected: u64,
        actual: u64,
    },
    #[error("pinning the link of {interface} at {path} failed")]
    PinLink {
        interface: String,
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("removing the pin {path} failed")]
    Unpin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the slot names take {len} bytes, more than the {max} that the pinned map holds; \
         fewer watch entries or groups, or `[pin] enabled = false`"
    )]
    LabelsTooLarge { len: usize, max: usize },
}

/// Sizes of the maps that depend on the config and the `GeoIP` data.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub flows: u32,
    pub ring_bytes: u32,
    /// Level-2 blocks of the IPv4 table, per generation.
    pub l2_blocks: u32,
    /// Node words of the IPv6 tiered table, per generation.
    pub geo6_words: u32,
    /// Prefixes of each IPv6 fallback trie.
    pub geo6: u32,
    /// ASN slots.
    pub asn_slots: u32,
    /// The benchmark's maps and programs; `None` outside the benchmark.
    pub bench: Option<BenchSizes>,
    /// The packet-path programs to load (`for_geo`: by the process's capabilities, see
    /// [`programs_for_capabilities`]).
    pub programs: programs::Set,
}

impl Sizes {
    /// Sizes for `geo` with room to grow on reloads: a quarter more, and at least a floor,
    /// so that a refreshed database of the same kind fits without a restart.
    #[must_use]
    pub fn for_geo(flows: u32, ring_bytes: u32, geo: &GeoTables) -> Self {
        let grow = |n: u32, floor: u32| n.saturating_add(n / 4).max(floor);
        let asns = geo.asn_slots().max(1);
        Sizes {
            flows,
            ring_bytes,
            l2_blocks: grow(geo.l2_blocks(), 256),
            geo6_words: grow(
                u32::try_from(geo.v6_table.nodes.len()).unwrap_or(u32::MAX),
                1 << 16,
            )
            .min(crate::tier6::WORDS_LIMIT),
            geo6: grow(
                u32::try_from(geo.v6_table.trie.len()).unwrap_or(u32::MAX),
                1024,
            ),
            asn_slots: grow(asns, 1024).min(monitor_common::geo::ASN_SLOTS_MAX),
            bench: None,
            programs: programs_for_capabilities(),
        }
    }
}

/// The program set this process can load: [`programs::IN_PLACE`] with CAP_PERFMON or
/// CAP_SYS_ADMIN in its effective set, which the verifier needs for it, and otherwise
/// [`programs::COPY`], which CAP_BPF and CAP_NET_ADMIN load. Capabilities that cannot be
/// read count as missing: the copy set loads wherever the other does.
#[must_use]
pub fn programs_for_capabilities() -> programs::Set {
    use caps::{CapSet, Capability};
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    if has(Capability::CAP_PERFMON) || has(Capability::CAP_SYS_ADMIN) {
        programs::IN_PLACE
    } else {
        programs::COPY
    }
}

/// Everything the classifier looks up, computed in userspace (see `tables.rs`).
#[derive(Debug, Default)]
pub struct Tables {
    /// Address words: inside networks (with their groups) and remote locations.
    pub geo: GeoTables,
    /// Policy word of every (group, country) pair, by `policy_index`.
    pub policy: Vec<(u32, u32)>,
    /// Policy word of every (group, named ASN slot) pair, by `policy::asn_index`.
    pub policy_asn: Vec<(u32, u32)>,
    /// ISO code of every used country slot.
    pub country_codes: Vec<(u32, [u8; 2])>,
}

/// Which hook a program is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp(aya::programs::XdpMode),
    /// A SPAN or TAP port: the mirror program, which counts each frame, then drops it.
    XdpMirror(aya::programs::XdpMode),
    TcEgress,
    TcIngress,
}

/// The loaded kernel programs and their maps.
pub struct Monitor {
    ebpf: Ebpf,
    sizes: Sizes,
    geo: geo::GeoState,
    /// Whether the counters, the flows and the ring buffer are pinned (`crate::pins`).
    pinned: bool,
    /// The links this daemon pinned, held for its life; dropping one leaves it attached.
    links: Vec<PinnedLink>,
}

/// How [`Monitor::attach_pinned`] attached a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A new link (pinned when a pin path was given).
    New,
    /// Swapped into the link a previous daemon pinned: the same link, the new program.
    Kept,
    /// A new link that cannot be pinned: the kernel attached through netlink (before
    /// Linux 5.9 for XDP, 6.6 for tcx). It detaches when the daemon exits.
    Unpinnable,
}

/// What one test run returned.
#[derive(Debug)]
pub struct TestRunOutcome {
    /// `XDP_*` or `TC_ACT_*`.
    pub action: u32,
    pub frame: Vec<u8>,
}

/// A loaded program's descriptor, for a program array.
fn program_fd(ebpf: &Ebpf, name: &'static str) -> Result<ProgramFd, EbpfError> {
    let fd = match ebpf.program(name) {
        Some(Program::Xdp(p)) => p.fd(),
        Some(Program::SchedClassifier(p)) => p.fd(),
        _ => Err(ProgramError::NotLoaded),
    };
    fd.and_then(|fd| fd.try_clone().map_err(ProgramError::IOError))
        .map_err(|source| EbpfError::Program {
            program: name,
            source,
        })
}

/// An XDP attach that failed because the interface has another XDP program is told apart:
/// the kernel refuses a link over an attached program (EBUSY) or beside one in the other
/// mode (EEXIST), and aya falls back to netlink only on EINVAL, so nothing was replaced.
fn xdp_attach_error(program: &'static str, interface: &str, source: ProgramError) -> EbpfError {
    let errno = match &source {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    if matches!(errno, Some(libc::EBUSY | libc::EEXIST)) {
        EbpfError::XdpOccupied {
            interface: interface.to_owned(),
            source,
        }
    } else {
        EbpfError::Attach {
            program,
            interface: interface.to_owned(),
            source,
        }
    }
}

impl Monitor {
    /// Loads the object and every program (the verifier runs here).
    pub fn load(sizes: Sizes) -> Result<Self, EbpfError> {
        Self::load_pinned(sizes, &[])
    }

    /// [`Monitor::load`], with the maps of `pins` (name, path) opened from their pins, or
    /// made and pinned there when there are none yet.
    pub fn load_pinned(sizes: Sizes, pins: &[(&'static str, PathBuf)]) -> Result<Self, EbpfError> {
        let mut sizes = sizes;
        sizes.l2_blocks = sizes.l2_blocks.max(1);
        sizes.geo6 = sizes.geo6.max(1);
        sizes.geo6_words = sizes.geo6_words.clamp(1, crate::tier6::WORDS_LIMIT);
        sizes.asn_slots = sizes.asn_slots.max(1);
        let l2_entries =
            u32::try_from(u64::from(sizes.l2_blocks) * u64::from(GENERATIONS * L2_BLOCK_WORDS / 2))
                .map_err(|_| EbpfError::TooLarge { map: maps::GEO4_L2 })?;
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::FLOWS, sizes.flows.max(1))
            .map_max_entries(maps::EVENTS, sizes.ring_bytes)
            .map_max_entries(maps::GEO4_L2, l2_entries)
            // Two generations of words, two words per entry.
            .map_max_entries(maps::GEO6_NODES, sizes.geo6_words * GENERATIONS / 2)
            .map_max_entries(maps::GEO6_0, sizes.geo6)
            .map_max_entries(maps::GEO6_1, sizes.geo6)
            .map_max_entries(maps::ASNS, sizes.asn_slots);
        for (name, path) in pins {
            loader.map_pin_path(name, path.as_path());
        }
        if !pins.is_empty() {
            loader.map_max_entries(maps::PIN_LABELS, LABEL_CHUNKS);
        }
        let set = sizes.programs;
        let mut names = set.all().to_vec();
        if let Some(b) = sizes.bench {
            b.size_maps(&mut loader);
            names.extend(bench::PROGRAMS);
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| match e {
            aya::EbpfError::MapError(MapError::IncompatiblePinnedMap {
                name,
                property,
                expected,
                actual,
            }) => EbpfError::PinnedIncompatible {
                map: name,
                property,
                expected,
                actual,
            },
            e => EbpfError::Load(e),
        })?;
        for name in names {
            let program = ebpf.program_mut(name).ok_or(EbpfError::Program {
                program: name,
                source: ProgramError::AlreadyLoaded,
            })?;
            let result = match program {
                Program::Xdp(p) => p.load(),
                Program::SchedClassifier(p) => p.load(),
                _ => unreachable!("exfilmon's object only has XDP and TC programs"),
            };
            result.map_err(|source| EbpfError::Program {
                program: name,
                source,
            })?;
        }
        // The encapsulation programs, where the attached programs' tail calls find them.
        for (array, name) in [
            (maps::ENCAP_XDP_PROG, set.encap_xdp),
            (maps::ENCAP_TC_PROG, set.encap_tc),
            (maps::ENCAP_XDP_MIRROR_PROG, set.encap_xdp_mirror),
        ] {
            let fd = program_fd(&ebpf, name)?;
            let map = ebpf
                .map_mut(array)
                .ok_or(EbpfError::MissingMap { map: array })?;
            ProgramArray::try_from(map)
                .and_then(|mut progs| progs.set(0, &fd, 0))
                .map_err(|source| EbpfError::Map {
                    map: array,
                    what: format!("set {name}"),
                    source,
                })?;
        }
        Ok(Self {
            ebpf,
            sizes,
            geo: geo::GeoState::default(),
            pinned: !pins.is_empty(),
            links: Vec::new(),
        })
    }

    /// Writes the slot names that index the pinned counters, then the header that says
    /// they are there, so that the next daemon names every counter as this one does. Does
    /// nothing when nothing is pinned.
    pub fn save_labels(&mut self, labels: &crate::tables::Labels) -> Result<(), EbpfError> {
        if !self.pinned {
            return Ok(());
        }
        let bytes = crate::pins::encode_labels(labels);
        let max = crate::pins::LABELS_CAPACITY;
        if bytes.len() > max {
            return Err(EbpfError::LabelsTooLarge {
                len: bytes.len(),
                max,
            });
        }
        {
            let name = maps::PIN_LABELS;
            let mut chunks: Array<_, [u8; LABEL_CHUNK]> =
                Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
            for (i, part) in bytes.chunks(LABEL_CHUNK).enumerate() {
                let mut chunk = [0u8; LABEL_CHUNK];
                chunk[..part.len()].copy_from_slice(part);
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                chunks
                    .set(i, &chunk, 0)
                    .map_err(|s| map_err(name, format!("set {i}"), s))?;
            }
        }
        let name = maps::PIN_META;
        let mut meta: Array<_, PinMeta> =
            Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
        meta.set(0, &crate::pins::meta(bytes.len()), 0)
            .map_err(|s| map_err(name, "set 0", s))
    }

    /// The kernel's count of instructions its verifier processed (`verified_insns`) for each
    /// program that runs on the packet path (the attached ones and the encapsulation
    /// programs they tail-call), or `None` where the kernel does not report it (before 5.16).
    pub fn verified_instructions(&self) -> Result<Vec<(&'static str, Option<u32>)>, EbpfError> {
        self.sizes
            .programs
            .all()
            .into_iter()
            .map(|name| {
                let info = match self.ebpf.program(name) {
                    Some(Program::Xdp(p)) => p.info(),
                    Some(Program::SchedClassifier(p)) => p.info(),
                    _ => Err(ProgramError::NotLoaded),
                }
                .map_err(|source| EbpfError::Program {
                    program: name,
                    source,
                })?;
                Ok((name, info.verified_instruction_count()))
            })
            .collect()
    }

    /// The sizes the maps were created with.
    #[must_use]
    pub fn sizes(&self) -> Sizes {
        self.sizes
    }

    /// Kernel memory of every map, by name (`memlock` of `/proc/self/fdinfo`), largest first.
    #[must_use]
    pub fn map_memory(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .ebpf
            .maps()
            .filter_map(|(name, map)| {
                let data: &MapData = map_data(map)?;
                Some((name.to_owned(), memlock(data)?))
            })
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, EbpfError> {
        self.ebpf
            .map_mut(name)
            .ok_or(EbpfError::MissingMap { map: name })
    }

    fn map(&self, name: &'static str) -> Result<&Map, EbpfError> {
        self.ebpf
            .map(name)
            .ok_or(EbpfError::MissingMap { map: name })
    }

    /// Writes the run-time settings.
    pub fn write_config(&mut self, config: KernelConfig) -> Result<(), EbpfError> {
        let name = maps::CONFIG;
        let mut array: Array<_, KernelConfig> = Array::try_from(self.map_mut(name)?)
            .map_err(|source| map_err(name, "wrong type", source))?;
        array
            .set(0, &config, 0)
            .map_err(|source| map_err(name, "write", source))
    }

    /// Writes the policy and the country codes; the address tables (inside networks and
    /// locations) go through [`Monitor::install_geo`].
    pub fn write_tables(&mut self, tables: &Tables) -> Result<(), EbpfError> {
        for (name, words) in [
            (maps::POLICY, &tables.policy),
            (maps::POLICY_ASN, &tables.policy_asn),
        ] {
            let mut policy: Array<_, u32> =
                Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
            for (index, word) in words {
                policy
                    .set(*index, word, 0)
                    .map_err(|s| map_err(name, format!("set {index}"), s))?;
            }
        }
        {
            let name = maps::COUNTRY_CODES;
            let mut codes: Array<_, [u8; 2]> =
                Array::try_from(self.map_mut(name)?).map_err(|s| map_err(name, "wrong type", s))?;
            for (slot, code) in &tables.country_codes {
                codes
                    .set(*slot, code, 0)
                    .map_err(|s| map_err(name, format!("set {slot}"), s))?;
            }
        }
        Ok(())
    }

    /// Attaches the program for `hook` to `interface` in the current network namespace.
    pub fn attach(&mut self, interface: &str, hook: Hook) -> Result<(), EbpfError> {
        self.attach_pinned(interface, hook, None).map(|_| ())
    }

    /// [`Monitor::attach`], keeping the link pinned at `link_pin`: a link pinned there by an
    /// earlier daemon gets this daemon's program (`BPF_LINK_UPDATE`, atomic: each packet
    /// runs the old program or the new one), else a new link is made and pinned there. A
    /// pinned link that cannot take the program (its interface is gone) is unpinned first.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        hook: Hook,
        link_pin: Option<&Path>,
    ) -> Result<Attached, EbpfError> {
        let ifname = std::ffi::CString::new(interface).map_err(|_| EbpfError::InterfaceName {
            interface: interface.to_owned(),
        })?;
        let ifname = ifname.as_c_str();
        let outcome = match hook {
            Hook::Xdp(mode) | Hook::XdpMirror(mode) => {
                let name = if matches!(hook, Hook::XdpMirror(_)) {
                    self.sizes.programs.xdp_mirror
                } else {
                    self.sizes.programs.xdp
                };
                let program: &mut Xdp = self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or(EbpfError::MissingMap { map: name })?;
                attach_hook(
                    program,
                    interface,
                    link_pin,
                    |p, link: XdpLink| p.attach_to_link(link).map(drop),
                    |p| {
                        p.attach(ifname, mode)
                            .map_err(|source| xdp_attach_error(name, interface, source))
                    },
                    |p, id| FdLink::try_from(p.take_link(id).ok()?).ok(),
                )?
            }
            Hook::TcEgress | Hook::TcIngress => {
                let (name, attach) = if hook == Hook::TcEgress {
                    (self.sizes.programs.tc_egress, TcAttachType::Egress)
                } else {
                    (self.sizes.programs.tc_ingress, TcAttachType::Ingress)
                };
                // tcx needs no qdisc; on older kernels aya falls back to netlink, which does.
                // A qdisc left by an earlier run (EEXIST, named only in the error's source)
                // is the one wanted.
                if let Err(source) = tc::qdisc_add_clsact(ifname)
                    && !matches!(&source, TcError::AlreadyAttached)
                    && !already_exists(&source)
                {
                    return Err(EbpfError::Clsact {
                        interface: interface.to_owned(),
                        source,
                    });
                }
                let program: &mut SchedClassifier = self
                    .ebpf
                    .program_mut(name)
                    .and_then(|p| p.try_into().ok())
                    .ok_or(EbpfError::MissingMap { map: name })?;
                attach_hook(
                    program,
                    interface,
                    link_pin,
                    |p, link: SchedClassifierLink| p.attach_to_link(link).map(drop),
                    |p| {
                        p.attach(ifname, attach)
                            .map_err(|source| EbpfError::Attach {
                                program: name,
                                interface: interface.to_owned(),
                                source,
                            })
                    },
                    |p, id| FdLink::try_from(p.take_link(id).ok()?).ok(),
                )?
            }
        };
        if matches!(hook, Hook::XdpMirror(_)) {
            promiscuous(ifname).map_err(|source| EbpfError::Promiscuous {
                interface: interface.to_owned(),
                source,
            })?;
        }
        let (fresh, path) = match outcome {
            Pinnable::Link(fd, path) => (fd, path),
            Pinnable::Done(attached) => return Ok(attached),
        };
        let pinned = fresh.pin(path).map_err(|source| EbpfError::PinLink {
            interface: interface.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        self.links.push(pinned);
        Ok(Attached::New)
    }

    /// Runs `program` (one of `monitor_common::programs`) once over `frame` with
    /// `BPF_PROG_TEST_RUN`; returns its action and the frame as the program left it.
    pub fn test_run(
        &self,
        program: &'static str,
        frame: &[u8],
    ) -> Result<TestRunOutcome, EbpfError> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        };
        let err = |source| EbpfError::TestRun { program, source };
        let result = match self.ebpf.program(program) {
            Some(Program::Xdp(p)) => p.test_run(opts).map_err(err)?,
            Some(Program::SchedClassifier(p)) => p.test_run(opts).map_err(err)?,
            _ => return Err(EbpfError::MissingMap { map: program }),
        };
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            action: result.return_value,
            frame: out,
        })
    }

    /// Takes the ring buffer for the event reader.
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, EbpfError> {
        let name = maps::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(EbpfError::MissingMap { map: name })?;
        RingBuf::try_from(map).map_err(|s| map_err(name, "wrong type", s))
    }

    /// Takes the flow table for the sweeper.
    pub fn take_flows(&mut self) -> Result<FlowMap, EbpfError> {
        let name = maps::FLOWS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(EbpfError::MissingMap { map: name })?;
        let fd = map_data(&map)
            .ok_or(EbpfError::MissingMap { map: name })?
            .fd()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| EbpfError::Batch { map: name, source })?;
        Ok(FlowMap {
            map: HashMap::try_from(map).map_err(|s| map_err(name, "wrong type", s))?,
            fd,
        })
    }

    /// Takes the watchlist maps for the daemon's (or replay's) DNS learning.
    pub fn take_watch(&mut self) -> Result<WatchMaps, EbpfError> {
        let mut take = |name: &'static str| {
            self.ebpf
                .take_map(name)
                .ok_or(EbpfError::MissingMap { map: name })
        };
        let bits = take(maps::WATCH_BITS)?;
        let learned = take(maps::WATCH_LEARNED)?;
        let prefixes = take(maps::WATCH_PREFIXES)?;
        let asns = take(maps::WATCH_ASNS)?;
        WatchMaps::new(bits, learned, prefixes, asns)
    }

    /// Takes the counter maps for the metrics collector.
    pub fn take_counters(&mut self) -> Result<CounterMaps, EbpfError> {
        let mut per_cpu_array = |name: &'static str| match self.ebpf.take_map(name) {
            Some(Map::PerCpuArray(m)) => Ok(m),
            _ => Err(EbpfError::MissingMap { map: name }),
        };
        let classes = per_cpu_array(maps::CLASS_COUNTERS)?;
        let asns = per_cpu_array(maps::ASN_COUNTERS)?;
        let policy_drops = per_cpu_array(maps::POLICY_DROPS)?;
        let watch = per_cpu_array(maps::WATCH_COUNTERS)?;
        let reasons = PerCpuArray::try_from(Map::PerCpuArray(per_cpu_array(maps::REASONS)?))
            .map_err(|s| map_err(maps::REASONS, "wrong type", s))?;
        Ok(CounterMaps::new(
            classes,
            asns,
            reasons,
            policy_drops,
            watch,
        ))
    }

    /// Reads the counters without taking the maps (tests): every slot.
    pub fn read_counters(&self) -> Result<Counters, EbpfError> {
        read_counters_from(|name| self.map(name), Extent::ALL)
    }

    /// Reads the counters of the slots `labels` hands out without taking the maps
    /// (replay): what [`CounterMaps::read`] reads.
    pub fn read_counters_of(&self, labels: &crate::tables::Labels) -> Result<Counters, EbpfError> {
        read_counters_from(|name| self.map(name), Extent::of(labels))
    }

    /// A copy of the flow table (replay, tests).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowState)>, EbpfError> {
        let data =
            map_data(self.map(maps::FLOWS)?).ok_or(EbpfError::MissingMap { map: maps::FLOWS })?;
        read_flows(data.fd().as_fd(), |_| true).map(|(flows, _)| flows)
    }
}

/// What a pinned exfilmon has counted: its counters and flow table, read through the map
/// pins `open` gives by name (`exfilmon status`), without taking anything from the daemon.
pub fn read_pinned(
    open: impl Fn(&'static str) -> Result<MapData, EbpfError>,
) -> Result<(Counters, Vec<(FlowKey, FlowState)>), EbpfError> {
    // Every counter map is a per-CPU array.
    let counters = read_counters_from(|name| open(name).map(Map::PerCpuArray), Extent::ALL)?;
    let (flows, _) = read_flows(open(maps::FLOWS)?.fd().as_fd(), |_| true)?;
    Ok((counters, flows))
}

/// The kernel's flow table, owned by the daemon.
pub struct FlowMap {
    map: HashMap<MapData, FlowKey, FlowState>,
    /// The same map, for batch reads.
    fd: std::os::fd::OwnedFd,
}

impl FlowMap {
    /// The flows whose state `keep` accepts, read in batches (a few syscalls per 4096
    /// flows); only those are copied out, so a sweep of 1M flows allocates for the few.
    pub fn select(
        &self,
        keep: impl Fn(&FlowState) -> bool,
    ) -> Result<Vec<(FlowKey, FlowState)>, EbpfError> {
        read_flows(self.fd.as_fd(), keep).map(|(flows, _)| flows)
    }

    /// A reader of the same table for another thread: reading 1M flows takes about half a
    /// second, which the thread that drains the ring buffer cannot spare.
    pub fn reader(&self) -> Result<FlowReader, EbpfError> {
        let fd = self.fd.try_clone().map_err(|source| EbpfError::Batch {
            map: maps::FLOWS,
            source,
        })?;
        Ok(FlowReader { fd })
    }

    /// Removes a flow; false if it was gone already (evicted or removed meanwhile).
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        self.map.remove(key).is_ok()
    }
}

/// A read-only handle on the kernel's flow table ([`FlowMap::reader`]).
pub struct FlowReader {
    fd: std::os::fd::OwnedFd,
}

impl FlowReader {
    /// Calls `each` for every flow in the table, in batches; returns how many there were.
    pub fn for_each(&self, each: impl FnMut(&FlowKey, &FlowState)) -> Result<usize, EbpfError> {
        scan_flows(self.fd.as_fd(), each)
    }
}

/// The flows `keep` accepts, and how many the table held.
fn read_flows(
    fd: std::os::fd::BorrowedFd<'_>,
    keep: impl Fn(&FlowState) -> bool,
) -> Result<(Vec<(FlowKey, FlowState)>, usize), EbpfError> {
    let mut out = Vec::new();
    let total = scan_flows(fd, |k, st| {
        if keep(st) {
            out.push((*k, *st));
        }
    })?;
    Ok((out, total))
}

/// Calls `each` for every flow of the table at `fd`; returns how many there were.
fn scan_flows(
    fd: std::os::fd::BorrowedFd<'_>,
    mut each: impl FnMut(&FlowKey, &FlowState),
) -> Result<usize, EbpfError> {
    let mut total = 0;
    lookup_batch::<FlowKey, FlowState>(fd, maps::FLOWS, 1, (None, usize::MAX), |k, v| {
        total += 1;
        each(k, &v[0]);
    })?;
    Ok(total)
}

/// What `attach_hook` leaves to do: nothing more, or pinning the new link at the path.
enum Pinnable<'a> {
    Done(Attached),
    Link(FdLink, &'a Path),
}

/// The steps every hook takes to attach `program`: swap it into the link pinned at
/// `link_pin`, if there is one and it takes it (`swap`); otherwise attach anew (`attach`)
/// and, when `link_pin` is given, take the new link for pinning there (`take`). A netlink attachment cannot be pinned, and
/// the failed conversion dropped (detached) it: then attach again, unpinned.
fn attach_hook<'a, P, L, Id>(
    program: &mut P,
    interface: &str,
    link_pin: Option<&'a Path>,
    swap: impl FnOnce(&mut P, L) -> Result<(), ProgramError>,
    attach: impl Fn(&mut P) -> Result<Id, EbpfError>,
    take: impl FnOnce(&mut P, Id) -> Option<FdLink>,
) -> Result<Pinnable<'a>, EbpfError>
where
    L: TryFrom<FdLink, Error = LinkError>,
{
    if let Some(path) = link_pin.filter(|p| p.exists()) {
        match open_link::<L>(path).and_then(|l| swap(program, l).map_err(|e| e.to_string())) {
            Ok(()) => return Ok(Pinnable::Done(Attached::Kept)),
            Err(why) => unpin_stale(interface, path, &why)?,
        }
    }
    let id = attach(program)?;
    let Some(path) = link_pin else {
        return Ok(Pinnable::Done(Attached::New));
    };
    let Some(fd) = take(program, id) else {
        attach(program)?;
        return Ok(Pinnable::Done(Attached::Unpinnable));
    };
    Ok(Pinnable::Link(fd, path))
}

/// The link pinned at `path`, as the link type of a program (`XdpLink`,
/// `SchedClassifierLink`); the error says why it cannot be used.
fn open_link<L: TryFrom<FdLink, Error = LinkError>>(path: &Path) -> Result<L, String> {
    let pinned = PinnedLink::from_pin(path).map_err(|e| crate::error_chain(&e))?;
    L::try_from(FdLink::from(pinned)).map_err(|e| crate::error_chain(&e))
}

/// Removes a link pin that cannot take the new program (its interface was removed, or it
/// is of another hook); the link goes with it.
fn unpin_stale(interface: &str, path: &Path, why: &str) -> Result<(), EbpfError> {
    tracing::warn!(interface, pin = %path.display(), reason = why, "the pinned link cannot be reused; making a new one");
    std::fs::remove_file(path).map_err(|source| EbpfError::Unpin {
        path: path.to_owned(),
        source,
    })
}

/// Whether an error, or one of its sources, is the OS's EEXIST.
fn already_exists(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AlreadyExists)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// Reads the entries of a map with `BPF_MAP_LOOKUP_BATCH`, a few thousand per syscall
/// instead of two syscalls per entry: every entry, or (for arrays) `limit` entries after
/// the key `after`. `per_key` is the number of values per key (the CPU count for per-CPU
/// maps, else 1). Entries that change meanwhile may be seen old or new.
fn lookup_batch<K: Copy + Default, V: Copy + Default>(
    fd: std::os::fd::BorrowedFd<'_>,
    name: &'static str,
    per_key: usize,
    (after, limit): (Option<K>, usize),
    mut each: impl FnMut(&K, &[V]),
) -> Result<(), EbpfError> {
    const CHUNK: u32 = 4096;
    const { assert!(size_of::<K>() <= 64) };
    let mut keys = vec![K::default(); CHUNK as usize];
    let mut values = vec![V::default(); CHUNK as usize * per_key];
    // The batch cursor is opaque: a key for arrays, a bucket number for hashes.
    let mut cursor = [0u64; 8];
    let mut first = after.is_none();
    if let Some(key) = after {
        // SAFETY: the cursor is 64 bytes (no key is larger, checked above) and 8-byte
        // aligned; an array's cursor is the key the batch starts after.
        unsafe { cursor.as_mut_ptr().cast::<K>().write_unaligned(key) };
    }
    let mut left = limit;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: cursor.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK.min(u32::try_from(left).unwrap_or(u32::MAX)),
            map_fd: u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX),
            elem_flags: 0,
            flags: 0,
        };
        first = false;
        // SAFETY: `attr` points at buffers sized for `count` keys and `count × per_key`
        // values of the map's key and value types (the kernel lays per-CPU values out
        // 8-byte aligned, as `V` is), and at a cursor larger than any batch token.
        let ret = unsafe { sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let done = ret != 0;
        if done {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(EbpfError::Batch {
                    map: name,
                    source: err,
                });
            }
        }
        for (i, key) in keys.iter().take(attr.count as usize).enumerate() {
            each(key, &values[i * per_key..(i + 1) * per_key]);
        }
        left = left.saturating_sub(attr.count as usize);
        if done || left == 0 {
            return Ok(());
        }
    }
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `bpf(2)` system call with `attr`, a leading part of `union bpf_attr` for `cmd`
/// (the kernel reads the rest as zeros); its return value (-1 with errno on failure).
///
/// # Safety
/// Every pointer in `attr` must be valid for what `cmd` reads and writes through it.
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> libc::c_long {
    // SAFETY: the caller vouches for the pointers inside `attr`; `attr` itself is valid
    // for its size.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as u32,
        )
    }
}

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// The `MapData` of any map kind.
fn map_data(map: &Map) -> Option<&MapData> {
    Some(match map {
        Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::HashMap(m)
        | Map::RingBuf(m) => m,
        _ => return None,
    })
}

/// The `memlock:` figure the kernel gives for a map fd: its memory use in bytes.
fn memlock(data: &MapData) -> Option<u64> {
    let fd = data.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

fn map_err(map: &'static str, what: impl Into<String>, source: MapError) -> EbpfError {
    EbpfError::Map {
        map,
        what: what.into(),
        source,
    }
}

/// Puts `ifname` (in this thread's network namespace) in promiscuous mode: a SPAN or TAP
/// port receives copies addressed to other machines' MAC addresses, which a NIC's unicast
/// filter would drop before XDP sees them. The flag stays when the daemon exits, as the
/// pinned mirror program keeps counting.
fn promiscuous(ifname: &std::ffi::CStr) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: plain syscalls on a socket this function owns and closes; `req` is a zeroed
    // ifreq whose name is NUL-terminated within IFNAMSIZ, valid across both ioctls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        let name = ifname.to_bytes_with_nul();
        if name.len() > req.ifr_name.len() {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        for (d, s) in req.ifr_name.iter_mut().zip(name) {
            *d = s.cast_signed();
        }
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = req.ifr_ifru.ifru_flags;
        let promisc = libc::IFF_PROMISC as libc::c_short;
        if flags & promisc == 0 {
            req.ifr_ifru.ifru_flags = flags | promisc;
            if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &raw mut req) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
