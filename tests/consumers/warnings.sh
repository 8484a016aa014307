#!/usr/bin/env bash
# The headers under a user's strict flags: tests/consumers/warnings.cpp, which
# includes every public header (through -I, so the headers' warnings are the
# user's) and instantiates every public template, is built with
#   -std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Werror -I include -pthread
# at -O0, -O1, -O2 and -O3 (g++'s flow-based warnings, -Wdangling-pointer
# among them, appear only with optimisation), and each binary is run.
# Usage: tests/consumers/warnings.sh [compiler...]   (default: g++ clang++)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${KCONT_WARNINGS_DIR:-$root/build/warnings}
mkdir -p "$out"
compilers=("$@")
[ ${#compilers[@]} -gt 0 ] || compilers=(g++ clang++)
posix=0
case "$(uname -s)" in Linux|*BSD|Darwin) posix=1 ;; esac

for cxx in "${compilers[@]}"; do
  for opt in -O0 -O1 -O2 -O3; do
    exe="$out/warnings-$(basename "$cxx")$opt"
    echo "== warnings: $cxx $opt"
    "$cxx" -std=c++20 -Wall -Wextra -Wpedantic -Wshadow -Werror "$opt" \
      -I "$root/include" -pthread -DKCONT_WARNINGS_POSIX=$posix \
      "$root/tests/consumers/warnings.cpp" -o "$exe"
    "$exe"
  done
done
