"""Datasets: calibration or evaluation samples, with labels when there are any.

Sources (``load_dataset``): ``.npz`` (array ``x`` or one array per ``forward()``
argument, optional ``y``), ``.npy``, a folder of images (class sub-folders give labels),
``module:function`` returning or yielding batches, or a built-in name (``digits:train``,
``digits:eval``; real photos ``photos:calib`` / ``photos:eval``, see edgeq.zoo.photos;
real sentences ``sentences:calib`` / ``sentences:eval``, see edgeq.zoo.sentences).
Every sample is kept as numpy; nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.errors import BadInput

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm"}
DEFAULT_CALIB_SAMPLES = 256


@dataclass
class ImageOptions:
    """How a folder of images becomes tensors: resize the short side, centre-crop, scale
    to [0, 1], then ``(x - mean) / std`` per channel; NCHW float32."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    grayscale: bool = False


@dataclass
class Dataset:
    """Samples as named arrays with a leading sample axis, plus optional integer labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    source: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def sample(self, i: int) -> list[np.ndarray]:
        """Sample ``i`` as a list of arrays with a batch axis of 1, in input order."""
        return [a[i:i + 1] for a in self.inputs.values()]

    def batches(self, batch_size: int):
        for s in range(0, len(self), batch_size):
            yield [a[s:s + batch_size] for a in self.inputs.values()], (
                None if self.labels is None else self.labels[s:s + batch_size])

    def subset(self, idx) -> "Dataset":
        idx = np.asarray(idx, dtype=np.int64)
        return Dataset({k: v[idx] for k, v in self.inputs.items()},
                       None if self.labels is None else self.labels[idx], self.source,
                       list(self.notes))


def _builtin(name: str) -> Dataset:
    if not name.startswith("digits"):
        raise BadInput(f"unknown built-in data set '{name}': use digits:train or digits:eval, "
                       "or a .npz/.npy file, an image folder or module:function")
    split = name.partition(":")[2] or "eval"
    if split not in ("train", "eval"):
        raise BadInput(f"data '{name}': the digits splits are digits:train and digits:eval")
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]  # N,1,8,8 in [0, 1]
    y = d.target.astype(np.int64)
    # A fixed, stratified 75/25 split: every 4th sample of each class is held out.
    held = np.zeros(len(y), bool)
    for c in np.unique(y):
        held[np.flatnonzero(y == c)[3::4]] = True
    keep = held if split == "eval" else ~held
    return Dataset({"x": x[keep]}, y[keep], f"digits:{split}")


def _from_npz(path: Path, input_names: list[str] | None) -> Dataset:
    try:
        z = np.load(path, allow_pickle=False)
        arrays = {k: z[k] for k in z.files}
    except ValueError as e:
        raise BadInput(f"data '{path}': holds pickled objects, which edgeq does not load; "
                       "save plain numeric arrays") from e
    except Exception as e:
        raise BadInput(f"data '{path}': not a readable .npz file ({e})") from e
    labels = arrays.pop("y", None)
    if input_names and all(n in arrays for n in input_names):
        inputs = {n: arrays[n] for n in input_names}
    elif "x" in arrays and (not input_names or len(input_names) == 1):
        inputs = {(input_names or ["x"])[0]: arrays["x"]}
    else:
        want = ", ".join(input_names or ["x"])
        raise BadInput(f"data '{path}': has arrays {sorted(arrays) or 'none'}, expected "
                       f"'x' or one array per model input ({want}), and optional 'y'")
    return Dataset(inputs, labels, str(path))


def _load_image(path: Path, opts: ImageOptions) -> np.ndarray:
    from PIL import Image

    img = Image.open(path).convert("L" if opts.grayscale else "RGB")
    if opts.resize:
        w, h = img.size
        s = opts.resize / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    if opts.crop:
        w, h = img.size
        left, top = (w - opts.crop) // 2, (h - opts.crop) // 2
        img = img.crop((left, top, left + opts.crop, top + opts.crop))
    a = np.asarray(img, dtype=np.float32) / 255.0
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    mean = np.asarray(opts.mean, np.float32).reshape(-1, 1, 1)
    std = np.asarray(opts.std, np.float32).reshape(-1, 1, 1)
    return (a - mean) / std


def _from_folder(path: Path, opts: ImageOptions, input_names) -> Dataset:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise BadInput(f"data '{path}': no images ({', '.join(sorted(IMAGE_EXTS))}) found")
    classes = sorted({p.parent.name for p in files if p.parent != path})
    labels = None
    if classes and all(p.parent != path for p in files):
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[p.parent.name] for p in files], np.int64)
    try:
        x = np.stack([_load_image(p, opts) for p in files])
    except ValueError as e:
        raise BadInput(f"data '{path}': images differ in size; pass --resize and --crop") from e
    except OSError as e:
        raise BadInput(f"data '{path}': an image could not be read ({e})") from e
    ds = Dataset({(input_names or ["x"])[0]: x}, labels, str(path))
    if labels is not None:
        ds.notes.append(f"labels from folder names: {', '.join(classes)}")
    return ds


def _from_callable(spec: str, input_names) -> Dataset:
    mod_name, _, fn_name = spec.partition(":")
    try:
        from edgeq.models import import_module

        fn = getattr(import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise BadInput(f"data '{spec}': cannot import {fn_name} from {mod_name} ({e})") from e
    names = input_names or ["x"]
    cols: dict[str, list] = {n: [] for n in names}
    ys: list = []
    try:
        for batch in fn():
            y = None
            if isinstance(batch, dict):
                y = batch.get("y")
                xs = [batch[n] for n in names]
            elif isinstance(batch, (tuple, list)) and len(batch) == len(names) + 1:
                *xs, y = batch
            else:
                xs = list(batch) if isinstance(batch, (tuple, list)) else [batch]
            for n, a in zip(names, xs):
                a = np.asarray(a)
                if a.ndim == 0:
                    raise BadInput(f"data '{spec}': a batch of '{n}' is a scalar; yield "
                                   "arrays with a leading sample axis")
                cols[n].append(a)
            if y is not None:
                ys.append(np.asarray(y).reshape(-1))
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"data '{spec}': the function raised {type(e).__name__}: {e}") from e
    if not cols[names[0]]:
        raise BadInput(f"data '{spec}': the function yielded no batches")
    inputs = {n: np.concatenate(v) for n, v in cols.items()}
    labels = np.concatenate(ys).astype(np.int64) if ys else None
    return Dataset(inputs, labels, spec)


def load_dataset(source: str, input_names: list[str] | None = None,
                 image_options: ImageOptions | None = None) -> Dataset:
    """Load a data set from a file, folder, ``module:function`` or built-in name.

    ``input_names`` are the model's ``forward()`` argument names, used to pick arrays."""
    path = Path(source)
    if path.suffix == ".npz":
        if not path.is_file():
            raise BadInput(f"data file '{source}' not found")
        ds = _from_npz(path, input_names)
    elif path.suffix == ".npy":
        if not path.is_file():
            raise BadInput(f"data file '{source}' not found")
        try:
            ds = Dataset({(input_names or ["x"])[0]: np.load(path, allow_pickle=False)},
                         None, source)
        except ValueError as e:
            raise BadInput(f"data '{source}': not a plain numeric .npy array ({e})") from e
    elif path.is_dir():
        ds = _from_folder(path, image_options or ImageOptions(), input_names)
    elif source.startswith("digits"):
        ds = _builtin(source)
    elif source.startswith("photos:"):  # real photos for ImageNet models (edgeq.zoo.photos)
        from edgeq.zoo.photos import load_photos

        ds = Dataset({(input_names or ["x"])[0]: load_photos(source[7:])}, None, source)
    elif source.startswith("sentences:"):  # real English text for minilm-l6 (edgeq.zoo.sentences)
        from edgeq.zoo.sentences import load_sentences

        ds = Dataset(load_sentences(source[10:], input_names), None, source)
    elif ":" in source and not path.exists():
        ds = _from_callable(source, input_names)
    else:
        raise BadInput(f"data '{source}': not found; give a .npz/.npy file, an image folder, "
                       "module:function, or digits:train / digits:eval / photos:calib / "
                       "photos:eval / sentences:calib / sentences:eval")
    return validate(ds)


def validate(ds: Dataset) -> Dataset:
    """Refuse empty data, non-numeric arrays, NaN/Inf and ragged sample counts."""
    if not ds.inputs or len(ds) == 0:
        raise BadInput(f"data '{ds.source}': is empty (0 samples)")
    n = len(ds)
    for name, a in ds.inputs.items():
        if len(a) != n:
            raise BadInput(f"data '{ds.source}': array '{name}' has {len(a)} samples, "
                           f"others have {n}")
        if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
            raise BadInput(f"data '{ds.source}': array '{name}' is not numeric ({a.dtype})")
        if np.issubdtype(a.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(a)))
            if bad:
                raise BadInput(f"data '{ds.source}': array '{name}' has {bad} NaN/Inf values; "
                               "clean or drop those samples")
            if a.dtype == np.float64:
                ds.inputs[name] = a.astype(np.float32)
    if ds.labels is not None:
        if len(ds.labels) != n:
            raise BadInput(f"data '{ds.source}': 'y' has {len(ds.labels)} labels for {n} samples")
        ds.labels = ds.labels.astype(np.int64).reshape(-1)
    return ds


def check_against_model(ds: Dataset, input_names: list[str], example_shapes: list[tuple],
                        num_outputs: int | None = None) -> None:
    """Check the data fits the model: per-sample shapes match the example inputs, and
    labels lie in ``[0, num_outputs)``."""
    if len(ds.inputs) != len(input_names):
        raise BadInput(f"data '{ds.source}': has {len(ds.inputs)} input arrays, the model "
                       f"takes {len(input_names)} ({', '.join(input_names)})")
    for (name, a), shape in zip(ds.inputs.items(), example_shapes):
        if tuple(a.shape[1:]) != tuple(shape[1:]):
            raise BadInput(f"data '{ds.source}': samples of '{name}' have shape "
                           f"{tuple(a.shape[1:])}, the model's example input is "
                           f"{tuple(shape)} (batch first); fix the data or --input-shape")
    if ds.labels is not None and num_outputs is not None:
        bad = int(np.count_nonzero((ds.labels < 0) | (ds.labels >= num_outputs)))
        if bad:
            raise BadInput(f"data '{ds.source}': {bad} labels are outside the model's "
                           f"{num_outputs} outputs (0..{num_outputs - 1})")


def select(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """Choose ``n`` samples deterministically, stratified by label when there are labels."""
    if n <= 0:
        raise BadInput("--calib-samples must be at least 1")
    if n >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    if ds.labels is None:
        return ds.subset(np.sort(rng.choice(len(ds), n, replace=False)))
    classes, counts = np.unique(ds.labels, return_counts=True)
    quota = np.floor(counts / counts.sum() * n).astype(int)
    # Hand out the remainder to the classes with the largest fractional share.
    frac = counts / counts.sum() * n - quota
    for i in np.argsort(-frac)[: n - quota.sum()]:
        quota[i] += 1
    picks = [rng.permutation(np.flatnonzero(ds.labels == c))[:q] for c, q in zip(classes, quota)]
    return ds.subset(np.sort(np.concatenate(picks)))
