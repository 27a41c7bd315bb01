#!/usr/bin/env bash
# Failover under load against the HSM lab: four SoftHSM tokens with the same key, each
# behind its own p11-kit server (benches/hsm-lab/lab.sh), hsmgate configured from
# deploy/examples/ha-lab.toml (hsm-a, hsm-b primary; hsm-c, hsm-d standby), and a steady
# full-handshake load from hsmgate-load. While the load runs:
#   SIGKILL hsm-a, restart it          (recovered_s: restart → hsm-a's first signature)
#   SIGSTOP hsm-b, SIGCONT it          (fenced, then back)
#   SIGKILL hsm-a and hsm-b, restart   (the standby region serves meanwhile)
# Ends with one line:  handshakes=N failed=F recovered_s=S
# Knobs: HSM_LAB (default benches/hsm-lab), LAB_RUN (lab dir, default a temp dir), CONNS (8).
# Uses 127.0.0.1 ports 9443 (hsmgate), 9901 (admin), 8080 (echo upstream).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LAB=${HSM_LAB:-$ROOT/benches/hsm-lab}/lab.sh
[[ -x "$LAB" ]] || { echo "needs benches/hsm-lab/lab.sh (or HSM_LAB=DIR)" >&2; exit 1; }
for t in curl python3; do command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }; done
for port in 9443 9901 8080; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is busy" >&2; exit 1; fi
done
CONNS=${CONNS:-8}
RUN=${LAB_RUN:-$(mktemp -d -t hsmgate-lab.XXXXXX)}
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  LAB_DIR="$RUN" "$LAB" down >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "building (release)…" >&2
(cd "$ROOT" && cargo build --release -q -p hsmgate-proxy -p hsmgate-benches)
LAB_DIR="$RUN" "$LAB" up "$RUN" 4 >/dev/null
# shellcheck disable=SC1091
. "$RUN/client.env"
printf '%s' "$LAB_PIN" >"$RUN/pin"
sed -e "s|@P11_CLIENT@|$P11_CLIENT|g" -e "s|@HSM_A_ADDR@|$HSM_A_ADDR|g" -e "s|@HSM_B_ADDR@|$HSM_B_ADDR|g" \
    -e "s|@HSM_C_ADDR@|$HSM_C_ADDR|g" -e "s|@HSM_D_ADDR@|$HSM_D_ADDR|g" -e "s|@LAB_DIR@|$LAB_DIR|g" \
    -e "s|@PIN_FILE@|$RUN/pin|g" "$ROOT/deploy/examples/ha-lab.toml" >"$RUN/hsmgate.toml"

python3 -c '
import http.server, socketserver
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "3"); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.request_queue_size = 1024   # the default backlog of 5 refuses bursts
socketserver.ThreadingTCPServer.daemon_threads = True
socketserver.ThreadingTCPServer(("127.0.0.1", 8080), H).serve_forever()' &
PIDS+=($!)
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done
"$ROOT/target/release/hsmgate" -c "$RUN/hsmgate.toml" 2>"$RUN/hsmgate.log" &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf -o /dev/null http://127.0.0.1:9901/readyz && break; sleep 0.1; done
curl -sf http://127.0.0.1:9901/readyz >/dev/null || { echo "hsmgate is not ready:" >&2; cat "$RUN/hsmgate.log" >&2; exit 1; }

DURATION=24
"$ROOT/target/release/hsmgate-load" --mode handshake -c "$CONNS" --warmup 0s -d "${DURATION}s" --insecure --json \
  https://127.0.0.1:9443/ >"$RUN/load.json" 2>"$RUN/load.err" &
LOAD=$!
PIDS+=($LOAD)

ok_count() { # ok signatures of member $1 so far
  curl -s http://127.0.0.1:9901/metrics | awk -v m="member=\"$1\"" '/^hsmgate_signer_operations_total\{/ && index($0, m) && index($0, "result=\"ok\"") {print $2}' | head -1
}
step() { echo "t=$(( $(date +%s) - T0 ))s $*" >&2; }
T0=$(date +%s)
sleep 3; step "kill hsm-a";            LAB_DIR="$RUN" "$LAB" kill hsm-a >/dev/null
sleep 2; step "restart hsm-a";         before=$(ok_count hsm-a); LAB_DIR="$RUN" "$LAB" restart hsm-a >/dev/null
t_restart=$(date +%s.%N); recovered=""
for _ in $(seq 1 200); do
  now=$(ok_count hsm-a)
  if [[ -n "$now" && "$now" != "$before" ]]; then recovered=$(awk -v a="$t_restart" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b - a}'); break; fi
  sleep 0.05
done
step "hsm-a signing again after ${recovered:-never}s"
sleep 2; step "stop hsm-b";            LAB_DIR="$RUN" "$LAB" stop hsm-b >/dev/null
sleep 2; step "cont hsm-b";            LAB_DIR="$RUN" "$LAB" cont hsm-b >/dev/null
sleep 2; step "kill hsm-a and hsm-b";  LAB_DIR="$RUN" "$LAB" kill hsm-a >/dev/null; LAB_DIR="$RUN" "$LAB" kill hsm-b >/dev/null
sleep 3; step "restart hsm-a and hsm-b"; LAB_DIR="$RUN" "$LAB" restart hsm-a >/dev/null; LAB_DIR="$RUN" "$LAB" restart hsm-b >/dev/null
wait "$LOAD" || true
step "readyz: $(curl -s http://127.0.0.1:9901/readyz | tr '\n' ' ')"
python3 - "$RUN/load.json" "${recovered:-nan}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
failed = r.get("error_total", sum(r.get("errors", {}).values()))
print(f"handshakes={r['ok'] + failed} failed={failed} recovered_s={sys.argv[2]}")
if failed:
    print("errors:", r.get("errors"), file=sys.stderr)
PY
