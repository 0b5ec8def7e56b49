//! The lab's traffic story, shared by the end-to-end test and the demo: a phone that
//! "phones home" to a server in CN at start-up (as the phones that started this project
//! did), ordinary allowed and domestic traffic, a laptop reaching CN over IPv6, and traffic
//! to address space no GeoIP source knows.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, ensure};

use crate::{
    lab::{
        LAPTOP_V4, LAPTOP_V6, Lab, Node, PHONE_V4, SERVER_CN_V4, SERVER_CN_V6, SERVER_IN_V4,
        SERVER_SG_V4, SERVER_UNKNOWN_V4, SERVER_US_V4,
    },
    traffic::{ExchangeStats, tcp_exchange, udp_burst, udp_sink},
};

/// What the phone sends home at every start (all values made up).
pub const PHONE_HOME: &[u8] = br#"POST /v2/device/boot HTTP/1.1
Host: api.example.cn
Content-Type: application/json

{"imei":"000000000000000","msisdn":"+91 00000 00000","carrier":"Example Telecom","contacts":412,"calls_today":17,"event":"boot"}"#;

/// One (group, country, direction, verdict) series and the exact traffic sent into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub group: &'static str,
    pub country: &'static str,
    pub direction: &'static str,
    pub verdict: &'static str,
    pub packets: u64,
    pub l3_bytes: u64,
    pub what: &'static str,
}

/// What the scenario sent.
#[derive(Debug)]
pub struct Sent {
    /// Series fed only by UDP bursts: their totals are known exactly.
    pub exact: Vec<Expected>,
    /// The phone's call home (TCP to CN) and the laptop's download (TCP from the US).
    pub phone_home: ExchangeStats,
    pub download: ExchangeStats,
}

struct Burst {
    from: Node,
    src: IpAddr,
    dst: SocketAddr,
    count: usize,
    payload: usize,
    series: (&'static str, &'static str, &'static str),
    what: &'static str,
}

/// Runs the scenario once (bounded: a few hundred packets, seconds).
pub fn run(lab: &Lab) -> Result<Sent> {
    let bursts = [
        Burst {
            from: Node::Phone,
            src: PHONE_V4.into(),
            dst: SocketAddr::new(SERVER_SG_V4.into(), 9001),
            count: 20,
            payload: 200,
            series: ("phones", "SG", "allowed"),
            what: "phone syncs photos to SG (allowed for phones)",
        },
        Burst {
            from: Node::Phone,
            src: PHONE_V4.into(),
            dst: SocketAddr::new(SERVER_IN_V4.into(), 9002),
            count: 10,
            payload: 100,
            series: ("phones", "IN", "domestic"),
            what: "phone talks to a domestic server",
        },
        Burst {
            from: Node::Laptop,
            src: LAPTOP_V6.into(),
            dst: SocketAddr::new(SERVER_CN_V6.into(), 9003),
            count: 15,
            payload: 500,
            series: ("laptops", "CN", "violation"),
            what: "laptop uploads to CN over IPv6 (not allowed)",
        },
        Burst {
            from: Node::Laptop,
            src: LAPTOP_V4.into(),
            dst: SocketAddr::new(SERVER_UNKNOWN_V4.into(), 9004),
            count: 10,
            payload: 100,
            series: ("laptops", "??", "unknown"),
            what: "laptop reaches space no GeoIP source knows",
        },
    ];

    let inet = lab.ns(Node::Inet);
    let mut exact = Vec::new();
    for b in &bursts {
        let sink = udp_sink(inet, b.dst)?;
        let sent = udp_burst(lab.ns(b.from), Some(b.src), b.dst, b.count, b.payload)?;
        let got = sink.wait_for(sent.packets, Duration::from_secs(10));
        ensure!(
            got.packets == sent.packets,
            "{}: sent {} datagrams, {} arrived",
            b.what,
            sent.packets,
            got.packets
        );
        exact.push(Expected {
            group: b.series.0,
            country: b.series.1,
            direction: "outbound",
            verdict: b.series.2,
            packets: sent.packets,
            l3_bytes: sent.l3_bytes,
            what: b.what,
        });
    }

    let phone_home = tcp_exchange(
        lab.ns(Node::Phone),
        inet,
        SocketAddr::new(SERVER_CN_V4.into(), 443),
        PHONE_HOME,
        200,
    )?;
    let download = tcp_exchange(
        lab.ns(Node::Laptop),
        inet,
        SocketAddr::new(SERVER_US_V4.into(), 8080),
        b"GET /update.bin HTTP/1.1\r\n\r\n",
        20_000,
    )?;
    Ok(Sent {
        exact,
        phone_home,
        download,
    })
}
