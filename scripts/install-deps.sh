#!/usr/bin/env bash
# Installs what building, testing and benchmarking kcont needs on Debian 12,
# skipping what is already there. Idempotent; uses sudo when not root.
set -euo pipefail

# libbenchmark-tools: Google Benchmark's gbench.util, which benchmarks/report.py
# loads results with (it has a fallback). No python3-scipy: report.py uses the
# standard library only (scipy is for compare.py's U test, which we do not run).
packages=(
  g++ clang meson ninja-build pkg-config cmake python3
  doctest-dev libbenchmark-dev libbenchmark-tools
  g++-mingw-w64-x86-64-posix wine64   # the windows configuration
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
