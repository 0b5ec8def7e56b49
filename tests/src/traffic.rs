//! Bounded traffic generators. Sockets are created inside a namespace with
//! [`NetNs::enter`] and then used from ordinary threads.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// Hard cap on datagrams per [`udp_burst`].
pub const MAX_BURST_PACKETS: usize = 1_000_000;
/// Hard cap on the wall-clock time of one [`udp_burst`].
pub const MAX_BURST_TIME: Duration = Duration::from_secs(30);
/// Timeout for every step of [`tcp_exchange`].
pub const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of a [`UdpSink`] (it stops by itself afterwards).
pub const SINK_MAX_LIFETIME: Duration = Duration::from_secs(300);

/// What a generator sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentStats {
    /// Datagrams sent.
    pub packets: u64,
    /// Bytes at layer 3: packets × (IP header 20 or 40 + UDP header 8 + payload).
    pub l3_bytes: u64,
}

/// Sends `count` UDP datagrams of `payload` bytes from inside `ns` to `dst`,
/// bound to `src` (port chosen by the kernel) when given. Bounded by
/// [`MAX_BURST_PACKETS`] and [`MAX_BURST_TIME`]; briefly yields every 64
/// datagrams so a receiver on the same machine keeps up.
pub fn udp_burst(
    ns: &NetNs,
    src: Option<IpAddr>,
    dst: SocketAddr,
    count: usize,
    payload: usize,
) -> Result<SentStats> {
    if count > MAX_BURST_PACKETS {
        bail!("udp_burst: count {count} over the cap {MAX_BURST_PACKETS}");
    }
    let ip_header = if dst.is_ipv4() { 20 } else { 40 };
    if payload > 65_535 - ip_header - 8 {
        bail!("udp_burst: payload {payload} too large");
    }
    let bind = SocketAddr::new(src.unwrap_or_else(|| unspecified(dst.ip())), 0);
    ns.enter(move || -> Result<SentStats> {
        let sock = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
        sock.connect(dst)
            .with_context(|| format!("connecting to {dst}"))?;
        let data = vec![0xa5u8; payload];
        let deadline = Instant::now() + MAX_BURST_TIME;
        let mut sent = 0u64;
        for i in 0..count {
            if Instant::now() > deadline {
                break;
            }
            match sock.send(&data) {
                Ok(_) => sent += 1,
                // ECONNREFUSED from an earlier ICMP port-unreachable: the
                // datagram was not sent; go on with the next one.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e).context("udp send"),
            }
            if i % 64 == 63 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(SentStats {
            packets: sent,
            l3_bytes: sent * (ip_header + 8 + payload) as u64,
        })
    })
}

/// Like [`udp_burst`], but on a thread of its own and paced: one datagram every `gap`, so
/// that traffic flows while the test does something else (restarts the daemon). The
/// socket is made inside `ns` before this returns. Bounded by [`MAX_BURST_PACKETS`] and
/// [`MAX_BURST_TIME`].
pub fn udp_paced(
    ns: &NetNs,
    src: Option<IpAddr>,
    dst: SocketAddr,
    count: usize,
    payload: usize,
    gap: Duration,
) -> Result<JoinHandle<Result<SentStats>>> {
    if count > MAX_BURST_PACKETS {
        bail!("udp_paced: count {count} over the cap {MAX_BURST_PACKETS}");
    }
    let ip_header = if dst.is_ipv4() { 20 } else { 40 };
    let bind = SocketAddr::new(src.unwrap_or_else(|| unspecified(dst.ip())), 0);
    let sock = ns
        .enter(|| UdpSocket::bind(bind))
        .with_context(|| format!("binding {bind} in {}", ns.name()))?;
    sock.connect(dst)
        .with_context(|| format!("connecting to {dst}"))?;
    Ok(std::thread::Builder::new()
        .name("udp-paced".into())
        .spawn(move || {
            let data = vec![0x5au8; payload];
            let start = Instant::now();
            let mut sent = 0u64;
            for i in 0..count {
                if start.elapsed() > MAX_BURST_TIME {
                    break;
                }
                match sock.send(&data) {
                    Ok(_) => sent += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e).context("udp send"),
                }
                // Paced against the start, so that slow sends do not stretch the run.
                let next = start + gap * u32::try_from(i + 1).unwrap_or(u32::MAX);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            Ok(SentStats {
                packets: sent,
                l3_bytes: sent * (ip_header + 8 + payload) as u64,
            })
        })?)
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// What a [`UdpSink`] received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Datagrams received.
    pub packets: u64,
    /// UDP payload bytes received.
    pub payload_bytes: u64,
}

/// A UDP receiver counting datagrams on a thread; stops on [`stop`](Self::stop),
/// on drop, or after [`SINK_MAX_LIFETIME`].
#[derive(Debug)]
pub struct UdpSink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Binds a UDP socket to `addr` inside `ns` (ready when this returns) and
/// counts what arrives on it.
pub fn udp_sink(ns: &NetNs, addr: SocketAddr) -> Result<UdpSink> {
    let sock = ns
        .enter(|| UdpSocket::bind(addr))
        .with_context(|| format!("binding UDP sink {addr} in {}", ns.name()))?;
    let addr = sock.local_addr()?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let packets = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let thread = {
        let (stop, packets, bytes) = (stop.clone(), packets.clone(), bytes.clone());
        std::thread::Builder::new()
            .name("udp-sink".into())
            .spawn(move || {
                let deadline = Instant::now() + SINK_MAX_LIFETIME;
                let mut buf = vec![0u8; 65_536];
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if let Ok(n) = sock.recv(&mut buf) {
                        bytes.fetch_add(n as u64, Ordering::Relaxed);
                        packets.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })?
    };
    Ok(UdpSink {
        addr,
        stop,
        packets,
        bytes,
        thread: Some(thread),
    })
}

impl UdpSink {
    /// The bound address (with the real port if 0 was asked for).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> SinkStats {
        SinkStats {
            packets: self.packets.load(Ordering::Relaxed),
            payload_bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// Waits until at least `packets` datagrams arrived or `timeout` passed;
    /// returns the counts then.
    #[must_use]
    pub fn wait_for(&self, packets: u64, timeout: Duration) -> SinkStats {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            if s.packets >= packets || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the receiver and returns the final counts.
    #[must_use]
    pub fn stop(mut self) -> SinkStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Bytes moved by a [`tcp_exchange`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeStats {
    /// Request bytes the server read.
    pub request_bytes: u64,
    /// Response bytes the client read.
    pub response_bytes: u64,
}

/// One TCP request/response: a server listening on `server_addr` in
/// `server_ns` reads the request until the client half-closes, answers
/// `response_len` bytes and closes; the client in `client_ns` connects, sends
/// `request`, half-closes, reads the answer to EOF. Every step times out after
/// [`TCP_TIMEOUT`]. Fails unless both sides moved every byte.
pub fn tcp_exchange(
    client_ns: &NetNs,
    server_ns: &NetNs,
    server_addr: SocketAddr,
    request: &[u8],
    response_len: usize,
) -> Result<ExchangeStats> {
    let listener = server_ns
        .enter(|| TcpListener::bind(server_addr))
        .with_context(|| format!("binding TCP server {server_addr} in {}", server_ns.name()))?;
    let server_addr = listener.local_addr()?;
    let server = std::thread::Builder::new()
        .name("tcp-server".into())
        .spawn(move || -> Result<u64> {
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + TCP_TIMEOUT;
            let mut conn = loop {
                match listener.accept() {
                    Ok((c, _)) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if Instant::now() > deadline {
                            bail!("tcp server: no connection within {TCP_TIMEOUT:?}");
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(e).context("accept"),
                }
            };
            drop(listener);
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(TCP_TIMEOUT))?;
            conn.set_write_timeout(Some(TCP_TIMEOUT))?;
            let mut req = Vec::new();
            conn.read_to_end(&mut req)
                .context("server reading request")?;
            conn.write_all(&vec![0x5au8; response_len])
                .context("server writing response")?;
            conn.shutdown(Shutdown::Write)?;
            // Wait for the client's close so the FIN exchange completes here.
            let mut rest = [0u8; 64];
            let _ = conn.read(&mut rest);
            Ok(req.len() as u64)
        })?;

    let client = (|| -> Result<u64> {
        let mut conn = client_ns
            .enter(|| TcpStream::connect_timeout(&server_addr, TCP_TIMEOUT))
            .with_context(|| format!("connecting to {server_addr} from {}", client_ns.name()))?;
        conn.set_read_timeout(Some(TCP_TIMEOUT))?;
        conn.set_write_timeout(Some(TCP_TIMEOUT))?;
        conn.write_all(request).context("client writing request")?;
        conn.shutdown(Shutdown::Write)?;
        let mut resp = Vec::new();
        conn.read_to_end(&mut resp)
            .context("client reading response")?;
        Ok(resp.len() as u64)
    })();
    let server = server
        .join()
        .map_err(|_| anyhow::anyhow!("tcp server thread panicked"))?;
    let response_bytes = client?;
    let request_bytes = server?;
    if request_bytes != request.len() as u64 || response_bytes != response_len as u64 {
        bail!(
            "tcp exchange incomplete: request {request_bytes}/{}, response {response_bytes}/{response_len}",
            request.len()
        );
    }
    Ok(ExchangeStats {
        request_bytes,
        response_bytes,
    })
}

/// Hard cap on the frames of one [`raw_frames`].
pub const MAX_RAW_FRAMES: usize = 10_000;

/// Sends each of `frames` (whole Ethernet frames, as built by `crate::packet`) once out of
/// `interface` inside `ns`, through an `AF_PACKET` socket: for frames no socket of the
/// stack would make (PPPoE, MPLS, tunnels). Bounded by [`MAX_RAW_FRAMES`]. Returns the
/// frames sent.
pub fn raw_frames(ns: &NetNs, interface: &str, frames: &[Vec<u8>]) -> Result<usize> {
    if frames.len() > MAX_RAW_FRAMES {
        bail!(
            "raw_frames: {} frames over the cap {MAX_RAW_FRAMES}",
            frames.len()
        );
    }
    let name = std::ffi::CString::new(interface).context("interface name")?;
    ns.enter(|| -> Result<usize> {
        // SAFETY: plain syscalls on a socket this function owns and closes; every pointer
        // passed lives across the call that uses it.
        unsafe {
            let index = libc::if_nametoindex(name.as_ptr());
            if index == 0 {
                bail!("no interface {interface} in {}", ns.name());
            }
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
            }
            let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = i32::try_from(index)?;
            addr.sll_halen = 6;
            for (i, frame) in frames.iter().enumerate() {
                let n = libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>())?,
                );
                if n < 0 {
                    return Err(std::io::Error::last_os_error())
                        .with_context(|| format!("sending frame {i} out of {interface}"));
                }
            }
            Ok(frames.len())
        }
    })
}

/// Result of [`ping`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PingStats {
    pub transmitted: u32,
    pub received: u32,
}

/// `ping -c COUNT -i 0.2 -W 1 -w DEADLINE DST` inside `ns`. Returns the counts
/// whatever the exit status (a lost reply is not an error here).
pub fn ping(ns: &NetNs, dst: IpAddr, count: u32) -> Result<PingStats> {
    if count == 0 || count > 1000 {
        bail!("ping: count {count} out of 1..=1000");
    }
    let deadline = (count / 5 + 3).to_string();
    let out = ns.exec(
        "ping",
        [
            "-n",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "1",
            "-w",
            &deadline,
            &dst.to_string(),
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping(&text).with_context(|| {
        format!(
            "parsing ping output: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn parse_ping(text: &str) -> Result<PingStats> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .context("no summary line")?;
    let mut nums = line.split(',').map(|part| {
        part.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let transmitted = nums.next().flatten().context("transmitted")?;
    let received = nums.next().flatten().context("received")?;
    Ok(PingStats {
        transmitted,
        received,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary() {
        let s = parse_ping(
            "--- x ---\n3 packets transmitted, 2 received, 33.3% packet loss, time 401ms\n",
        )
        .unwrap();
        assert_eq!(
            s,
            PingStats {
                transmitted: 3,
                received: 2
            }
        );
        let s =
            parse_ping("2 packets transmitted, 0 received, +2 errors, 100% packet loss\n").unwrap();
        assert_eq!(
            s,
            PingStats {
                transmitted: 2,
                received: 0
            }
        );
    }
}
