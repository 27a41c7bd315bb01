#!/usr/bin/env bash
# instr.sh: user-space instructions per keep-alive request, counted by callgrind (issue
# 11, item 1). This machine's speed moves by a third within minutes and it has no
# hardware counters, so small changes to the request path cannot be told apart by req/s
# or CPU time; an instruction count can (it moves by about 1 % between runs).
#
# hsmgate runs under `valgrind --tool=callgrind --instr-atstart=no` with the nginx-syntax
# configuration of ka-split.sh (RSA-2048 key from a PEM file, `location /direct { return
# 200 }`, `location /` proxied to one separate nginx upstream with kept connections) and
# its admin listener. hsmgate-load keeps CONNS TLS 1.3 keep-alive connections busy on a
# PATH; once the handshakes are over (WARMUP), counting starts (`callgrind_control
# --instr=on`), and after DURATION it is dumped. Instructions ÷ the requests the server
# counted in between (`hsmgate_http_requests_total`, read at both ends) = instructions
# per request, the handshakes and start-up left out.
#
# Caveats: the kernel's part is not counted (ka-split.sh measures it); callgrind hides
# AVX-512, so glibc's memset and memcpy run their AVX2 loops (one instruction per 32
# bytes, where the hardware's `rep stosb`/`rep movsb` is one instruction for any size):
# large zeroing and copying weigh more here than in cycles.
#
# Servers: hsmgate (target/release/hsmgate), with HSMGATE_B=PATH hsmgate-b, and with
# NGINX=1 nginx (one process, `master_process off`, the same file but for its process
# directives; requests counted by `stub_status` on the admin port), alternating REPS times. Output: a markdown table (instructions per request, median and
# min..max, per server and path), printed and written to benches/results/instr-DATE.md.
# Knobs: REPS (2), PATHS ("direct proxy"), DURATION (6), WARMUP (2), CONNS (10),
# HSMGATE_B, NGINX=1, NO_BUILD=1, PORT_UP (18280), PORT_TLS (18643), PORT_ADMIN (18943), TOP=N
# (also print each run's N costliest functions, self cost), RESULTS, KEEP=1, VG_OPTS (more
# valgrind options, e.g. "--dump-instr=yes" to attribute costs to call sites with addr2line -i).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=instr
# shellcheck source=lib.sh
. "$HERE/lib.sh"
REPS=${REPS:-2} PATHS=${PATHS:-direct proxy} DURATION=${DURATION:-6} WARMUP=${WARMUP:-2}
CONNS=${CONNS:-10} TOP=${TOP:-0}
PORT_UP=${PORT_UP:-18280} PORT_TLS=${PORT_TLS:-18643} PORT_ADMIN=${PORT_ADMIN:-18943}
RESULTS=${RESULTS:-$ROOT/benches/results}
for t in nginx openssl curl valgrind callgrind_control callgrind_annotate; do
  command -v "$t" >/dev/null || die "missing: $t (apt-get install -y nginx openssl curl valgrind)"
done
ports_free "$PORT_UP" "$PORT_TLS" "$PORT_ADMIN"
build_release
SERVERS=(hsmgate)
if [[ -n ${HSMGATE_B:-} ]]; then
  [[ -x $HSMGATE_B ]] || die "HSMGATE_B=$HSMGATE_B is not an executable"
  SERVERS+=(hsmgate-b)
fi
[[ ${NGINX:-0} == 1 ]] && SERVERS+=(nginx)
make_work instr
mkdir -p "$WORK/logs" "$RESULTS"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/key.pem" -out "$WORK/cert.pem" \
  -days 2 -subj /CN=localhost 2>/dev/null
ka_upstream_conf >"$WORK/upstream.conf"
ka_proxy_conf "env HSMGATE_ADMIN=127.0.0.1:$PORT_ADMIN;
pid $WORK/hsmgate.pid;" >"$WORK/hsmgate.conf"
# nginx: the same file with nginx's process directives, and its request counter on the
# admin port (a server block added before the http block's end).
ka_proxy_conf "daemon off; master_process off; worker_processes 1; pid $WORK/nginx.pid;" |
  sed '$d' >"$WORK/nginx.conf"
cat >>"$WORK/nginx.conf" <<EOF
    server { listen 127.0.0.1:$PORT_ADMIN; location = /status { stub_status; } }
}
EOF
nginx -p "$WORK" -c "$WORK/upstream.conf" &
PIDS+=($!)
wait_port "$PORT_UP" "$WORK/logs"

# Requests the server has counted (nginx's stub_status counts the reading request too).
requests() {
  case $1 in
    nginx) curl -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/status" | awk 'NR == 3 {print $3 - 1}' ;;
    *) curl -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" | awk '/^hsmgate_http_requests_total/ {s += $NF} END {print s + 0}' ;;
  esac
}
RAW="$WORK/raw.tsv"
: >"$RAW"
run() { # SERVER PATH
  local server=$1 path=$2 bin=$HSMGATE vg load r0 r1 ir out=$WORK/cg.$1.$2.$REP
  [[ $server == hsmgate-b ]] && bin=$HSMGATE_B
  local cmd=("$bin" -c "$WORK/hsmgate.conf")
  [[ $server == nginx ]] && cmd=(nginx -p "$WORK" -c "$WORK/nginx.conf")
  # shellcheck disable=SC2086 # VG_OPTS: more valgrind options, word-split on purpose
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" ${VG_OPTS:-} \
    "${cmd[@]}" >"$WORK/logs/$server.vg" 2>&1 &
  vg=$!
  PIDS+=("$vg")
  local _
  for _ in $(seq 1 300); do curl -sfk "https://127.0.0.1:$PORT_TLS/direct" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sfk "https://127.0.0.1:$PORT_TLS/$path" >/dev/null || die "$server: /$path does not answer (logs in $WORK/logs)"
  "$LOAD" -k -t 1 --json --mode keepalive --tls 1.3 -c "$CONNS" -d "$((WARMUP + DURATION + 2))s" \
    "https://127.0.0.1:$PORT_TLS/$path" >"$WORK/load.json" 2>"$WORK/load.err" &
  load=$!
  sleep "$WARMUP"
  callgrind_control --instr=on "$vg" >/dev/null
  r0=$(requests "$server")
  sleep "$DURATION"
  r1=$(requests "$server")
  callgrind_control --dump "$vg" >/dev/null
  wait "$load" || { cat "$WORK/load.err" >&2; die "hsmgate-load failed against $server /$path"; }
  kill -TERM "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  PIDS=("${PIDS[0]}")
  ir=$(awk '/^summary:/ {print $2}' "$out".1)
  ((r1 > r0)) || die "$server /$path: no requests counted"
  printf '%s\t%s\t%s\t%s\t%s\n' "$server" "$path" "$REP" "$((r1 - r0))" "$((ir / (r1 - r0)))" >>"$RAW"
  say "  $(tail -1 "$RAW")"
  if ((TOP > 0)); then
    callgrind_annotate --inclusive=no "$out".1 2>/dev/null | awk '/file:function/ {go=1; next} go && NF' |
      head -n "$TOP" | cut -c1-160 >&2
  fi
}

say "$REPS rep(s); paths: $PATHS; $CONNS connections; counting ${DURATION}s after ${WARMUP}s"
for REP in $(seq 1 "$REPS"); do
  say "rep $REP/$REPS"
  mapfile -t order < <(rep_order "$REP" "${SERVERS[@]}")
  for s in "${order[@]}"; do
    for p in $PATHS; do run "$s" "$p"; done
  done
done

col() { awk -F'\t' -v s="$1" -v p="$2" '$1 == s && $2 == p {print $5}' "$RAW"; }
TABLE="$RESULTS/instr-$(date -u +%Y%m%d-%H%M%S).md"
{
  echo "# Instructions per keep-alive request (callgrind, user space)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), hsmgate $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')${HSMGATE_B:+, hsmgate-b = $HSMGATE_B}; $REPS rep(s), $CONNS connections."
  echo
  echo "| server | path | instructions per request, median (min..max) | requests counted |"
  echo "|---|---|---|---|"
  for s in "${SERVERS[@]}"; do
    for p in $PATHS; do
      n=$(awk -F'\t' -v s="$s" -v p="$p" '$1 == s && $2 == p {t += $4} END {print t + 0}' "$RAW")
      echo "| $s | /$p | $(col "$s" "$p" | median) ($(col "$s" "$p" | span)) | $n |"
    done
  done
} >"$TABLE"
cat "$TABLE"
say "written: $TABLE"
