"""Python-side inference timings for `cargo xtask bench`, measured the same way.

PyTorch eager (torch + timm): each RepVGG built by timm (random weights: speed does not depend
on them), the training-time model in eval mode and the re-parameterized one, plus timm's
ResNet-18 and ResNet-50. Deployment engines, given --onnx-dir (the project's own exported files,
`<ARCH>.onnx`): ONNX Runtime (CPU, f32) and OpenVINO (CPU, latency hint) in f32 and in its
default precision (bf16 on CPUs with AVX512_BF16 or AMX). A package that is missing skips its
figures with a note. Prints one JSON object on stdout:

    {"threads": 2, "torch": "2.15.0", "models": {"A0/deploy/8": {"median_ms": ..}, ..},
     "engines": {"onnxruntime": {"version": "1.32.0", "models": {"A0/8": ..}}, ..},
     "notes": [..]}

With --train (for `cargo xtask bench-train`): full training steps of timm's RepVGG instead,
{"torch": .., "training": {"A0": {"step_ms": .., "forward_ms": .., ..}}}; --precision bf16 casts
the model and the batch to bfloat16 (as Burn's device computes in bf16 then); --precision
bf16-mixed keeps them f32 and runs the forward pass under torch.autocast to bfloat16.

With --device cuda, PyTorch's models, inputs and training steps run on the first CUDA GPU
(cuDNN autotuning on, as Burn autotunes its kernels; each timing waits for the GPU); the
deployment engines stay CPU-only (xtask gives no --onnx-dir then).

Usage: python scripts/bench_torch.py --archs A0,B0 --batches 1,8 --size 224 --runs 10
       [--onnx-dir DIR] [--train [--precision f32|bf16|bf16-mixed]] [--device cpu|cuda]
"""

import argparse
import contextlib
import json
import os
import statistics
import time


def median_ms(run, runs, warmup):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def on_device(torch, device):
    """`(place, synced)`: moves a model or tensor to `device`, and wraps a function so that it
    returns only when the device has finished (CUDA runs asynchronously)."""
    if device == "cuda":
        torch.backends.cudnn.benchmark = True

    def synced(run):
        def run_and_wait():
            result = run()
            if device == "cuda":
                torch.cuda.synchronize()
            return result

        return run_and_wait

    return (lambda x: x.to(device)), synced


def torch_figures(args, batches, threads, notes):
    try:
        import timm
        import torch
        from timm.utils.model import reparameterize_model
    except ImportError as err:
        notes.append(f"no PyTorch figures: {err}")
        return None, {}
    torch.set_num_threads(threads)
    place, synced = on_device(torch, args.device)

    def timed(model, batch):
        images = place(torch.randn(batch, 3, args.size, args.size))
        with torch.inference_mode():
            return median_ms(synced(lambda: model(images)), args.runs, args.warmup)

    models = {}
    for arch in args.archs.split(","):
        name = "repvgg_" + arch.lower()
        training = place(timm.create_model(name, pretrained=False).eval())
        deploy = place(reparameterize_model(timm.create_model(name, pretrained=False).eval()))
        for form, model in (("training", training), ("deploy", deploy)):
            for batch in batches:
                models[f"{arch}/{form}/{batch}"] = {"median_ms": timed(model, batch)}
    for label, name in (("ResNet-18", "resnet18"), ("ResNet-50", "resnet50")):
        model = place(timm.create_model(name, pretrained=False).eval())
        for batch in batches:
            models[f"{label}/-/{batch}"] = {"median_ms": timed(model, batch)}
    return torch.__version__.split("+")[0], models


def training_figures(args, batch, threads, notes):
    """Full training steps of timm's RepVGG: forward in training mode, cross-entropy, backward,
    SGD with momentum 0.9 and weight decay 1e-4; the whole step and each part, median ms."""
    try:
        import timm
        import torch
    except ImportError as err:
        notes.append(f"no PyTorch training figures: {err}")
        return None, {}
    torch.set_num_threads(threads)
    place, synced = on_device(torch, args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    # bf16-mixed: f32 weights and batch, the convolutions under autocast (bf16 compute).
    autocast = (lambda: torch.autocast(args.device, dtype=torch.bfloat16)) \
        if args.precision == "bf16-mixed" else contextlib.nullcontext
    figures = {}
    for arch in args.archs.split(","):
        model = timm.create_model("repvgg_" + arch.lower(), pretrained=False).train()
        model = place(model).to(dtype)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1 * batch / 256, momentum=0.9,
                                    weight_decay=1e-4)
        images = place(torch.randn(batch, 3, args.size, args.size)).to(dtype)
        targets = place(torch.randint(0, 1000, (batch,)))
        loss_fn = torch.nn.CrossEntropyLoss()

        def forward():
            with autocast():
                return loss_fn(model(images), targets)

        def step():
            optimizer.zero_grad(set_to_none=True)
            forward().backward()
            optimizer.step()

        step_ms = median_ms(synced(step), args.runs, args.warmup)
        parts = {"forward_ms": [], "backward_ms": [], "optimizer_ms": []}
        for _ in range(args.runs):
            optimizer.zero_grad(set_to_none=True)
            start = time.perf_counter()
            loss = synced(forward)()
            parts["forward_ms"].append(time.perf_counter() - start)
            start = time.perf_counter()
            synced(loss.backward)()
            parts["backward_ms"].append(time.perf_counter() - start)
            start = time.perf_counter()
            synced(optimizer.step)()
            parts["optimizer_ms"].append(time.perf_counter() - start)
        figures[arch] = {"step_ms": step_ms}
        figures[arch].update({k: 1000.0 * statistics.median(v) for k, v in parts.items()})
    return torch.__version__.split("+")[0], figures


def random_images(batch, size):
    import numpy as np

    return np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)


def onnxruntime_figures(args, batches, threads, notes):
    try:
        import onnxruntime as ort
    except ImportError as err:
        notes.append(f"no ONNX Runtime figures: {err}")
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    models = {}
    for arch in args.archs.split(","):
        path = os.path.join(args.onnx_dir, f"{arch}.onnx")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for batch in batches:
            feed = {"images": random_images(batch, args.size)}
            models[f"{arch}/{batch}"] = median_ms(
                lambda: session.run(None, feed), args.runs, args.warmup
            )
    return {"version": ort.__version__, "precision": "f32", "models": models}


def openvino_figures(args, batches, threads, precision, notes):
    """OpenVINO with the latency hint; `precision` "f32" forces f32, None keeps its default."""
    try:
        import openvino as ov
    except ImportError as err:
        notes.append(f"no OpenVINO figures: {err}")
        return None
    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    models, used = {}, None
    for arch in args.archs.split(","):
        model = core.read_model(os.path.join(args.onnx_dir, f"{arch}.onnx"))
        compiled = core.compile_model(model, "CPU", config)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        used = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        request = compiled.create_infer_request()
        for batch in batches:
            images = random_images(batch, args.size)
            models[f"{arch}/{batch}"] = median_ms(
                lambda: request.infer({0: images}), args.runs, args.warmup
            )
    return {"version": ov.__version__.split("-")[0], "precision": used, "models": models}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="A0,B0")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--onnx-dir", help="the exported <ARCH>.onnx files (CPU engines)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where PyTorch runs (the engines always run on the CPU)")
    parser.add_argument("--train", action="store_true",
                        help="time training steps instead (at the first --batches size)")
    parser.add_argument("--precision", choices=["f32", "bf16", "bf16-mixed"], default="f32",
                        help="the training steps' float type (--train)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    notes = []
    if args.train:
        version, training = training_figures(args, batches[0], args.threads, notes)
        print(json.dumps({"threads": args.threads, "torch": version, "training": training,
                          "notes": notes}))
        return
    torch_version, models = torch_figures(args, batches, args.threads, notes)
    engines = {}
    if args.onnx_dir:
        engines["onnxruntime"] = onnxruntime_figures(args, batches, args.threads, notes)
        engines["openvino-f32"] = openvino_figures(args, batches, args.threads, "f32", notes)
        engines["openvino-default"] = openvino_figures(args, batches, args.threads, None, notes)
    print(json.dumps({
        "threads": args.threads,
        "torch": torch_version,
        "models": models,
        "engines": {name: figures for name, figures in engines.items() if figures},
        "notes": notes,
    }))


if __name__ == "__main__":
    main()
