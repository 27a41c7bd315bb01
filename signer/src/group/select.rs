//! Member selection: which member signs next, and which members count toward the
//! group's capacity. Pure functions over what the group knows of each member, so the
//! rules are tested without threads or HSMs.
//!
//! - Least loaded first, load being (in flight + 1) ÷ capacity: a member twice as fast
//!   gets about twice the work.
//! - The primary region first; the standby region only when no primary member is up,
//!   or (with `standby_when_saturated`) when a primary member's queue was full.

use std::sync::Arc;

use rustls::SignatureScheme;

use super::Group;
use crate::backend::Generation;
use crate::member::MemberState;

/// What selection knows of one member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    /// In the primary region.
    pub(crate) primary: bool,
    /// Up (in rotation).
    pub(crate) up: bool,
    /// Up, able to make the scheme, and not tried yet for this signature.
    pub(crate) eligible: bool,
    /// Signatures queued or being signed on it.
    pub(crate) in_flight: usize,
    /// Signatures/s it can make (0: not known).
    pub(crate) capacity: f64,
}

/// Whether the standby region may be used for this attempt.
pub(crate) fn standby_allowed(
    members: &[Candidate],
    when_saturated: bool,
    saturated: bool,
) -> bool {
    let primary_up = members.iter().any(|m| m.primary && m.up);
    !primary_up || (when_saturated && saturated)
}

/// The member to try next: eligible, primary before standby, least loaded first.
pub(crate) fn choose(members: &[Candidate], standby_ok: bool) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.eligible && (m.primary || standby_ok))
        .map(|(i, m)| {
            let load = (m.in_flight as f64 + 1.0) / m.capacity.max(1.0);
            (i, !m.primary, load)
        })
        .min_by(|a, b| {
            (a.1, a.2)
                .partial_cmp(&(b.1, b.2))
                .unwrap_or(std::cmp::Ordering::Equal)
        })
        .map(|(i, _, _)| i)
}

/// Which members count toward capacity, from each one's (primary, up): up, and
/// primary, or standby while no primary member is up (or when the standby takes
/// overflow).
pub(crate) fn serving(members: &[(bool, bool)], standby_when_saturated: bool) -> Vec<bool> {
    let primary_up = members.iter().any(|&(primary, up)| primary && up);
    members
        .iter()
        .map(|&(primary, up)| up && (primary || !primary_up || standby_when_saturated))
        .collect()
}

impl Group {
    /// The member to try next for `scheme` and its generation (see [`choose`]).
    pub(super) fn pick(
        &self,
        scheme: SignatureScheme,
        tried: &[bool],
        saturated: bool,
    ) -> Option<(usize, Arc<dyn Generation>)> {
        let lives: Vec<Option<Arc<dyn Generation>>> =
            self.members.iter().map(|m| m.live()).collect();
        let candidates: Vec<Candidate> = self
            .members
            .iter()
            .zip(&lives)
            .zip(tried)
            .map(|((m, live), tried)| Candidate {
                primary: m.primary,
                up: m.state() == MemberState::Up,
                eligible: !tried && live.as_ref().is_some_and(|l| l.can_sign(scheme)),
                in_flight: live.as_ref().map_or(0, |l| l.in_flight()),
                capacity: m.capacity(),
            })
            .collect();
        let standby_ok =
            standby_allowed(&candidates, self.settings.standby_when_saturated, saturated);
        let i = choose(&candidates, standby_ok)?;
        Some((i, lives[i].clone()?))
    }

    /// Run a handshake's signing step (`offload`) with the member that would sign now:
    /// on this runtime thread if one can be spared (`on_runtime`), else queued for its
    /// signer threads, if it runs such jobs; else give it back.
    pub(crate) fn submit_job(&self, job: crate::offload::Job) -> Result<(), crate::offload::Job> {
        let Some(&scheme) = self.schemes.first() else {
            return Err(job);
        };
        match self.pick(scheme, &vec![false; self.members.len()], false) {
            Some((_, live)) => live.run_job_here(job).or_else(|job| live.submit_job(job)),
            None => Err(job),
        }
    }

    /// Whether a member in rotation runs handshake jobs (cheap: asked per handshake).
    pub(crate) fn runs_jobs(&self) -> bool {
        self.members
            .iter()
            .any(|m| m.live().is_some_and(|l| l.runs_jobs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(primary: bool, in_flight: usize, capacity: f64) -> Candidate {
        Candidate {
            primary,
            up: true,
            eligible: true,
            in_flight,
            capacity,
        }
    }

    #[test]
    fn the_least_loaded_member_by_capacity_signs() {
        // 3 in flight on a 3000/s member is a lighter load than 1 on a 1000/s one.
        let members = [member(true, 1, 1000.0), member(true, 3, 3000.0)];
        assert_eq!(choose(&members, false), Some(1));
        let members = [member(true, 1, 1000.0), member(true, 6, 3000.0)];
        assert_eq!(choose(&members, false), Some(0));
    }

    #[test]
    fn load_spreads_in_proportion_to_capacity() {
        let mut members = [member(true, 0, 1000.0), member(true, 0, 3000.0)];
        let mut counts = [0; 2];
        for _ in 0..400 {
            let i = choose(&members, false).expect("a member");
            counts[i] += 1;
            members[i].in_flight += 1;
        }
        assert_eq!(counts[0] + counts[1], 400);
        assert!((95..=105).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn members_tried_or_unable_are_skipped() {
        let mut members = [member(true, 0, 1000.0), member(true, 50, 1000.0)];
        members[0].eligible = false;
        assert_eq!(choose(&members, false), Some(1));
        members[1].eligible = false;
        assert_eq!(choose(&members, true), None);
    }

    #[test]
    fn standby_only_when_no_primary_is_up() {
        // An idle standby member is not used while a busy primary is up.
        let mut members = [member(true, 100, 1000.0), member(false, 0, 1000.0)];
        assert!(!standby_allowed(&members, false, false));
        assert_eq!(choose(&members, false), Some(0));
        // A primary that is up but already tried still keeps the standby out...
        members[0].eligible = false;
        assert!(!standby_allowed(&members, false, false));
        assert_eq!(choose(&members, false), None);
        // ...until it is down.
        members[0].up = false;
        assert!(standby_allowed(&members, false, false));
        assert_eq!(choose(&members, true), Some(1));
    }

    #[test]
    fn standby_takes_overflow_only_when_configured() {
        let mut members = [member(true, 10, 1000.0), member(false, 0, 1000.0)];
        members[0].eligible = false; // its queue was full
        assert!(!standby_allowed(&members, false, true));
        assert!(standby_allowed(&members, true, true));
        assert!(!standby_allowed(&members, true, false));
    }

    #[test]
    fn primaries_are_preferred_even_when_busier() {
        let members = [member(false, 0, 10_000.0), member(true, 20, 100.0)];
        assert_eq!(choose(&members, true), Some(1));
    }

    #[test]
    fn serving_members_follow_the_standby_rule() {
        // primary up: only it serves.
        assert_eq!(
            serving(&[(true, true), (false, true)], false),
            [true, false]
        );
        // primary down: the standby serves.
        assert_eq!(
            serving(&[(true, false), (false, true)], false),
            [false, true]
        );
        // overflow to standby configured: both serve.
        assert_eq!(serving(&[(true, true), (false, true)], true), [true, true]);
        // nothing up: nothing serves.
        assert_eq!(
            serving(&[(true, false), (false, false)], true),
            [false, false]
        );
    }
}
