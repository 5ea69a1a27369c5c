#!/usr/bin/env bash
# Two builds of the CLI side by side on a shared machine: runs `ai-background bench` with
# each binary in turn, ROUNDS times (the order reversed every round, so neither always runs
# first), and prints, per `--threads` entry, the median of the paired ratios B / A of the
# entry's median ms (each round's two runs are minutes apart at most, so they see about the
# same host) and in how many rounds B was faster. The last row of the table in
# docs/devices.md ("One codegen unit") is its output; the earlier rows came from a throwaway
# loop that did the same, written before this script.
#
#   scripts/ab-bench.sh ROUNDS BIN_A BIN_B [bench arguments]
#
# Default bench arguments: --preset landscape --frames 1000 --threads 1,2 --block 50.
# Example (the build before a change against the build after it):
#   cargo build --release --no-default-features --bin ai-background
#   cp target/release/ai-background /tmp/ai-background.a   # then change, rebuild
#   scripts/ab-bench.sh 20 /tmp/ai-background.a target/release/ai-background
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,16p' "$0" >&2
  exit 2
fi
rounds=$1 a=$2 b=$3
shift 3
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--preset landscape --frames 1000 --threads 1,2 --block 50)

# The medians of the first table `bench --threads` prints (all rounds), space separated.
medians() {
  "$1" bench "${args[@]}" 2>/dev/null | awk '
    /^two-core probe/ { exit }
    /^[0-9]+ +[0-9.]+ +[0-9.]+x$/ { printf "%s ", $2 }'
}

results=()
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then first=a; else first=b; fi
  if [ $first = a ]; then ma=$(medians "$a"); mb=$(medians "$b")
  else mb=$(medians "$b"); ma=$(medians "$a"); fi
  echo "round $r: A $ma| B $mb"
  results+=("$ma|$mb")
done
printf '%s\n' "${results[@]}" | awk -F'|' '
  { na = split($1, x, " "); split($2, y, " ")
    for (i = 1; i <= na; i++) { r[i, NR] = y[i] / x[i]; if (y[i] < x[i]) ahead[i]++ }
    n = na; rows = NR }
  END {
    for (i = 1; i <= n; i++) {
      m = 0
      for (k = 1; k <= rows; k++) v[++m] = r[i, k]
      for (p = 1; p <= m; p++) for (q = p + 1; q <= m; q++) if (v[q] < v[p]) { t = v[p]; v[p] = v[q]; v[q] = t }
      med = (m % 2) ? v[(m + 1) / 2] : (v[m / 2] + v[m / 2 + 1]) / 2
      printf "entry %d: B / A median %.3f (%.3f-%.3f), B faster in %d of %d rounds\n", i, med, v[1], v[m], ahead[i] + 0, rows
    }
  }'
