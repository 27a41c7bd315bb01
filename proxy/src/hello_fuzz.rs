//! Property tests of the ClientHello path (issue 10): [`classify`], [`check_record`] and
//! [`HelloReader`] (our record checks in front of rustls' `Acceptor`) on arbitrary
//! bytes, on mutated ClientHellos and on valid ClientHellos framed and delivered in
//! arbitrary pieces. No panic, no hang (every step consumes input), and a valid
//! ClientHello is accepted however it is cut. `PROPTEST_CASES` sets the number of cases
//! (256 by default; `scripts/fuzz.sh` runs more).

use proptest::prelude::*;

use super::*;

fn ext(out: &mut Vec<u8>, typ: u16, data: &[u8]) {
    out.extend_from_slice(&typ.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

/// A ClientHello handshake message rustls accepts: TLS 1.3 and 1.2, SNI `localhost`,
/// `pad` bytes of padding, a PSK extension if `psk`.
pub(super) fn client_hello(pad: usize, psk: bool) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5a; 32]);
    body.push(32);
    body.extend_from_slice(&[0x11; 32]);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0xc0, 0x2b]);
    body.extend_from_slice(&[1, 0]);
    let mut exts = Vec::new();
    ext(&mut exts, 0, b"\x00\x0c\x00\x00\x09localhost");
    ext(&mut exts, 10, &[0, 2, 0x00, 0x1d]);
    ext(&mut exts, 11, &[1, 0]);
    ext(&mut exts, 13, &[0, 2, 0x04, 0x03]);
    ext(&mut exts, 43, &[4, 0x03, 0x04, 0x03, 0x03]);
    ext(&mut exts, 45, &[1, 1]);
    let mut share = vec![0, 36, 0x00, 0x1d, 0, 32];
    share.extend_from_slice(&[0x42; 32]);
    ext(&mut exts, 51, &share);
    ext(&mut exts, 21, &vec![0; pad]);
    if psk {
        // pre_shared_key must be last: one identity, one 32-byte binder.
        let mut p = vec![0, 10, 0, 4, 1, 2, 3, 4, 0, 0, 0, 0];
        p.extend_from_slice(&[0, 33, 32]);
        p.extend_from_slice(&[7; 32]);
        ext(&mut exts, 41, &p);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![1u8];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    msg
}

pub(super) fn records(ct: u8, payload: &[u8], max: usize) -> Vec<u8> {
    payload
        .chunks(max)
        .flat_map(|c| {
            let mut r = vec![ct, 3, 3];
            r.extend_from_slice(&(c.len() as u16).to_be_bytes());
            r.extend_from_slice(c);
            r
        })
        .collect()
}

/// Push `bytes` in pieces of the given sizes (cycled) until a final step.
fn deliver(bytes: &[u8], cuts: &[usize]) -> Step {
    let mut reader = HelloReader::default();
    let mut at = 0;
    let mut i = 0;
    while at < bytes.len() {
        let n = cuts[i % cuts.len()].clamp(1, bytes.len() - at);
        i += 1;
        match reader.push(&bytes[at..at + n]) {
            Step::More => at += n,
            done => return done,
        }
    }
    Step::More
}

fn config() -> ProptestConfig {
    // PROPTEST_CASES overrides (proptest reads it for the default configuration).
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096),
                                   cuts in proptest::collection::vec(1usize..600, 1..8)) {
        let _ = classify(&bytes, true, |_| true);
        let _ = classify(&bytes, false, |_| true);
        if let Ok(Some(len)) = check_record(&bytes) {
            prop_assert!(len <= bytes.len());
        }
        if let Step::Refused { alert, .. } = deliver(&bytes, &cuts) {
            prop_assert!(alert.is_empty() || alert[0] == 0x15, "{alert:?}");
        }
    }

    #[test]
    fn a_valid_hello_is_accepted_however_it_is_framed_and_cut(
        pad in 0usize..40_000,
        psk in any::<bool>(),
        max in 1usize..=16_384,
        cuts in proptest::collection::vec(1usize..20_000, 1..8),
    ) {
        let hello = client_hello(pad, psk);
        let wire = records(22, &hello, max);
        // rustls buffers at most 64 KiB of a handshake message's records, which the
        // reader hands over in 16 KiB records.
        let fits = hello.len() + 5 * hello.len().div_ceil(16_384) <= 0xffff;
        match deliver(&wire, &cuts) {
            Step::Hello(accepted) => {
                let hello = accepted.client_hello();
                prop_assert_eq!(hello.server_name(), Some("localhost"));
            }
            Step::Refused { error, alert } => {
                prop_assert!(!fits, "refused a {}-byte hello: {error} {alert:?}", wire.len());
                prop_assert_eq!(alert.first(), Some(&0x15));
            }
            Step::More => prop_assert!(false, "a whole hello left waiting"),
        }
        let kind = if psk { HelloKind::Resumption } else { HelloKind::Full };
        prop_assert_eq!(classify(&wire, true, |o| o == Offer::Ticket(&[1, 2, 3, 4])), kind);
        prop_assert_eq!(classify(&wire, true, |_| false), HelloKind::Full);
    }

    #[test]
    fn a_mutated_hello_is_accepted_or_refused_never_panics(
        pad in 0usize..2_000,
        max in 1usize..=16_384,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut wire = records(22, &client_hello(pad, false), max);
        for (at, b) in &flips {
            let i = at.index(wire.len());
            wire[i] = *b;
        }
        wire.truncate(cut.index(wire.len()) + 1);
        wire.extend_from_slice(&extra);
        let _ = classify(&wire, true, |_| true);
        if let Step::Refused { alert, .. } = deliver(&wire, &[wire.len()]) {
            prop_assert!(alert.is_empty() || alert[0] == 0x15, "{alert:?}");
        }
    }
}
