#!/usr/bin/env bash
# The benchmark report, in one command:
#
#   benchmarks/report.sh <builddir>      (scripts/run.sh passes build/release)
#
# Builds the suite in <builddir> (configure it as a release build:
# -Dbuildtype=release -Db_ndebug=true), runs it once with repetitions,
# randomly interleaved, into benchmarks/results/report.json, then writes
# benchmarks/results/report.md from that JSON (benchmarks/report.py).
# Takes about two minutes. Environment knobs, for quick looks while developing:
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
exe=$builddir/benchmarks/kcont_bench

mkdir -p "$out"
echo "== benchmarks: $reps repetitions x ${min_time}s per case, interleaved (about 2 minutes)"
"$exe" \
  --benchmark_filter="$filter" \
  --benchmark_repetitions="$reps" \
  --benchmark_min_time="$min_time" \
  --benchmark_enable_random_interleaving=true \
  --benchmark_display_aggregates_only=true \
  --benchmark_out="$out/report.json" \
  --benchmark_out_format=json

# The build's compile flags and this run's settings go into the JSON context.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- include benchmarks ':!benchmarks/results' 2>/dev/null || commit="$commit+uncommitted changes"
"$py" benchmarks/report.py annotate "$out/report.json" "$builddir" \
  kcont_min_time="$min_time" kcont_interleaved=yes kcont_commit="$commit"
# Instructions per item of the single-threaded cases A to E
# (callgrind: immune to the load on the machine). Skipped without valgrind.
if command -v valgrind >/dev/null; then
  echo "== counting instructions per item with callgrind (A: BM_ImmediateRun_*, B: BM_DeferDrain_*, C: BM_Activate_*, D: BM_FanOut_*, E: BM_ActivateScan_*)"
  "$py" benchmarks/report.py count "$out/report.json" "$exe" '^BM_(ImmediateRun|DeferDrain|Activate|ActivateScan|FanOut)_'
fi

"$py" benchmarks/report.py render "$out/report.json" "$out/report.md"
echo "== wrote $out/report.md and $out/report.json"
# The summary, on the console too.
sed -n '/^## Targets/,/^## Cases/p' "$out/report.md" | sed '$d'
