#!/usr/bin/env bash
# Builds mmckpt and installs it as a C library, in cargo-c's layout:
#   PREFIX/lib/libmmckpt.so.X.Y.Z   SONAME libmmckpt.so.X; libmmckpt.so.X and libmmckpt.so link to it
#   PREFIX/lib/libmmckpt.a
#   PREFIX/include/mmckpt.h         (and every other include/*.h, *.hpp)
#   PREFIX/lib/pkgconfig/mmckpt.pc
#   PREFIX/lib/cmake/mmckpt/mmckptConfig.cmake, mmckptConfigVersion.cmake   (mmckpt::mmckpt)
# The libraries carry no debug info (the release profile strips the .so; the archive is
# stripped here). Usage:
#   bash scripts/install.sh [--prefix DIR] [--libdir DIR] [--destdir DIR]
#     --prefix   where the files go and where mmckpt.pc says they are (default /usr/local)
#     --libdir   the library directory, relative to the prefix (default lib)
#     --destdir  a staging root put in front of every path written, for packaging ($DESTDIR)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=/usr/local
libdir=lib
destdir=${DESTDIR:-}
usage() { sed -n '10,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) [ $# -ge 2 ] || usage; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --libdir) [ $# -ge 2 ] || usage; libdir=$2; shift 2 ;;
    --libdir=*) libdir=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || usage; destdir=$2; shift 2 ;;
    --destdir=*) destdir=${1#*=}; shift ;;
    -h | --help) usage 0 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be absolute, not '$prefix'" >&2; exit 2 ;; esac
case $libdir in /* | "" | *..*) echo "install.sh: --libdir must be relative to the prefix, not '$libdir'" >&2; exit 2 ;; esac
prefix=${prefix%/}
libdir=${libdir%/}

# The [package] table's version and description (Cargo.toml's first `version =` is the package's).
field() { sed -n "s/^$1 = \"\(.*\)\"$/\1/p" "$root/Cargo.toml" | head -n1; }
version=$(field version)
description=$(field description)
major=${version%%.*}
minor=${version#*.}; minor=${minor%%.*}
[ -n "$version" ] && [ -n "$description" ] || { echo "install.sh: no version/description in Cargo.toml" >&2; exit 1; }

cd "$root"
cargo build --release -p mmckpt --lib
# The system libraries the static archive needs (Rust's std calls into them). Cargo replays the
# note from its cache when nothing changed, so this only compiles when the library changed.
rustc_notes=$(CARGO_TERM_COLOR=never cargo rustc --release -p mmckpt --lib --crate-type staticlib \
  -- --print native-static-libs 2>&1) || { echo "$rustc_notes" >&2; exit 1; }
native_static_libs=$(echo "$rustc_notes" | sed -n 's/^note: native-static-libs: //p' | tail -n1)
[ -n "$native_static_libs" ] || { echo "install.sh: rustc printed no native-static-libs" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-$root/target}/release
pointer_width=$(rustc --print cfg | sed -n 's/^target_pointer_width="\(.*\)"$/\1/p')

lib=$destdir$prefix/$libdir
cmakedir=$libdir/cmake/mmckpt
mkdir -p "$lib/pkgconfig" "$destdir$prefix/$cmakedir" "$destdir$prefix/include"

install -m 0755 "$target/libmmckpt.so" "$lib/libmmckpt.so.$version"
install -m 0644 "$target/libmmckpt.a" "$lib/libmmckpt.a"
strip --strip-debug "$lib/libmmckpt.so.$version" "$lib/libmmckpt.a"
ln -sfn "libmmckpt.so.$version" "$lib/libmmckpt.so.$major"
ln -sfn "libmmckpt.so.$version" "$lib/libmmckpt.so"
for header in include/*.h include/*.hpp; do
  if [ -e "$header" ]; then install -m 0644 "$header" "$destdir$prefix/include/"; fi
done

# From lib/cmake/mmckpt back up to the prefix: one `..` per directory.
up=$(echo "$cmakedir" | sed 's:[^/][^/]*:..:g')
cmake_libs=$(echo "$native_static_libs" | sed 's/^-l//; s/ -l/;/g')
fill() {
  sed -e "s|@PREFIX@|$prefix|g" -e "s|@LIBDIR@|$libdir|g" -e "s|@CMAKEDIR@|$cmakedir|g" \
    -e "s|@PREFIX_FROM_CMAKEDIR@|$up|g" -e "s|@VERSION@|$version|g" \
    -e "s|@VERSION_MAJOR@|$major|g" -e "s|@VERSION_MINOR@|$minor|g" -e "s|@SOVERSION@|$major|g" \
    -e "s|@DESCRIPTION@|$description|g" -e "s|@NATIVE_STATIC_LIBS@|$native_static_libs|g" \
    -e "s|@NATIVE_STATIC_LIBS_CMAKE@|$cmake_libs|g" -e "s|@SIZEOF_VOID_P@|$((pointer_width / 8))|g" "$1"
}
fill scripts/mmckpt.pc.in >"$lib/pkgconfig/mmckpt.pc"
fill cmake/mmckptConfig.cmake.in >"$destdir$prefix/$cmakedir/mmckptConfig.cmake"
fill cmake/mmckptConfigVersion.cmake.in >"$destdir$prefix/$cmakedir/mmckptConfigVersion.cmake"
chmod 0644 "$lib/pkgconfig/mmckpt.pc" "$destdir$prefix/$cmakedir"/*.cmake

echo "installed mmckpt $version into $destdir$prefix:"
(cd "$destdir$prefix" &&
  for file in "$libdir"/libmmckpt* include/mmckpt* "$libdir/pkgconfig/mmckpt.pc" "$cmakedir"/*.cmake; do
    if [ -L "$file" ]; then
      printf '%10s  %s -> %s\n' "" "$file" "$(readlink "$file")"
    else
      printf '%10d  %s\n' "$(stat -c %s "$file")" "$file"
    fi
  done)
# The loader's cache: the default directories need it to find a new libmmckpt.so.X.
if [ -z "$destdir" ] && [ "$(id -u)" = 0 ] && command -v ldconfig >/dev/null &&
  { [ "$prefix/$libdir" = /usr/local/lib ] || [ "$prefix/$libdir" = /usr/lib ]; }; then
  ldconfig
elif [ -z "$destdir" ]; then
  echo "(programs find libmmckpt.so.$major through the loader's path: LD_LIBRARY_PATH=$prefix/$libdir, or ldconfig)"
fi
