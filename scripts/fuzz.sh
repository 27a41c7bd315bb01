#!/usr/bin/env bash
# The long run of hsmgate's property tests (issue 10): the nginx reader, the TOML loader,
# the RFC 7512 URI parser (config/tests/fuzz.rs) and the ClientHello path
# (proxy/src/hello_fuzz.rs), each with PROPTEST_CASES cases (default 20000; the test
# suite runs 256). Prints a Markdown table: target, cases, wall time, result; a failure
# prints proptest's minimal failing input above it. Exit status: 1 if any target failed.
#
#   PROPTEST_CASES=100000 [FUZZ_RELEASE=1] scripts/fuzz.sh > benches/results/fuzz-$(date -u +%F).md
set -uo pipefail
cd "$(dirname "$0")/.."
cases=${PROPTEST_CASES:-20000}
export PROPTEST_CASES=$cases
# The test profile (what the suite builds); FUZZ_RELEASE=1 for more cases per second.
cargo=(nice -n 10 cargo test --locked)
[[ ${FUZZ_RELEASE:-0} == 1 ]] && cargo+=(--release)
"${cargo[@]}" -p hsmgate-config --test fuzz --no-run >&2 || exit 1
"${cargo[@]}" -p hsmgate-proxy --lib --no-run >&2 || exit 1

targets=(
  "nginx lexer/parser/builder|hsmgate-config|--test fuzz|nginx_never_panics"
  "TOML loader|hsmgate-config|--test fuzz|toml_never_panics"
  "RFC 7512 URI parser|hsmgate-config|--test fuzz|pkcs11_uris_never_panic"
  "ClientHello: arbitrary bytes|hsmgate-proxy|--lib|hello::fuzz::arbitrary_bytes"
  "ClientHello: valid, framed and cut|hsmgate-proxy|--lib|hello::fuzz::a_valid_hello"
  "ClientHello: mutated|hsmgate-proxy|--lib|hello::fuzz::a_mutated_hello"
)
failed=0
rows=()
for t in "${targets[@]}"; do
  IFS='|' read -r name pkg kind filter <<<"$t"
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  if out=$("${cargo[@]}" -p "$pkg" $kind -- "$filter" 2>&1) &&
     grep -q "test result: ok. 1 passed" <<<"$out"; then
    result="no failure"
  else
    result="FAILED (see above)"
    failed=1
    echo "$out" >&2
  fi
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  rows+=("| $name | $cases | $secs s | $result |")
done
echo "Property tests, $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD)"
echo
echo "| target | cases | wall time | result |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
exit $failed
