//! The door of a TLS address: what a ClientHello gets before any crypto, decided
//! without waiting ([`decide`]): refused (`ssl_reject_handshake`), shed by admission
//! control, let through as a resumption attempt, admitted, or given a place in the
//! admission queue.
//!
//! While admission control would not admit a full handshake at once (every slot taken,
//! a queue, or no capacity), the accept loop asks first ([`at_accept`]): where the
//! ClientHello is already in the socket when the connection is accepted (always, once
//! the proxy falls behind), a handshake to shed or refuse gets its alert and its close
//! right there, with no task, no timer and no wait behind the runtime's other work; so
//! shedding stays prompt exactly when the proxy is overloaded. Any other connection
//! goes to its task with what was read and decided ([`Early`]), and the task finishes
//! the same steps (`conn::handshake`); when admission control has room, the accept loop
//! only accepts, and each task reads its own ClientHello.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hsmgate_signer::{Entry, Limiter, Permit, ShedReason, SignerPool, Ticket};
use tokio::net::TcpStream;

use crate::generation::{ServerTls, TlsListener};
use crate::hello::{self, Answered, FirstRead, Hello, HelloKind};
use crate::metrics::{self, HandshakeResult};

/// What the door decided for one ClientHello.
pub(crate) enum Verdict {
    /// A server with `ssl_reject_handshake on`: `unrecognized_name`, then close.
    Reject,
    /// A downgrade signalled with `TLS_FALLBACK_SCSV` (RFC 7507): `inappropriate_fallback`,
    /// then close.
    Fallback,
    /// Shed by admission control: `internal_error`, then close.
    Shed(ShedReason),
    /// On to the handshake.
    Go(Go),
}

/// A handshake let through the door.
pub(crate) struct Go {
    /// The server the ClientHello selected (its TLS settings).
    pub(crate) server: ServerTls,
    /// The signer pool of the certificate it will get, if a token's.
    pub(crate) pool: Option<SignerPool>,
    /// A full handshake or a resumption attempt.
    pub(crate) kind: HelloKind,
    /// What admission control gave it; `None`: a full handshake the accept loop did
    /// not shed, which its task admits ([`admit`]).
    pub(crate) pass: Option<Pass>,
    /// When the door let it through (the handshake's duration counts from here).
    pub(crate) started: Instant,
}

/// Admission control's answer to a handshake let through.
pub(crate) enum Pass {
    /// No limiter (a key from a file, or admission off for its pool).
    Open,
    /// A resumption attempt: never throttled, no permit.
    Resumption,
    /// A full handshake with its slot.
    Admitted(Permit),
    /// A full handshake with a place in the queue (it waits on its own task).
    Wait(Ticket),
}

/// The door's decision for `hello`, received on a connection accepted at `accepted_at`.
/// Counts what it decides (admitted, resumed or shed, in admission's counters). In the
/// accept loop (`at_accept`), a full handshake is only shed or not: admitting it (the
/// door's check of the queue in front of it, and its slot) is left to its task, since
/// a slot taken here would be held while the task waits to run.
pub(crate) fn decide(
    listener: &TlsListener,
    hello: &Hello,
    accepted_at: Instant,
    at_accept: bool,
) -> Verdict {
    let client_hello = hello.accepted.client_hello();
    if listener.resolver.rejects(&client_hello) {
        return Verdict::Reject;
    }
    let started = Instant::now();
    // The server the ClientHello selects sets the TLS settings (protocols, ciphers,
    // sessions) and, through its certificate, the signer pool that admits the handshake.
    let pool = (listener.resolver.choose(&client_hello)).and_then(|k| k.pool.clone());
    let server = listener.for_hello(&client_hello).clone();
    // The signal is looked for in rustls' parsed list first: the bytes are read only for
    // the rare ClientHello that carries it.
    let scsv =
        (client_hello.cipher_suites().iter()).any(|s| u16::from(*s) == hello::TLS_FALLBACK_SCSV);
    if scsv && hello::inappropriate_fallback(&hello.raw, server.tls13) {
        return Verdict::Fallback;
    }
    let kind = hello::classify(&hello.raw, server.tls13, |offer| {
        hello::server_knows(&server.config, offer)
    });
    // A ClientHello that offers no cipher suite of this server's fails in rustls before
    // any signature: not admitted (no slot, no `admitted` count for nothing).
    let hopeless = kind == HelloKind::Full && !offers_a_suite(&server.config, &client_hello);
    let pass = match pool.as_ref().map(|p| p.limiter()) {
        None => Some(Pass::Open),
        Some(_) if hopeless => Some(Pass::Open),
        Some(limiter) => match kind {
            // Counted as resumed when it has (`conn::handshake`): it may fall back.
            HelloKind::Resumption => Some(Pass::Resumption),
            HelloKind::Full if at_accept => match limiter.shed_now() {
                Ok(()) => None,
                Err(reason) => return Verdict::Shed(reason),
            },
            HelloKind::Full => match admit(limiter, hello.arrived, accepted_at) {
                Ok(pass) => Some(pass),
                Err(reason) => return Verdict::Shed(reason),
            },
        },
    };
    Verdict::Go(Go {
        server,
        pool,
        kind,
        pass,
        started,
    })
}

/// Whether `hello` offers a cipher suite `config` has.
fn offers_a_suite(config: &rustls::ServerConfig, hello: &rustls::server::ClientHello<'_>) -> bool {
    let ours = &config.crypto_provider().cipher_suites;
    (hello.cipher_suites().iter()).any(|offered| ours.iter().any(|s| s.suite() == *offered))
}

/// Admission of a full handshake whose ClientHello the kernel received at `arrived`
/// (where the listener timestamps) on a connection accepted at `accepted_at`.
pub(crate) fn admit(
    limiter: &Arc<Limiter>,
    arrived: Option<std::time::SystemTime>,
    accepted_at: Instant,
) -> Result<Pass, ShedReason> {
    // A standing queue in front of the door (the proxy saturated) sheds the late ones
    // before they take a slot. The wait counts from the kernel's receipt of the
    // ClientHello where the listener timestamps: the accept queue is part of the queue.
    let waited = crate::arrival::waited(arrived, accepted_at);
    limiter.door(waited.max(accepted_at.elapsed()))?;
    Ok(match limiter.enter()? {
        Entry::Admitted(permit) => Pass::Admitted(permit),
        Entry::Wait(ticket) => Pass::Wait(ticket),
    })
}

/// What the accept loop did with a connection.
pub(crate) enum AtAccept {
    /// Answered and closed (or left to the kernel to close): nothing more to do.
    Done,
    /// For the connection's task, with what was read and decided.
    Hand(Early),
}

/// What the accept loop hands a TLS connection's task.
pub(crate) enum Early {
    /// Nothing read yet.
    Nothing,
    /// The first bytes, not a whole ClientHello (or not one the door could judge).
    Read(FirstRead),
    /// A whole ClientHello and the door's verdict (boxed: rustls' view of the
    /// ClientHello is large).
    Decided(Box<(Hello, Verdict)>),
    /// Refused or shed, the alert begun: what is left of the close (counted when the
    /// alert is written).
    Closing(Answered, Refusal),
}

/// The accept loop's look at a new TLS connection (see the module documentation):
/// what is in the socket now, and, for a whole ClientHello, the door's verdict; a
/// refused or shed handshake is answered here without waiting.
pub(crate) fn at_accept(
    stream: &TcpStream,
    listener: &TlsListener,
    peer: SocketAddr,
    accepted_at: Instant,
) -> AtAccept {
    let Some(first) = hello::read_now(stream) else {
        return AtAccept::Hand(Early::Nothing);
    };
    let Some(whole) = hello::whole(&first) else {
        return AtAccept::Hand(Early::Read(first));
    };
    let refusal = match decide(listener, &whole, accepted_at, true) {
        Verdict::Reject => Refusal::reject(peer, &whole),
        Verdict::Fallback => Refusal::fallback(peer),
        Verdict::Shed(reason) => Refusal::shed(peer, reason),
        go => return AtAccept::Hand(Early::Decided(Box::new((whole, go)))),
    };
    match hello::answer_now(stream, refusal.alert) {
        Ok(Answered::Closed) | Err(_) => {
            refusal.answered(accepted_at);
            metrics::answered_at_accept(refusal.shed);
            AtAccept::Done
        }
        // Not all written, or the client still sends: its task finishes the close.
        Ok(state) => AtAccept::Hand(Early::Closing(state, refusal)),
    }
}

/// A handshake refused before any crypto: the alert it gets, and whether admission
/// control shed it (else `ssl_reject_handshake` refused it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    /// The alert record sent before the close.
    pub(crate) alert: &'static [u8],
    /// Shed (counted as `shed`), else refused (counted as `failed`).
    pub(crate) shed: bool,
}

impl Refusal {
    /// Shed by admission control (`internal_error`), logged.
    pub(crate) fn shed(peer: SocketAddr, reason: ShedReason) -> Refusal {
        tracing::debug!(%peer, %reason, "handshake shed");
        Refusal {
            alert: &hello::SHED_ALERT,
            shed: true,
        }
    }

    /// Refused by `ssl_reject_handshake` (`unrecognized_name`), logged.
    pub(crate) fn reject(peer: SocketAddr, hello: &Hello) -> Refusal {
        let sni = hello
            .accepted
            .client_hello()
            .server_name()
            .map(str::to_owned);
        tracing::debug!(%peer, ?sni, "handshake rejected (ssl_reject_handshake)");
        Refusal {
            alert: &hello::UNRECOGNIZED_NAME_ALERT,
            shed: false,
        }
    }

    /// A downgrade refused (`inappropriate_fallback`), logged.
    pub(crate) fn fallback(peer: SocketAddr) -> Refusal {
        tracing::debug!(%peer, "handshake refused: TLS_FALLBACK_SCSV from a client offering TLS 1.2 at most (RFC 7507)");
        Refusal {
            alert: &hello::INAPPROPRIATE_FALLBACK_ALERT,
            shed: false,
        }
    }

    /// Count it, its alert written (or failed).
    pub(crate) fn answered(self, accepted_at: Instant) {
        match self.shed {
            // Timed to the alert written, not to the client's close.
            true => metrics::handshake(
                HandshakeResult::Shed,
                "unknown",
                false,
                accepted_at.elapsed(),
            ),
            false => metrics::handshake(HandshakeResult::Failed, "unknown", false, Duration::ZERO),
        }
    }

    /// Send the alert and close (from the connection's task), then count it.
    pub(crate) async fn send(self, stream: &mut TcpStream, accepted_at: Instant) {
        let answered = || self.answered(accepted_at);
        let _ = hello::write_and_close(stream, self.alert, answered).await;
    }
}
