"""Writes scikit-learn's handwritten digits (UCI ML, 1,797 8x8 grey images in 10 classes, bundled
with scikit-learn: nothing to download) as an ImageFolder data set of 32x32 RGB PNGs:
DIR/train/CLASS/*.png (four fifths, stratified, fixed seed) and DIR/val/CLASS/*.png.

    python scripts/digits.py DIR

A small real data set for the CLI on the CPU: `repvgg train --data DIR --image-size 32 ...`.
Needs numpy, pillow and scikit-learn.
"""

import pathlib
import sys

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: digits.py DIR")
    root = pathlib.Path(sys.argv[1])
    digits = load_digits()
    rng = np.random.default_rng(0)
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)
        rng.shuffle(indices)
        cut = len(indices) * 4 // 5
        for split, chosen in (("train", indices[:cut]), ("val", indices[cut:])):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            for index in chosen:
                grey = (digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
                image = Image.fromarray(grey, mode="L").resize((32, 32), Image.BILINEAR)
                image.convert("RGB").save(folder / f"{index:04}.png")
    print(f"wrote {len(digits.target)} images under {root}")


if __name__ == "__main__":
    main()
