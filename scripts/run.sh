#!/usr/bin/env bash
# The main job: builds in release mode, runs every example, then (when the
# benchmark suite is present) runs it and writes the report.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

dir=build/release
if [ ! -f "$dir/build.ninja" ]; then
  CXX=${CXX:-g++} meson setup "$dir" -Dbuildtype=release -Db_ndebug=true -Dtests=disabled >/dev/null
fi
ninja -C "$dir"

for ex in quickstart io_completion event_loop interface_events; do
  echo "== examples/$ex.cpp"
  "$dir/examples/$ex"
done

if [ -x benchmarks/report.sh ]; then
  benchmarks/report.sh "$dir"
fi
