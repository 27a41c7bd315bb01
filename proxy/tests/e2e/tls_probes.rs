//! Hostile TLS (issue 10): malformed records and handshake messages written by hand over
//! a plain socket, and a TLS 1.2 renegotiation by openssl s_client. Each probe checks
//! the alert on the wire that RFC 8446 (or OpenSSL, for renegotiation) prescribes; the
//! encrypted TLS 1.3 ones are rustls' to answer, with third_party/rustls' patch (README,
//! "Known differences from nginx (TLS)").

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::raw::{Gate, upstream_in_range};
use crate::support::tls13::Tls13Probe;
use crate::support::tlsraw::{
    ALERT, APPLICATION_DATA, CCS, DECODE_ERROR, DECRYPT_ERROR, End, HANDSHAKE, NO_RENEGOTIATION,
    Offer, RECORD_OVERFLOW, UNEXPECTED_MESSAGE, client_hello, probe, read_answer, record, records,
};

const WAIT: Duration = Duration::from_secs(5);

fn gate() -> Gate {
    Gate::start(&[upstream_in_range("A")], "")
}

#[test]
fn malformed_records_before_the_handshake_get_their_alert() {
    let g = gate();
    let hello = client_hello(Offer::Tls13, 0);
    let (first, second) = hello.split_at(hello.len() / 2);
    let then_hello = |before: Vec<u8>| [before, record(HANDSHAKE, &hello)].concat();
    let probes: Vec<(&str, Vec<u8>, u8)> = vec![
        (
            "zero-length handshake record",
            then_hello(record(HANDSHAKE, &[])),
            UNEXPECTED_MESSAGE,
        ),
        (
            "content type 0",
            then_hello(record(0, &[22])),
            UNEXPECTED_MESSAGE,
        ),
        (
            "empty alert record",
            then_hello(record(ALERT, &[])),
            UNEXPECTED_MESSAGE,
        ),
        (
            "two-byte ChangeCipherSpec before the ClientHello",
            then_hello(record(CCS, &[1, 1])),
            UNEXPECTED_MESSAGE,
        ),
        (
            "application data inside the ClientHello",
            [
                record(HANDSHAKE, first),
                record(APPLICATION_DATA, b"hello"),
                record(HANDSHAKE, second),
            ]
            .concat(),
            UNEXPECTED_MESSAGE,
        ),
        (
            "ChangeCipherSpec inside the ClientHello",
            [
                record(HANDSHAKE, first),
                record(CCS, &[1]),
                record(HANDSHAKE, second),
            ]
            .concat(),
            UNEXPECTED_MESSAGE,
        ),
        (
            "16,531-byte plaintext record",
            record(HANDSHAKE, &client_hello(Offer::Tls13, 16_531)),
            RECORD_OVERFLOW,
        ),
        (
            "a Finished where the ClientHello goes",
            record(HANDSHAKE, &[&[20u8, 0, 0, 32][..], &[0; 32]].concat()),
            UNEXPECTED_MESSAGE,
        ),
        (
            "a ClientKeyExchange where the ClientHello goes",
            record(HANDSHAKE, &[16, 0, 0, 3, 2, 0, 0]),
            UNEXPECTED_MESSAGE,
        ),
        (
            "a HelloRequest where the ClientHello goes",
            record(HANDSHAKE, &[0, 0, 0, 0]),
            UNEXPECTED_MESSAGE,
        ),
    ];
    let mut wrong = Vec::new();
    for (name, bytes, want) in &probes {
        let answer = probe(g.addr, bytes, WAIT);
        if answer.alert() != Some((2, *want)) {
            wrong.push(format!(
                "{name}: want fatal alert {want}, got {:?} then {:?}",
                answer.alert(),
                answer.end
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n{}",
        wrong.join("\n"),
        g.server.log_text()
    );
    // Still serving.
    assert_eq!(
        g.h1(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").status,
        200
    );
}

/// A client that offers only TLS 1.1 (openssl s_client -tls1_1) gets `protocol_version`
/// (RFC 8446 Appendix D.2), as from nginx, not `handshake_failure`.
#[test]
fn a_tls11_client_gets_protocol_version() {
    let g = gate();
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-msg",
            "-connect",
        ])
        .arg(g.addr.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("openssl s_client");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("protocol version") || text.contains("protocol_version"),
        "{text}\n{}",
        g.server.log_text()
    );
}

#[test]
fn a_large_client_hello_over_several_records_is_answered() {
    let g = gate();
    // rustls buffers at most 64 KiB of a handshake message's records, headers included;
    // hsmgate joins the message and hands it over in 16 KiB records, so a ClientHello of
    // nearly 64 KiB is served however small its records are.
    for (size, max) in [
        (20_000, 16_384),
        (40_000, 4_096),
        (65_000, 16_384),
        (65_400, 512),
    ] {
        let hello = client_hello(Offer::Tls13, size);
        let answer = probe(
            g.addr,
            &records(HANDSHAKE, &hello, max),
            Duration::from_secs(2),
        );
        assert!(
            answer.server_hello(),
            "{size}-byte ClientHello in {max}-byte records: {:?} {:?}\n{}",
            answer.alert(),
            answer.end,
            g.server.log_text()
        );
    }
    // Beyond what rustls takes (a ClientHello's extensions are at most 64 KiB, so its
    // cipher suite list makes it larger): an alert and a clean close, not a reset.
    let mut hello = client_hello(Offer::Tls13, 65_400);
    let extra = 4_000;
    let suites_at = 4 + 2 + 32 + 1 + 32;
    let old = usize::from(u16::from_be_bytes([hello[suites_at], hello[suites_at + 1]]));
    let new = u16::try_from(old + extra).expect("suites");
    hello[suites_at..suites_at + 2].copy_from_slice(&new.to_be_bytes());
    hello.splice(suites_at + 2..suites_at + 2, vec![0x00; extra]);
    let body = u32::try_from(hello.len() - 4).expect("len").to_be_bytes();
    hello[1..4].copy_from_slice(&body[1..]);
    let answer = probe(g.addr, &records(HANDSHAKE, &hello, 16_384), WAIT);
    assert_eq!(
        answer.alert().map(|(level, _)| level),
        Some(2),
        "{answer:?}"
    );
    assert_ne!(answer.end, End::Reset, "{answer:?}");
}

/// TLS 1.2 (RFC 5246 §7.1: a ChangeCipherSpec is the single byte 1): a two-byte one is
/// a message of the wrong length, `decode_error`, as OpenSSL answers it too.
#[test]
fn a_two_byte_change_cipher_spec_in_tls12_gets_decode_error() {
    let g = gate();
    let mut s = std::net::TcpStream::connect(g.addr).expect("connect");
    s.write_all(&record(HANDSHAKE, &client_hello(Offer::Tls12, 0)))
        .expect("hello");
    let flight = read_answer(&mut s, Duration::from_secs(2));
    assert!(flight.server_hello(), "{flight:?}");
    s.write_all(&record(CCS, &[1, 1])).expect("ccs");
    let answer = read_answer(&mut s, WAIT);
    assert_eq!(answer.alert(), Some((2, DECODE_ERROR)), "{answer:?}");
}

/// openssl s_client over TLS 1.2, its `R` command after the handshake: the client must
/// hear the `no_renegotiation` warning (and not wait for its timeout).
#[test]
fn renegotiation_gets_no_renegotiation_on_the_wire() {
    let g = gate();
    let mut child = Command::new("openssl")
        .args(["s_client", "-tls1_2", "-msg", "-connect"])
        .arg(g.addr.to_string())
        .args(["-servername", "localhost", "-CAfile"])
        .arg(g.ca())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl (apt-get install openssl)");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let mut seen = Vec::new();
    let wait_for = |needle: &str, seen: &mut Vec<String>| -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    seen.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    };
    let mut stdin = child.stdin.take().expect("stdin");
    assert!(
        wait_for("Verify return code: 0", &mut seen),
        "handshake: {}",
        seen.join("\n")
    );
    stdin.write_all(b"R\n").expect("R");
    stdin.flush().expect("flush");
    let alerted = wait_for("no_renegotiation", &mut seen);
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        alerted,
        "no no_renegotiation alert (alert {NO_RENEGOTIATION}):\n{}\n{}",
        seen.join("\n"),
        g.server.log_text()
    );
    let line = seen
        .iter()
        .find(|l| l.contains("no_renegotiation"))
        .expect("seen");
    assert!(line.contains("<<<") && line.contains("warning"), "{line}");
}

/// A client that offers only P-521 for key exchange (as nginx on OpenSSL accepts). TLS
/// 1.3 only: in TLS 1.2 the client's groups also restrict the curve of the server's ECDSA
/// certificate (P-256 here), so OpenSSL itself refuses it ("wrong curve").
#[test]
fn a_client_offering_only_p521_completes_the_handshake() {
    let g = gate();
    let (ok, text) = s_client_groups(&g, "P-521");
    assert!(ok, "-tls1_3: {text}");
    assert!(
        text.contains("P-521") || text.contains("secp521r1"),
        "-tls1_3: {text}"
    );
}

/// `openssl s_client -tls1_3 -groups GROUPS` against `g`: whether the handshake
/// completed, and what openssl printed.
fn s_client_groups(g: &Gate, groups: &str) -> (bool, String) {
    let (ok, text) = s_client(g, &["-tls1_3", "-groups", groups, "-verify_return_error"]);
    (ok && text.contains("Server Temp Key"), text)
}

/// `ssl_ecdh_curve` (Mozilla's intermediate `X25519:prime256v1:secp384r1`) is the set
/// of key exchange groups offered, as in nginx: a client offering only P-521 fails, one
/// offering P-384 gets it.
#[test]
fn ssl_ecdh_curve_limits_the_key_exchange_groups() {
    let g = Gate::start(
        &[upstream_in_range("A")],
        "ssl_ecdh_curve X25519:prime256v1:secp384r1;",
    );
    let (ok, text) = s_client_groups(&g, "P-521");
    assert!(!ok, "P-521 is not in ssl_ecdh_curve: {text}");
    let (ok, text) = s_client_groups(&g, "P-384");
    assert!(
        ok && (text.contains("P-384") || text.contains("secp384r1")),
        "{text}"
    );
}

/// One malformed thing sent by the hand-written TLS 1.3 client after the server's
/// Finished, under the client's handshake keys.
struct Encrypted {
    name: &'static str,
    send: fn(&mut Tls13Probe),
    /// The alert RFC 8446 prescribes.
    rfc: u8,
}

/// TLS 1.3 records and handshake messages after the server's Finished (encrypted, or in
/// plaintext where the probe says so): hsmgate's answer is rustls', each the fatal alert
/// RFC 8446 prescribes. rustls 0.23.46 as published answered the zero-length, zero
/// content type and interleaved records with no alert or `decode_error`, and a Finished
/// of the wrong length with `decrypt_error` (third_party/rustls/PATCHES.md); the
/// ChangeCipherSpec, the wrong verify_data and the oversized record are controls.
#[test]
fn malformed_encrypted_tls13_records_get_the_rfc_8446_alert() {
    let g = gate();
    let probes = [
        Encrypted {
            name: "zero-length handshake record",
            send: |p| p.send(HANDSHAKE, &[], 0),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "zero-length handshake record with padding",
            send: |p| p.send(HANDSHAKE, &[], 5),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "zero-length handshake record in plaintext",
            send: |p| p.send_raw(&record(HANDSHAKE, &[])),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "zero content type (all-zero TLSInnerPlaintext)",
            send: |p| p.send_inner(&[0; 16]),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "empty alert",
            send: |p| p.send(ALERT, &[], 0),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "empty alert in plaintext",
            send: |p| p.send_raw(&record(ALERT, &[])),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "application data inside the Finished message",
            send: |p| {
                let fin = p.finished();
                p.send(HANDSHAKE, &fin[..10], 0);
                p.send(APPLICATION_DATA, b"interleaved", 0);
                p.send(HANDSHAKE, &fin[10..], 0);
            },
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "two-byte ChangeCipherSpec",
            send: |p| p.send_raw(&record(CCS, &[1, 1])),
            rfc: UNEXPECTED_MESSAGE,
        },
        Encrypted {
            name: "Finished padded with a zero byte",
            send: |p| {
                let mut body = p.finished()[4..].to_vec();
                body.push(0);
                p.send(HANDSHAKE, &Tls13Probe::message(20, &body), 0);
            },
            rfc: DECODE_ERROR,
        },
        Encrypted {
            name: "Finished truncated by a byte",
            send: |p| {
                let body = p.finished()[4..35].to_vec();
                p.send(HANDSHAKE, &Tls13Probe::message(20, &body), 0);
            },
            rfc: DECODE_ERROR,
        },
        Encrypted {
            name: "Finished of the right length with a wrong verify_data",
            send: |p| {
                let mut fin = p.finished();
                fin[10] ^= 1;
                p.send(HANDSHAKE, &fin, 0);
            },
            rfc: DECRYPT_ERROR,
        },
        Encrypted {
            name: "16,531-byte TLSInnerPlaintext",
            send: |p| p.send(HANDSHAKE, &[0x14; 16_530], 0),
            rfc: RECORD_OVERFLOW,
        },
    ];
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for probe in &probes {
        let mut p = Tls13Probe::connect(g.addr);
        (probe.send)(&mut p);
        let got = p.verdict();
        let want = Some(probe.rfc);
        report.push(format!(
            "{}: RFC {} / got {:?} then {:?}",
            probe.name, probe.rfc, got.alert, got.end
        ));
        if got.alert.map(|(_, d)| d) != want || got.alert.is_some_and(|(level, _)| level != 2) {
            wrong.push(format!("{}: want {want:?}", probe.name));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n\nall:\n{}\n{}",
        wrong.join("\n"),
        report.join("\n"),
        g.server.log_text()
    );
    // The control: the correct Finished completes the handshake (no alert).
    let mut p = Tls13Probe::connect(g.addr);
    let fin = p.finished();
    p.send(HANDSHAKE, &fin, 0);
    let got = p.verdict();
    assert_eq!(got.alert, None, "{got:?}");
}

/// `openssl s_client ARGS` against `g`: whether the handshake completed, and what
/// openssl printed.
fn s_client(g: &Gate, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .arg("-connect")
        .arg(g.addr.to_string())
        .args(["-servername", "localhost", "-CAfile"])
        .arg(g.ca())
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success() && text.contains("Verify return code: 0");
    (ok, text)
}

/// RFC 7507: a client signalling a fallback (`TLS_FALLBACK_SCSV`) with TLS 1.2 at most to
/// a server that speaks TLS 1.3 is refused with `inappropriate_fallback`, as OpenSSL (and
/// so nginx) refuses it; the signal with TLS 1.3 offered, TLS 1.2 without the signal, and
/// the signal to a server whose newest is TLS 1.2 all complete.
#[test]
fn tls_fallback_scsv_below_tls13_gets_inappropriate_fallback() {
    let g = gate();
    let (ok, text) = s_client(&g, &["-tls1_2", "-fallback_scsv"]);
    assert!(!ok, "a downgrade completed: {text}");
    assert!(text.contains("inappropriate fallback"), "{text}");
    for args in [&["-tls1_2"][..], &["-fallback_scsv"][..]] {
        let (ok, text) = s_client(&g, args);
        assert!(ok, "{args:?}: {text}");
    }
    let tls12 = Gate::start(&[upstream_in_range("A")], "ssl_protocols TLSv1.2;");
    let (ok, text) = s_client(&tls12, &["-tls1_2", "-fallback_scsv"]);
    assert!(ok, "ssl_protocols TLSv1.2: {text}");
}
