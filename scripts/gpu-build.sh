#!/usr/bin/env bash
# Builds the bundle that scripts/gpu-check.sh runs from on a machine with an NVIDIA GPU and no
# Rust (../shared/GPU.md), compiled once with CUDA, stripped, and packed into ONE xz archive,
# gpu-bundle/repvgg-cuda.tar.xz (git-ignored). Two executables:
#   xtask         every command the check runs: the developer's (`bench`, `bench-train`,
#                 `bench-loader`) and, with xtask's `gpu-bundle` feature, the whole `repvgg`
#                 tool as `xtask repvgg ...` (`train`, `demo`, `eval`, `convert`: the same code);
#   device_suite  every backend-agnostic test of the workspace in one test binary
#                 (crates/repvgg-testing/tests/device_suite).
# Each executable is ~170 MiB (Burn, CubeCL and a static LLVM) and ~35 MiB compressed; the code
# they share compresses once only in part (different layouts), so separate binaries (the tool,
# xtask and one test binary per crate) would not fit. Prints the archive's size beside the
# checkout's: everything the GPU machine receives must fit in 64 MiB.
#
# Usage (from anywhere in the checkout):
#   bash scripts/gpu-build.sh
# The first run compiles Burn with its cuda feature: 30-45 minutes on 2 cores; later runs rebuild
# only what changed. It needs python3 on PATH (the offline LLVM's llvm-config is a Python script)
# and installs that LLVM with ../shared/tools/offline-llvm.sh when the script is there.
#
# One build: the dev profile already compiles every dependency at opt-level 3 (Cargo.toml), so
# binaries and test binaries come from the same `cargo build` (a release build would compile
# Burn a second time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/repvgg-burn/target}"
export CARGO_TERM_COLOR=never
FEATURES="repvgg-model/cuda,repvgg-cli/cuda,xtask/cuda,xtask/gpu-bundle,repvgg-testing/cuda"
BINS=(xtask)
# The backend-agnostic tests (they take their device from REPVGG_TEST_DEVICE), in one binary.
TESTS=(device_suite)
BUNDLE_DIR="$ROOT/gpu-bundle"
BUNDLE="$BUNDLE_DIR/repvgg-cuda.tar.xz"
# Staging stays outside the checkout: only the archive travels.
STAGE="$CARGO_TARGET_DIR/gpu-bundle-stage"

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }
die() {
  echo "gpu-build: $*" >&2
  exit 1
}
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

install_llvm() {
  step "offline LLVM for burn's cuda feature"
  command -v python3 >/dev/null || die "python3 must be on PATH (the LLVM's llvm-config is a Python script)"
  if [ -f ../shared/tools/offline-llvm.sh ]; then
    bash ../shared/tools/offline-llvm.sh
  else
    echo "../shared/tools/offline-llvm.sh not found: relying on an LLVM already installed"
  fi
}

# Builds the binaries and the test binaries in one cargo invocation (one feature resolution, so
# one build of Burn) and writes cargo's JSON messages to $STAGE/cargo.json.
build() {
  step "cargo build --features $FEATURES (binaries and test binaries)"
  local targets=()
  for bin in "${BINS[@]}"; do targets+=(--bin "$bin"); done
  for test in "${TESTS[@]}"; do targets+=(--test "$test"); done
  mkdir -p "$STAGE"
  cargo build --workspace --features "$FEATURES" "${targets[@]}" \
    --message-format=json-render-diagnostics >"$STAGE/cargo.json"
}

# Copies the built executables, stripped, into $STAGE/bundle (bin/, tests/) and writes its
# MANIFEST: one line per test binary (name, the crate directory it runs in), and the checkout
# path the test binaries were compiled in (they read fixtures through CARGO_MANIFEST_DIR).
stage() {
  step "strip"
  rm -rf "$STAGE/bundle"
  mkdir -p "$STAGE/bundle/bin" "$STAGE/bundle/tests"
  python3 - "$STAGE/cargo.json" "$ROOT" "$STAGE/bundle" "${BINS[*]}" "${TESTS[*]}" <<'EOF'
import json, os, shutil, subprocess, sys

messages, root, bundle, bins, tests = sys.argv[1:6]
bins, tests = set(bins.split()), set(tests.split())
found_bins, found_tests = {}, {}
for line in open(messages):
    message = json.loads(line)
    if message.get("reason") != "compiler-artifact" or not message.get("executable"):
        continue
    target = message["target"]
    crate_dir = os.path.relpath(os.path.dirname(message["manifest_path"]), root)
    if "bin" in target["kind"] and target["name"] in bins:
        found_bins[target["name"]] = message["executable"]
    elif "test" in target["kind"] and target["name"] in tests:
        found_tests[target["name"]] = (message["executable"], crate_dir)
missing = (bins - found_bins.keys()) | (tests - found_tests.keys())
if missing:
    sys.exit(f"cargo built no executable for: {', '.join(sorted(missing))}")
manifest = [f"build-root {root}"]
for name, path in sorted(found_bins.items()):
    subprocess.run(["strip", "-o", os.path.join(bundle, "bin", name), path], check=True)
for name, (path, crate_dir) in sorted(found_tests.items()):
    subprocess.run(["strip", "-o", os.path.join(bundle, "tests", name), path], check=True)
    manifest.append(f"test {name} {crate_dir}")
with open(os.path.join(bundle, "MANIFEST"), "w") as out:
    out.write("\n".join(manifest) + "\n")
EOF
  git -C "$ROOT" describe --always --dirty >"$STAGE/bundle/COMMIT" 2>/dev/null || true
  date -u +%FT%TZ >"$STAGE/bundle/BUILT"
  du -b "$STAGE"/bundle/bin/* "$STAGE"/bundle/tests/* | while read -r bytes path; do
    printf '  %-40s %s\n' "${path#"$STAGE"/bundle/}" "$(mib "$bytes")"
  done
}

# tar, then xz with a dictionary as large as the tar (up to 1.5 GiB), single-threaded, after the
# x86 branch filter (call targets made absolute compress better): what the binaries share is
# found across them by one long-range LZMA2 stream.
pack() {
  step "pack"
  local tar="$STAGE/bundle.tar"
  tar -C "$STAGE/bundle" -cf "$tar" MANIFEST COMMIT BUILT bin tests
  local tar_bytes dict_mib
  tar_bytes=$(stat -c %s "$tar")
  dict_mib=$(((tar_bytes + 1048575) / 1048576))
  ((dict_mib > 1536)) && dict_mib=1536
  echo "tar: $(mib "$tar_bytes"); xz -9e with a ${dict_mib} MiB dictionary (slow: minutes)"
  mkdir -p "$BUNDLE_DIR"
  xz -T1 --x86 --lzma2=preset=9e,dict=${dict_mib}MiB -c "$tar" >"$BUNDLE.tmp"
  mv "$BUNDLE.tmp" "$BUNDLE"
  rm -f "$tar"
}

# The archive's size, and with the checkout that travels beside it (tracked and untracked files
# that git does not ignore).
report() {
  local bytes checkout total
  bytes=$(stat -c %s "$BUNDLE")
  checkout=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null |
    awk '{ total += $1 } END { print total + 0 }')
  total=$((bytes + checkout))
  step "bundle"
  echo "$BUNDLE: $(mib "$bytes") ($bytes bytes), built in $((SECONDS / 60)) min $((SECONDS % 60)) s"
  echo "with the checkout ($(mib "$checkout")): $(mib "$total") of the 64 MiB that travel"
  if ((total > 60 * 1048576)); then
    echo "gpu-build: too large: over 60 MiB with the checkout" >&2
    exit 1
  fi
  echo "On the GPU machine (carry gpu-bundle): bash scripts/gpu-check.sh"
}

install_llvm
build
stage
pack
report
