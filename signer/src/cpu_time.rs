//! The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`, user and system): how the
//! `inline` probe tells a token that computes in this process from one that waits for
//! another process or a network, and how each signature's own CPU cost is measured
//! (`hsmgate_signer_call_cpu_seconds`, recorded by `worker::sign_marked`).
#![allow(unsafe_code)]

use std::time::Duration;

/// The CPU time the calling thread has used (user and system; zero if the clock cannot
/// be read).
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn thread_cpu_time_counts_this_threads_work_only() {
        let c0 = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(20));
        let slept = thread_cpu_time().saturating_sub(c0);
        assert!(
            slept < Duration::from_millis(10),
            "sleeping is not CPU: {slept:?}"
        );
        let c1 = thread_cpu_time();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let spun = thread_cpu_time().saturating_sub(c1);
        assert!(
            spun >= Duration::from_millis(5),
            "spinning is CPU: {spun:?}"
        );
    }
}
