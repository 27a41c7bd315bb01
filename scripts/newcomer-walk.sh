#!/usr/bin/env bash
# Run the README's walk "From an empty token to a serving proxy" exactly as written: the
# sh block after the `<!-- newcomer-walk` marker, in a fresh temporary HOME, with
# `hsmgate` on PATH. Exit 0 when every step (including the curl through the proxy)
# succeeded. proxy/tests/e2e/token_cmd.rs runs it, so the README's steps stay proven.
#
#   scripts/newcomer-walk.sh
#
#   HSMGATE=PATH          the hsmgate binary (default: target/release/hsmgate, else
#                         target/debug/hsmgate, also under $CARGO_TARGET_DIR)
#   WALK_PORT=N           replaces the README's TLS port 8443 (default 26443)
#   WALK_UPSTREAM_PORT=N  replaces the README's upstream port 8080 (default 26080)
#   KEEP=1                keep the temporary directory (its path is printed)
#
# Needs softhsm2, openssl, curl and python3 (scripts/deps.sh). Everything the walk starts
# in the background is stopped by the walk itself (`kill %1 %2`) or, when a step fails,
# by PID on exit.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
die() { echo "newcomer-walk: $*" >&2; exit 1; }

hsmgate=${HSMGATE:-}
if [[ -z $hsmgate ]]; then
  for c in "$repo/target/release/hsmgate" "$repo/target/debug/hsmgate" \
           ${CARGO_TARGET_DIR:+"$CARGO_TARGET_DIR/release/hsmgate" "$CARGO_TARGET_DIR/debug/hsmgate"}; do
    if [[ -x $c ]]; then hsmgate=$c; break; fi
  done
fi
[[ -n $hsmgate && -x $hsmgate ]] \
  || die "no hsmgate binary: cargo build --release --locked -p hsmgate-proxy, or set HSMGATE"
for t in openssl curl python3 softhsm2-util; do
  command -v "$t" >/dev/null || die "needs $t (scripts/deps.sh)"
done

steps=$(awk '/<!-- newcomer-walk/ { marked = 1; next }
             marked && /^```sh$/ { inside = 1; next }
             inside && /^```$/ { exit }
             inside { print }' "$repo/README.md")
[[ -n $steps ]] || die "no walk found in README.md (the <!-- newcomer-walk --> marker and its sh block)"
port=${WALK_PORT:-26443} upstream_port=${WALK_UPSTREAM_PORT:-26080}
steps=${steps//8443/$port}
steps=${steps//8080/$upstream_port}

work=$(mktemp -d "${TMPDIR:-/tmp}/hsmgate-walk-XXXXXX")
bin="$work/bin"
mkdir -p "$bin"
ln -s "$(cd "$(dirname "$hsmgate")" && pwd)/$(basename "$hsmgate")" "$bin/hsmgate"
cleanup() { if [[ ${KEEP:-0} == 1 ]]; then echo "newcomer-walk: kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

echo "newcomer-walk: running the README's steps in $work (ports $port, $upstream_port)"
# The walk's own background jobs are stopped by PID if a step fails before `kill %1 %2`.
HOME="$work" PATH="$bin:$PATH" bash -x -euo pipefail -c \
  "trap 'kill \$(jobs -p) 2>/dev/null || true' EXIT
$steps"
echo "newcomer-walk: every step succeeded"
