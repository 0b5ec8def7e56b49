//! exfilmon's kernel programs: one classifier behind an XDP entry point and two TC
//! (clsact) entry points. Every path returns PASS / `TC_ACT_OK` (anomalies are counted by
//! reason instead), with two exceptions the operator opts into: a violation packet of a
//! group with `enforce = true` is dropped (`XDP_DROP` / `TC_ACT_SHOT`), and the mirror-port
//! program (`[[interface]] mirror = true`, for a SPAN or TAP port whose frames are copies)
//! drops every frame once it has counted it.
//!
//! A frame with an encapsulation (PPPoE, MPLS, GRE, VXLAN, GENEVE) is handed by a tail call
//! to an encapsulation program of the same hook type (`exfilmon_xdp_encap`,
//! `exfilmon_tc_encap`), which walks it, classifies it and counts it. The walk is off the
//! hot path, and the verifier checks it in a program of its own: its own stack, its own
//! instruction budget.
//!
//! Each program has a `_copy` twin for a loader without CAP_PERFMON (the daemon picks the
//! set by its capabilities). Without CAP_PERFMON the verifier refuses a packet pointer plus
//! an offset in a register, which every header at a variable offset needs (after VLAN tags,
//! IPv4 options, IPv6 extension headers). The twins copy each header they read into a
//! per-CPU map value with `bpf_xdp_load_bytes` / `bpf_skb_load_bytes` and read it there,
//! with the same parser (`parse::Frame`); a helper call per header is their cost.
//!
//! `#[inline(always)]` on a program function applies to the function the program macros wrap
//! in the entry point; without it the compiler leaves some out of line (a call per frame).
#![no_std]
#![no_main]
#![feature(core_intrinsics, asm_experimental_arch)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the BPF atomic add, see flow.rs"
)]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros hand each program its context by value"
)]
#![expect(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "the #[classifier] macro makes a safe extern entry point that takes the kernel's \
              skb pointer; the kernel is the only caller"
)]

mod bench;
mod classify;
mod dns;
mod encap;
mod flow;
mod maps;
mod parse;
mod policy;
mod watch;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    maps::ProgramArray,
    programs::{TcContext, XdpContext},
};
use classify::{Action, Lookup, Path, Track};
use maps::{ENCAP_TC_PROG, ENCAP_XDP_MIRROR_PROG, ENCAP_XDP_PROG, count};
use monitor_common::reason;
use parse::{Copies, Frame, InPlace, load_skb, load_xdp};

/// How much of an skb the TC programs make linear before parsing: enough for two VLAN tags,
/// an IPv4 header with options or IPv6 with extension headers, and a TCP header.
const TC_PULL_LEN: u32 = 256;
/// What `exfilmon_tc_encap` makes linear: the headers of two tunnels, each with an inner
/// Ethernet frame and IPv6, and the transport header inside. A header past it is cut, and
/// the tunnel's own packet is classified (see `encap`).
const TC_ENCAP_PULL_LEN: u32 = 512;

#[xdp]
#[inline(always)]
pub fn exfilmon_xdp(ctx: XdpContext) -> u32 {
    pass_or_drop(xdp(&ctx, in_place(&ctx), &ENCAP_XDP_PROG, Path::Inline) == Action::Drop)
}

/// `exfilmon_xdp` for a loader without CAP_PERFMON: reads each header through a helper
/// (see `parse::Copies`).
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_copy(ctx: XdpContext) -> u32 {
    let frame = Copies::new(load_xdp(ctx.ctx));
    pass_or_drop(xdp(&ctx, frame, &ENCAP_XDP_PROG, Path::Inline) == Action::Drop)
}

/// The encapsulation program for `exfilmon_xdp`'s frames (tail call only, never attached).
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_encap(ctx: XdpContext) -> u32 {
    pass_or_drop(xdp_encap(&ctx, in_place(&ctx), Path::Inline))
}

/// The encapsulation program for `exfilmon_xdp_copy`'s frames.
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_encap_copy(ctx: XdpContext) -> u32 {
    pass_or_drop(xdp_encap(
        &ctx,
        Copies::new(load_xdp(ctx.ctx)),
        Path::Inline,
    ))
}

/// The mirror-port program: counts each frame as `exfilmon_xdp` does, then drops it (on a
/// SPAN or TAP port every frame is a copy, and both directions arrive on the one port).
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_mirror(ctx: XdpContext) -> u32 {
    xdp(&ctx, in_place(&ctx), &ENCAP_XDP_MIRROR_PROG, Path::Mirror);
    xdp_action::XDP_DROP
}

/// `exfilmon_xdp_mirror` for a loader without CAP_PERFMON.
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_mirror_copy(ctx: XdpContext) -> u32 {
    xdp(
        &ctx,
        Copies::new(load_xdp(ctx.ctx)),
        &ENCAP_XDP_MIRROR_PROG,
        Path::Mirror,
    );
    xdp_action::XDP_DROP
}

/// The encapsulation program for `exfilmon_xdp_mirror`'s frames: counts, then drops.
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_encap_mirror(ctx: XdpContext) -> u32 {
    xdp_encap(&ctx, in_place(&ctx), Path::Mirror);
    xdp_action::XDP_DROP
}

/// The encapsulation program for `exfilmon_xdp_mirror_copy`'s frames.
#[xdp]
#[inline(always)]
pub fn exfilmon_xdp_encap_mirror_copy(ctx: XdpContext) -> u32 {
    xdp_encap(&ctx, Copies::new(load_xdp(ctx.ctx)), Path::Mirror);
    xdp_action::XDP_DROP
}

/// The XDP frame, read in place.
#[inline(always)]
fn in_place(ctx: &XdpContext) -> InPlace {
    InPlace {
        start: ctx.data(),
        end: ctx.data_end(),
    }
}

/// `XDP_DROP` for a frame an enforcing group drops, `XDP_PASS` for every other.
#[inline(always)]
fn pass_or_drop(drop: bool) -> u32 {
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Classifies and counts a frame; an encapsulated one goes on to the program in `encap`
/// (and does not come back). Returns the classifier's action for the caller to turn into
/// a verdict.
#[inline(always)]
fn xdp(ctx: &XdpContext, frame: impl Frame, encap: &ProgramArray, path: Path) -> Action {
    let action = classify::packet(frame, || xdp_len(ctx), Lookup::Tables, Track::Flows, path);
    if action == Action::Descend {
        descend(ctx, encap);
    }
    if dns::pending() {
        dns::copy_xdp(ctx.ctx);
    }
    action
}

/// Classifies and counts an encapsulated frame; true when an enforcing group drops it.
#[inline(always)]
fn xdp_encap(ctx: &XdpContext, frame: impl Frame, path: Path) -> bool {
    let drop = classify::encapsulated(frame, xdp_len(ctx), Lookup::Tables, Track::Flows, path);
    if dns::pending() {
        dns::copy_xdp(ctx.ctx);
    }
    drop
}

/// Hands the frame to the encapsulation program in `progs` (`exfilmon_xdp_encap` or its
/// mirror or `_copy` twins: whichever the loader put in the array); returns only if the
/// tail call fails (the program is not in the array), then counts the frame as
/// `encap_missed`.
#[inline(always)]
fn descend(ctx: &XdpContext, progs: &ProgramArray) {
    // SAFETY: a tail call with the program's own context; it does not return on success.
    unsafe { progs.tail_call(ctx, 0) };
    count(reason::ENCAP_MISSED);
}

/// Benchmark only (never attached): the next workload packet, classified as `exfilmon_xdp`.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Tables, Track::Flows)
}

/// Benchmark only: the same, with locations from one kernel LPM trie per family.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_lpm(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Trie, Track::Flows)
}

/// Benchmark only: `exfilmon_bench` with the flow table left out, for its share of the cost.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_noflow(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Tables, Track::Nothing)
}

/// Benchmark only: `exfilmon_bench` as `exfilmon_xdp_copy` classifies, each header read
/// through the helper, for the helper's cost.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_copy(ctx: XdpContext) -> u32 {
    bench::rewrite(ctx.data(), ctx.data_end());
    bench_classify(
        &ctx,
        Copies::new(load_xdp(ctx.ctx)),
        Lookup::Tables,
        Track::Flows,
    )
}

#[inline(always)]
fn bench(ctx: &XdpContext, lookup: Lookup, track: Track) -> u32 {
    bench::rewrite(ctx.data(), ctx.data_end());
    bench_classify(ctx, in_place(ctx), lookup, track)
}

#[inline(always)]
fn bench_classify(ctx: &XdpContext, frame: impl Frame, lookup: Lookup, track: Track) -> u32 {
    // The benchmark measures the classifier; its frames always pass. Its workload has no
    // encapsulation, and these programs hand none on: an encapsulated frame would count as
    // `encap_missed`.
    if classify::packet(frame, || xdp_len(ctx), lookup, track, Path::Inline) == Action::Descend {
        count(reason::ENCAP_MISSED);
    }
    // As `exfilmon_xdp` does (the workload has no DNS answers, so this is the check alone).
    if dns::pending() {
        dns::copy_xdp(ctx.ctx);
    }
    xdp_action::XDP_PASS
}

/// Benchmark only: the next workload packet's two address lookups (source and
/// destination) and nothing else, for the lookups' own cost against the LPM tries'.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_lookup(ctx: XdpContext) -> u32 {
    bench_lookup(&ctx, Lookup::Tables)
}

/// Benchmark only: `exfilmon_bench_lookup` with the kernel LPM tries.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_lookup_lpm(ctx: XdpContext) -> u32 {
    bench_lookup(&ctx, Lookup::Trie)
}

/// Benchmark only: `exfilmon_bench` with IPv6 locations from the tiered hash.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_hash6(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Hash6, Track::Flows)
}

/// Benchmark only: `exfilmon_bench_lookup` with IPv6 locations from the tiered hash.
#[xdp]
#[inline(always)]
pub fn exfilmon_bench_lookup_hash6(ctx: XdpContext) -> u32 {
    bench_lookup(&ctx, Lookup::Hash6)
}

#[inline(always)]
fn bench_lookup(ctx: &XdpContext, how: Lookup) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    bench::rewrite(start, end);
    let Some((family, src, dst)) = bench::addresses(start, end) else {
        return xdp_action::XDP_PASS;
    };
    let (src, dst) = classify::words(family, &src, &dst, how);
    // Both words are used, so that neither read is left out; no word has every bit set.
    if src & dst == u32::MAX {
        xdp_action::XDP_ABORTED
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark only: the same rewrite, then `XDP_PASS` — the baseline of every ratio.
#[xdp]
pub fn exfilmon_bench_pass(ctx: XdpContext) -> u32 {
    bench::rewrite(ctx.data(), ctx.data_end());
    xdp_action::XDP_PASS
}

/// Benchmark only: submits `bench::EVENTS_PER_RUN` flow events per run (the ring buffer
/// drain benchmark's producer).
#[xdp]
pub fn exfilmon_bench_events(_ctx: XdpContext) -> u32 {
    for _ in 0..bench::EVENTS_PER_RUN {
        bench::emit_event();
    }
    xdp_action::XDP_PASS
}

/// Live benchmark only (never attached): the traffic generator. Run with
/// `BPF_PROG_TEST_RUN` in live-frames mode, it writes the next workload packet into its frame,
/// fixes the IPv4 header checksum and sends the frame out of the veth the test run names
/// (`XDP_TX` becomes a redirect there), so the peer veth receives it.
#[xdp]
pub fn exfilmon_live_gen(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    bench::rewrite(start, end);
    bench::ipv4_checksum(start, end);
    xdp_action::XDP_TX
}

/// Live benchmark only: sends its frame as it is (`XDP_TX`), for one fixed flow.
#[xdp]
pub fn exfilmon_live_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Live benchmark only: the receiver's baseline, `XDP_PASS` and nothing else.
#[xdp]
pub fn exfilmon_live_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[classifier]
#[inline(always)]
pub fn exfilmon_tc_egress(ctx: TcContext) -> i32 {
    tc_in_place(&ctx)
}

#[classifier]
#[inline(always)]
pub fn exfilmon_tc_ingress(ctx: TcContext) -> i32 {
    tc_in_place(&ctx)
}

/// `exfilmon_tc_egress` for a loader without CAP_PERFMON (see `exfilmon_xdp_copy`).
#[classifier]
#[inline(always)]
pub fn exfilmon_tc_egress_copy(ctx: TcContext) -> i32 {
    tc(&ctx, Copies::new(load_skb(ctx.as_ptr())), ctx.len())
}

/// `exfilmon_tc_ingress` for a loader without CAP_PERFMON.
#[classifier]
#[inline(always)]
pub fn exfilmon_tc_ingress_copy(ctx: TcContext) -> i32 {
    tc(&ctx, Copies::new(load_skb(ctx.as_ptr())), ctx.len())
}

/// The frame's length on the wire, fragments of a multi-buffer frame included. From the
/// helper rather than `data_end - data`: subtracting packet pointers needs CAP_PERFMON.
/// The parser calls it only for a packet whose IP length is 0.
#[inline(always)]
fn xdp_len(ctx: &XdpContext) -> u32 {
    // SAFETY: the helper reads the program's own context.
    unsafe { aya_ebpf::helpers::generated::bpf_xdp_get_buff_len(ctx.ctx) as u32 }
}

#[inline(always)]
fn tc_in_place(ctx: &TcContext) -> i32 {
    let len = pull(ctx, TC_PULL_LEN);
    let frame = InPlace {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    tc(ctx, frame, len)
}

#[inline(always)]
fn tc(ctx: &TcContext, frame: impl Frame, len: u32) -> i32 {
    let action = classify::packet(frame, || len, Lookup::Tables, Track::Flows, Path::Inline);
    if action == Action::Descend {
        // SAFETY: a tail call with the program's own context; it does not return on success.
        unsafe { ENCAP_TC_PROG.tail_call(ctx, 0) };
        count(reason::ENCAP_MISSED);
    }
    if dns::pending() {
        dns::copy_tc(ctx.as_ptr().cast());
    }
    if action == Action::Drop {
        TC_ACT_SHOT
    } else {
        TC_ACT_OK
    }
}

/// The encapsulation program for the TC programs' frames (tail call only, never attached).
#[classifier]
#[inline(always)]
pub fn exfilmon_tc_encap(ctx: TcContext) -> i32 {
    let len = pull(&ctx, TC_ENCAP_PULL_LEN);
    let frame = InPlace {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    tc_encap(&ctx, frame, len)
}

/// The encapsulation program for the `_copy` TC programs' frames.
#[classifier]
#[inline(always)]
pub fn exfilmon_tc_encap_copy(ctx: TcContext) -> i32 {
    tc_encap(&ctx, Copies::new(load_skb(ctx.as_ptr())), ctx.len())
}

#[inline(always)]
fn tc_encap(ctx: &TcContext, frame: impl Frame, len: u32) -> i32 {
    let drop = classify::encapsulated(frame, len, Lookup::Tables, Track::Flows, Path::Inline);
    if dns::pending() {
        dns::copy_tc(ctx.as_ptr().cast());
    }
    if drop { TC_ACT_SHOT } else { TC_ACT_OK }
}

/// Makes the first `want` bytes of the skb linear (or all of a shorter one), so that its
/// headers are directly readable; returns the skb's length. Failure only means we parse
/// what is linear; the parser counts what it cannot read.
#[inline(always)]
fn pull(ctx: &TcContext, want: u32) -> u32 {
    let len = ctx.len();
    let want = if len < want { len } else { want };
    // Compared as pointers (pointer minus pointer needs CAP_PERFMON, see `xdp_len`).
    if ctx.data() + want as usize > ctx.data_end() {
        let _ = ctx.pull_data(want);
    }
    len
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
