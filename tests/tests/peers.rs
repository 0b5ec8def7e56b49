//! exfilmon, softflowd and pmacctd count the same live traffic alike: a short bounded run
//! of XDP live frames through a veth pair, with the real daemon and both peers on the
//! receiving interface at once. Root only (and softflowd + pmacct installed: `make setup`).

use std::{net::SocketAddr, time::Duration};

use exfilmon_tests::{
    daemon::{Daemon, free_port},
    live::{self, FRAME_L3_BYTES, Generator},
    livenet::{LiveNet, MON_IF},
    peers::{Peer, PeerKind},
    require_root,
};
use monitor::{config::Config, ebpf::BenchSizes};
use monitor_common::programs;

const PACKETS: u64 = 20_000;
const RATE: u64 = 20_000;
const FLOWS: u32 = 512;

#[test]
#[ignore = "needs root: `make test` runs it as root (or: cargo test -- --include-ignored)"]
fn peers_and_exfilmon_agree_on_totals() {
    require_root("peers_and_exfilmon_agree_on_totals");
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(&live::write_config(dir.path(), None).unwrap()).unwrap();
    let geo = monitor::geoip::GeoDb::load(&config.geoip.sources).unwrap();
    let plan = monitor::tables::plan(&config, &geo).unwrap();
    let monitor = monitor::load_monitor_with(
        &config,
        &plan,
        Some(BenchSizes {
            workload: 4096,
            trie4: 1,
            trie6: 1,
            hash6: 1,
            hash6_trie: 1,
        }),
    )
    .unwrap_or_else(|e| panic!("load: {}", monitor::error_chain(&e)));
    let mut monitor = monitor;
    monitor
        .write_bench_workload(&live::random_workload(4096, FLOWS, 7))
        .unwrap();
    let net = LiveNet::new().unwrap();

    let port = free_port().unwrap();
    let daemon_dir = tempfile::tempdir().unwrap();
    let config_path =
        live::write_config(daemon_dir.path(), Some((net.mon_ns().name(), port))).unwrap();
    let daemon = Daemon::start_with(
        config_path,
        SocketAddr::from(([127, 0, 0, 1], port)),
        daemon_dir,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while net.mon_xdp_prog_id().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "exfilmon did not attach to {MON_IF}: {}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let all = format!("0-{}", live::cpus() - 1);
    let peers: Vec<Peer> = [PeerKind::Softflowd, PeerKind::Pmacctd]
        .into_iter()
        .map(|k| {
            Peer::start(k, net.mon_ns(), MON_IF, dir.path(), &all)
                .unwrap_or_else(|e| panic!("starting {}: {e:#}", k.name()))
        })
        .collect();

    let scrape = || live::exfilmon_totals(&daemon).unwrap();
    let before = scrape();
    let generator = Generator::new(&monitor, &net, None).unwrap();
    let sent = generator
        .paced(
            programs::LIVE_GEN,
            &live::template_frame(),
            PACKETS,
            RATE,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(sent.packets, PACKETS, "the generator stopped early");
    let after = scrape();
    let exfilmon = (after.0 - before.0, after.1 - before.1);
    assert_eq!(
        exfilmon,
        (PACKETS, PACKETS * FRAME_L3_BYTES),
        "exfilmon's /metrics"
    );
    for peer in &peers {
        generator
            .flush(|| peer.flush_seen(PACKETS), 50_000, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{}: {e:#}\n{}", peer.kind().name(), peer.log_text()));
        let t = peer.totals().unwrap();
        assert!(t.flush_packets > 0, "{}: {t:?}", peer.kind().name());
        assert_eq!(
            (t.packets, t.bytes),
            exfilmon,
            "{} against exfilmon: {t:?}",
            peer.kind().name()
        );
        assert_eq!(t.flows, u64::from(FLOWS), "{}: {t:?}", peer.kind().name());
    }
    for peer in peers {
        peer.stop().unwrap();
    }
    assert!(daemon.stop().unwrap().success());
}
