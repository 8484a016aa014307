#!/usr/bin/env bash
# The four ways users take kcont in, each from a clean state, each compiling
# and running tests/consumers/consumer.cpp:
#   1. meson subproject (subprojects/kcont -> this checkout)
#   2. pkg-config, after `meson install` into a temporary prefix: no -std=
#      forced, -pthread in Cflags and Libs
#   3. CMake find_package(kcont), from the same install
#   4. CMake without an install: add_subdirectory(this checkout), and
#      FetchContent from a tarball of it (a local file: no network); then
#      CMake's own install of the top-level CMakeLists.txt, whose package
#      files must be the same as meson's
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
case " $flags " in *" -std="*) echo "pkg-config --cflags forces a language standard: $flags"; exit 1 ;; esac
case " $flags " in *" -pthread "*) ;; *) echo "pkg-config --cflags lacks -pthread: $flags"; exit 1 ;; esac
libs=$(PKG_CONFIG_PATH="$pcdir" pkg-config --libs kcont)
case " $libs " in *" -pthread "*) ;; *) echo "pkg-config --libs lacks -pthread: $libs"; exit 1 ;; esac
PKG_CONFIG_PATH="$pcdir" pkg-config --print-errors --modversion kcont >/dev/null
# The user's standard is the user's: C++20 here, and C++23 is not overridden.
$cxx -std=c++20 $flags "$work/consumer.cpp" -o "$work/pc-consumer" $libs
"$work/pc-consumer"
echo '#include <kcont/kcont.hpp>
static_assert(__cplusplus > 202002L, "the user asked for C++23");
int main() {}' >"$work/cxx23.cpp"
$cxx -std=c++2b $flags "$work/cxx23.cpp" -o "$work/pc-cxx23" $libs

echo "== consumer 3: CMake find_package"
mkdir -p "$work/cm"
cp "$root/tests/consumers/cmake/CMakeLists.txt" "$work/cm/"
sed -i "s|../consumer.cpp|$work/consumer.cpp|" "$work/cm/CMakeLists.txt"
CXX=$cxx cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$work/cm/build" >/dev/null
"$work/cm/build/consumer"

echo "== consumer 4: CMake add_subdirectory and FetchContent (no install)"
mkdir -p "$work/sd"
cp "$root/tests/consumers/cmake_subdir/CMakeLists.txt" "$work/sd/"
sed -i "s|../consumer.cpp|$work/consumer.cpp|" "$work/sd/CMakeLists.txt"
CXX=$cxx cmake -S "$work/sd" -B "$work/sd/build-subdir" \
  -DKCONT_HOW=add_subdirectory -DKCONT_SOURCE="$root" >/dev/null
cmake --build "$work/sd/build-subdir" >/dev/null
"$work/sd/build-subdir/consumer"
# As a subdirectory kcont installs nothing into the consumer's install.
cmake --install "$work/sd/build-subdir" --prefix "$work/sd/inst" >/dev/null
if [ -e "$work/sd/inst/include/kcont" ]; then
  echo "kcont installed its headers as a subdirectory: it must not"; exit 1
fi
# A release-like tarball of this checkout (working tree, not .git or build/).
tar -C "$root" --exclude=./.git --exclude=./build --exclude='./subprojects' \
  --transform 's|^\.|kcont|' -czf "$work/kcont.tar.gz" .
CXX=$cxx cmake -S "$work/sd" -B "$work/sd/build-fetch" \
  -DKCONT_HOW=FetchContent -DKCONT_URL="file://$work/kcont.tar.gz" >/dev/null
cmake --build "$work/sd/build-fetch" >/dev/null
"$work/sd/build-fetch/consumer"

echo "== CMake's own install agrees with meson's"
CXX=$cxx cmake -S "$root" -B "$work/cmi" >/dev/null
cmake --install "$work/cmi" --prefix "$work/cmprefix" >/dev/null
diff -r "$prefix/include" "$work/cmprefix/include"
# The package files: the generators' PACKAGE_INIT boilerplate differs in
# blank lines and padding; what follows it (the template: target, Threads) must not, nor
# the version check (CMake writes TRUE where meson writes True).
m=$prefix/share/cmake/kcont c=$work/cmprefix/share/cmake/kcont
after_init() { awk '/^####################+$/ { body = ""; next } /./ { body = body $0 "\n" } END { printf "%s", body }' "$1"; }
diff <(after_init "$m/kcontConfig.cmake") <(after_init "$c/kcontConfig.cmake")
grep -q 'kcont::kcont' "$c/kcontConfig.cmake"
diff <(sed 's/"True"/"TRUE"/' "$m/kcontConfigVersion.cmake") "$c/kcontConfigVersion.cmake"
cmake_version=$(sed -n 's/^set(PACKAGE_VERSION "\(.*\)")$/\1/p' "$work/cmprefix/share/cmake/kcont/kcontConfigVersion.cmake")
pc_version=$(PKG_CONFIG_PATH="$pcdir" pkg-config --modversion kcont)
[ "$cmake_version" = "$pc_version" ] || { echo "versions differ: CMake $cmake_version, meson $pc_version"; exit 1; }
rm -rf "$work/cm/build"
CXX=$cxx cmake -S "$work/cm" -B "$work/cm/build" -DCMAKE_PREFIX_PATH="$work/cmprefix" >/dev/null
cmake --build "$work/cm/build" >/dev/null
"$work/cm/build/consumer"

echo "== all four consumers built and ran"
