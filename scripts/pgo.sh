#!/usr/bin/env bash
# pgo.sh: build hsmgate with profile-guided optimisation (PGO) and print the binary's path.
#
#   1. An instrumented build (-Cprofile-generate) into target/pgo-gen.
#   2. A training run of that binary on real parts: a SoftHSM token with an RSA-2048 and a
#      P-256 key (benches/nginx-baseline/setup-token.sh), a plain nginx upstream, and
#      hsmgate-load offering what the proxy does all day: HTTP/1.1 keep-alive requests
#      through the upstream and answered by the proxy itself, HTTP/2 streams, full TLS 1.3
#      and 1.2 handshakes with the token's keys and with the same keys from files,
#      resumptions; once with an nginx-syntax configuration and once with the native TOML.
#   3. The profiles merged (llvm-profdata of the toolchain's own LLVM: rustup component
#      llvm-tools) and a second build with them (-Cprofile-use) into target/pgo-use; the
#      binary is copied to target/pgo/hsmgate.
#
# The flags go through RUSTFLAGS with an explicit --target, so build scripts and proc
# macros are built without them (as cargo-pgo does). Nothing else in the repository uses
# these target directories: `cargo build --release` and the tests are unaffected.
#
# Needs what the benchmarks need (nginx, softhsm2, opensc, openssl, curl; scripts/deps.sh)
# and `rustup component add llvm-tools`. Takes about 20 minutes on 2 cores.
# Knobs: TRAIN_SECS (seconds per training step, default 4), PORT_BASE (19300), KEEP=1 (keep
# the work directory).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=pgo
BASE="$ROOT/benches/nginx-baseline"
# shellcheck source=../benches/compare/lib.sh
. "$ROOT/benches/compare/lib.sh"
TRAIN_SECS=${TRAIN_SECS:-4}
PORT_BASE=${PORT_BASE:-19300}
PORT_UP=$PORT_BASE PORT_TLS=$((PORT_BASE + 1)) PORT_HSMGATE=$((PORT_BASE + 2))
PORT_FILE=$((PORT_BASE + 3)) PORT_EC=$((PORT_BASE + 4)) PORT_EC_FILE=$((PORT_BASE + 5))
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
SYSROOT=$(rustc --print sysroot)
PROFDATA="$SYSROOT/lib/rustlib/$TRIPLE/bin/llvm-profdata"
[[ -x $PROFDATA ]] || die "no llvm-profdata in the toolchain: rustup component add llvm-tools"
for t in nginx softhsm2-util pkcs11-tool openssl curl; do
  command -v "$t" >/dev/null || die "missing: $t (bash scripts/deps.sh)"
done
ports_free "$PORT_UP" "$PORT_TLS" "$PORT_HSMGATE" "$PORT_FILE" "$PORT_EC" "$PORT_EC_FILE"

make_work pgo
# A fixed place for the raw profiles: the instrumented build's flags name it, and a path
# that changed each run would rebuild every crate.
PROF="$ROOT/target/pgo/profiles"
rm -rf "$PROF"
mkdir -p "$PROF/raw" "$WORK/logs"

say "1/3: instrumented build (target/pgo-gen)"
(cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target/pgo-gen" RUSTFLAGS="-Cprofile-generate=$PROF/raw" \
  cargo build --release -q --locked --target "$TRIPLE" -p hsmgate-proxy --bin hsmgate)
(cd "$ROOT" && cargo build --release -q --locked -p hsmgate-benches --bin hsmgate-load)
GEN="$ROOT/target/pgo-gen/$TRIPLE/release/hsmgate"
LOAD="${CARGO_TARGET_DIR:-$ROOT/target}/release/hsmgate-load"

say "2/3: training (token, upstream, load)"
"$BASE/setup-token.sh" "$WORK" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log" >&2; die "setup-token.sh failed"; }
# shellcheck disable=SC1091
. "$WORK/env.sh" # SOFTHSM2_CONF MODULE RSA_URI EC_URI
export SOFTHSM2_CONF
printf '1234' >"$WORK/pin"
head -c 80 /dev/urandom >"$WORK/ticket.key"
cp "$WORK/rsa-file.key" "$WORK/key.pem"
cp "$WORK/rsa-file.crt" "$WORK/cert.pem"
ka_upstream_conf >"$WORK/upstream.conf"
nginx -p "$WORK" -c "$WORK/upstream.conf" >"$WORK/logs/upstream.out" 2>&1 &
PIDS+=($!)
wait_port "$PORT_UP" "$WORK/logs"

# An nginx-syntax configuration: the token's RSA key (the keep-alive server), the RSA file
# key, the token's P-256 key and the P-256 file key, each on a port of its own.
server_block() { # PORT CERT KEY SUITE
  cat <<EOF
    server {
        listen 127.0.0.1:$1 ssl http2 backlog=4096;
        ssl_certificate $2;
        ssl_certificate_key "$3";
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers $4;
        ssl_session_tickets on;
        ssl_session_ticket_key $WORK/ticket.key;
        keepalive_requests 1000000;
        location /direct { return 200 "hello\n"; }
        location / { $PROXY_TO_UP }
    }
EOF
}
{
  echo "pid $WORK/hsmgate.pid;"
  echo "error_log $WORK/logs/proxy.err warn;"
  echo "events { worker_connections 8192; }"
  echo "http {"
  echo "    access_log $WORK/logs/access.log;"
  echo "    upstream up { server 127.0.0.1:$PORT_UP; keepalive 64; }"
  server_block "$PORT_TLS" "$WORK/rsa-token.crt" "engine:pkcs11:$RSA_URI" ECDHE-RSA-AES128-GCM-SHA256
  server_block "$PORT_FILE" "$WORK/rsa-file.crt" "$WORK/rsa-file.key" ECDHE-RSA-AES128-GCM-SHA256
  server_block "$PORT_EC" "$WORK/ec-token.crt" "engine:pkcs11:$EC_URI" ECDHE-ECDSA-AES128-GCM-SHA256
  server_block "$PORT_EC_FILE" "$WORK/ec-file.crt" "$WORK/ec-file.key" ECDHE-ECDSA-AES128-GCM-SHA256
  echo "}"
} >"$WORK/nginx.conf"
token_toml >"$WORK/hsmgate.toml"

load() { # URL ARGS...: one training step
  local url=$1
  shift
  "$LOAD" -k -t 1 --warmup 0s -d "${TRAIN_SECS}s" --timeout 5s "$@" "$url" >>"$WORK/logs/load.out" 2>&1 \
    || die "hsmgate-load $* $url failed (logs in $WORK with KEEP=1)"
}
# stop_server PID: SIGQUIT, a graceful drain, so that the profile is written at exit.
stop_server() { # PID
  kill -QUIT "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

LLVM_PROFILE_FILE="$PROF/raw/nginx-syntax-%p-%m.profraw" HSMGATE_PKCS11_MODULE=$MODULE \
  "$GEN" -c "$WORK/nginx.conf" -p "$WORK" >"$WORK/logs/nginx-syntax.out" 2>&1 &
PID=$!
PIDS+=("$PID")
for p in "$PORT_TLS" "$PORT_FILE" "$PORT_EC" "$PORT_EC_FILE"; do wait_port "$p" "$WORK/logs"; done
T="https://127.0.0.1"
load "$T:$PORT_TLS/proxy" --mode keepalive --tls 1.3 -c 50
load "$T:$PORT_TLS/proxy" --mode keepalive --tls 1.2 -c 20
load "$T:$PORT_TLS/direct" --mode keepalive --tls 1.3 -c 20
load "$T:$PORT_TLS/proxy" --mode h2 --tls 1.3 -c 4 --streams 10
for p in "$PORT_TLS" "$PORT_FILE" "$PORT_EC" "$PORT_EC_FILE"; do
  load "$T:$p/proxy" --mode handshake --tls 1.3 -c 20
  load "$T:$p/proxy" --mode handshake --tls 1.2 -c 20
done
load "$T:$PORT_TLS/proxy" --mode resume --tls 1.3 -c 6
load "$T:$PORT_TLS/proxy" --mode resume --tls 1.2 -c 6
stop_server "$PID"

LLVM_PROFILE_FILE="$PROF/raw/toml-%p-%m.profraw" "$GEN" -c "$WORK/hsmgate.toml" \
  >"$WORK/logs/toml.out" 2>&1 &
PID=$!
PIDS+=("$PID")
wait_port "$PORT_HSMGATE" "$WORK/logs"
load "$T:$PORT_HSMGATE/proxy" --mode keepalive --tls 1.3 -c 50
load "$T:$PORT_HSMGATE/proxy" --mode h2 --tls 1.3 -c 4 --streams 10
load "$T:$PORT_HSMGATE/proxy" --mode handshake --tls 1.3 -c 20
stop_server "$PID"

shopt -s nullglob
raws=("$PROF"/raw/*.profraw)
((${#raws[@]} >= 2)) || die "the instrumented runs wrote no profiles (logs in $WORK with KEEP=1)"
"$PROFDATA" merge -o "$ROOT/target/pgo/hsmgate.profdata" "${raws[@]}"
rm -rf "$PROF"
say "merged ${#raws[@]} profiles"

say "3/3: the optimised build (target/pgo-use)"
(cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/target/pgo-use" RUSTFLAGS="-Cprofile-use=$ROOT/target/pgo/hsmgate.profdata" \
  cargo build --release -q --locked --target "$TRIPLE" -p hsmgate-proxy --bin hsmgate)
mkdir -p "$ROOT/target/pgo"
cp "$ROOT/target/pgo-use/$TRIPLE/release/hsmgate" "$ROOT/target/pgo/hsmgate"
say "built: target/pgo/hsmgate (profile: target/pgo/hsmgate.profdata)"
echo "$ROOT/target/pgo/hsmgate"
