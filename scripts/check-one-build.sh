#!/usr/bin/env bash
# Checks that the README's commands and the developer's share one build of the dependencies:
# `cargo run -p repvgg-cli` (the demo), `cargo xtask` and `cargo run -p <example>` must compile
# no registry crate that `cargo test --workspace` compiles with other features. Cargo resolves
# features per command, so a dev-dependency that turns on a feature below Burn makes the next
# command compile Burn again (15-25 minutes on 2 cores); crates/workspace-hack is the fix, and
# this check names the crate when it is needed again. It asks Cargo for its build plans only
# (`--unit-graph`, stable Cargo with RUSTC_BOOTSTRAP=1): nothing is compiled, it takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
PLANS="$(mktemp -d "${TMPDIR:-/tmp}/repvgg-plans.XXXXXX")"
trap 'rm -rf "$PLANS"' EXIT

plan() { # NAME cargo-arguments...: writes the unit graph of `cargo <arguments>` to $PLANS/NAME.json
  local name="$1"
  shift
  cargo "$@" --unit-graph -Z unstable-options >"$PLANS/$name.json"
}
plan tests test --workspace --no-run
plan repvgg-cli build -p repvgg-cli
plan xtask build -p xtask
for example in examples/*/; do
  name="$(basename "$example")"
  plan "$name" build -p "$name"
done

python3 - "$PLANS" <<'PYTHON'
import json, pathlib, sys

plans = pathlib.Path(sys.argv[1])

def units(name):
    graph = json.loads((plans / f"{name}.json").read_text())
    return graph["units"]

def key(unit):
    # The build's identity, without the profile's name (`test` builds dependencies exactly as
    # `dev` does).
    profile = dict(unit["profile"], name=None)
    return (unit["pkg_id"], unit["target"]["name"], unit["mode"], unit["platform"],
            tuple(sorted(unit["features"])), json.dumps(profile, sort_keys=True))

tested = {key(unit) for unit in units("tests")}
failed = False
for path in sorted(plans.glob("*.json")):
    name = path.stem
    if name == "tests":
        continue
    different = sorted({
        unit["pkg_id"].split("#")[-1]
        for unit in units(name)
        if "registry" in unit["pkg_id"] and key(unit) not in tested
    })
    if different:
        failed = True
        print(f"{name}: compiles {', '.join(different)} with other features than the tests do")
    else:
        print(f"{name}: every dependency as the tests build it")
if failed:
    sys.exit("one build of the dependencies no longer holds: give crates/workspace-hack the "
             "features the tests' build has (cargo tree -e features -i CRATE --workspace)")
PYTHON
