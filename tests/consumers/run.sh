#!/usr/bin/env bash
# The three ways users take kcont in, each from a clean state, each compiling
# and running tests/consumers/consumer.cpp:
#   1. meson subproject (subprojects/kcont -> this checkout)
#   2. pkg-config, after `meson install` into a temporary prefix
#   3. CMake find_package(kcont), from the same install
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cxx=${CXX:-c++}

echo "== consumer 1: meson subproject"
mkdir -p "$work/sub/subprojects"
cp "$root"/tests/consumers/meson/meson.build "$root"/tests/consumers/meson/unused.cpp "$work/sub/"
cp "$root"/tests/consumers/consumer.cpp "$work/"
ln -s "$root" "$work/sub/subprojects/kcont"
sed -i "s|'../consumer.cpp'|'$work/consumer.cpp'|" "$work/sub/meson.build"
CXX=$cxx meson setup "$work/sub/build" "$work/sub" >"$work/sub.log" || { cat "$work/sub.log"; exit 1; }
if grep -q "kcont_tests" "$work/sub/build/build.ninja"; then
  echo "kcont's tests are built as a subproject: they must not be"; exit 1
fi
ninja -C "$work/sub/build" >/dev/null
"$work/sub/build/consumer"

echo "== install into a temporary prefix"
prefix="$work/prefix"
CXX=$cxx meson setup "$work/inst" "$root" --prefix="$prefix" \
  -Dtests=disabled -Dexamples=disabled -Dbenchmarks=disabled >/dev/null
meson install -C "$work/inst" --quiet
test -f "$prefix/include/kcont/kcont.hpp"

echo "== consumer 2: pkg-config"
pcdir="$prefix/share/pkgconfig"
test -f "$pcdir/kcont.pc"
flags=$(PKG_CONFIG_PATH="$pcdir" pkg-config --cflags kcont)
case "$flags" in *"$prefix/include"*) ;; *) echo "pkg-config gave: $flags"; exit 1 ;; esac
$cxx $flags -pthread "$work/consumer.cpp" -o "$work/pc-consumer"
"$work/pc-consumer"

echo "== consumer 3: CMake find_package"
mkdir -p "$work/cm"
cp "$root/tests/consumers/cmake/CMakeLists.txt" "$work/cm/"
sed -i "s|../consumer.cpp|$work/consumer.cpp|" "$work/cm/CMakeLists.txt"
CXX=$cxx cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm/build" >/dev/null
"$work/cm/build/consumer"

echo "== all three consumers built and ran"
