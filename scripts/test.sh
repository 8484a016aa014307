#!/usr/bin/env bash
# Builds kcont and passes every test: the doctest suite, the examples (their
# output checked), the compile-fail checks and the per-header builds, in:
#   default      what a user types on a fresh clone: `meson setup build &&
#                ninja -C build && meson test -C build`, no options at all
#                (the system's c++, meson.build's defaults: no -Werror), in
#                a fresh build directory every time
# and the matrix g++ and clang++ x (release, ASan+UBSan, TSan), all with
# -Wall -Wextra -Wpedantic -Werror (-Dwerror=true: werror belongs to CI, not
# to meson.build's default_options, where a packager's newer compiler would
# break on a new warning):
#   gcc-release  clang-release   -O3, NDEBUG: the code users ship
#   gcc-asan     clang-asan      AddressSanitizer + UndefinedBehaviorSanitizer,
#                                debug contract checks on, -O0 -g
#   gcc-tsan     clang-tsan      ThreadSanitizer, debug contract checks on,
#                                -Og -g (clang++'s -Og is its -O1)
#                                (g++: -fno-var-tracking; see `asan` and
#                                `tsan` below for why these levels)
#                                (the sanitizer builds run the unit tests, the
#                                examples and clang's fuzzer; the per-header
#                                builds, compile-fail and docs checks are
#                                compile-time properties, checked by the
#                                unsanitized configurations)
# and then the four consumers (meson subproject, pkg-config and CMake
# find_package from a clean install, CMake add_subdirectory / FetchContent),
# with g++ and clang++ (the two at once). Then:
#   warnings        tests/consumers/warnings.sh: every header and template in
#                   a user's TU with -Wshadow too, through -I, at -O0..-O3,
#                   g++ and clang++ (one TU per compiler and level; the
#                   two compilers at once)
#   gcc-noexcept    -fno-exceptions (meson -Dcpp_eh=none), -O3 with the debug
#   clang-noexcept  contract checks on: every header (the per-header TUs),
#                   the examples and the unit tests (those that need
#                   exceptions are left out by #if); the compile-fail and
#                   docs checks do not depend on it and run in the others
#   windows         tests/windows/run.sh: the portable headers and examples
#                   cross-built with MinGW-w64 and run under wine64
# Usage: scripts/test.sh [config...]   (default: all of the above)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(default gcc-release clang-release gcc-asan clang-asan gcc-tsan clang-tsan consumers
                                      warnings gcc-noexcept clang-noexcept windows)

setup() {  # name, compiler, meson options...
  local dir=build/test-$1 cxx=$2
  shift 2
  if [ -f "$dir/build.ninja" ]; then
    meson configure "$dir" -Dwerror=true "$@" >/dev/null
  else
    CXX=$cxx meson setup "$dir" -Dbenchmarks=disabled -Dwerror=true "$@" >/dev/null
  fi
  echo "$dir"
}

# The sanitizer configurations build for the sanitizers, not for speed: the
# code users ship is tested optimized by the release configurations. What
# runs is the same at every level: every test, the same sanitizers, full
# debug info for the reports. Measured on the largest test file
# (klist_test.cpp, CPU seconds, 2-vCPU EPYC): ASan+UBSan g++ -O1 35.5,
# -Og 17.1, -O0 12.8; clang++ -O1 21.8, -O0 6.7. Whole configurations
# (build + tests): gcc-asan 308 + 39 s at -O1 -> 128 + 33 s at -O0,
# clang-asan 195 -> 74 s of build; gcc-tsan 108 -> 85 s of build at -Og.
#   asan  ASan+UBSan at -O0: the cheapest to compile by far, and its test
#         run no longer (g++: 33 s against 39 at -O1; the stress loops are
#         sized down under a sanitizer). clang's fuzzer target keeps -O1
#         (tests/meson.build): its run is a fixed time, and inputs per
#         second are what it is for.
#   tsan  TSan at -Og (g++'s level for debugging; clang++ takes it as
#         -O1): TSan's slowdown is the larger, so its code stays
#         optimized, at less compile time than g++'s -O1.
asan=(-Doptimization=0 -Ddebug=true)
tsan=(-Doptimization=g -Ddebug=true)
# g++ only: no variable-location tracking (-fno-var-tracking). It changes no
# instruction (g++ guarantees debug options never change code; -fcompare-debug
# checks it), only how precisely a debugger places a local in optimized code;
# the sanitizers' reports (file:line stacks) are the same. It was 35-40% of
# g++'s CPU time on the test files under ASan+UBSan at -O1, 30% under TSan.
# (At -O0 there is no tracking to turn off; both g++ configurations pass
# it, for one rule.)
gcc_var=(-Dcpp_args=-fno-var-tracking)

export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

# Runs "$@ g++" and "$@ clang++" at once, each into its own log, printed when
# both are done; fails if either does. For the checks that are a chain of
# small steps (one compile or configure at a time): run one compiler after
# the other, they left one of the two cores idle. The two runs share nothing:
# each has its own temporary or output files.
with_both_compilers() {
  local logs=build/test-logs r1=0 r2=0 p1 p2
  mkdir -p "$logs"
  "$@" g++ >"$logs/g++.log" 2>&1 & p1=$!
  "$@" clang++ >"$logs/clang++.log" 2>&1 & p2=$!
  wait "$p1" || r1=$?
  wait "$p2" || r2=$?
  cat "$logs/g++.log" "$logs/clang++.log"
  [ "$r1" -eq 0 ] && [ "$r2" -eq 0 ]
}
consumers_with() { CXX=$1 tests/consumers/run.sh; }

for c in "${configs[@]}"; do
  start=$SECONDS
  if [ "$c" = consumers ]; then
    echo "== consumers: meson subproject, pkg-config, CMake find_package, CMake add_subdirectory / FetchContent (g++ and clang++)"
    with_both_compilers consumers_with
    echo "== consumers passed in $((SECONDS - start)) s"
    continue
  fi
  if [ "$c" = default ]; then
    # Exactly the README's commands, in a fresh directory, with nothing from
    # this script's environment (no CXX, no options).
    dir=build/test-default
    echo "== default: meson setup $dir && ninja -C $dir && meson test -C $dir"
    rm -rf "$dir"
    env -u CXX -u CXXFLAGS -u CPPFLAGS -u LDFLAGS meson setup "$dir"
    ninja -C "$dir"
    built=$SECONDS
    meson test -C "$dir" --print-errorlogs
    echo "== default passed in $((SECONDS - start)) s (build $((built - start)) s, tests $((SECONDS - built)) s)"
    continue
  fi
  if [ "$c" = warnings ]; then
    echo "== warnings: a user's TU with every header, -Wshadow, -O0..-O3"
    with_both_compilers tests/consumers/warnings.sh
    echo "== warnings passed in $((SECONDS - start)) s"
    continue
  fi
  if [ "$c" = windows ]; then
    echo "== windows: portable core cross-built with MinGW-w64, run under wine64"
    tests/windows/run.sh
    echo "== windows passed in $((SECONDS - start)) s"
    continue
  fi
  suites=()
  case $c in
    gcc-release)   dir=$(setup $c g++ -Dbuildtype=release -Db_ndebug=true) ;;
    clang-release) dir=$(setup $c clang++ -Dbuildtype=release -Db_ndebug=true) ;;
    gcc-asan)      suites=(--suite unit --suite examples); dir=$(setup $c g++ "${asan[@]}" "${gcc_var[@]}" -Db_sanitize=address,undefined) ;;
    clang-asan)    suites=(--suite unit --suite examples --suite fuzz); dir=$(setup $c clang++ "${asan[@]}" -Db_sanitize=address,undefined -Db_lundef=false) ;;
    gcc-tsan)      suites=(--suite unit --suite examples); dir=$(setup $c g++ "${tsan[@]}" "${gcc_var[@]}" -Db_sanitize=thread) ;;
    clang-tsan)    suites=(--suite unit --suite examples); dir=$(setup $c clang++ "${tsan[@]}" -Db_sanitize=thread -Db_lundef=false) ;;
    gcc-noexcept)   dir=$(setup $c g++ -Dbuildtype=release -Dcpp_eh=none); suites=(--suite unit --suite examples) ;;
    clang-noexcept) dir=$(setup $c clang++ -Dbuildtype=release -Dcpp_eh=none); suites=(--suite unit --suite examples) ;;
    *) echo "unknown configuration $c" >&2; exit 2 ;;
  esac
  echo "== $c: building and testing in $dir"
  ninja -C "$dir"
  built=$SECONDS
  meson test -C "$dir" --print-errorlogs --num-processes 2 "${suites[@]}"
  echo "== $c passed in $((SECONDS - start)) s (build $((built - start)) s, tests $((SECONDS - built)) s)"
done
echo "== all tests passed: ${configs[*]}"
