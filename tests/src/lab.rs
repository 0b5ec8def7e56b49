//! The home-network lab.
//!
//! ```text
//!  [PREFIX-phone]  lan0 ─┐                        [PREFIX-router]             [PREFIX-inet]
//!                        ├─ [PREFIX-lan] br0 ── inside  ·  outside ──────────── uplink
//!  [PREFIX-laptop] lan0 ─┘                                                      lo: servers
//! ```
//!
//! * phone `192.0.2.10/24`, `2001:db8:1:1::10/48`; laptop `192.0.2.70/24`,
//!   `2001:db8:1:2::70/48`; both default-route via the router's `inside`.
//! * router `inside` `192.0.2.1/24`, `2001:db8:1::1/48`; `outside`
//!   `198.51.100.1/24`, `2001:db8:ff::1/64`; forwarding on; default routes via `inet`.
//! * inet `uplink` `198.51.100.2/24`, `2001:db8:ff::2/64`; the servers' addresses
//!   on `lo` (the dummy driver is not always available); routes back to the LAN
//!   via the router.
//!
//! Offloads that merge packets (TSO/GSO/GRO) are off on every veth, so one
//! packet on the wire is one packet everywhere. Quiet by construction: MAC
//! addresses are fixed and every neighbour entry is permanent (no ARP, no ND);
//! IPv6 DAD, router solicitations and advertisements are off; the bridge
//! namespace has no IPv6 at all; the MLD/IGMP reports that interfaces send when
//! they come up are all sent before [`Lab::new`] returns.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// Phone's IPv4 address.
pub const PHONE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// Phone's IPv6 address.
pub const PHONE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 1, 0, 0, 0, 0x10);
/// Phone's MAC address (on its `lan0`).
pub const PHONE_MAC: &str = "02:00:00:00:00:10";
/// Laptop's IPv4 address.
pub const LAPTOP_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 70);
/// Laptop's IPv6 address.
pub const LAPTOP_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 0x70);
/// Laptop's MAC address (on its `lan0`).
pub const LAPTOP_MAC: &str = "02:00:00:00:00:70";
/// The router's `inside` IPv4 address (the devices' gateway).
pub const ROUTER_INSIDE_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The router's `inside` IPv6 address (the devices' gateway).
pub const ROUTER_INSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
/// The router's `inside` MAC address.
pub const ROUTER_INSIDE_MAC: &str = "02:00:00:00:00:01";
/// The router's `outside` MAC address.
pub const ROUTER_OUTSIDE_MAC: &str = "02:00:00:00:01:01";
/// The internet namespace's `uplink` MAC address.
pub const INET_UPLINK_MAC: &str = "02:00:00:00:01:02";
/// The router's `outside` IPv4 address.
pub const ROUTER_OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The router's `outside` IPv6 address.
pub const ROUTER_OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
/// The internet namespace's `uplink` IPv4 address.
pub const INET_UPLINK_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The internet namespace's `uplink` IPv6 address.
pub const INET_UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 2);

/// The LAN's IPv4 network and prefix length.
pub const LAN_V4_NET: (Ipv4Addr, u8) = (Ipv4Addr::new(192, 0, 2, 0), 24);
/// The LAN's IPv6 network and prefix length.
pub const LAN_V6_NET: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0), 48);

/// Server "in China".
pub const SERVER_CN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Server "in Singapore".
pub const SERVER_SG_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 70);
/// Server "in the US".
pub const SERVER_US_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 130);
/// Server "in India".
pub const SERVER_IN_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 200);
/// Server of unknown country.
pub const SERVER_UNKNOWN_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
/// IPv6 server "in China".
pub const SERVER_CN_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0x86, 0, 0, 0, 0x10);
/// IPv6 server "in the US".
pub const SERVER_US_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 1, 0, 0, 0, 0x130);

/// Every server address in the `inet` namespace.
pub const SERVERS: [IpAddr; 7] = [
    IpAddr::V4(SERVER_CN_V4),
    IpAddr::V4(SERVER_SG_V4),
    IpAddr::V4(SERVER_US_V4),
    IpAddr::V4(SERVER_IN_V4),
    IpAddr::V4(SERVER_UNKNOWN_V4),
    IpAddr::V6(SERVER_CN_V6),
    IpAddr::V6(SERVER_US_V6),
];

/// Name of the router's LAN-facing interface.
pub const INSIDE_IF: &str = "inside";
/// Name of the router's internet-facing interface.
pub const OUTSIDE_IF: &str = "outside";
/// Name of the device interface in the phone and laptop namespaces.
pub const DEVICE_IF: &str = "lan0";
/// Name of the internet namespace's link to the router.
pub const UPLINK_IF: &str = "uplink";

/// A namespace of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Phone,
    Laptop,
    /// The L2 switch (bridge `br0`) between the devices and the router.
    Lan,
    Router,
    /// The internet: the router's upstream and every server.
    Inet,
}

impl Node {
    /// All nodes, in creation order.
    pub const ALL: [Node; 5] = [
        Node::Phone,
        Node::Laptop,
        Node::Lan,
        Node::Router,
        Node::Inet,
    ];

    /// The suffix of the namespace name (`PREFIX-SUFFIX`).
    #[must_use]
    pub fn suffix(self) -> &'static str {
        match self {
            Node::Phone => "phone",
            Node::Laptop => "laptop",
            Node::Lan => "lan",
            Node::Router => "router",
            Node::Inet => "inet",
        }
    }

    fn index(self) -> usize {
        match self {
            Node::Phone => 0,
            Node::Laptop => 1,
            Node::Lan => 2,
            Node::Router => 3,
            Node::Inet => 4,
        }
    }
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// The lab: five namespaces, deleted (with their interfaces) on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    // Field order = drop order: the devices go first.
    nodes: Vec<NetNs>,
}

impl Lab {
    /// Builds the lab under a unique prefix `exf{pid}-{n}`. Also removes lab
    /// namespaces left behind by earlier test processes that no longer run
    /// (see [`Lab::remove_stale`]).
    pub fn new() -> Result<Self> {
        Self::remove_stale();
        let n = INSTANCE.fetch_add(1, Ordering::Relaxed);
        Self::new_with_prefix(&format!("exf{}-{n}", std::process::id()))
    }

    /// Builds the lab with namespaces named `PREFIX-phone`, `PREFIX-laptop`,
    /// `PREFIX-lan`, `PREFIX-router` and `PREFIX-inet`. Fails if any exists.
    pub fn new_with_prefix(prefix: &str) -> Result<Self> {
        if prefix.is_empty() || prefix.len() > 32 {
            bail!("lab prefix must be 1..=32 characters: {prefix:?}");
        }
        let mut nodes = Vec::with_capacity(Node::ALL.len());
        for node in Node::ALL {
            // On error, the namespaces made so far are dropped, i.e. deleted.
            nodes.push(NetNs::new(&format!("{prefix}-{}", node.suffix()))?);
        }
        let lab = Self {
            prefix: prefix.to_owned(),
            nodes,
        };
        lab.build()
            .with_context(|| format!("building lab {prefix}"))?;
        Ok(lab)
    }

    /// The namespace-name prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The namespace of `node`.
    #[must_use]
    pub fn ns(&self, node: Node) -> &NetNs {
        &self.nodes[node.index()]
    }

    /// The router's namespace name (where exfilmon attaches).
    #[must_use]
    pub fn router_ns_name(&self) -> &str {
        self.ns(Node::Router).name()
    }

    /// The router's LAN-facing interface, `"inside"`.
    #[must_use]
    pub fn inside_if(&self) -> &'static str {
        INSIDE_IF
    }

    /// The router's internet-facing interface, `"outside"`.
    #[must_use]
    pub fn outside_if(&self) -> &'static str {
        OUTSIDE_IF
    }

    /// Sends `frames` PPPoE session frames (at most `traffic::MAX_RAW_FRAMES`) from the
    /// phone to the router, each an IPv4 UDP datagram of `payload` bytes to the CN server's
    /// port `port`: frames no socket of the stack makes. Returns the frames sent and the
    /// inner IP packet's length. From the phone's MAC to the router's: a crafted frame's own
    /// MACs would teach the lab's bridge that the router sits behind the phone's port.
    ///
    /// # Errors
    /// When the frames cannot be sent.
    pub fn pppoe_from_phone(&self, frames: usize, port: u16, payload: usize) -> Result<(u64, u64)> {
        use crate::packet::{self, PPP_IPV4, UDP};
        let inner = packet::ipv4(
            PHONE_V4,
            SERVER_CN_V4,
            UDP,
            &packet::udp(40_000, port, &vec![0x5a; payload]),
        );
        let pppoe = packet::pppoe(&packet::ppp(PPP_IPV4, &inner));
        let sent = self.frames_from(
            Node::Phone,
            DEVICE_IF,
            packet::ETH_PPPOE_SESSION,
            &vec![pppoe; frames],
        )?;
        Ok((sent as u64, inner.len() as u64))
    }

    /// Sends each payload, in an Ethernet frame of `ethertype` from the phone's MAC to the
    /// router's, out of the switch's port to the router: straight onto the router's inside
    /// interface, as a SPAN port delivers copies (no bridging, no ARP, no routing; the
    /// switch's bridge, with `br_netfilter` loaded, would check IPv4 headers). Returns the
    /// frames sent.
    pub fn frames_to_router(&self, ethertype: u16, payloads: &[Vec<u8>]) -> Result<usize> {
        self.frames_from(Node::Lan, "router", ethertype, payloads)
    }

    fn frames_from(
        &self,
        node: Node,
        interface: &str,
        ethertype: u16,
        payloads: &[Vec<u8>],
    ) -> Result<usize> {
        let (router, phone) = (mac(ROUTER_INSIDE_MAC)?, mac(PHONE_MAC)?);
        let frames: Vec<Vec<u8>> = payloads
            .iter()
            .map(|p| {
                let mut frame = crate::packet::eth(&[], ethertype, p);
                frame[..6].copy_from_slice(&router);
                frame[6..12].copy_from_slice(&phone);
                frame
            })
            .collect();
        crate::traffic::raw_frames(self.ns(node), interface, &frames)
    }

    /// The id of the XDP program on the router's `interface`, from `ip -j link`, or
    /// `None` when none is attached.
    ///
    /// # Panics
    /// When `ip` cannot run, fails, or does not print JSON.
    #[must_use]
    pub fn xdp_program_id(&self, interface: &str) -> Option<u64> {
        let out = std::process::Command::new("ip")
            .args([
                "-n",
                self.ns(Node::Router).name(),
                "-j",
                "link",
                "show",
                "dev",
            ])
            .arg(interface)
            .output()
            .expect("ip runs");
        assert!(out.status.success(), "ip link show {interface} failed");
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
        links[0]["xdp"]["prog"]["id"].as_u64()
    }

    /// Deletes namespaces named `exf{PID}-{N}-{node}` whose PID no longer
    /// exists: leftovers of a lab whose process was killed before its drop ran.
    /// Only names of exactly that form are touched.
    pub fn remove_stale() {
        crate::netns::remove_stale_namespaces(stale_lab_pid);
    }

    #[allow(clippy::too_many_lines)] // one straight-line recipe reads best
    fn build(&self) -> Result<()> {
        let phone = self.ns(Node::Phone);
        let laptop = self.ns(Node::Laptop);
        let lan = self.ns(Node::Lan);
        let router = self.ns(Node::Router);
        let inet = self.ns(Node::Inet);

        // Sysctls first, so interfaces created later inherit the defaults.
        let quiet_v6: &[(&str, &str)] = &[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.router_solicitations", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
            ("net.ipv6.conf.all.dad_transmits", "0"),
            ("net.ipv6.conf.default.dad_transmits", "0"),
            // MLD reports cannot be switched off; make their repeats follow
            // the first one within a millisecond so all of them go out while
            // the lab is being built (see the settle wait at the end).
            ("net.ipv6.conf.all.mldv1_unsolicited_report_interval", "1"),
            (
                "net.ipv6.conf.default.mldv1_unsolicited_report_interval",
                "1",
            ),
            ("net.ipv6.conf.all.mldv2_unsolicited_report_interval", "1"),
            (
                "net.ipv6.conf.default.mldv2_unsolicited_report_interval",
                "1",
            ),
            ("net.ipv4.conf.all.igmpv2_unsolicited_report_interval", "1"),
            (
                "net.ipv4.conf.default.igmpv2_unsolicited_report_interval",
                "1",
            ),
            ("net.ipv4.conf.all.igmpv3_unsolicited_report_interval", "1"),
            (
                "net.ipv4.conf.default.igmpv3_unsolicited_report_interval",
                "1",
            ),
        ];
        for ns in [phone, laptop, router, inet] {
            ns.sysctl(quiet_v6)?;
        }
        // The switch is pure L2: no IPv6 (no link-local, no MLD, no RS).
        lan.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        router.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.default.forwarding", "1"),
        ])?;

        // Links. Each veth is created with its ends directly in their namespaces.
        veth(phone, DEVICE_IF, lan, "phone")?;
        veth(laptop, DEVICE_IF, lan, "laptop")?;
        veth(router, INSIDE_IF, lan, "router")?;
        veth(router, OUTSIDE_IF, inet, UPLINK_IF)?;

        lan.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        for port in ["phone", "laptop", "router"] {
            lan.ip(&["link", "set", port, "master", "br0"])?;
            lan.ip(&["link", "set", port, "up"])?;
        }
        lan.ip(&["link", "set", "br0", "up"])?;

        phone.ip(&["link", "set", DEVICE_IF, "address", PHONE_MAC])?;
        laptop.ip(&["link", "set", DEVICE_IF, "address", LAPTOP_MAC])?;
        router.ip(&["link", "set", INSIDE_IF, "address", ROUTER_INSIDE_MAC])?;
        router.ip(&["link", "set", OUTSIDE_IF, "address", ROUTER_OUTSIDE_MAC])?;
        inet.ip(&["link", "set", UPLINK_IF, "address", INET_UPLINK_MAC])?;

        // Devices.
        for (ns, v4, v6) in [(phone, PHONE_V4, PHONE_V6), (laptop, LAPTOP_V4, LAPTOP_V6)] {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", DEVICE_IF])?;
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{v6}/48"),
                "dev",
                DEVICE_IF,
                "nodad",
            ])?;
            ns.ip(&["link", "set", DEVICE_IF, "up"])?;
            ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                &ROUTER_INSIDE_V4.to_string(),
            ])?;
            ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &ROUTER_INSIDE_V6.to_string(),
            ])?;
        }

        // Router.
        router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_INSIDE_V4}/24"),
            "dev",
            INSIDE_IF,
        ])?;
        router.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ROUTER_INSIDE_V6}/48"),
            "dev",
            INSIDE_IF,
            "nodad",
        ])?;
        router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_OUTSIDE_V4}/24"),
            "dev",
            OUTSIDE_IF,
        ])?;
        router.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{ROUTER_OUTSIDE_V6}/64"),
            "dev",
            OUTSIDE_IF,
            "nodad",
        ])?;
        router.ip(&["link", "set", INSIDE_IF, "up"])?;
        router.ip(&["link", "set", OUTSIDE_IF, "up"])?;
        router.ip(&[
            "route",
            "add",
            "default",
            "via",
            &INET_UPLINK_V4.to_string(),
        ])?;
        router.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &INET_UPLINK_V6.to_string(),
        ])?;

        // Internet.
        inet.ip(&[
            "addr",
            "add",
            &format!("{INET_UPLINK_V4}/24"),
            "dev",
            UPLINK_IF,
        ])?;
        inet.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{INET_UPLINK_V6}/64"),
            "dev",
            UPLINK_IF,
            "nodad",
        ])?;
        inet.ip(&["link", "set", UPLINK_IF, "up"])?;
        for server in SERVERS {
            let (fam, len) = if server.is_ipv4() {
                ("-4", 32)
            } else {
                ("-6", 128)
            };
            let addr = format!("{server}/{len}");
            if server.is_ipv4() {
                inet.ip(&[fam, "addr", "add", &addr, "dev", "lo"])?;
            } else {
                inet.ip(&[fam, "addr", "add", &addr, "dev", "lo", "nodad"])?;
            }
        }
        let (net4, bits4) = LAN_V4_NET;
        let (net6, bits6) = LAN_V6_NET;
        inet.ip(&[
            "route",
            "add",
            &format!("{net4}/{bits4}"),
            "via",
            &ROUTER_OUTSIDE_V4.to_string(),
        ])?;
        inet.ip(&[
            "-6",
            "route",
            "add",
            &format!("{net6}/{bits6}"),
            "via",
            &ROUTER_OUTSIDE_V6.to_string(),
        ])?;

        // Permanent neighbour entries everywhere: no ARP or ND packets at all,
        // so a capture holds exactly the traffic a test made.
        let v4 = |a: Ipv4Addr| IpAddr::V4(a);
        let v6 = |a: Ipv6Addr| IpAddr::V6(a);
        let gw = [v4(ROUTER_INSIDE_V4), v6(ROUTER_INSIDE_V6)];
        neighbours(phone, DEVICE_IF, &gw, ROUTER_INSIDE_MAC)?;
        neighbours(
            phone,
            DEVICE_IF,
            &[v4(LAPTOP_V4), v6(LAPTOP_V6)],
            LAPTOP_MAC,
        )?;
        neighbours(laptop, DEVICE_IF, &gw, ROUTER_INSIDE_MAC)?;
        neighbours(laptop, DEVICE_IF, &[v4(PHONE_V4), v6(PHONE_V6)], PHONE_MAC)?;
        neighbours(router, INSIDE_IF, &[v4(PHONE_V4), v6(PHONE_V6)], PHONE_MAC)?;
        neighbours(
            router,
            INSIDE_IF,
            &[v4(LAPTOP_V4), v6(LAPTOP_V6)],
            LAPTOP_MAC,
        )?;
        // 198.51.100.200 lies in the outside /24, so the router resolves it on-link.
        neighbours(
            router,
            OUTSIDE_IF,
            &[
                v4(INET_UPLINK_V4),
                v6(INET_UPLINK_V6),
                v4(SERVER_UNKNOWN_V4),
            ],
            INET_UPLINK_MAC,
        )?;
        neighbours(
            inet,
            UPLINK_IF,
            &[v4(ROUTER_OUTSIDE_V4), v6(ROUTER_OUTSIDE_V6)],
            ROUTER_OUTSIDE_MAC,
        )?;

        // No packet merging on any veth.
        for (ns, ifs) in [
            (phone, &[DEVICE_IF][..]),
            (laptop, &[DEVICE_IF][..]),
            (lan, &["phone", "laptop", "router"][..]),
            (router, &[INSIDE_IF, OUTSIDE_IF][..]),
            (inet, &[UPLINK_IF][..]),
        ] {
            for iface in ifs {
                ns.run(
                    "ethtool",
                    ["-K", iface, "tso", "off", "gso", "off", "gro", "off"],
                )?;
            }
        }

        // Carrier changes reach IPv6 through linkwatch, up to a second late:
        // wait until every interface has its link-local address, then let
        // the MLD reports of those joins go out now rather than into a
        // test's capture.
        for (ns, dev) in [
            (phone, DEVICE_IF),
            (laptop, DEVICE_IF),
            (router, INSIDE_IF),
            (router, OUTSIDE_IF),
            (inet, UPLINK_IF),
        ] {
            wait_link_local(ns, dev)?;
        }
        std::thread::sleep(SETTLE);
        Ok(())
    }
}

/// Pause at the end of [`Lab::new`] for the interfaces' multicast reports.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

fn wait_link_local(ns: &NetNs, dev: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = ns.ip(&["-6", "addr", "show", "dev", dev, "scope", "link"])?;
        if out.contains("inet6 fe80") && !out.contains("tentative") {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("{dev} in {} got no link-local address: {out}", ns.name());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn neighbours(ns: &NetNs, dev: &str, addrs: &[IpAddr], mac: &str) -> Result<()> {
    for addr in addrs {
        ns.ip(&[
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }
    Ok(())
}

/// Creates a veth pair with `a_name` in `a` and `b_name` in `b`.
fn veth(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) -> Result<()> {
    crate::netns::run_checked(std::process::Command::new("ip").args([
        "link",
        "add",
        a_name,
        "netns",
        a.name(),
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ]))
    .map(|_| ())
}

/// The PID in a default lab namespace name `exf{PID}-{N}-{node}`.
fn stale_lab_pid(name: &str) -> Option<u32> {
    crate::netns::pid_in_name(name, "exf", |node| {
        Node::ALL.iter().any(|n| n.suffix() == node)
    })
}

/// The bytes of a MAC address written `02:00:00:00:00:01`.
fn mac(text: &str) -> Result<[u8; 6]> {
    let mut bytes = [0; 6];
    let mut parts = text.split(':');
    for b in &mut bytes {
        let part = parts
            .next()
            .with_context(|| format!("{text}: not a MAC address"))?;
        *b = u8::from_str_radix(part, 16).with_context(|| format!("{text}: not a MAC address"))?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::stale_lab_pid;

    #[test]
    fn stale_names() {
        assert_eq!(stale_lab_pid("exf123-0-router"), Some(123));
        assert_eq!(stale_lab_pid("exf123-4-inet"), Some(123));
        assert_eq!(stale_lab_pid("exf123-x-inet"), None);
        assert_eq!(stale_lab_pid("exfdemo-router"), None);
        assert_eq!(stale_lab_pid("exf123-0-other"), None);
    }
}
