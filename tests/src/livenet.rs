//! The live benchmark's wire: two network namespaces joined by one veth pair.
//!
//! ```text
//!  [exfb{PID}-{N}-gen] gen0 ──veth── mon0 [exfb{PID}-{N}-mon]
//!   live-frames generator              exfilmon / XDP_PASS, softflowd, pmacctd
//! ```
//!
//! The generator (`BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`, see
//! [`monitor::ebpf::Monitor::live_generate`]) sends frames out of `gen0`; `mon0` receives
//! them, runs its XDP program and hands them to its stack, where a blackhole default route
//! drops them: nothing is answered, forwarded or leaves the `mon` namespace. Neither
//! namespace has IPv6 or an address of its own, so the only packets on the wire are the
//! generator's (the monitors' totals can be compared exactly). Offloads that merge packets
//! are off. Both namespaces (and with them the veth pair) are deleted on drop, also while
//! unwinding from a panic.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// The generator's interface, in the `gen` namespace.
pub const GEN_IF: &str = "gen0";
/// The receiving interface, in the `mon` namespace: where the monitors attach.
pub const MON_IF: &str = "mon0";
/// `gen0`'s MAC address: the source MAC of [`crate::packet::eth_v4`] frames.
pub const GEN_MAC: &str = "02:00:00:00:00:01";
/// `mon0`'s MAC address: the destination MAC of [`crate::packet::eth_v4`] frames, so the
/// receiver's stack takes them as its own (`PACKET_HOST`).
pub const MON_MAC: &str = "02:00:00:00:00:02";

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// The two namespaces; dropping them deletes the veth pair too.
#[derive(Debug)]
pub struct LiveNet {
    // Field order = drop order.
    mon: NetNs,
    gen_ns: NetNs,
}

/// `mon0`'s receive counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCounters {
    /// Frames the XDP program on `mon0` ran on (veth `rx_queue_*_xdp_packets`).
    pub xdp_packets: u64,
    /// Frames that could not be queued to `mon0` (ring full, no XDP program): the
    /// veth's `rx_queue_*_xdp_xmit_err` and `rx_queue_*_xdp_drops`.
    pub xdp_dropped: u64,
    /// Packets the stack received (`ip -s link`: `rx.packets`).
    pub rx_packets: u64,
}

impl RxCounters {
    /// The change from `before` to `self`.
    #[must_use]
    pub fn since(self, before: Self) -> Self {
        Self {
            xdp_packets: self.xdp_packets.saturating_sub(before.xdp_packets),
            xdp_dropped: self.xdp_dropped.saturating_sub(before.xdp_dropped),
            rx_packets: self.rx_packets.saturating_sub(before.rx_packets),
        }
    }
}

impl LiveNet {
    /// Builds the pair under a unique prefix `exfb{pid}-{n}`, after removing pairs left by
    /// benchmark processes that no longer run.
    pub fn new() -> Result<Self> {
        remove_stale();
        let prefix = format!(
            "exfb{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let gen_ns = NetNs::new(&format!("{prefix}-gen"))?;
        let mon = NetNs::new(&format!("{prefix}-mon"))?;
        let net = Self { mon, gen_ns };
        net.build()
            .with_context(|| format!("building the veth pair {prefix}"))?;
        Ok(net)
    }

    /// The generator's namespace.
    #[must_use]
    pub fn gen_ns(&self) -> &NetNs {
        &self.gen_ns
    }

    /// The receiver's namespace.
    #[must_use]
    pub fn mon_ns(&self) -> &NetNs {
        &self.mon
    }

    fn build(&self) -> Result<()> {
        let off: &[(&str, &str)] = &[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ];
        self.gen_ns.sysctl(off)?;
        self.mon.sysctl(off)?;
        crate::netns::run_checked(std::process::Command::new("ip").args([
            "link",
            "add",
            GEN_IF,
            "netns",
            self.gen_ns.name(),
            "address",
            GEN_MAC,
            "type",
            "veth",
            "peer",
            "name",
            MON_IF,
            "netns",
            self.mon.name(),
            "address",
            MON_MAC,
        ]))?;
        for (ns, dev) in [(&self.gen_ns, GEN_IF), (&self.mon, MON_IF)] {
            ns.run(
                "ethtool",
                ["-K", dev, "tso", "off", "gso", "off", "gro", "off"],
            )?;
            ns.ip(&["link", "set", dev, "up"])?;
        }
        // What reaches mon's stack is dropped by the route lookup, silently.
        self.mon.ip(&["route", "add", "blackhole", "default"])?;
        Ok(())
    }

    /// `gen0`'s interface index (in the `gen` namespace).
    pub fn gen_ifindex(&self) -> Result<u32> {
        let out = self.gen_ns.ip(&["-j", "link", "show", "dev", GEN_IF])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
        v[0]["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .with_context(|| format!("no ifindex for {GEN_IF} in {out}"))
    }

    /// The id of the XDP program attached to `mon0`, if any.
    pub fn mon_xdp_prog_id(&self) -> Result<Option<u32>> {
        let out = self.mon.ip(&["-j", "link", "show", "dev", MON_IF])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
        let xdp = &v[0]["xdp"];
        let id = xdp["prog"]["id"]
            .as_u64()
            .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64());
        Ok(id.and_then(|i| u32::try_from(i).ok()))
    }

    /// `mon0`'s receive counters now.
    pub fn rx(&self) -> Result<RxCounters> {
        let stats = self.mon.run("ethtool", ["-S", MON_IF])?;
        let mut c = RxCounters::default();
        for line in stats.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<u64>() else {
                continue;
            };
            if !key.starts_with("rx_queue_") {
                continue;
            }
            if key.ends_with("_xdp_packets") {
                c.xdp_packets += value;
            } else if key.ends_with("_xdp_xmit_err") || key.ends_with("_xdp_drops") {
                c.xdp_dropped += value;
            }
        }
        let out = self.mon.ip(&["-s", "-j", "link", "show", "dev", MON_IF])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -s -j link`")?;
        c.rx_packets = v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .with_context(|| format!("no rx packets for {MON_IF} in {out}"))?;
        Ok(c)
    }

    /// Waits until `mon0`'s XDP counter stops moving (the receive path has drained),
    /// at most `limit`; returns the counters then.
    pub fn rx_settled(&self, limit: Duration) -> Result<RxCounters> {
        let deadline = std::time::Instant::now() + limit;
        let mut last = self.rx()?;
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = self.rx()?;
            if now == last {
                return Ok(now);
            }
            if std::time::Instant::now() > deadline {
                bail!("{MON_IF}'s counters still moving after {limit:?}: {now:?}");
            }
            last = now;
        }
    }
}

/// Deletes namespaces named `exfb{PID}-{N}-gen|mon` whose PID no longer runs: leftovers
/// of a benchmark killed before its drop ran. Only names of exactly that form are touched.
fn remove_stale() {
    crate::netns::remove_stale_namespaces(stale_pid);
}

/// The PID in a name `exfb{PID}-{N}-gen` or `exfb{PID}-{N}-mon`.
fn stale_pid(name: &str) -> Option<u32> {
    crate::netns::pid_in_name(name, "exfb", |node| matches!(node, "gen" | "mon"))
}

#[cfg(test)]
mod tests {
    use super::stale_pid;

    #[test]
    fn stale_names() {
        assert_eq!(stale_pid("exfb123-0-gen"), Some(123));
        assert_eq!(stale_pid("exfb123-4-mon"), Some(123));
        assert_eq!(stale_pid("exfb123-x-mon"), None);
        assert_eq!(stale_pid("exf123-0-router"), None);
        assert_eq!(stale_pid("exfb123-0-other"), None);
    }
}
