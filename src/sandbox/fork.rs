//! The sandbox probes' throwaway children: the one exception to "only
//! [`super::stage::Launcher::spawn`] starts processes", kept in the sandbox beside the launcher.

use super::sys;

/// Why a probe gave no answer (the probe then counts as failed, with this text as its detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ProbeChildError {
    /// `pipe2` or `fork` failed in the agent (`call`), with this errno.
    #[error("probe not run: {call}: {}", std::io::Error::from_raw_os_error(*errno))]
    NotRun { call: &'static str, errno: i32 },
    #[error("the probe child was killed by signal {signal}")]
    Killed { signal: i32 },
    #[error("the probe child exited without an answer")]
    NoAnswer,
}

/// Forks, runs `f` in the child, returns its number. The child only makes system calls.
///
/// The one exception to "only [`Launcher::spawn`] starts processes", kept beside it: the
/// sandbox probes (`probe`) must try each layer in a throwaway copy of the agent itself, which
/// no helper process can stand in for; the child never execs, never allocates and exits with
/// `_exit` once it wrote its answer.
#[allow(
    clippy::disallowed_methods,
    reason = "the sandbox probes' throwaway children (ARCHITECTURE.md, Invariants)"
)]
pub(super) fn probe_in_child(f: impl FnOnce() -> i64) -> Result<i64, ProbeChildError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(ProbeChildError::NotRun {
            call: "pipe",
            errno: sys::errno(),
        });
    }
    // SAFETY: the child runs `f` (raw system calls on data prepared before the fork), writes
    // eight bytes and calls _exit: nothing that needs another thread's lock or allocates.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let v = f().to_ne_bytes();
        // SAFETY: writing a stack buffer to our pipe, then leaving without running destructors.
        unsafe {
            libc::write(fds[1], v.as_ptr().cast(), v.len());
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end; reading into a stack buffer; reaping the
    // child we forked.
    unsafe {
        libc::close(fds[1]);
        if pid < 0 {
            let errno = sys::errno();
            libc::close(fds[0]);
            return Err(ProbeChildError::NotRun {
                call: "fork",
                errno,
            });
        }
        let mut buf = [0u8; 8];
        let mut got = 0;
        while got < 8 {
            let n = libc::read(fds[0], buf[got..].as_mut_ptr().cast(), 8 - got);
            if n > 0 {
                got += n as usize;
            } else if n == 0 || sys::errno() != libc::EINTR {
                break;
            }
        }
        libc::close(fds[0]);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 && sys::errno() == libc::EINTR {}
        if got == 8 {
            Ok(i64::from_ne_bytes(buf))
        } else if libc::WIFSIGNALED(status) {
            Err(ProbeChildError::Killed {
                signal: libc::WTERMSIG(status),
            })
        } else {
            Err(ProbeChildError::NoAnswer)
        }
    }
}
