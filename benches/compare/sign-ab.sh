#!/usr/bin/env bash
# The criterion `sign` bench of two builds (A and B, e.g. before and after a change),
# interleaved in one run: REPS × (A, B), each with a short measurement, then the median
# (min..max) over the repetitions of each line's median time per signature.
#   A=path/to/sign-bench-before B=path/to/sign-bench-after benches/compare/sign-ab.sh [FILTER]
# (the bench executables: `cargo bench -p hsmgate-benches --bench sign --no-run` prints
# the path; copy it aside before building the other version). Knobs: REPS (5), SECS (2).
set -euo pipefail
: "${A:?A=sign bench executable (before)}" "${B:?B=sign bench executable (after)}"
FILTER=${1:-} REPS=${REPS:-5} SECS=${SECS:-2}
RUN=$(mktemp -d -t hsmgate-signab.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
for rep in $(seq 1 "$REPS"); do
  echo "rep $rep/$REPS" >&2
  for v in A B; do
    CRITERION_HOME="$RUN/$v-$rep" "${!v}" --bench --measurement-time "$SECS" --warm-up-time 0.5 \
      --noplot $FILTER >/dev/null 2>&1
  done
done
# estimates.json: {"mean":{...},"median":{"point_estimate":ns,...},...}
python3 - "$RUN" "$REPS" <<'PY'
import json, pathlib, statistics, sys
run, reps = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = {}
for f in sorted(run.glob("*/*/*/new/estimates.json")):
    v = f.parts[len(run.parts)].split("-")[0]
    line = f"{f.parts[-4]}/{f.parts[-3]}"
    rows.setdefault(line, {}).setdefault(v, []).append(json.load(open(f))["median"]["point_estimate"] / 1e3)
print(f"| line | A µs median (min..max) | B µs median (min..max) |\n|---|---|---|")
for line, vs in sorted(rows.items()):
    cell = lambda xs: f"{statistics.median(xs):.1f} ({min(xs):.1f}..{max(xs):.1f}) n={len(xs)}" if xs else "–"
    print(f"| {line.replace('_', ' ')} | {cell(vs.get('A', []))} | {cell(vs.get('B', []))} |")
PY
