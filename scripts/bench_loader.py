"""torchvision + Pillow's side of `cargo xtask bench-loader`: the same pipeline over the same files.

torchvision's ImageFolder (Pillow decoding), RandomResizedCrop to SIZE (bilinear, antialiased),
RandomHorizontalFlip, ToTensor and Normalize with the ImageNet statistics, in shuffled batches of
64 from a DataLoader, timed over the first IMAGES files for each worker count. One worker runs in
the main process (num_workers=0) on one thread, as the Rust loader's single worker does; N > 1
uses N DataLoader worker processes. Prints one JSON object on stdout:

    {"torch": "2.15.0", "torchvision": "0.29.2", "pillow": "13.0.0",
     "results": [{"workers": 1, "images": 512, "seconds": 1.32}, ..]}

Usage: python scripts/bench_loader.py ROOT --images N --workers 1,2 --size 224
"""

import argparse
import json
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--workers", default="1")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    import PIL
    import torch
    import torchvision
    from torchvision import datasets, transforms

    torch.set_num_threads(1)
    transform = transforms.Compose([
        transforms.RandomResizedCrop(args.size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    folder = datasets.ImageFolder(args.root, transform=transform)
    subset = torch.utils.data.Subset(folder, range(min(args.images, len(folder))))
    results = []
    for workers in [int(count) for count in args.workers.split(",")]:
        loader = torch.utils.data.DataLoader(
            subset, batch_size=64, shuffle=True, num_workers=0 if workers == 1 else workers)
        next(iter(loader))  # untimed: Pillow's plugins, the first allocations, the page cache
        started = time.perf_counter()
        images = sum(len(targets) for _, targets in loader)
        results.append({
            "workers": workers,
            "images": images,
            "seconds": time.perf_counter() - started,
        })
    print(json.dumps({
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "results": results,
    }))


if __name__ == "__main__":
    main()
