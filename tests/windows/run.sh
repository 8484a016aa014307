#!/usr/bin/env bash
# The portable core builds and runs on a non-POSIX target: Windows, cross-
# built with MinGW-w64 (g++-mingw-w64-x86-64-posix: the posix thread model,
# for std::thread) and run under Wine.
#   1. every public header outside kcont/posix/ (and kcont/posix.hpp),
#      each alone in a translation unit, compiles;
#   2. the examples that include only the portable core (all but
#      event_loop, which polls a descriptor) build with -static, run under
#      wine64, and print their `// Expected output:` block
#      (tests/check_output.py);
#   3. tests/consumers/warnings.cpp and a default thread_dispatcher ping-pong
#      (tests/windows/dispatcher_pingpong.cpp) build and run.
# Every Wine run has a timeout, so a hang fails this check by name.
# All with -std=c++20 -Wall -Wextra -Werror. Wine gets its own prefix under
# build/ (created on the first run, about 20 s) and no debug chatter.
# Usage: tests/windows/run.sh   (scripts/install-deps.sh installs the tools)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/build/windows
mkdir -p "$out"
cxx=${MINGW_CXX:-x86_64-w64-mingw32-g++-posix}
wine=$(command -v wine64 || true)
[ -n "$wine" ] || wine=/usr/lib/wine/wine64   # Debian's wine64 without wine
export WINEDEBUG=-all WINEPREFIX=$out/wineprefix WINEDLLOVERRIDES="mscoree,mshtml="
flags=(-std=c++20 -Wall -Wextra -Werror -I "$root/include")

echo "== windows: each portable header alone ($cxx)"
n=0
for h in $(python3 "$root/tests/headers/list_headers.py" "$root"); do
  case $h in posix.hpp|posix/*) continue ;; esac
  printf '#include <kcont/%s>\n#include <kcont/%s>\n' "$h" "$h" >"$out/header.cpp"
  "$cxx" "${flags[@]}" -fsyntax-only "$out/header.cpp" || { echo "kcont/$h does not build for Windows"; exit 1; }
  n=$((n + 1))
done
echo "$n headers build"

for ex in quickstart io_completion interface_events; do
  src=$root/examples/$ex.cpp
  if grep -q 'kcont/posix' "$src"; then
    echo "examples/$ex.cpp includes a POSIX header: not portable"; exit 1
  fi
  echo "== windows: $ex (built with -static, run under wine64)"
  "$cxx" "${flags[@]}" -O2 -static "$src" -o "$out/$ex.exe"
  python3 "$root/tests/check_output.py" "$out/$ex.exe" "$src" "$wine"
done

echo "== windows: tests/consumers/warnings.cpp (every template, -Wshadow -Wpedantic, run under wine64)"
"$cxx" "${flags[@]}" -Wpedantic -Wshadow -O2 -static -DKCONT_WARNINGS_POSIX=0 \
  "$root/tests/consumers/warnings.cpp" -o "$out/warnings.exe"
timeout -k 5 120 "$wine" "$out/warnings.exe"

# The default wake-up on a toolchain whose std::atomic::wait loses notifies.
echo "== windows: tests/windows/dispatcher_pingpong.cpp (default thread_dispatcher, 20,000 hand-offs)"
"$cxx" "${flags[@]}" -O2 -static "$root/tests/windows/dispatcher_pingpong.cpp" \
  -o "$out/dispatcher_pingpong.exe"
timeout -k 5 300 "$wine" "$out/dispatcher_pingpong.exe"
