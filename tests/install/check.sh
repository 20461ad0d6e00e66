#!/usr/bin/env bash
# Suite `install`: colo as someone outside this tree gets it.
#
# Installs the build under test ($COLO_BUILD_ROOT) into a DESTDIR under a
# temporary directory, then checks, with nothing of the source or build tree
# on any path:
#   1. every public header of the tree is installed (broker/include/colo,
#      shm/include/colo), no internal one, and each compiles on its own
#      with only the installed include directory;
#   2. libcolo has its soname (libcolo.so.0) and the link chain to it;
#   3. colo.pc gives flags that build and link tests/install/consumer/main.cpp
#      with a plain `c++ main.cpp $(pkg-config --cflags --libs colo)`;
#   4. a Meson project (tests/install/consumer) finds it by dependency('colo');
#   5. both programs run against the installed libcolo (LD_LIBRARY_PATH:
#      the DESTDIR's libdir, and ldd must resolve libcolo there), create a
#      lock and a topic in a scratch namespace, publish and receive one
#      message, and leave no segment behind.
# Prints one line per check; exits non-zero at the first that fails.
set -euo pipefail

build=${COLO_BUILD_ROOT:?set by tests/install/meson.build}
source=${COLO_SOURCE_ROOT:?set by tests/install/meson.build}
meson=${MESON:-meson}
read -r -a cxx <<<"${COLO_CXX:-c++}"

work=$(mktemp -d /tmp/colo-install.XXXXXX)
namespaces=()
cleanup() {
  for ns in "${namespaces[@]}"; do rm -f /dev/shm/colo."$ns".*; done
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "install: FAILED: $*" >&2; exit 1; }
pass() { echo "install: ok: $*"; }

dest=$work/root
"$meson" install -C "$build" --no-rebuild --destdir "$dest" --quiet >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "meson install --destdir"; }

# Where Meson put things: prefix, libdir and includedir of the build.
option() {
  "$meson" introspect "$build" --buildoptions |
    python3 -c 'import json, sys; print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1"
}
prefix=$(option prefix)
under_prefix() { case "$1" in /*) echo "$dest$1" ;; *) echo "$dest$prefix/$1" ;; esac; }
libdir=$(under_prefix "$(option libdir)")
includedir=$(under_prefix "$(option includedir)")

# 1. Headers: exactly the public ones, each standalone.
expected=$(cd "$source" && ls broker/include/colo/*.hpp shm/include/colo/*.hpp | xargs -n1 basename | sort)
installed=$(ls "$includedir/colo" | sort)
[ "$expected" = "$installed" ] ||
  fail "installed headers differ from the public ones: $(diff <(echo "$expected") <(echo "$installed") | grep '^[<>]' | tr '\n' ' ')"
for header in $installed; do
  echo "#include <colo/$header>" | "${cxx[@]}" -std=c++20 -fsyntax-only -Werror -I"$includedir" -x c++ - 2>"$work/header.log" ||
    { cat "$work/header.log" >&2; fail "colo/$header does not compile on its own with only $includedir"; }
done
pass "the $(echo "$installed" | wc -w) public headers are installed and compile on their own"

# 2. The shared library and its soname.
soname=$(readelf -d "$libdir/libcolo.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libcolo.so.0" ] || fail "libcolo.so has soname '$soname', not libcolo.so.0"
[ -e "$libdir/$soname" ] || fail "$libdir/$soname is missing"
pass "libcolo.so has soname $soname"

# 3. colo.pc, with a plain compiler. The sysroot puts the DESTDIR in front of
#    the paths colo.pc names; PKG_CONFIG_LIBDIR makes it the only colo.pc.
export PKG_CONFIG_LIBDIR=$libdir/pkgconfig PKG_CONFIG_SYSROOT_DIR=$dest
unset PKG_CONFIG_PATH
[ -f "$PKG_CONFIG_LIBDIR/colo.pc" ] || fail "no colo.pc in $PKG_CONFIG_LIBDIR"
read -r -a flags <<<"$(pkg-config --cflags --libs colo)" || fail "pkg-config --cflags --libs colo"
"${cxx[@]}" -std=c++20 -Wall -Werror "$source/tests/install/consumer/main.cpp" "${flags[@]}" -o "$work/plain-consumer" \
  2>"$work/plain.log" || { cat "$work/plain.log" >&2; fail "c++ main.cpp \$(pkg-config --cflags --libs colo)"; }
pass "c++ main.cpp $(pkg-config --cflags --libs colo | sed "s|$dest|\$DESTDIR|g")"

# 4. A Meson project: dependency('colo') through colo.pc.
"$meson" setup "$work/meson-consumer" "$source/tests/install/consumer" >"$work/meson.log" 2>&1 &&
  "$meson" compile -C "$work/meson-consumer" >>"$work/meson.log" 2>&1 ||
  { cat "$work/meson.log" >&2; fail "a Meson project with dependency('colo')"; }
pass "a Meson project builds with dependency('colo')"

# 5. Both run against the installed libcolo.
export LD_LIBRARY_PATH=$libdir
for program in "$work/plain-consumer" "$work/meson-consumer/colo-consumer"; do
  needed=$(readelf -d "$program" | sed -n 's/.*(NEEDED).*\[\(libcolo[^]]*\)\]/\1/p')
  [ "$needed" = "libcolo.so.0" ] || fail "$program needs '$needed', not libcolo.so.0"
  resolved=$(ldd "$program" | sed -n 's/.*libcolo.so.0 => \([^ ]*\).*/\1/p')
  [ "$resolved" = "$libdir/libcolo.so.0" ] || fail "$program loads libcolo from '$resolved', not $libdir"
  ns="inst$$_${#namespaces[@]}"
  namespaces+=("$ns")
  out=$("$program" "$ns") || fail "$program $ns exited with $?"
  echo "$out" | grep -q '^colo consumer: ok: token 1, ' || fail "$program printed: $out"
  left=$(ls /dev/shm | grep -c "^colo\.$ns\." || true)
  [ "$left" = 0 ] || fail "$program left $left segment(s) of namespace $ns in /dev/shm"
  pass "$(basename "$program"): $out"
done
