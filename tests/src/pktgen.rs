//! Frames sent from user space out of one interface: an `AF_PACKET` socket and `sendmmsg`
//! batches. The live generator's engine where the kernel refuses XDP live frames (see
//! [`crate::live::Generator`]).

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, Result, bail};

/// Frames per `sendmmsg` call.
const BATCH: usize = 64;

/// A raw socket bound for sending out of one interface of the namespace it was made in.
pub struct PacketSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl PacketSocket {
    /// A socket that sends out of interface `ifindex` of the calling thread's namespace.
    /// Protocol 0: it receives nothing.
    pub fn new(ifindex: u32) -> Result<Self> {
        // SAFETY: a plain syscall; the descriptor is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: all-zero is a valid `sockaddr_ll`.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = i32::try_from(ifindex)?;
        addr.sll_halen = 6;
        Ok(Self { fd, addr })
    }

    /// Sends every frame, in batches; a full device queue (`ENOBUFS`) is waited out, every
    /// other error ends the send.
    pub fn send(&self, frames: &[&[u8]]) -> Result<()> {
        for batch in frames.chunks(BATCH) {
            let mut iov: Vec<libc::iovec> = batch
                .iter()
                .map(|f| libc::iovec {
                    iov_base: f.as_ptr().cast_mut().cast(),
                    iov_len: f.len(),
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    // SAFETY: all-zero is a valid `msghdr`; the fields set below point at
                    // `self.addr` and `iov`, which outlive the `sendmmsg` calls.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    h.msg_name = (&raw const self.addr).cast_mut().cast();
                    h.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
                    h.msg_iov = std::ptr::from_mut(v);
                    h.msg_iovlen = 1;
                    libc::mmsghdr {
                        msg_hdr: h,
                        msg_len: 0,
                    }
                })
                .collect();
            let mut done = 0;
            let mut waits = 0;
            while done < msgs.len() {
                let rest = &mut msgs[done..];
                // SAFETY: `rest` is `rest.len()` valid headers (see above).
                let n = unsafe {
                    libc::sendmmsg(
                        self.fd.as_raw_fd(),
                        rest.as_mut_ptr(),
                        u32::try_from(rest.len())?,
                        0,
                    )
                };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ENOBUFS) && waits < 1000 {
                        waits += 1;
                        std::thread::sleep(std::time::Duration::from_micros(100));
                        continue;
                    }
                    bail!("sendmmsg on interface {}: {e}", self.addr.sll_ifindex);
                }
                done += usize::try_from(n)?;
            }
        }
        Ok(())
    }
}
