#!/usr/bin/env bash
# The criterion `sign` bench of two builds (A and B, e.g. before and after a change),
# interleaved in one run: REPS × (A, B), each with a short measurement, then the median
# (min..max) over the repetitions of each line's median time per signature, and of each
# figure of the printed `dispatch/…` lines (FILTER `dispatch` runs only those).
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
      --noplot $FILTER >"$RUN/$v-$rep.out" 2>/dev/null
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
def cell(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.1f}..{max(xs):.1f}) n={len(xs)}" if xs else "–"
if rows:
    print(f"| line | A µs median (min..max) | B µs median (min..max) |\n|---|---|---|")
for line, vs in sorted(rows.items()):
    print(f"| {line.replace('_', ' ')} | {cell(vs.get('A', []))} | {cell(vs.get('B', []))} |")
# dispatch/NAME: ... lines: every "label NUMBER" pair, e.g. "pool 79.2", "dispatch 5.7".
import re
figs = {}
for f in sorted(run.glob("*.out")):
    v = f.name.split("-")[0]
    for l in open(f):
        if not l.startswith("dispatch/"):
            continue
        name, rest = l.split(":", 1)
        for part in rest.split(";"):
            kind = "CPU " if "CPU" in part else ""
            for label, num in re.findall(r"([A-Za-z_÷ ]+?) (-?[\d.]+)(?=,| \(| µs|$)", part.replace("\n", "")):
                figs.setdefault((name, kind + label.strip()), {}).setdefault(v, []).append(float(num))
if figs:
    print(f"\n| dispatch line, figure | A median (min..max) | B median (min..max) |\n|---|---|---|")
    for (name, label), vs in sorted(figs.items()):
        print(f"| {name} {label} | {cell(vs.get('A', []))} | {cell(vs.get('B', []))} |")
PY
