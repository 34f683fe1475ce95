#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (as root): cmake for the C tests,
# valgrind for the memcheck pass, make and pkg-config for the consumer programs
# (c_tests/consumers), and the torch virtualenv (the test oracle, outside the repo).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v valgrind >/dev/null || need+=(valgrind)
command -v g++ >/dev/null || need+=(g++)
command -v make >/dev/null || need+=(make)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi
if [ "${MMCKPT_SKIP_VENV:-0}" != 1 ]; then
  bash "$(dirname "$0")/setup-venv.sh" >/dev/null
fi
