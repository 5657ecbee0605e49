"""Real photographs as a built-in data set: ``photos:calib`` and ``photos:eval``.

The photos are the colour photographs that registry packages carry inside their wheels
(nothing is fetched): scikit-image's ``skimage/data`` (chelsea the cat, astronaut, coffee,
rocket, motorcycle left / right) and scikit-learn's two sample images (china, flower).
scikit-image is read as plain files (its PNG/JPEG files through PIL); it is never imported.

Every photo gives the same fixed plan of square crops: 4 scales of the short side
(100, 80, 60, 45 %), 3 positions along the long side for the full crop and a 3x3 grid for
the others, each plain and mirrored: 60 crops a photo (56 for the square astronaut), 476
in all. Every third crop of a photo's plan goes to ``eval`` (159), the rest to ``calib``
(317), so the two splits never share a crop and both cover every photo at every scale.
Crops are resized to 224x224 (bilinear), scaled to [0, 1] and normalised as
EfficientNet-Lite expects, ``(x - MEAN) / STD`` (TensorFlow's ``(x * 255 - 127) / 128``).
NCHW float32, no labels; nothing here imports torch.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import BadInput

SIZE = 224
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
SKIMAGE_PHOTOS = ("chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg",
                  "motorcycle_left.png", "motorcycle_right.png")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
SCALES = (1.0, 0.8, 0.6, 0.45)
SPLITS = ("calib", "eval")


def _package_dir(module: str, pip_name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BadInput(f"the photos data set needs the photos that {pip_name} ships: "
                       f"pip install {pip_name} (or pip install 'edgeq[pretrained]')")
    return Path(next(iter(spec.submodule_search_locations)))


def photo_files() -> list[Path]:
    """The photos' files, in the data set's fixed order."""
    sk = _package_dir("skimage", "scikit-image") / "data"
    sl = _package_dir("sklearn", "scikit-learn") / "datasets" / "images"
    files = [sk / n for n in SKIMAGE_PHOTOS] + [sl / n for n in SKLEARN_PHOTOS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise BadInput(f"the photos data set: {', '.join(missing)} not found; reinstall "
                       "scikit-image / scikit-learn")
    return files


def crop_plan(width: int, height: int) -> list[tuple[tuple[int, int, int, int], bool]]:
    """The crops of one photo: ``((left, top, right, bottom), mirrored)``, 60 of them
    (56 for a square photo, whose full crop has one position)."""
    short = min(width, height)
    plan = []
    for s in SCALES:
        side = round(s * short)
        xs = np.linspace(0, width - side, 3).round().astype(int)
        ys = np.linspace(0, height - side, 3).round().astype(int)
        # The full-short-side crop can only move along the long side: 3 positions.
        spots = sorted({(int(x), int(y)) for x in xs for y in ys})
        for x, y in spots:
            for flip in (False, True):
                plan.append(((x, y, x + side, y + side), flip))
    return plan


def in_split(index: int, split: str) -> bool:
    """Crop ``index`` of a photo's plan belongs to ``split``: every third is eval."""
    return (index % 3 == 1) == (split == "eval")


def load_photos(split: str, limit: int | None = None) -> np.ndarray:
    """``split`` ('calib' or 'eval') as NCHW float32, normalised; ``limit`` keeps the first
    crops of each photo's share (for quick runs; order: photo by photo)."""
    if split not in SPLITS:
        raise BadInput(f"data 'photos:{split}': the photo splits are photos:calib and "
                       "photos:eval")
    out = []
    for f in photo_files():
        img = open_rgb(f)
        crops = [c for i, c in enumerate(crop_plan(*img.size)) if in_split(i, split)]
        out += [to_input(img, box, flip) for box, flip in crops[:limit]]
    return np.stack(out)


def open_rgb(path):
    """A photo as an RGB PIL image."""
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def to_input(img, box=None, flip: bool = False) -> np.ndarray:
    """One crop (``box``: left, top, right, bottom; default the centred square) of a PIL
    image as a (3, 224, 224) float32 model input: resized (bilinear), mirrored if ``flip``,
    scaled to [0, 1] and normalised."""
    from PIL import Image

    if box is None:
        w, h = img.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    c = img.crop(box).resize((SIZE, SIZE), Image.BILINEAR)
    if flip:
        c = c.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(c, np.float32).transpose(2, 0, 1) / 255.0
    return (a - np.asarray(MEAN, np.float32).reshape(3, 1, 1)) / \
        np.asarray(STD, np.float32).reshape(3, 1, 1)
