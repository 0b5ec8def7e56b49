//! exfilmon's kernel programs: one classifier behind an XDP entry point and two TC
//! (clsact) entry points. Every path returns PASS / `TC_ACT_OK` (anomalies are counted by
//! reason instead), with one exception the operator opts into: a violation packet of a
//! group with `enforce = true` is dropped (`XDP_DROP` / `TC_ACT_SHOT`).
#![no_std]
#![no_main]
#![feature(core_intrinsics, asm_experimental_arch)]
#![expect(
    internal_features,
    reason = "atomic_xadd: the BPF atomic add, see flow.rs"
)]

mod bench;
mod classify;
mod dns;
mod flow;
mod maps;
mod parse;
mod policy;
mod watch;

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use classify::{Lookup, Track};

/// How much of an skb the TC programs make linear before parsing: enough for two VLAN tags,
/// an IPv4 header with options or IPv6 with extension headers, and a TCP header.
const TC_PULL_LEN: u32 = 256;

#[xdp]
pub fn exfilmon_xdp(ctx: XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let drop = classify::packet(start, end, xdp_len(&ctx), Lookup::Tables, Track::Flows);
    if dns::pending() {
        dns::copy_xdp(ctx.ctx);
    }
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Benchmark only (never attached): the next workload packet, classified as `exfilmon_xdp`.
#[xdp]
pub fn exfilmon_bench(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Tables, Track::Flows)
}

/// Benchmark only: the same, with locations from one kernel LPM trie per family.
#[xdp]
pub fn exfilmon_bench_lpm(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Trie, Track::Flows)
}

/// Benchmark only: `exfilmon_bench` with the flow table left out, for its share of the cost.
#[xdp]
pub fn exfilmon_bench_noflow(ctx: XdpContext) -> u32 {
    bench(&ctx, Lookup::Tables, Track::Nothing)
}

#[inline(always)]
fn bench(ctx: &XdpContext, lookup: Lookup, track: Track) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    bench::rewrite(start, end);
    // The benchmark measures the classifier; its frames always pass.
    let _ = classify::packet(start, end, xdp_len(ctx), lookup, track);
    // As `exfilmon_xdp` does (the workload has no DNS answers, so this is the check alone).
    if dns::pending() {
        dns::copy_xdp(ctx.ctx);
    }
    xdp_action::XDP_PASS
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
pub fn exfilmon_tc_egress(ctx: TcContext) -> i32 {
    tc(&ctx)
}

#[classifier]
pub fn exfilmon_tc_ingress(ctx: TcContext) -> i32 {
    tc(&ctx)
}

/// The frame's length on the wire, fragments of a multi-buffer frame included. From the
/// helper rather than `data_end - data`: subtracting packet pointers needs CAP_PERFMON,
/// and the daemon runs with CAP_BPF and CAP_NET_ADMIN only.
#[inline(always)]
fn xdp_len(ctx: &XdpContext) -> u32 {
    // SAFETY: the helper reads the program's own context.
    unsafe { aya_ebpf::helpers::generated::bpf_xdp_get_buff_len(ctx.ctx) as u32 }
}

#[inline(always)]
fn tc(ctx: &TcContext) -> i32 {
    let len = ctx.len();
    let want = if len < TC_PULL_LEN { len } else { TC_PULL_LEN };
    // Compared as pointers (pointer minus pointer needs CAP_PERFMON, see `xdp_len`).
    if ctx.data() + want as usize > ctx.data_end() {
        // Headers of a non-linear skb: make them directly readable. Failure only means we
        // parse what is linear; the parser counts what it cannot read.
        let _ = ctx.pull_data(want);
    }
    let drop = classify::packet(
        ctx.data(),
        ctx.data_end(),
        len,
        Lookup::Tables,
        Track::Flows,
    );
    if dns::pending() {
        dns::copy_tc(ctx.as_ptr().cast());
    }
    if drop {
        TC_ACT_SHOT as i32
    } else {
        TC_ACT_OK as i32
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
