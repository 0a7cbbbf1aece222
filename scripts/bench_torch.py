"""PyTorch eager CPU inference timings for `cargo xtask bench`, measured the same way.

Builds each RepVGG with timm (random weights: speed does not depend on them), times the
training-time model in eval mode and the re-parameterized one, plus timm's ResNet-18 and
ResNet-50, and prints one JSON object on stdout:

    {"torch": "2.15.0", "threads": 2,
     "models": {"A0/training/8": {"median_ms": ..}, "A0/deploy/8": .., "ResNet-18/-/8": ..}}

Usage: python scripts/bench_torch.py --archs A0,B0 --batches 1,8 --size 224 --runs 10
"""

import argparse
import json
import statistics
import time

import timm
import torch
from timm.utils.model import reparameterize_model


def median_ms(model, batch, size, runs, warmup):
    images = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        for _ in range(warmup):
            model(images)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="A0,B0")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="0: PyTorch's default")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]

    models = {}
    for arch in args.archs.split(","):
        name = "repvgg_" + arch.lower()
        training = timm.create_model(name, pretrained=False).eval()
        deploy = reparameterize_model(timm.create_model(name, pretrained=False).eval())
        for form, model in (("training", training), ("deploy", deploy)):
            for batch in batches:
                ms = median_ms(model, batch, args.size, args.runs, args.warmup)
                models[f"{arch}/{form}/{batch}"] = {"median_ms": ms}
    for label, name in (("ResNet-18", "resnet18"), ("ResNet-50", "resnet50")):
        model = timm.create_model(name, pretrained=False).eval()
        for batch in batches:
            ms = median_ms(model, batch, args.size, args.runs, args.warmup)
            models[f"{label}/-/{batch}"] = {"median_ms": ms}

    print(json.dumps({
        "torch": torch.__version__.split("+")[0],
        "threads": torch.get_num_threads(),
        "models": models,
    }))


if __name__ == "__main__":
    main()
