#!/usr/bin/env bash
# Where a CPU training step's time goes: `perf record` around `cargo xtask bench-train` (synthetic
# batches, the recipe's optimizer, no PyTorch), then the hottest functions with their share of
# the samples, so that each change to the training step is profiled the same way.
#
#   scripts/profile-train.sh [ARCH] [BATCH] [SIZE] [RUNS]      defaults: A0 64 32 5
#
# Needs `perf` (linux-tools). Writes perf.data under target/profile-train/. The report's rows
# are the functions (Burn's, gemm's and this workspace's) that took at least 0.5% of the samples.
set -euo pipefail
arch=${1:-A0} batch=${2:-64} size=${3:-32} runs=${4:-5}
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { echo "profile-train: perf is not installed" >&2; exit 1; }
cargo build --release -p xtask
target=${CARGO_TARGET_DIR:-target}
out="$target/profile-train"
mkdir -p "$out"
perf record -F 499 -o "$out/perf.data" -- "$target/release/xtask" bench-train \
    --arch "$arch" --batch "$batch" --size "$size" --runs "$runs" --warmup 1 --python none \
    --output "$out/bench.md" > /dev/null
grep '^| RepVGG' "$out/bench.md" || true
perf report -i "$out/perf.data" --no-children --sort symbol --percent-limit 0.5 --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | cut -c1-160
