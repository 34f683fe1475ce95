#!/usr/bin/env bash
# Installs mmckpt into a temporary prefix (scripts/install.sh) and builds two out-of-tree
# consumers against it, copied out of the repository, as a user would:
#   pkgconfig/  make, with cc $(pkg-config --cflags --libs mmckpt), and a static link through
#               pkg-config --static; its list.c is the README's "Use from C" program
#   cmake/      find_package(mmckpt 0.1 REQUIRED), mmckpt::mmckpt and mmckpt::mmckpt_static,
#               against the prefix after it was moved (the CMake package is relocatable); its
#               load.cpp (C++17, mmckpt.hpp) is the README's "Use from C++" program
# Each program runs and must find libmmckpt.so.0 through its SONAME in the prefix, with no
# path into this repository recorded in it. Usage: bash c_tests/consumers/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
forms=$repo/tests/fixtures/forms.pt
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n1)
major=${version%%.*}
passed=0

pass() { passed=$((passed + 1)); echo "ok $passed - $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
dynamic() { readelf -d "$1"; }
# A binary needs libmmckpt.so.MAJOR (or, linked statically, no libmmckpt at all) and records
# no RPATH/RUNPATH into the repository (a build tree).
check_links() {
  local exe=$1 linkage=$2 needed
  needed=$(dynamic "$exe" | sed -n 's/.*(NEEDED).*\[\(libmmckpt[^]]*\)\]/\1/p')
  if [ "$linkage" = shared ]; then
    [ "$needed" = "libmmckpt.so.$major" ] || fail "$exe: NEEDED '$needed', not libmmckpt.so.$major"
  else
    [ -z "$needed" ] || fail "$exe: linked statically but NEEDED $needed"
  fi
  if dynamic "$exe" | grep -E '\((RUNPATH|RPATH)\)' | grep -qF "$repo"; then
    fail "$exe: a RUNPATH/RPATH into the repository: $(dynamic "$exe" | grep -E 'RUNPATH|RPATH')"
  fi
  pass "$(basename "$exe"): NEEDED ${needed:-no libmmckpt (static)}, no RUNPATH/RPATH into $repo"
}

echo "== install into $prefix"
bash "$repo/scripts/install.sh" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "scripts/install.sh"; }
sed -n '/^installed/,$p' "$work/install.log"
for file in "lib/libmmckpt.so.$version" lib/libmmckpt.a include/mmckpt.h lib/pkgconfig/mmckpt.pc \
  lib/cmake/mmckpt/mmckptConfig.cmake lib/cmake/mmckpt/mmckptConfigVersion.cmake; do
  [ -f "$prefix/$file" ] || fail "not installed: $file"
done
for link in "libmmckpt.so.$major" libmmckpt.so; do
  [ "$(readlink "$prefix/lib/$link")" = "libmmckpt.so.$version" ] || fail "lib/$link does not link to libmmckpt.so.$version"
done
pass "cargo-c's layout: lib/libmmckpt.so.$version, .so.$major and .so links, .a, include/mmckpt.h, .pc, CMake package"
soname=$(dynamic "$prefix/lib/libmmckpt.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libmmckpt.so.$major" ] || fail "SONAME '$soname', not libmmckpt.so.$major"
pass "SONAME $soname"
for lib in "lib/libmmckpt.so.$version" lib/libmmckpt.a; do
  if readelf -S "$prefix/$lib" | grep -q '\.debug_'; then fail "$lib carries debug info"; fi
done
pass "no debug info: libmmckpt.so.$version $(stat -c %s "$prefix/lib/libmmckpt.so.$version") bytes, libmmckpt.a $(stat -c %s "$prefix/lib/libmmckpt.a") bytes"

echo "== pkg-config consumer (make)"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion mmckpt)" = "$version" ] || fail "pkg-config --modversion mmckpt"
pkg-config --static --libs mmckpt | grep -q -- '-lpthread' || fail "mmckpt.pc has no Libs.private"
pass "pkg-config: mmckpt $version, --static --libs: $(pkg-config --static --libs mmckpt)"
# The README's program is the one built here, word for word.
awk '/^## Use from C$/ { section = 1; next } /^## / { section = 0 }
     section && /^```c$/ { code = 1; next } code && /^```$/ { exit } code { print }' \
  "$repo/README.md" >"$work/readme.c"
diff -u "$here/pkgconfig/list.c" "$work/readme.c" || fail "README's C program differs from pkgconfig/list.c"
pass "README's \"Use from C\" program is pkgconfig/list.c"
awk '/^## Use from C\+\+$/ { section = 1; next } /^## / { section = 0 }
     section && /^```cpp$/ { code = 1; next } code && /^```$/ { exit } code { print }' \
  "$repo/README.md" >"$work/readme.cpp"
diff -u "$here/cmake/load.cpp" "$work/readme.cpp" || fail "README's C++ program differs from cmake/load.cpp"
pass "README's \"Use from C++\" program is cmake/load.cpp"
cp -r "$here/pkgconfig" "$work/pkgconfig"
make -s -C "$work/pkgconfig" >/dev/null || fail "make (pkg-config consumer)"
check_links "$work/pkgconfig/list" shared
check_links "$work/pkgconfig/list_static" static
resolved=$(LD_LIBRARY_PATH=$prefix/lib ldd "$work/pkgconfig/list" | sed -n "s/.*libmmckpt.so.$major => \([^ ]*\).*/\1/p")
[ "$resolved" = "$prefix/lib/libmmckpt.so.$major" ] || fail "list loads libmmckpt.so.$major from '$resolved'"
pass "list loads $resolved"
LD_LIBRARY_PATH=$prefix/lib "$work/pkgconfig/list" "$forms" >"$work/list.out" || fail "list $forms"
diff -u "$here/list_forms.expected" "$work/list.out" || fail "list's output (list_forms.expected: torch's values)"
pass "list forms.pt: $(wc -l <"$work/list.out") tensors as expected"
env -u LD_LIBRARY_PATH "$work/pkgconfig/list_static" "$forms" >"$work/list_static.out" || fail "list_static $forms"
diff -u "$here/list_forms.expected" "$work/list_static.out" || fail "list_static's output"
pass "list_static forms.pt (no libmmckpt.so needed): as expected"

echo "== CMake consumer (find_package), against the prefix moved elsewhere"
moved=$work/moved
mv "$prefix" "$moved"
cmake -S "$here/cmake" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$moved" -DCMAKE_BUILD_TYPE=Release \
  >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; fail "cmake configure (find_package(mmckpt 0.1))"; }
cmake --build "$work/cmake-build" >>"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; fail "cmake build"; }
pass "find_package(mmckpt 0.1 REQUIRED) from $moved, built"
check_links "$work/cmake-build/check_views" shared
check_links "$work/cmake-build/check_views_static" static
LD_LIBRARY_PATH=$moved/lib "$work/cmake-build/check_views" "$forms" || fail "check_views"
pass "check_views (mmckpt::mmckpt)"
env -u LD_LIBRARY_PATH "$work/cmake-build/check_views_static" "$forms" || fail "check_views_static"
pass "check_views_static (mmckpt::mmckpt_static)"
check_links "$work/cmake-build/load" shared
LD_LIBRARY_PATH=$moved/lib "$work/cmake-build/load" "$repo/tests/fixtures/engine/net.pt" \
  "$repo/tests/fixtures/engine/net.spec.json" >"$work/load.out" || fail "load (C++, mmckpt.hpp)"
diff -u "$here/load_net.expected" "$work/load.out" || fail "load's output (load_net.expected: torch's values)"
pass "load net.pt (C++17, mmckpt.hpp, find_package): $(grep -c copied "$work/load.out") strided entries copied row-major, as expected"
# Which requests the version file accepts: Cargo's rule, 0.x needs the same minor version.
minor=${version#*.}
patch=${minor#*.}
minor=${minor%%.*}
requests=("$major.$minor:TRUE" "$version:TRUE" "$major.$((minor + 1)):FALSE" "$((major + 1)).0:FALSE"
  "$major.$minor.$((patch + 1)):FALSE")
if [ "$major" = 0 ]; then
  requests+=("0:TRUE")
  if [ "$minor" -gt 0 ]; then requests+=("0.$((minor - 1)):FALSE"); fi
fi
# find_package's variables for a request, then the installed version file (cmake -P).
cat >"$work/version_check.cmake" <<EOF
string(REPLACE "." ";" parts "\${PACKAGE_FIND_VERSION}")
list(LENGTH parts PACKAGE_FIND_VERSION_COUNT)
list(APPEND parts 0 0)
list(GET parts 0 PACKAGE_FIND_VERSION_MAJOR)
list(GET parts 1 PACKAGE_FIND_VERSION_MINOR)
include("$moved/lib/cmake/mmckpt/mmckptConfigVersion.cmake")
if(PACKAGE_VERSION_COMPATIBLE)
  message("TRUE")
else()
  message("FALSE")
endif()
EOF
for request in "${requests[@]}"; do
  wanted=${request%:*}
  expected=${request#*:}
  got=$(cmake -DPACKAGE_FIND_VERSION="$wanted" -P "$work/version_check.cmake" 2>&1) ||
    fail "cmake -P version_check.cmake: $got"
  [ "$got" = "$expected" ] || fail "find_package(mmckpt $wanted) against $version: compatible '$got', expected $expected"
done
pass "version file against $version: ${requests[*]}"

echo "consumers: $passed checks passed"
