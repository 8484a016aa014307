#!/usr/bin/env bash
# The main job: builds in release mode, runs every example, then (when the
# benchmark suite is present) runs it and writes the report. Prints progress
# lines, the examples' output and, at the end, the report's summary table;
# the build log and the benchmark's raw console output go to files (named
# below), every measurement to benchmarks/results/report.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

dir=build/release
start=$SECONDS
echo "== building kcont in release mode ($dir; log: $dir/build.log)"
if [ ! -f "$dir/build.ninja" ]; then
  CXX=${CXX:-g++} meson setup "$dir" -Dbuildtype=release -Db_ndebug=true -Dtests=disabled >/dev/null
fi
if ! ninja -C "$dir" >"$dir/build.log" 2>&1; then
  cat "$dir/build.log"
  echo "== the build failed" >&2
  exit 1
fi
echo "   built in $((SECONDS - start)) s"

for ex in quickstart io_completion event_loop interface_events signals; do
  echo "== examples/$ex.cpp"
  "$dir/examples/$ex" | sed 's/^/   /'
done

if [ -x benchmarks/report.sh ]; then
  benchmarks/report.sh "$dir"
fi
