//! The CPU priority of the signer threads: below the threads that serve connections, so
//! that when signing uses this machine's CPU (a software token in the process, a network
//! HSM's client library doing its own TLS), requests on established connections come
//! first and full handshakes, already limited by admission control, take what is left.
//!
//! Linux keeps a nice value per thread; `setpriority(PRIO_PROCESS, tid, …)` changes one
//! thread's. Elsewhere this does nothing.
#![allow(unsafe_code)]

/// Add `nice` to the calling thread's nice value (capped at 19). A failure is logged
/// once per thread at debug level and otherwise ignored: the thread still signs.
pub(crate) fn lower_this_thread(nice: u8) {
    #[cfg(target_os = "linux")]
    if let Err(e) = lower(nice) {
        tracing::debug!(error = %e, nice, "lowering the thread's priority failed");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Lower the calling thread by `nice` (capped at 19); the thread and its nice value
/// before, to give back (`None` with 0: nothing changed).
#[cfg(target_os = "linux")]
fn lower(nice: u8) -> std::io::Result<Option<(libc::id_t, i32)>> {
    if nice == 0 {
        return Ok(None);
    }
    let tid = this_tid();
    let current = priority_of(tid).ok_or_else(std::io::Error::last_os_error)?;
    let wanted = (current + i32::from(nice)).min(19);
    set_priority(tid, wanted)?;
    Ok(Some((tid, current)))
}

/// The calling thread lowered by a nice value until this is dropped (`on_runtime`: a
/// runtime thread running a handshake's signing step). Only where [`can_restore`] said
/// the thread's priority can be given back; with 0 it does nothing.
pub(crate) struct Lowered {
    #[cfg(target_os = "linux")]
    restore: Option<(libc::id_t, i32)>,
}

impl Lowered {
    pub(crate) fn this_thread(nice: u8) -> Lowered {
        #[cfg(target_os = "linux")]
        {
            Lowered {
                restore: lower(nice).ok().flatten(),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = nice;
            Lowered {}
        }
    }
}

impl Drop for Lowered {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some((tid, was)) = self.restore
            && let Err(e) = set_priority(tid, was)
        {
            tracing::warn!(error = %e, "a runtime thread's priority could not be given back");
        }
    }
}

/// Whether a thread of this process lowered by `nice` can be raised back (root,
/// `CAP_SYS_NICE`, or an `RLIMIT_NICE` that allows it); tried once on a thread of its
/// own, so no thread of the process is left lowered.
pub(crate) fn can_restore(nice: u8) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::sync::OnceLock;
        static CAN: OnceLock<bool> = OnceLock::new();
        nice == 0
            || *CAN.get_or_init(|| {
                std::thread::Builder::new()
                    .name("nice-check".into())
                    .spawn(move || match lower(nice) {
                        Ok(Some((tid, was))) => {
                            set_priority(tid, was).is_ok() && priority_of(tid) == Some(was)
                        }
                        _ => false,
                    })
                    .ok()
                    .and_then(|t| t.join().ok())
                    .unwrap_or(false)
            })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

#[cfg(target_os = "linux")]
fn this_tid() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

/// A thread's nice value (`getpriority` returns -1 both as a value and as an error:
/// errno tells them apart).
#[cfg(target_os = "linux")]
fn priority_of(tid: libc::id_t) -> Option<i32> {
    // SAFETY: plain system calls on a thread id.
    let value = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid)
    };
    (value != -1 || std::io::Error::last_os_error().raw_os_error() == Some(0)).then_some(value)
}

/// Set a thread's nice value.
#[cfg(target_os = "linux")]
fn set_priority(tid: libc::id_t, nice: i32) -> std::io::Result<()> {
    // SAFETY: a plain system call on a thread id of this process.
    match unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn lowers_only_the_calling_thread() {
        let nice_of = |tid: libc::id_t| {
            // SAFETY: a read of a thread's own priority.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) }
        };
        // SAFETY: gettid has no preconditions.
        let main = unsafe { libc::gettid() } as libc::id_t;
        let before = nice_of(main);
        let (inside, expected) = std::thread::spawn(move || {
            super::lower_this_thread(3);
            // SAFETY: as above.
            let me = unsafe { libc::gettid() } as libc::id_t;
            (nice_of(me), (before + 3).min(19))
        })
        .join()
        .unwrap();
        assert_eq!(inside, expected);
        assert_eq!(nice_of(main), before, "the calling thread only");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn lowered_for_a_while_then_given_back_where_allowed() {
        let can = super::can_restore(5);
        let (before, during, after) = std::thread::spawn(move || {
            let tid = super::this_tid();
            let before = super::priority_of(tid).unwrap();
            let during = {
                let _l = super::Lowered::this_thread(if can { 5 } else { 0 });
                super::priority_of(tid).unwrap()
            };
            (before, during, super::priority_of(tid).unwrap())
        })
        .join()
        .unwrap();
        if can {
            assert_eq!(during, (before + 5).min(19));
        } else {
            assert_eq!(
                during, before,
                "not lowered where it could not be given back"
            );
        }
        assert_eq!(after, before, "given back");
    }
}
