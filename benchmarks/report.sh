#!/usr/bin/env bash
# The benchmark report, in one command:
#
#   benchmarks/report.sh <builddir>      (scripts/run.sh passes build/release)
#
# Builds the suite in <builddir> (configure it as a release build:
# -Dbuildtype=release -Db_ndebug=true), runs it once with repetitions,
# randomly interleaved, into benchmarks/results/report.json, then writes
# benchmarks/results/report.md from that JSON (benchmarks/report.py).
# Takes a few minutes (more on a busy machine). Environment knobs, for quick
# looks while developing:
#   KCONT_BENCH_REPETITIONS (default 12), KCONT_BENCH_MIN_TIME (seconds per
#   repetition, default 0.2), KCONT_BENCH_FILTER (a --benchmark_filter regex).
set -euo pipefail
builddir=${1:?usage: benchmarks/report.sh <builddir>}
[ -d "$builddir" ] && builddir=$(cd "$builddir" && pwd)  # relative to the caller
cd "$(dirname "$0")/.."
py=/usr/bin/python3   # the system python (Google Benchmark's tools live there)
reps=${KCONT_BENCH_REPETITIONS:-12}
min_time=${KCONT_BENCH_MIN_TIME:-0.2}
filter=${KCONT_BENCH_FILTER:-.}
out=benchmarks/results

[ -f "$builddir/build.ninja" ] || {
  echo "report.sh: $builddir is not a meson build directory; make one with" >&2
  echo "  meson setup $builddir -Dbuildtype=release -Db_ndebug=true" >&2
  exit 1
}
if ! ninja -C "$builddir" -t targets all | grep -q '^benchmarks/kcont_bench:'; then
  echo "report.sh: $builddir has no benchmark suite (Google Benchmark not found," >&2
  echo "  or -Dbenchmarks=disabled): install libbenchmark-dev and reconfigure" >&2
  exit 1
fi
ninja -C "$builddir" benchmarks/kcont_bench >/dev/null
# The tree the binary is built from, read now: an edit made while the suite
# runs is not in what it measures.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- include benchmarks ':!benchmarks/results' 2>/dev/null || commit="$commit+uncommitted changes"
exe=$builddir/benchmarks/kcont_bench

mkdir -p "$out"
# The raw console output (one line per aggregate, hundreds of them) goes to a
# file; every figure is in report.json. On the console: progress only.
console=$builddir/benchmarks/console.txt
ncases=$("$exe" --benchmark_list_tests=true --benchmark_filter="$filter" | wc -l)
# The floor of the run time: every repetition runs at least min_time (plus
# Google Benchmark's iteration estimate; much more on a busy machine).
least=$(awk -v n="$ncases" -v r="$reps" -v t="$min_time" 'BEGIN { printf "%d", n * r * t / 60 + 1 }')
echo "== benchmarks: $ncases cases x $reps repetitions x ${min_time} s, randomly interleaved (at least $least min)"
echo "   raw output: $console; measurements: $out/report.json"
bench_start=$SECONDS
"$exe" \
  --benchmark_filter="$filter" \
  --benchmark_repetitions="$reps" \
  --benchmark_min_time="$min_time" \
  --benchmark_enable_random_interleaving=true \
  --benchmark_display_aggregates_only=true \
  --benchmark_out="$out/report.json" \
  --benchmark_out_format=json >"$console" 2>&1 &
bench=$!
# Interleaved repetitions report a case only when its last repetition is
# done, mostly near the end: progress is the time spent, every 30 s, and the
# cases finished once there are some.
while kill -0 "$bench" 2>/dev/null; do
  for _ in $(seq 30); do
    sleep 1
    kill -0 "$bench" 2>/dev/null || break 2
  done
  done_cases=$(grep -c '_median ' "$console" || true)
  line="   ... $((SECONDS - bench_start)) s"
  [ "${done_cases:-0}" -gt 0 ] && line="$line, $done_cases of $ncases cases finished"
  echo "$line"
done
if ! wait "$bench"; then
  tail -n 20 "$console"
  echo "report.sh: the benchmark suite failed (its output: $console)" >&2
  exit 1
fi
echo "   ran in $((SECONDS - bench_start)) s"

# The build's compile flags and this run's settings go into the JSON context.
"$py" benchmarks/report.py annotate "$out/report.json" "$builddir" \
  kcont_min_time="$min_time" kcont_interleaved=yes kcont_commit="$commit"
# Instructions per item of the single-threaded cases A to E
# (callgrind: immune to the load on the machine). Skipped without valgrind.
if command -v valgrind >/dev/null; then
  echo "== counting instructions per item with callgrind (the single-threaded cases A to E; about a minute)"
  "$py" benchmarks/report.py count "$out/report.json" "$exe" '^BM_(ImmediateRun|DeferDrain|Activate|ActivateScan|FanOut)_'
fi

"$py" benchmarks/report.py render "$out/report.json" "$out/report.md"
# The summary on the console: the targets with their verdicts and the
# verdict count (the like-for-like comparisons and every case are in the
# report).
echo
sed -n '/^## Targets/,/^Also measured/p' "$out/report.md" | sed '$d'
echo "== the full report: $out/report.md (every case, the like-for-like comparisons); the measurements: $out/report.json"
