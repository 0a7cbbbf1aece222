#!/usr/bin/env bash
# Proves the CUDA path on a Linux machine with an NVIDIA GPU, its driver and CUDA's toolkit, from
# the prebuilt bundle that scripts/gpu-build.sh makes (no Rust needed there; ../shared/GPU.md):
#   train   the demo set trained 2 epochs on CUDA in f32 and in bf16, with the trainer's check
#           that the re-parameterized model agrees with the training-time one;
#   cli     `repvgg eval` and `repvgg convert --verify` of the f32 model on CUDA;
#   bench   the training (A0, batch 256, f32 and bf16) and inference benchmarks on CUDA beside
#           PyTorch on the same GPU;
#   multi   a one-GPU run of the DDP code path (NCCL), and with 2+ GPUs a two-device run;
#   loader  the data pipeline's images/s on one core (how many loader workers a GPU needs);
#   tests   the backend-agnostic tests with REPVGG_TEST_DEVICE=cuda (last: they take whatever
#           time is left; a module they do not reach is reported NOT RUN).
# It prints one summary table and exits non-zero on any failure; the full log goes to
# $OUT/gpu-check.log (OUT defaults to gpu-check-out/ in the checkout).
#
# The bundle holds two executables: xtask built with its `gpu-bundle` feature, which carries the
# developer commands (`bench`, `bench-train`, `bench-loader`) and the whole `repvgg` tool as
# `xtask repvgg ...` (`train`, `demo`, `eval`, `convert`), and device_suite, every
# backend-agnostic test in one binary (repvgg-testing's; run one module per process).
#
# Usage, from the checkout with gpu-bundle/ (git-ignored, made by gpu-build.sh) in it:
#   bash scripts/gpu-check.sh
# Environment:
#   OUT               where the log, the summary and the benchmark reports go
#   GPU_CHECK_BUDGET  seconds for everything (default 450: under 8 minutes with the unpacking)
#   GPU_CHECK_STEPS   the steps to run, comma separated (default:
#                     train,cli,bench,multi,loader,tests;
#                     cli and multi need train's model and data)
#   PYTHON            the Python with torch and timm for the PyTorch columns (default python3)
# Exit status: 0 when every step passed, 1 when one failed or ran out of time, 2 when no NVIDIA
# GPU was found (then nothing runs).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUNDLE="$ROOT/gpu-bundle/repvgg-cuda.tar.xz"
OUT_DIR="${OUT:-$ROOT/gpu-check-out}"
LOG="$OUT_DIR/gpu-check.log"
SUMMARY="$OUT_DIR/gpu-check-summary.txt"
BUDGET="${GPU_CHECK_BUDGET:-450}"
STEPS=",${GPU_CHECK_STEPS:-train,cli,bench,multi,loader,tests},"
PYTHON="${PYTHON:-python3}"
# Agreement of the deploy model with the training-time one on the validation set: largest logit
# difference relative to the largest logit, and the share of top-1 predictions that may differ.
F32_MAX_DIFFERENCE=1e-3
BF16_MAX_DIFFERENCE=5e-2
BF16_MAX_DISAGREEMENT=0.05

mkdir -p "$OUT_DIR"
: >"$LOG"
ROWS=()
FAILURES=0

say() { echo "$*" | tee -a "$LOG"; }

# One row of the summary table; any result but PASS and SKIP counts as a failure.
row() {
  ROWS+=("$(printf '%-26s|%-8s|%-9s|%-8s|%s' "$1" "$2" "$3" "$4" "$5")")
  case "$4" in PASS | SKIP) ;; *) FAILURES=$((FAILURES + 1)) ;; esac
}

# The result word for a command's exit status.
verdict() {
  case "$1" in
  0) echo PASS ;;
  124 | 137) echo TIMEOUT ;;
  125) echo "NOT RUN" ;;
  *) echo FAIL ;;
  esac
}

wanted() { [[ "$STEPS" == *",$1,"* ]]; }

# run_logged NAME LIMIT COMMAND...: runs COMMAND for at most LIMIT seconds (less when the budget
# is nearly spent), its output in $WORK/logs/NAME.log and the full log. Returns its exit status;
# 124 on timeout, 125 when the budget left no time to start it.
run_logged() {
  local name="$1" limit="$2"
  shift 2
  local left=$((BUDGET - SECONDS - 5))
  ((limit > left)) && limit=$left
  local file="$WORK/logs/$name.log"
  if ((limit < 10)); then
    echo "not run: the time budget (${BUDGET}s) is spent" | tee "$file" >>"$LOG"
    say "-- $name: not run (time budget)"
    return 125
  fi
  printf '\n== %s (%s, limit %ss): %s\n' "$name" "$(date +%T)" "$limit" "$*" >>"$LOG"
  echo "-- $name (limit ${limit}s)"
  local started=$SECONDS rc=0
  timeout -k 10 "$limit" "$@" >"$file" 2>&1 || rc=$?
  cat "$file" >>"$LOG"
  printf -- '-- %s: exit %s after %ss\n' "$name" "$rc" "$((SECONDS - started))" | tee -a "$LOG"
  return "$rc"
}

# The GPU gate: without a working nvidia-smi nothing else runs.
check_gpu() {
  local why="" listing=""
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    why="nvidia-smi is not installed (no NVIDIA driver on this machine)"
  elif ! listing=$(nvidia-smi --query-gpu=index,name,memory.total,driver_version \
    --format=csv,noheader 2>&1); then
    why="nvidia-smi failed: $(echo "$listing" | head -3)"
  elif [ -z "$listing" ]; then
    why="nvidia-smi lists no GPU"
  fi
  if [ -n "$why" ]; then
    say "gpu-check: no NVIDIA GPU found: ${why%.}."
    say "gpu-check: nothing was run; run this on a machine with an NVIDIA GPU, its driver and CUDA's toolkit."
    exit 2
  fi
  GPUS=$(echo "$listing" | wc -l)
  say "GPUs: $GPUS"
  echo "$listing" | sed 's/^/  /' | tee -a "$LOG"
  nvidia-smi >>"$LOG" 2>&1 || true
}

# Unpacks the bundle with Python's lzma (no xz needed) into $WORK/bundle, and makes the path the
# test binaries were compiled in (their CARGO_MANIFEST_DIR, for fixtures; xtask finds
# scripts/bench_torch.py through it) lead to this checkout.
unpack() {
  [ -f "$BUNDLE" ] || {
    say "gpu-check: $BUNDLE is missing: run scripts/gpu-build.sh on the build machine and carry gpu-bundle/"
    exit 1
  }
  local started=$SECONDS
  "$PYTHON" -c '
import lzma, sys, tarfile
archive = tarfile.open(fileobj=lzma.open(sys.argv[1]))
archive.extractall(sys.argv[2], **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
' "$BUNDLE" "$WORK/bundle"
  chmod +x "$WORK"/bundle/bin/* "$WORK"/bundle/tests/*
  XTASK="$WORK/bundle/bin/xtask"
  # They need glibc 2.35 and GCC 12's libstdc++ (GLIBCXX_3.4.30) or newer (Ubuntu 22.04 has both).
  local started_ok
  if ! started_ok=$("$XTASK" --version 2>&1); then
    say "gpu-check: the bundle's binaries do not start on this machine: $started_ok"
    exit 1
  fi
  say "unpacked $(du -sh "$WORK/bundle" | cut -f1) in $((SECONDS - started))s (built $(cat "$WORK/bundle/BUILT") from $(cat "$WORK/bundle/COMMIT"))"
  BUILD_ROOT=$(awk '$1 == "build-root" { print $2 }' "$WORK/bundle/MANIFEST")
  if [ "$BUILD_ROOT" -ef "$ROOT" ]; then
    return
  elif [ ! -e "$BUILD_ROOT" ] && mkdir -p "$(dirname "$BUILD_ROOT")" && ln -s "$ROOT" "$BUILD_ROOT"; then
    say "linked $BUILD_ROOT (the build's checkout path) to $ROOT"
  else
    say "warning: $BUILD_ROOT exists and is not this checkout: tests that read fixtures may fail"
    BUILD_ROOT="$ROOT"
  fi
}

# The backend-agnostic tests on CUDA: one process per module of device_suite, in the
# crate directory cargo runs it in, each within what is left of the budget.
step_tests() {
  local name dir module rc counts modules
  read -r _ name dir < <(grep '^test ' "$WORK/bundle/MANIFEST")
  local suite="$WORK/bundle/tests/$name"
  modules=$("$suite" --list 2>>"$LOG" | awk -F'::' '/: test$/ { print $1 }' | sort -u)
  if [ -z "$modules" ]; then
    row "tests" cuda f32 FAIL "$name --list found no tests"
    return
  fi
  for module in $modules; do
    rc=0
    run_logged "test-$module" 150 \
      env -C "$BUILD_ROOT/$dir" REPVGG_TEST_DEVICE=cuda "$suite" "$module::" || rc=$?
    counts=$(grep -o 'test result: [a-zA-Z]*\. [0-9]* passed; [0-9]* failed; [0-9]* ignored' \
      "$WORK/logs/test-$module.log" | tail -1 | sed 's/test result: [a-zA-Z]*\. //; s/;/,/g' || true)
    row "test $module" cuda f32 "$(verdict "$rc")" "${counts:-no test summary (see log)}"
  done
}

# The demo's images (written by the trainer's demo, which trains one epoch on the CPU), then
# two epochs of its network and recipe on CUDA per precision.
step_train() {
  local rc=0
  run_logged demo-data 60 "$XTASK" repvgg demo --output "$WORK/demo" --epochs 1 \
    --train-per-class 40 --val-per-class 10 || rc=$?
  if [ "$rc" != 0 ] || [ ! -f "$WORK/demo/run/config.json" ]; then
    row "demo data (CPU)" cpu f32 "$(verdict "$rc")" "see demo-data in the log"
    return
  fi
  train_on_cuda f32 "train 2 epochs" f32 "$F32_MAX_DIFFERENCE" 0
  train_on_cuda bf16 "train 2 epochs" bf16 "$BF16_MAX_DIFFERENCE" "$BF16_MAX_DISAGREEMENT"
}

# train_on_cuda NAME LABEL PRECISION MAX_DIFFERENCE MAX_DISAGREEMENT [FLAGS...]: trains the demo
# set into $WORK/NAME with the trainer's flags and checks the deploy agreement it prints: the
# largest logit difference relative to the largest logit, and the share of top-1 predictions
# that differ.
train_on_cuda() {
  local name="$1" label="$2" precision="$3" max_difference="$4" max_disagreement="$5"
  shift 5
  local rc=0 file="$WORK/logs/train-$name.log"
  run_logged "train-$name" 120 "$XTASK" repvgg train --data "$WORK/demo/data" --output "$WORK/$name" \
    --config "$WORK/demo/run/config.json" --epochs 2 --batch-size 64 --lr 0.4 \
    --warmup-epochs 1 --image-size 32 --min-crop-scale 0.35 --workers 8 \
    --device cuda --precision "$precision" "$@" || rc=$?
  if [ "$rc" != 0 ]; then
    row "$label" cuda "$precision" "$(verdict "$rc")" "$(grep -v '^ *$' "$file" | tail -1 | cut -c1-70)"
    return
  fi
  # "..., 0 of 100 top-1 predictions differ, max logit difference 2.1e-6 of the largest logit"
  local differ="" images="" difference="" top1 time
  read -r differ images difference < <(sed -n 's/.*, \([0-9]*\) of \([0-9]*\) top-1 predictions differ, max logit difference \([^ ]*\) of the largest logit.*/\1 \2 \3/p' "$file" | tail -1) || true
  top1=$(sed -n 's/^validation ([0-9]* images): top-1 \([0-9.]*%\).*/\1/p' "$file" | tail -1)
  time=$(sed -n 's/^trained in \(.*\)/\1/p' "$file" | tail -1)
  [ "$name" = f32 ] && F32_TOP1="${top1%\%}"
  local figure="top-1 ${top1:-?}, $differ/$images differ, max diff ${difference:-?}, ${time:-?}"
  if [ -z "$images" ] || ! [[ "$difference" =~ ^[0-9.]+(e[-+]?[0-9]+)?$ ]]; then
    row "$label" cuda "$precision" FAIL "no agreement figures: $figure"
  elif awk -v d="$difference" -v m="$max_difference" -v n="$differ" -v i="$images" \
    -v s="$max_disagreement" 'BEGIN { exit !(d <= m && n <= s * i) }'; then
    row "$label" cuda "$precision" PASS "$figure"
  else
    row "$label" cuda "$precision" FAIL "over the limits ($max_difference, $max_disagreement): $figure"
  fi
}

# The CLI on CUDA with the f32 model: eval of both forms (at the training size, 32), and
# convert with --verify (its own check against the training-time model).
step_cli() {
  local model="$WORK/f32/model.bpk"
  if [ ! -f "$model" ]; then
    row "repvgg eval / convert" cuda f32 "NOT RUN" "no f32 model (the train step did not run or failed)"
    return
  fi
  local form rc figure top1 result
  for form in model model-deploy; do
    rc=0
    run_logged "eval-$form" 60 "$XTASK" repvgg eval --weights "$WORK/f32/$form.bpk" \
      --data "$WORK/demo/data" --image-size 32 --device cuda --workers 8 || rc=$?
    # "top-1 52.00%  top-5 91.00%  (100 images, 1315.7 images/s)"
    figure=$(grep -o 'top-1 .*' "$WORK/logs/eval-$form.log" | tail -1 | tr -s ' ' || true)
    top1=$(echo "$figure" | sed -n 's/^top-1 \([0-9.]*\)%.*/\1/p')
    result=$(verdict "$rc")
    # The same weights on the same images: the trainer's own validation top-1 (2 images of 100
    # may flip where logits tie within rounding).
    if [ "$result" = PASS ] && ! awk -v a="${top1:-x}" -v b="${F32_TOP1:-y}" \
      'BEGIN { d = a - b; exit !(a == a + 0 && b == b + 0 && d <= 2 && d >= -2) }'; then
      result=FAIL
      figure+=" vs the trainer's ${F32_TOP1:-?}%"
    fi
    row "repvgg eval $form" cuda f32 "$result" "${figure:-see log}"
  done
  rc=0
  mkdir -p "$WORK/convert"
  run_logged convert 60 "$XTASK" repvgg convert --input "$model" \
    --output "$WORK/convert/model-deploy.bpk" --device cuda --verify --verify-size 64 || rc=$?
  figure=$(grep -o 'max |logit difference| .*' "$WORK/logs/convert.log" | tail -1 || true)
  row "repvgg convert --verify" cuda f32 "$(verdict "$rc")" "${figure:-see log}"
}

# Training steps (A0, batch 256, f32 and bf16) and inference (A0 and the ResNet baselines) on
# CUDA, beside PyTorch eager on the same GPU; the reports go to $OUT.
step_bench() {
  "$PYTHON" -c 'import torch, timm; print("PyTorch", torch.__version__, "CUDA:", torch.cuda.is_available())' \
    >>"$LOG" 2>&1 || say "warning: $PYTHON has no torch/timm: the PyTorch columns stay empty"
  local precision report rc line
  for precision in f32 bf16; do
    report="$OUT_DIR/BENCHMARKS-training-cuda-$precision.md"
    rc=0
    rm -f "$report"
    run_logged "bench-train-$precision" 120 "$XTASK" bench-train --device cuda --arch A0 \
      --batch 256 --precision "$precision" --runs 5 --warmup 3 --python "$PYTHON" \
      --output "$report" || rc=$?
    # | RepVGG-A0 | 256 | burn img/s | ms/step | parts | PyTorch img/s | parts | burn / PyTorch |
    line=$(awk -F'|' '$2 ~ /RepVGG-A0/ { gsub(/ /, "")
      printf "A0 train b256: burn %s img/s, PyTorch %s (%sx)", $4, $7, $9 }' \
      "$report" 2>/dev/null || true)
    if [ -f "$report" ]; then
      TRAIN_IMAGES_PER_SECOND=$(awk -F'|' -v best="$TRAIN_IMAGES_PER_SECOND" '
        $2 ~ /RepVGG-A0/ && $4 + 0 > best { best = $4 + 0 } END { print best }' "$report")
    fi
    row "xtask bench-train" cuda "$precision" "$(verdict "$rc")" "${line:-see log}"
  done

  rc=0
  report="$OUT_DIR/BENCHMARKS-cuda.md"
  rm -f "$report"
  # One round: the lent GPU is not shared, and three would not fit the step's time.
  run_logged bench 120 "$XTASK" bench --device cuda --arch A0 --batch 1,64 --runs 10 \
    --warmup 3 --rounds 1 --loader-images 0 --python "$PYTHON" --output "$report" || rc=$?
  # | RepVGG-A0 | deploy | 64 | burn img/s | burn ms | PyTorch img/s | burn / PyTorch | ...
  line=$(awk -F'|' '$2 ~ /RepVGG-A0/ && $3 ~ /^ deploy $/ && $4 ~ / 64 / { gsub(/ /, "")
    printf "A0 deploy b64: burn %s img/s, PyTorch %s (%sx)", $5, $7, $8 }' \
    "$report" 2>/dev/null || true)
  row "xtask bench (inference)" cuda f32 "$(verdict "$rc")" "${line:-see log}"
}

# The DDP code path (burn-train's DistributedDataParallel, NCCL all-reduce) on one GPU, and
# with two or more GPUs a run on the first two (DDP, the default for several CUDA devices).
step_multi() {
  if [ ! -f "$WORK/demo/run/config.json" ]; then
    row "train DDP" cuda f32 "NOT RUN" "no demo data (the train step did not run)"
    return
  fi
  train_on_cuda ddp "train DDP on GPU 0" f32 "$F32_MAX_DIFFERENCE" 0 --data-parallel ddp
  if ((GPUS < 2)); then
    row "train on GPUs 0,1" cuda f32 SKIP "one GPU only"
  else
    train_on_cuda devices "train on GPUs 0,1" f32 "$F32_MAX_DIFFERENCE" 0 --devices 0,1
  fi
}

# The training loader on one core: decoded and augmented 224x224 images/s, and how many
# cores it takes to feed the fastest A0 training measured by step bench.
step_loader() {
  local rc=0 per_core figure
  run_logged loader 60 "$XTASK" bench-loader --workers 1 --images 128 || rc=$?
  # | workers | images | images/s | images/s per worker |
  per_core=$(awk -F'|' '$2 ~ /^ *1 *$/ { print $5 + 0 }' "$WORK/logs/loader.log" | tail -1 || true)
  figure="${per_core:-?} images/s per core"
  if [ -n "${per_core:-}" ] && [ "$TRAIN_IMAGES_PER_SECOND" != 0 ]; then
    figure+=$(awk -v t="$TRAIN_IMAGES_PER_SECOND" -v c="$per_core" 'BEGIN { if (c > 0)
      printf "; A0 training on CUDA needs ~%d cores", int(t / c + 0.999) }')
  fi
  row "data pipeline, 1 worker" cpu f32 "$(verdict "$rc")" "$figure"
}

print_summary() {
  {
    echo
    echo "GPU check, $(date -u +%FT%TZ), ${SECONDS}s of ${BUDGET}s: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | sort | uniq -c | sed 's/^ *//' | paste -sd, -)"
    printf '%-26s|%-8s|%-9s|%-8s|%s\n' step device precision result "key figure"
    printf '%-26s|%-8s|%-9s|%-8s|%s\n' "$(printf -- '-%.0s' {1..26})" "--------" "---------" "--------" "----------"
    printf '%s\n' "${ROWS[@]}"
    echo
    if ((FAILURES == 0)); then
      echo "gpu-check: every step passed (full log: $LOG)"
    else
      echo "gpu-check: $FAILURES step(s) failed or did not run (full log: $LOG)"
    fi
  } | tee "$SUMMARY" | tee -a "$LOG"
}

check_gpu
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
mkdir -p "$WORK/logs"
say "gpu-check: scratch in $WORK, log in $LOG, budget ${BUDGET}s"
# burn's CUDA runtime looks for the toolkit in CUDA_PATH, /usr/local/cuda or /opt/cuda.
if [ -z "${CUDA_PATH:-}" ] && [ ! -d /usr/local/cuda ] && command -v nvcc >/dev/null; then
  CUDA_PATH="$(dirname "$(dirname "$(command -v nvcc)")")"
  export CUDA_PATH
  say "CUDA_PATH=$CUDA_PATH"
fi
unpack
# The run directories and CubeCL's autotune cache (target/environment under the checkout).
cd "$ROOT"
TRAIN_IMAGES_PER_SECOND=0
F32_TOP1=""
for step in train cli bench multi loader tests; do
  if wanted "$step"; then
    # A step that breaks in an unexpected way is a failed row, not the end of the check.
    "step_$step" || row "$step" - - FAIL "the step stopped with exit status $?"
  fi
done
print_summary
((FAILURES == 0))
