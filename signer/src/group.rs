//! An HA group: members in a primary and a standby region holding one key, and what the
//! group does with them. Each job has its own file:
//!
//! - `start`: bring every member up in parallel (bounded in time), take the reference
//!   key, start the supervisor.
//! - `select`: which member signs next (least loaded by in-flight ÷ capacity; the
//!   standby region only when the primaries cannot serve).
//! - `failover`: one signature with retry on other members within its deadline: again
//!   elsewhere after a device error or a timeout, never after an error about the request.
//! - `supervise`: the supervisor thread: fence members with a hung call, probe healthy
//!   ones, bring lost ones back into rotation without a restart.
//!
//! Members reach their HSM through a [`Backend`](crate::backend::Backend), so these
//! jobs are unit-tested over a fake one.
//!
//! ```text
//! sign() ─pick─▶ least loaded primary member (in-flight ÷ capacity) ─queue─▶ its threads
//!    │ device error: member down, retry elsewhere │ no answer by the op deadline:
//!    │                                           │ fence if a call hangs, retry elsewhere
//!    └─ standby region only when no primary member is up (or, if configured, all are full)
//! supervisor (50 ms tick): fence hung calls · probe up members · recover down/fenced ones
//! ```

mod failover;
mod select;
mod start;
mod supervise;

#[cfg(test)]
pub(crate) use start::Supervisor;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::SignatureScheme;

use crate::admission::Limiter;
use crate::member::{Member, MemberState};
use crate::pool::{ExpectedKey, GroupSettings};
use crate::token::KeyKind;

/// The longest wait between two recovery attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A running group.
pub(crate) struct Group {
    pub(crate) settings: GroupSettings,
    pub(crate) members: Vec<Arc<Member>>,
    pub(crate) expected: ExpectedKey,
    pub(crate) schemes: Vec<SignatureScheme>,
    pub(crate) kind: KeyKind,
    pub(crate) key_name: String,
    pub(crate) token_label: String,
    stop: AtomicBool,
    last_probe: Mutex<Instant>,
    /// Admission control of the full handshakes this group signs.
    pub(crate) limiter: Arc<Limiter>,
    /// Unique in the process: which group a handshake job on a signer thread signs for.
    pub(crate) id: u64,
}

impl Group {
    /// "hsm-a up; hsm-b down (CKR_DEVICE_ERROR…)", for errors and `/readyz`.
    pub(crate) fn describe_members(&self) -> String {
        self.members
            .iter()
            .map(|m| match m.state() {
                MemberState::Up => format!("{} up", m.name()),
                s => format!("{} {} ({})", m.name(), s.as_str(), m.last_error()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Which members count toward the group's capacity now: up, and primary — or
    /// standby while no primary member is up (or when the standby takes overflow).
    pub(crate) fn serving(&self) -> Vec<bool> {
        let members: Vec<(bool, bool)> = self
            .members
            .iter()
            .map(|m| (m.primary, m.state() == MemberState::Up))
            .collect();
        select::serving(&members, self.settings.standby_when_saturated)
    }

    /// Signatures/s the serving members can make, and how many sessions they have.
    pub(crate) fn serving_capacity(&self) -> (f64, usize) {
        self.members
            .iter()
            .zip(self.serving())
            .filter(|(_, serving)| *serving)
            .fold((0.0, 0), |(c, s), (m, _)| {
                (c + m.capacity(), s + m.threads())
            })
    }

    /// At least one member can sign.
    pub(crate) fn ready(&self) -> bool {
        self.members.iter().any(|m| m.state() == MemberState::Up)
    }

    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.shutdown();
        // Close every member's queue: idle threads end, close their sessions and
        // release their module instances (see `wait_for_workers`).
        for member in &self.members {
            member.retire_for_shutdown();
        }
    }
}
