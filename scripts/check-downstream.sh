#!/usr/bin/env bash
# Builds (cargo check) a new crate outside the workspace that depends on the workspace's library
# crates by path, with a fresh dependency resolution (no Cargo.lock: the newest versions that
# the manifests allow, as a user's project gets them). The workspace's own Cargo.lock pins
# versions that CI would otherwise never leave: this is what catches a dependency's release that
# breaks the crates for users (as systemstat 0.2.8 broke burn-train 0.22.1).
#
# Usage: bash scripts/check-downstream.sh   (CARGO_TARGET_DIR is honoured and shared)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/repvgg-downstream.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/src"

# The README's Cargo.toml lines, with the crates by path, and the workspace's dev profile (so
# that a shared target directory reuses what the workspace's builds compiled).
cat >"$SCRATCH/Cargo.toml" <<TOML
[package]
name = "downstream"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
burn = { version = "0.22.1", features = ["flex"] }
repvgg-model = { path = "$ROOT/crates/repvgg-model" }
repvgg-data = { path = "$ROOT/crates/repvgg-data" }
repvgg-deploy = { path = "$ROOT/crates/repvgg-deploy" }
repvgg-train = { path = "$ROOT/crates/repvgg-train" }

[workspace]

[profile.dev]
debug = "line-tables-only"

[profile.dev.package."*"]
opt-level = 3
debug = false
overflow-checks = false
debug-assertions = false
TOML

# A program that touches each crate's entry point, as the README uses them.
cat >"$SCRATCH/src/main.rs" <<'RUST'
use burn::tensor::Device;
use repvgg_deploy::DeployModel;
use repvgg_model::RepVggArch;
use repvgg_train::{RecipeConfig, TrainingConfig, train};

fn main() {
    let device = Device::flex();
    let config = RepVggArch::A0.config().with_num_classes(10);
    let model = DeployModel::from_training(&config.init(&device)).expect("conversion");
    let run = TrainingConfig::new(config).with_recipe(RecipeConfig::new().with_epochs(1));
    let _ = (model.config(), repvgg_data::EvalTransform::new(224), run);
    let _ = train;
}
RUST

cd "$SCRATCH"
cargo generate-lockfile --quiet
echo "fresh resolution: $(grep -c '^name = ' Cargo.lock) packages; burn-train $(awk '/^name = "burn-train"/ { getline; print $3 }' Cargo.lock), systemstat $(awk '/^name = "systemstat"/ { getline; print $3 }' Cargo.lock)"
cargo check --quiet
echo "a new crate depending on repvgg-model, repvgg-data, repvgg-deploy and repvgg-train builds"
