#!/usr/bin/env python3
"""Checks the ONNX export against PyTorch with ONNX Runtime, on the parity fixtures.

For each reference fixture network (plain, grouped, SE), `repvgg convert` writes the ONNX
graph of its deploy-time weights; ONNX Runtime runs it on the fixture's input batch, and its
logits must match the ones PyTorch computed (`<name>_io.safetensors`) within 1e-4 of the
largest logit. OpenVINO (f32) is checked the same way when it is installed. `make_fixtures.py`
runs it after writing the fixtures; alone it needs only numpy, safetensors and onnxruntime
(openvino optional), and a built `repvgg` (`cargo build --workspace`):

    .venv/bin/pip install onnxruntime safetensors numpy
    .venv/bin/python scripts/check_onnx.py
"""

import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from safetensors.numpy import load_file

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates/repvgg-testing/fixtures"
NETWORKS = ("narrow", "grouped", "se")


def repvgg_binary():
    metadata = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    binary = pathlib.Path(json.loads(metadata.stdout)["target_directory"]) / "debug/repvgg"
    if not binary.exists():
        sys.exit(f"{binary} is missing: run `cargo build --workspace` first")
    return binary


def engines():
    """Each available engine: its name and a function running an ONNX file on a batch."""

    def onnxruntime(path, images):
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"images": images})[0]

    found = [(f"ONNX Runtime {ort.__version__}", onnxruntime)]
    try:
        import openvino as ov
    except ImportError:
        print("openvino is not installed: ONNX Runtime only")
        return found

    def openvino(path, images):
        core = ov.Core()
        compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return compiled({0: images})[compiled.output("logits")]

    found.append((f"OpenVINO {ov.__version__.split('-')[0]} (f32)", openvino))
    return found


def main():
    binary = repvgg_binary()
    failed = False
    with tempfile.TemporaryDirectory() as scratch:
        for name in NETWORKS:
            onnx = pathlib.Path(scratch) / f"{name}.onnx"
            subprocess.run(
                [binary, "convert", "--input", FIXTURES / f"{name}_deploy.pth",
                 "--config", FIXTURES / f"{name}.json", "--output", onnx],
                check=True, capture_output=True,
            )
            io = load_file(FIXTURES / f"{name}_io.safetensors")
            images, expected = io["input"], io["logits_deploy"]
            for engine, run in engines():
                logits = run(str(onnx), images)
                relative = np.abs(logits - expected).max() / np.abs(expected).max()
                ok = logits.shape == expected.shape and relative <= 1e-4
                failed |= not ok
                print(f"{name}: {engine} vs PyTorch, batch {images.shape[0]} at "
                      f"{images.shape[2]}x{images.shape[3]}: max relative logit difference "
                      f"{relative:.2e} {'ok' if ok else 'FAILED'}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
