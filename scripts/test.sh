#!/usr/bin/env bash
# Builds kcont and passes every test: the doctest suite, the examples (their
# output checked) and the compile-fail checks, in four configurations:
#   gcc     g++,     debug checks on  (-O2 -g)
#   clang   clang++, release          (-O3, NDEBUG: the path users ship)
#   asan    clang++, AddressSanitizer + UndefinedBehaviorSanitizer
#   tsan    g++,     ThreadSanitizer  (the concurrent paths)
# and then the three consumers (meson subproject, pkg-config and CMake
# find_package from a clean install), with g++ and clang++.
# All with -Wall -Wextra -Wpedantic -Werror. Usage: scripts/test.sh [config...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(gcc clang asan tsan consumers)

setup() {  # name, compiler, meson options...
  local dir=build/test-$1 cxx=$2
  shift 2
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" "$@" >/dev/null
  else
    CXX=$cxx meson setup "$dir" -Dbenchmarks=disabled "$@" >/dev/null
  fi
  echo "$dir"
}

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

for c in "${configs[@]}"; do
  if [ "$c" = consumers ]; then
    echo "== consumers: meson subproject, pkg-config, CMake (g++ and clang++)"
    CXX=g++ tests/consumers/run.sh
    CXX=clang++ tests/consumers/run.sh
    continue
  fi
  case $c in
    gcc)   dir=$(setup gcc g++ -Dbuildtype=debugoptimized) ;;
    clang) dir=$(setup clang clang++ -Dbuildtype=release -Db_ndebug=true) ;;
    asan)  dir=$(setup asan clang++ -Dbuildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false) ;;
    tsan)  dir=$(setup tsan g++ -Dbuildtype=debugoptimized -Db_sanitize=thread) ;;
    *) echo "unknown configuration $c" >&2; exit 2 ;;
  esac
  echo "== $c: building and testing in $dir"
  ninja -C "$dir"
  meson test -C "$dir" --print-errorlogs --num-processes 2
done
echo "== all tests passed: ${configs[*]}"
