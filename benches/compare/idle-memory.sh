#!/usr/bin/env bash
# idle-memory.sh: resident memory per idle TLS connection, hsmgate against nginx, side by
# side (issue 11, item 5). One nginx configuration serves both (a file key: the key's home
# does not change what an idle connection holds; `master_process off`, one worker, and
# hsmgate with `worker_processes 1`, i.e. one runtime thread). For each protocol (HTTP/1.1
# keep-alive, HTTP/2) and each server, idle_clients.py opens connections in steps (STEPS,
# default 1000 5000 10000), each making one request and then idling; at each step the
# server's VmRSS is read from /proc. Per connection = (RSS at N - RSS before) / N.
#
# Output: benches/results/idle-memory-DATE.md (table) and .svg (RSS against connections).
# Knobs: STEPS, PORT (9643), RESULTS, KEEP=1.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SCRIPT=idle-memory
# shellcheck source=lib.sh
. "$HERE/lib.sh"
STEPS=${STEPS:-"1000 5000 10000"} PORT=${PORT:-9643}
RESULTS=${RESULTS:-$ROOT/benches/results}
PY=$(command -v /usr/bin/python3 || command -v python3)
for t in nginx openssl; do command -v "$t" >/dev/null || die "missing: $t"; done
[[ -n $PY ]] || die "missing: python3"
ports_free "$PORT"
ulimit -n 65536 || die "cannot raise the open-file limit to 65536 (needed for 10k connections)"
pin_layout
build_release
make_work idlemem

# A CA and a leaf for localhost, file keys.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -out "$WORK/ca.pem" -subj /CN=idle-ca -days 2 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$WORK/leaf.key" -out "$WORK/leaf.csr" -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -out "$WORK/leaf.pem" -days 2 -extfile "$WORK/san.ext" 2>/dev/null
mkdir -p "$WORK/tmp" "$WORK/logs"
cat >"$WORK/nginx.conf" <<EOF
master_process off; daemon off; worker_processes 1;
pid $WORK/nginx.pid; error_log $WORK/logs/error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $WORK/tmp; proxy_temp_path $WORK/tmp; fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp; scgi_temp_path $WORK/tmp;
    keepalive_timeout 600s; keepalive_requests 100000;
    server {
        listen 127.0.0.1:$PORT ssl http2;
        ssl_certificate $WORK/leaf.pem; ssl_certificate_key $WORK/leaf.key;
        location / { return 200 "ok\n"; }
    }
}
EOF

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
start() { # SERVER -> PID in SERVER_PID
  case $1 in
    nginx) "${SERVER_PIN[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/logs/nginx.out" 2>&1 & ;;
    hsmgate) "${SERVER_PIN[@]}" "$HSMGATE" -c "$WORK/nginx.conf" -p "$WORK" -e stderr >"$WORK/logs/hsmgate.out" 2>&1 & ;;
  esac
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_port "$PORT" "$WORK/logs"
  # One request first, so what a first request allocates once is in the baseline.
  curl -s --cacert "$WORK/ca.pem" --resolve "localhost:$PORT:127.0.0.1" "https://localhost:$PORT/" >/dev/null
}

mkdir -p "$RESULTS"
STAMP=$(date -u +%Y%m%d-%H%M%S)
RAW="$RESULTS/idle-memory-$STAMP-raw.tsv"
: >"$RAW"
for proto in http1 h2; do
  for server in nginx hsmgate; do
    start "$server"
    base=$(rss_kb "$SERVER_PID")
    printf '%s\t%s\t0\t%s\n' "$server" "$proto" "$base" >>"$RAW"
    coproc CLIENT { "${LOAD_PIN[@]}" "$PY" "$HERE/idle_clients.py" 127.0.0.1 "$PORT" "$WORK/ca.pem" "$proto" $STEPS 2>&1; }
    for _ in $STEPS; do
      read -r line <&"${CLIENT[0]}" || die "$server/$proto: the client ended early"
      [[ $line == ready* ]] || die "$server/$proto: $line"
      n=$(awk '{print $2}' <<<"$line") failed=$(awk '{print $4}' <<<"$line")
      sleep 1
      rss=$(rss_kb "$SERVER_PID")
      printf '%s\t%s\t%s\t%s\t%s\n' "$server" "$proto" "$n" "$rss" "$failed" >>"$RAW"
      say "$server $proto: $n idle connections ($failed failed), RSS $((rss / 1024)) MB"
      echo >&"${CLIENT[1]}"
    done
    exec {CLIENT[1]}>&-
    wait "$CLIENT_PID" 2>/dev/null || true
    stop_all
  done
done

OUT="$RESULTS/idle-memory-$STAMP.md"
{
  echo "# Resident memory of idle TLS connections, hsmgate and nginx ($(date -u +%F), hsmgate $(git -C "$ROOT" rev-parse --short HEAD))"
  echo
  echo "$(nproc) CPUs; nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') one process (master_process off), hsmgate one runtime thread; the same nginx.conf (file key, TLS 1.3, keepalive_timeout 600s)."
  echo "Each connection: one request, then idle. Per connection = (RSS at N - RSS before the first) / N."
  echo
  echo "| protocol | server | connections | RSS MB | KB per connection |"
  echo "|---|---|---|---|---|"
  awk -F'\t' '$3 == 0 {base[$1 FS $2] = $4; next}
    {printf "| %s | %s | %s | %.1f | %.1f |\n", $2, $1, $3, $4 / 1024, ($4 - base[$1 FS $2]) / $3}' "$RAW"
  echo
  echo "Plot: idle-memory-$STAMP.svg"
} >"$OUT"
"$PY" - "$RAW" "$RESULTS/idle-memory-$STAMP.svg" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
series = {}
for r in rows:
    series.setdefault(f"{r[0]} {r[1]}", []).append((int(r[2]), int(r[3]) / 1024))
W, H, L, B = 640, 400, 60, 40
xmax = max(x for s in series.values() for x, _ in s) or 1
ymax = max(y for s in series.values() for _, y in s) * 1.1 or 1
X = lambda x: L + x / xmax * (W - L - 20)
Y = lambda y: H - B - y / ymax * (H - B - 20)
colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"]
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{W/2}" y="{H-8}" text-anchor="middle">idle TLS connections</text>',
       f'<text x="14" y="{H/2}" transform="rotate(-90 14 {H/2})" text-anchor="middle">RSS (MB)</text>']
for i in range(5):
    y = ymax * i / 4
    out.append(f'<text x="{L-6}" y="{Y(y)+4}" text-anchor="end">{y:.0f}</text>')
    x = xmax * i / 4
    out.append(f'<text x="{X(x)}" y="{H-B+14}" text-anchor="middle">{x:.0f}</text>')
for i, (name, pts) in enumerate(sorted(series.items())):
    c = colors[i % len(colors)]
    out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join(f"{X(x):.0f},{Y(y):.0f}" for x, y in sorted(pts))))
    out.append(f'<text x="{L+10}" y="{30+14*i}" fill="{c}">{name}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out))
EOF
cat "$OUT"
say "written: $OUT"
