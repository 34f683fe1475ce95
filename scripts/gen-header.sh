#!/usr/bin/env bash
# Regenerates include/mmckpt.h from src/ffi with cbindgen (run as a library by tests/header.rs),
# so that nothing writes into the source tree during a build. Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
MMCKPT_WRITE_HEADER=1 cargo test --release --quiet --test header
git --no-pager diff --stat -- include/mmckpt.h
