#!/usr/bin/env bash
# Checks the build's Debian dependencies; installs the missing ones when run as root.
# Usage: scripts/deps.sh [extra-package ...]
set -u
need=()
have_pkg_file() { [ -e "$1" ] || compgen -G "$1" >/dev/null; }
command -v cc    >/dev/null 2>&1 || need+=(build-essential)
command -v make  >/dev/null 2>&1 || need+=(make)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
have_pkg_file /usr/include/cjson/cJSON.h || need+=(libcjson-dev)
have_pkg_file "/usr/include/x86_64-linux-gnu/openblas*/cblas.h" || have_pkg_file /usr/include/openblas/cblas.h \
  || need+=(libopenblas-dev)
for extra in "$@"; do
  case "$extra" in
    clang) command -v clang >/dev/null 2>&1 || need+=(clang) ;;
    libclang-rt-14-dev) have_pkg_file "/usr/lib/llvm-14/lib/clang/14*/lib/linux/libclang_rt.fuzzer-x86_64.a" || need+=(libclang-rt-14-dev) ;;
    *) need+=("$extra") ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "msbnb: installing missing Debian packages: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}") >&2 || {
    echo "msbnb: apt-get install failed for: ${need[*]}" >&2; exit 1; }
else
  echo "msbnb: missing Debian packages: ${need[*]}" >&2
  echo "msbnb: install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
