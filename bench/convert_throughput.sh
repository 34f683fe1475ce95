#!/usr/bin/env bash
# `mmckpt convert` to both formats against `cp` of the same input, in one run on one machine
# (BENCHMARKS.md, "Writing"). The input is read once first so every command starts from the
# page cache; each command runs ROUNDS times interleaved and the median is reported. `cp` does
# not fsync and convert does (it syncs before the rename), so `cp + fsync` (coreutils `sync
# FILE`) is reported too, as the like-for-like figure.
#   bash bench/convert_throughput.sh [INPUT] [ROUNDS]
# INPUT defaults to a 1 GiB float32 state dict written by torch (made once, with the oracle's
# venv) under ~/.cache/mmckpt/bench/full/.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/target/release/mmckpt"
input=${1:-$HOME/.cache/mmckpt/bench/full/f32_1g.pt}
rounds=${2:-3}
if [ ! -e "$input" ]; then
  "$HOME/.cache/mmckpt/venv/bin/python" -c "
import torch, sys
torch.save({'layer.%d.weight' % i: torch.randn(4096, 4096) for i in range(16)}, sys.argv[1])
" "$input"
fi
out=$(mktemp -d "$(dirname "$input")/convert-bench.XXXXXX")
trap 'rm -rf "$out"' EXIT
cat "$input" > /dev/null
bytes=$(stat -c %s "$input")

seconds() { # command...: wall seconds of one run
  local start end
  start=$(date +%s.%N)
  "$@" > /dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A runs
names=(cp cp_fsync convert_torch convert_safetensors)
for _ in $(seq "$rounds"); do
  runs[cp]+="$(seconds cp "$input" "$out/copy.pt") "
  rm -f "$out/copy.pt"
  runs[cp_fsync]+="$(seconds bash -c 'cp "$1" "$2" && sync "$2"' _ "$input" "$out/copy.pt") "
  rm -f "$out/copy.pt"
  runs[convert_torch]+="$(seconds "$bin" convert "$input" "$out/out.pt" --quiet) "
  rm -f "$out/out.pt"
  runs[convert_safetensors]+="$(seconds "$bin" convert "$input" "$out/out.safetensors" --quiet) "
  rm -f "$out/out.safetensors"
done
echo "input: $input ($bytes bytes), $rounds rounds, median wall time"
declare -A med
for name in "${names[@]}"; do
  med[$name]=$(echo "${runs[$name]}" | tr ' ' '\n' | grep . | median)
  printf '%-20s %8.3f s  %8.0f MB/s\n' "$name" "${med[$name]}" "$(echo "$bytes / ${med[$name]} / 1000000" | bc -l)"
done
for name in convert_torch convert_safetensors; do
  printf '%-20s %5.0f%% of cp, %5.0f%% of cp + fsync\n' "$name" \
    "$(echo "100 * ${med[cp]} / ${med[$name]}" | bc -l)" \
    "$(echo "100 * ${med[cp_fsync]} / ${med[$name]}" | bc -l)"
done
