//! A member's health state and the only way it changes: one compare-and-swap along an
//! allowed edge, from the state the caller saw.

use std::sync::atomic::{AtomicU8, Ordering};

/// A member's health.
///
/// ```text
///  Down ──start-up ok──▶ Up ──device error──▶ Down
///   │                   │  ──call hung─────▶ Fenced
///   │                   ▲
///   │                   └──attempt ok── Recovering ◀──supervisor── Down | Fenced
///   │                         attempt failed or hung ──▶ Down
///   └──wrong PIN, other key──▶ Refused ◀──permanent error── Recovering
///                                 │
///   Down ◀──a reload asks again───┘   (not after a wrong PIN: the same PIN again
///                                      would only count against the token's tries)
/// ```
///
/// Invariant: a state changes only by `StateCell::transition`, a compare-and-swap from
/// the state its caller saw along one of the edges drawn above (`may_become`); a caller whose
/// swap fails did not make the change and must not act as if it had. So exactly one
/// caller takes a member out of rotation (the first to see its failure), a recovery
/// attempt is the only writer while the member is `Recovering`, and `Refused` is left
/// only when a reload keeps the member and asks for it to be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemberState {
    /// In rotation.
    Up = 0,
    /// A call hung: its threads are abandoned, no work goes to it.
    Fenced = 1,
    /// A device-level error, or it could not be brought up.
    Down = 2,
    /// A recovery attempt is running.
    Recovering = 3,
    /// Never used: wrong PIN, or a key that differs from the certificate's.
    Refused = 4,
}

impl MemberState {
    fn from_u8(v: u8) -> MemberState {
        match v {
            0 => MemberState::Up,
            1 => MemberState::Fenced,
            2 => MemberState::Down,
            3 => MemberState::Recovering,
            _ => MemberState::Refused,
        }
    }

    /// Lower-case name for logs and `/readyz`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Up => "up",
            MemberState::Fenced => "fenced",
            MemberState::Down => "down",
            MemberState::Recovering => "recovering",
            MemberState::Refused => "refused",
        }
    }

    /// The edges of the state machine drawn on [`MemberState`].
    pub(crate) fn may_become(self, to: MemberState) -> bool {
        use MemberState::*;
        matches!(
            (self, to),
            // A failure seen on an up member.
            (Up, Down | Fenced)
            // Start-up (before the supervisor runs) puts a member in rotation or refuses it.
            | (Down, Up | Refused)
            // The supervisor starts a recovery attempt.
            | (Down | Fenced, Recovering)
            // The attempt's owner ends it.
            | (Recovering, Up | Down | Refused)
            // A reload that keeps the member tries it again.
            | (Refused, Down)
        )
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A member's state, changed only by compare-and-swap (see [`MemberState`]).
#[derive(Debug)]
pub(crate) struct StateCell(AtomicU8);

impl StateCell {
    pub(crate) fn new(state: MemberState) -> StateCell {
        StateCell(AtomicU8::new(state as u8))
    }

    pub(crate) fn get(&self) -> MemberState {
        MemberState::from_u8(self.0.load(Ordering::Acquire))
    }

    /// `from` → `to` if the state is still `from` and the edge is allowed; otherwise
    /// nothing changes and the state found is returned.
    pub(crate) fn transition(&self, from: MemberState, to: MemberState) -> Result<(), MemberState> {
        if !from.may_become(to) {
            return Err(self.get());
        }
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(drop)
            .map_err(MemberState::from_u8)
    }
}

#[cfg(test)]
mod tests {
    use super::MemberState::*;
    use super::*;

    const ALL: [MemberState; 5] = [Up, Fenced, Down, Recovering, Refused];

    #[test]
    fn allowed_edges_change_the_state() {
        for (from, to) in [
            (Up, Down),
            (Up, Fenced),
            (Down, Up),
            (Down, Refused),
            (Down, Recovering),
            (Fenced, Recovering),
            (Recovering, Up),
            (Recovering, Down),
            (Recovering, Refused),
            (Refused, Down),
        ] {
            let cell = StateCell::new(from);
            assert_eq!(cell.transition(from, to), Ok(()), "{from} → {to}");
            assert_eq!(cell.get(), to);
        }
    }

    #[test]
    fn edges_not_drawn_are_refused() {
        let allowed = ALL
            .iter()
            .flat_map(|&f| ALL.iter().map(move |&t| (f, t)))
            .filter(|(f, t)| f.may_become(*t))
            .count();
        assert_eq!(allowed, 10);
        for from in ALL {
            for to in ALL.into_iter().filter(|t| !from.may_become(*t)) {
                let cell = StateCell::new(from);
                assert_eq!(cell.transition(from, to), Err(from), "{from} → {to}");
                assert_eq!(cell.get(), from);
            }
        }
        // Refused is left only for Down (a reload); a fenced member is never put
        // straight back.
        assert!(ALL.iter().all(|t| !Refused.may_become(*t) || *t == Down));
        assert!(!Fenced.may_become(Up));
    }

    #[test]
    fn taking_out_a_recovering_member_is_refused_and_keeps_recovering() {
        // The old swap-then-restore wrote `Down` back over a `Recovering` set meanwhile.
        let cell = StateCell::new(Recovering);
        assert_eq!(cell.transition(Up, Down), Err(Recovering));
        assert_eq!(cell.transition(Up, Fenced), Err(Recovering));
        assert_eq!(cell.get(), Recovering);
    }

    #[test]
    fn only_the_first_of_two_observers_takes_a_member_out() {
        let cell = StateCell::new(Up);
        assert_eq!(cell.transition(Up, Fenced), Ok(()));
        assert_eq!(cell.transition(Up, Down), Err(Fenced));
        assert_eq!(cell.get(), Fenced);
    }
}
