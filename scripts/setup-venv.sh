#!/usr/bin/env bash
# Creates (once) the Python virtualenv that holds real torch, the test oracle.
# It lives outside the repo so that CI runs reuse it; the library never needs it.
set -euo pipefail
VENV="${MMCKPT_VENV:-$HOME/.cache/mmckpt/venv}"
TORCH_SPEC="${MMCKPT_TORCH_SPEC:-torch==2.15.0}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch, pytest, numpy, safetensors, jax' 2>/dev/null; then
  echo "$VENV"
  exit 0
fi
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip >&2
# jax: python/tests/test_jax.py hands tensors to JAX through DLPack.
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" numpy pytest safetensors jax >&2
echo "$VENV"
