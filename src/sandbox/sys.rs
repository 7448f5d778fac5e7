//! Thin, allocation-free wrappers over the system calls the sandbox needs and `libc` does not
//! wrap (capabilities, Landlock's version query) or that must act on the calling thread only
//! (`setres*id` as raw system calls, not glibc's process-wide broadcast).
//!
//! Nothing here allocates, so these are safe to call in a child forked from a multi-threaded
//! process (the probes).

use std::io;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;
/// `CAP_SYS_PTRACE`.
pub const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_SETPCAP`.
pub const CAP_SETPCAP: u32 = 8;
/// `CAP_SETUID`.
pub const CAP_SETUID: u32 = 7;
/// `CAP_SETGID`.
pub const CAP_SETGID: u32 = 6;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets as 64-bit masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

impl CapSets {
    /// Whether `cap` is in any of the three sets.
    pub fn holds(&self, cap: u32) -> bool {
        (self.effective | self.permitted | self.inheritable) & (1 << cap) != 0
    }
}

/// The errno of the last failed call, as an `io::Error` (no allocation).
pub fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// The errno number of the last failed call.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn check(rc: libc::c_long) -> io::Result<libc::c_long> {
    if rc < 0 { Err(last_error()) } else { Ok(rc) }
}

/// `capget` for the calling thread.
pub fn capget() -> io::Result<CapSets> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are valid, properly sized (version 3 takes two CapData) and live
    // for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    })?;
    let join = |lo: u32, hi: u32| (u64::from(hi) << 32) | u64::from(lo);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// `capset` for the calling thread. Lowering sets never needs privilege.
pub fn capset(sets: CapSets) -> io::Result<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let split = |v: u64| (v as u32, (v >> 32) as u32);
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: as in `capget`; the kernel only reads `data`.
    check(unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    })?;
    Ok(())
}

/// `prctl` with integer arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: every option used by the sandbox takes integer arguments only.
    let rc = unsafe { libc::prctl(option, arg2, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if rc < 0 { Err(last_error()) } else { Ok(rc) }
}

/// Whether `cap` is in the bounding set.
pub fn in_bounding_set(cap: u32) -> bool {
    prctl(libc::PR_CAPBSET_READ, cap.into()).is_ok_and(|v| v == 1)
}

/// Removes every capability from the bounding set (needs `CAP_SETPCAP`); returns how many.
pub fn drop_bounding_set() -> io::Result<u32> {
    let mut dropped = 0;
    for cap in 0..64u32 {
        match prctl(libc::PR_CAPBSET_READ, cap.into()) {
            Ok(1) => {
                prctl(libc::PR_CAPBSET_DROP, cap.into())?;
                dropped += 1;
            }
            Ok(_) => {}
            // EINVAL: past the kernel's last capability.
            Err(_) => break,
        }
    }
    Ok(dropped)
}

/// Clears the ambient capability set (never needs privilege).
pub fn clear_ambient() -> io::Result<()> {
    // SAFETY: PR_CAP_AMBIENT takes integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc < 0 { Err(last_error()) } else { Ok(()) }
}

/// `setgroups(0, NULL)`, `setresgid` and `setresuid`, as raw system calls (calling thread).
pub fn switch_ids(uid: u32, gid: u32) -> Result<(), (&'static str, io::Error)> {
    // SAFETY: a null list with size 0 is valid for setgroups; the id calls take integers.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) < 0 {
            return Err(("setgroups", last_error()));
        }
        if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
            return Err(("setresgid", last_error()));
        }
        if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
            return Err(("setresuid", last_error()));
        }
    }
    Ok(())
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the kernel's ABI.
pub fn landlock_abi() -> io::Result<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: a null attribute pointer with size 0 is the documented version query.
    let rc = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    })?;
    Ok(rc as u32)
}

/// `getuid()`.
pub fn getuid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The three kinds of SysV IPC objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpcKind {
    Shm,
    Sem,
    Msg,
}

impl IpcKind {
    pub fn name(self) -> &'static str {
        match self {
            IpcKind::Shm => "shm",
            IpcKind::Sem => "sem",
            IpcKind::Msg => "msg",
        }
    }
}

/// Removes a SysV IPC object (`IPC_RMID`) by kind and id.
pub fn ipc_remove(kind: IpcKind, id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID takes no buffer (a null pointer is allowed) and acts only on the object
    // named by `id`; the calls read or write no memory of ours.
    let rc = unsafe {
        match kind {
            IpcKind::Shm => libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()),
            IpcKind::Sem => libc::semctl(id, 0, libc::IPC_RMID),
            IpcKind::Msg => libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()),
        }
    };
    if rc == -1 { Err(last_error()) } else { Ok(()) }
}
