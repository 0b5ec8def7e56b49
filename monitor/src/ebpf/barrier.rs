//! Waiting until no program run still reads what a map write replaced.
//!
//! XDP and TC programs run inside an RCU read-side section. After a user-space update of
//! a map-in-map, the kernel waits for every running program with `synchronize_rcu()`
//! before the update returns (`maybe_wait_bpf_programs` in `kernel/bpf/syscall.c`, there
//! since 2018 so that user space, once the call returns, knows no running program uses
//! the old value). A one-slot array of maps that nothing reads, its slot set again to the
//! same inner map, turns that into a barrier: when [`ProgramBarrier::wait`] returns, every
//! program run that began before it has ended.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading members of `union bpf_attr` for `BPF_MAP_CREATE` (the kernel reads the
/// rest as zeros).
#[repr(C)]
#[derive(Default)]
struct CreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct UpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The barrier: the array of maps and the one inner map its slot holds.
#[derive(Debug)]
pub(super) struct ProgramBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl ProgramBarrier {
    /// Makes the two maps (CAP_BPF, as every map of the daemon).
    pub(super) fn new() -> std::io::Result<Self> {
        let inner = create(CreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            map_name: name(b"exf_barrier_in"),
            ..CreateAttr::default()
        })?;
        let outer = create(CreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: u32::try_from(inner.as_raw_fd()).unwrap_or(u32::MAX),
            map_name: name(b"exf_barrier"),
            ..CreateAttr::default()
        })?;
        Ok(Self { outer, inner })
    }

    /// Returns once every program run that was in flight when it was called has ended.
    pub(super) fn wait(&self) -> std::io::Result<()> {
        let key = 0u32;
        let value = u32::try_from(self.inner.as_raw_fd()).unwrap_or(u32::MAX);
        let mut attr = UpdateAttr {
            map_fd: u32::try_from(self.outer.as_raw_fd()).unwrap_or(u32::MAX),
            _pad: 0,
            key: std::ptr::addr_of!(key) as u64,
            value: std::ptr::addr_of!(value) as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at a key and a value of the map's sizes that outlive the
        // call.
        let ret = unsafe { super::sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr) };
        if ret == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn name(text: &[u8]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..text.len()].copy_from_slice(text);
    out
}

fn create(mut attr: CreateAttr) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` holds no pointers.
    let fd = unsafe { super::sys_bpf(BPF_MAP_CREATE, &mut attr) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just gave us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd).unwrap_or(-1)) })
}
