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
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as libc::id_t;
        // getpriority returns -1 both as a value and as an error: clear errno first.
        // SAFETY: plain system calls on this thread's own id.
        let current = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, tid)
        };
        if current == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0) {
            tracing::debug!(error = %std::io::Error::last_os_error(), "getpriority failed");
            return;
        }
        let wanted = (current + i32::from(nice)).min(19);
        // SAFETY: as above.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, wanted) } != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), wanted, "setpriority failed");
        }
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
}
