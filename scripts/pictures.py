"""How well `predict --images` reads pictures: the README's figures, measured.

    python scripts/pictures.py MODEL.npz            # e.g. after `mnist-softmax train --save model.npz`
    python scripts/pictures.py MODEL.npz --json

Three sets of pictures, each read as `predict --images` reads a picture (:func:`mnist_cli.predict.read_picture`:
MNIST's geometry) and, for comparison, resized whole to 28x28 (what it did before): the first ``--n`` MNIST test
digits pasted black on white at a random scale and place on 100x100 and 200x200 canvases; 100 stroke drawings of
the digits 0-9 (Pillow lines, random size, place and a pen about as thick for its size as MNIST's); the digits
0-9 in Pillow's default font at 150 px. Seeded: the same numbers on every run with the same model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_cli.data import load_mnist
from mnist_cli.model import Model
from mnist_cli.predict import read_picture
from mnist_cli.scoring import predict_logits

# polylines in a 100x100 box
STROKES = {
    0: [[(50, 10), (75, 25), (80, 50), (75, 75), (50, 90), (25, 75), (20, 50), (25, 25), (50, 10)]],
    1: [[(55, 10), (50, 90)]],
    2: [[(25, 30), (40, 12), (65, 12), (75, 30), (65, 50), (25, 88), (80, 88)]],
    3: [[(25, 15), (70, 15), (45, 45), (70, 60), (70, 80), (50, 90), (25, 85)]],
    4: [[(60, 10), (20, 65), (80, 65)], [(62, 35), (62, 92)]],
    5: [[(75, 12), (30, 12), (27, 45), (55, 42), (75, 60), (70, 82), (50, 90), (25, 85)]],
    6: [[(65, 10), (35, 40), (25, 70), (40, 90), (65, 85), (70, 65), (50, 52), (28, 65)]],
    7: [[(20, 15), (80, 15), (40, 90)]],
    8: [[(50, 50), (70, 30), (50, 10), (30, 30), (50, 50), (72, 70), (50, 90), (28, 70), (50, 50)]],
    9: [[(70, 35), (50, 50), (30, 35), (50, 12), (70, 35), (65, 90)]],
}


def resized_whole(path: Path) -> np.ndarray:
    """The picture resized to 28x28 as a whole (Lanczos) and inverted if light: the reading this replaced."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L").resize((28, 28), Image.Resampling.LANCZOS), dtype=np.uint8)
    return (255 - pixels if pixels.mean() > 127 else pixels).reshape(1, 784)


def score(model: Model, pictures, labels, tmp: Path) -> dict:
    """Accuracy of both readings over ``pictures`` (PIL images) with true ``labels``."""
    both = {"mnist_geometry": [], "resized_whole": []}
    for img in pictures:
        img.save(tmp / "p.png")
        both["mnist_geometry"].append(read_picture(tmp / "p.png")[0])
        both["resized_whole"].append(resized_whole(tmp / "p.png")[0])
    labels = np.asarray(labels)
    return {name: float(np.mean(np.argmax(predict_logits(model, np.array(x), model.input_scale), 1) == labels))
            for name, x in both.items()} | {"n": int(labels.size)}


def pasted(mnist, n: int, size: int, rng) -> list:
    out = []
    for i in range(n):
        k = int(rng.integers(size // 4, size // 2 + 1))
        big = Image.fromarray(255 - mnist.test_images[i].reshape(28, 28)).resize((k, k), Image.Resampling.BILINEAR)
        canvas = Image.new("L", (size, size), 255)
        canvas.paste(big, tuple(int(v) for v in rng.integers(0, size - k + 1, 2)))
        out.append(canvas)
    return out


def strokes(rng) -> tuple[list, list]:
    pictures, labels = [], []
    for digit in range(10):
        for _ in range(10):
            scale = rng.uniform(0.6, 1.6)
            at = rng.uniform(0, 200 - 100 * scale, 2)
            img = Image.new("L", (200, 200), 255)
            draw = ImageDraw.Draw(img)
            for line in STROKES[digit]:
                draw.line([(at[0] + x * scale, at[1] + y * scale) for x, y in line], fill=0,
                          width=int(scale * rng.integers(10, 16)), joint="curve")
            pictures.append(img)
            labels.append(digit)
    return pictures, labels


def font_digits() -> list:
    font = ImageFont.load_default(size=150)
    out = []
    for digit in range(10):
        img = Image.new("L", (200, 200), 255)
        ImageDraw.Draw(img).text((50, 10), str(digit), fill=0, font=font)
        out.append(img)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=500, help="MNIST test digits pasted per canvas size")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    model, mnist, rng = Model.load(args.model), load_mnist(args.data_dir, offline=True), np.random.default_rng(0)
    results = {"originals_28x28": float(np.mean(np.argmax(predict_logits(model, mnist.test_images[:args.n],
                                                                         model.input_scale), 1)
                                                == mnist.test_labels[:args.n]))}
    with tempfile.TemporaryDirectory() as tmp:
        for size in (56, 100, 200):
            results[f"mnist_pasted_{size}"] = score(model, pasted(mnist, args.n, size, rng),
                                                    mnist.test_labels[:args.n], Path(tmp))
        results["strokes_200"] = score(model, *strokes(rng), Path(tmp))
        results["font_200"] = score(model, font_digits(), range(10), Path(tmp))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"the first {args.n} test digits as 28x28 originals: {results['originals_28x28']:.3f}")
        for key, r in results.items():
            if isinstance(r, dict):
                print(f"{key:<18} MNIST geometry {r['mnist_geometry']:.3f}, resized whole {r['resized_whole']:.3f}"
                      f"  ({r['n']} pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
