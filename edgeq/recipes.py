"""Recipe: the quantization choice, as a small frozen dataclass that round-trips to YAML.

Presets by name (``fp32``, ``int8``, ``int8-per-tensor``) or a YAML file holding the
fields below, optionally on top of a preset: ``base: int8`` then overrides.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import BadInput

OBSERVERS = ("minmax", "histogram", "entropy", "percentile")
GRANULARITIES = ("per-channel", "per-tensor")
METHODS = ("none", "static")
IO_DTYPES = ("auto", "int8", "float")


@dataclass(frozen=True)
class Recipe:
    """What to quantize and how.

    ``method``: ``none`` (fp32) or ``static`` (int8 weights and activations; calibrated
    PTQ, or QAT when the export is given QAT data). ``weight_granularity`` applies to
    weights (symmetric, int8); activations are per-tensor affine int8 observed with
    ``activation_observer``: ``minmax``, ``histogram`` (range chosen to minimise the L2
    quantization error over a histogram, as torchao's HistogramObserver), ``entropy`` (KL
    divergence) or ``percentile`` (clip at ``percentile``); the last two use
    ``histogram_bins`` bins. ``calib_samples`` is how many calibration samples are used.
    ``keep_float`` holds module-name patterns (fnmatch) left in fp32. ``io_dtype`` is the
    artifact's interface where the runtime lets it vary (LiteRT): ``auto`` (what its
    quantizer emits), ``int8`` (full-integer, quantize inputs on the device) or ``float``."""

    name: str = "int8"
    method: str = "static"
    weight_bits: int = 8
    weight_granularity: str = "per-channel"
    activation_bits: int = 8
    activation_observer: str = "histogram"
    percentile: float = 99.99
    histogram_bins: int = 2048
    calib_samples: int = 256
    keep_float: tuple[str, ...] = ()
    io_dtype: str = "auto"
    version: int = 1

    @property
    def quantized(self) -> bool:
        return self.method != "none"

    def with_(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["keep_float"] = list(self.keep_float)
        return d


PRESETS: dict[str, Recipe] = {
    "fp32": Recipe(name="fp32", method="none", weight_bits=32, activation_bits=32),
    "int8": Recipe(name="int8"),
    "int8-per-tensor": Recipe(name="int8-per-tensor", weight_granularity="per-tensor"),
}


def _check(r: Recipe, where: str) -> Recipe:
    def bad(field: str, value, allowed) -> BadInput:
        return BadInput(f"recipe {where}: {field} '{value}' is not one of "
                        f"{', '.join(map(str, allowed))}")

    if r.method not in METHODS:
        raise bad("method", r.method, METHODS)
    if r.activation_observer not in OBSERVERS:
        raise bad("activation_observer", r.activation_observer, OBSERVERS)
    if r.io_dtype not in IO_DTYPES:
        raise bad("io_dtype", r.io_dtype, IO_DTYPES)
    if r.weight_granularity not in GRANULARITIES:
        raise bad("weight_granularity", r.weight_granularity, GRANULARITIES)
    if r.quantized and (r.weight_bits, r.activation_bits) != (8, 8):
        raise BadInput(f"recipe {where}: static quantization is int8 (weight_bits and "
                       "activation_bits 8) in this version")
    if not 50.0 < float(r.percentile) <= 100.0:
        raise BadInput(f"recipe {where}: percentile {r.percentile} must be in (50, 100]")
    if not isinstance(r.histogram_bins, int) or r.histogram_bins < 16:
        raise BadInput(f"recipe {where}: histogram_bins must be an integer >= 16")
    if not isinstance(r.calib_samples, int) or r.calib_samples < 1:
        raise BadInput(f"recipe {where}: calib_samples must be a positive integer")
    return r


def from_dict(data: dict, where: str) -> Recipe:
    if not isinstance(data, dict):
        raise BadInput(f"recipe {where}: expected a mapping of recipe fields")
    data = dict(data)
    base_name = data.pop("base", None)
    base = PRESETS.get(base_name or "int8")
    if base is None:
        raise BadInput(f"recipe {where}: base '{base_name}' is not a preset "
                       f"({', '.join(PRESETS)})")
    fields = {f.name for f in dataclasses.fields(Recipe)}
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(key, fields, 1)
            raise BadInput(f"recipe {where}: unknown key '{key}'"
                           + (f" (did you mean '{near[0]}'?)" if near else ""))
    if "keep_float" in data:
        kf = data["keep_float"]
        data["keep_float"] = tuple([kf] if isinstance(kf, str) else kf or ())
    data.setdefault("name", base.name if not base_name else f"{base_name}-custom")
    return _check(base.with_(**data), where)


def load_recipe(spec: str) -> Recipe:
    """A preset name or a YAML file path."""
    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise BadInput(f"recipe file '{spec}' not found")
        import yaml

        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise BadInput(f"recipe file '{spec}' is not valid YAML ({e})".replace("\n", " ")) \
                from e
        data = data or {}
        if not isinstance(data, dict):
            raise BadInput(f"recipe file '{spec}': expected a mapping of recipe fields, "
                           f"got {type(data).__name__}")
        data.setdefault("name", path.stem)
        return from_dict(data, f"'{spec}'")
    near = difflib.get_close_matches(spec, PRESETS, 1)
    raise BadInput(f"--recipe '{spec}': not a preset ({', '.join(PRESETS)}) or a .yaml file"
                   + (f"; did you mean '{near[0]}'?" if near else ""))


def save_recipe(recipe: Recipe, path: Path) -> None:
    import yaml

    from edgeq.artifacts import atomic_write

    atomic_write(path, yaml.safe_dump(recipe.to_dict(), sort_keys=False).encode())
