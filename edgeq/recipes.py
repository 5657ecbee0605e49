"""Recipe: the quantization choice, as a small frozen dataclass that round-trips to YAML.

Presets by name (``fp32``, ``int8``, ``int8-per-tensor``, ``int8-dynamic``, ``int8-w``,
``int4-w-g32`` / ``-g64`` / ``-g128``) or a YAML file holding the
fields below, optionally on top of a preset: ``base: int8`` then overrides.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import BadInput

OBSERVERS = ("minmax", "moving-average", "histogram", "percentile", "entropy", "mse")
GRANULARITIES = ("per-channel", "per-tensor", "per-group")
METHODS = ("none", "static", "dynamic", "weight-only")
GROUP_SIZES = (32, 64, 128)  # per-group: input features sharing one weight scale
IO_DTYPES = ("auto", "int8", "float")
WEIGHT_ROUNDINGS = ("nearest", "adaround", "gptq", "awq")  # edgeq.quantize.adaround / gptq / awq
RELU6_CLE = ("relu", "keep")  # edgeq.quantize.dfq.equalize


@dataclass(frozen=True)
class Recipe:
    """What to quantize and how.

    ``method``: ``none`` (fp32) or ``static`` (int8 weights and activations; calibrated
    PTQ, or QAT when the export is given QAT data), ``dynamic`` (int8 weights, activations
    quantized at run time) or ``weight-only`` (int8 or int4 weights, float activations);
    the last two quantize Linear layers only (``edgeq.quantize.schemes``, which says
    what each runtime can run). ``weight_granularity`` applies to
    weights (symmetric, int8); activations are per-tensor affine int8 observed with
    ``activation_observer``: ``minmax``, ``moving-average`` (mean of per-sample min / max),
    ``histogram`` (range chosen to minimise the L2 quantization error over a histogram, as
    torchao's HistogramObserver), ``percentile`` (clip at ``percentile``, two-sided; the
    shorthand ``percentile:P`` sets both fields), ``entropy`` (KL divergence) or ``mse``
    (least expected squared error); the histogram-based ones use ``histogram_bins`` bins
    (see ``edgeq.quantize.observers``). ``calib_samples`` is how many calibration samples
    are used.
    ``keep_float`` holds module-name patterns (fnmatch) left in fp32. ``int16_layers``
    holds module-name patterns (fnmatch, matched as ``keep_float`` is) whose activations,
    the layer's input and output edges, are quantized to 16 bits while its weights stay
    int8 (w8a16): most of the accuracy of float at int8's weight size. Static PTQ only,
    and only on targets whose runtime can run it (``supports_int16_activations``; ONNX
    Runtime: its CPU provider computes such layers in float between 16-bit Q/DQ, so it
    is a size win over float, not a speed win); others refuse it (use ``keep_float``).
    A layer in both lists stays float. ``io_dtype`` is the
    artifact's interface where the runtime lets it vary (LiteRT): ``auto`` (what its
    quantizer emits), ``int8`` (full-integer, quantize inputs on the device) or ``float``."""

    name: str = "int8"
    method: str = "static"
    weight_bits: int = 8
    weight_granularity: str = "per-channel"
    # Input features per weight scale with weight_granularity per-group (32, 64 or 128).
    group_size: int = 32
    activation_bits: int = 8
    activation_observer: str = "histogram"
    percentile: float = 99.99
    histogram_bins: int = 2048
    calib_samples: int = 256
    keep_float: tuple[str, ...] = ()
    int16_layers: tuple[str, ...] = ()
    io_dtype: str = "auto"
    # Float-model passes (edgeq.quantize.passes), static PTQ only: cross-layer
    # equalization (``equalize_relu6``: ``keep`` skips pairs joined by ReLU6, ``relu``
    # swaps that ReLU6 for ReLU, which changes the float model: EfficientNet-Lite0 falls to
    # 2.6 dB SQNR), layer-by-layer weight rounding on the int8
    # grid (``nearest`` or ``adaround``) and empirical bias correction.
    equalize: bool = False
    equalize_relu6: str = "keep"
    weight_rounding: str = "nearest"
    bias_correction: bool = False
    # Transformers (edgeq.quantize.float_ops, .smoothquant): ops kept float under static
    # int8 (``auto``: the target runtime's measured ``float_ops_auto`` set of softmax,
    # layer_norm, mask_add, ffn_down when the model has attention; ``[]`` quantizes them as
    # the vendors do), and SmoothQuant's migration
    # strength alpha in [0, 1] (None: off). weight_rounding ``gptq`` / ``awq``: GPTQ, AWQ.
    float_ops: str | tuple[str, ...] = "auto"
    # Of the kinds kept float, those run as dynamic int8 (int8 weights, input quantized per
    # inference, float output): ``auto`` the runtime's measured ``dynamic_ops_auto`` table
    # (ExecuTorch and LiteRT with XNNPACK: ffn_down) when float_ops is auto too, ``[]``
    # truly float; a list is refused by a runtime that cannot (ONNX Runtime, which
    # quantizes ffn_down statically with a float output instead).
    dynamic_ops: str | tuple[str, ...] = "auto"
    smoothquant: float | None = None
    version: int = 1

    @property
    def quantized(self) -> bool:
        return self.method != "none"

    @property
    def needs_calibration(self) -> bool:
        """Static PTQ observes activations; dynamic and weight-only need no data."""
        return self.method == "static"

    def with_(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["keep_float"] = list(self.keep_float)
        d["int16_layers"] = list(self.int16_layers)
        for key in ("float_ops", "dynamic_ops"):
            if not isinstance(getattr(self, key), str):
                d[key] = list(getattr(self, key))
        return d


PRESETS: dict[str, Recipe] = {
    "fp32": Recipe(name="fp32", method="none", weight_bits=32, activation_bits=32),
    "int8": Recipe(name="int8"),
    "int8-per-tensor": Recipe(name="int8-per-tensor", weight_granularity="per-tensor"),
    # edgeq.quantize.passes: weights rounded layer by layer, biases corrected (DFQ, AdaRound).
    "int8-dfq": Recipe(name="int8-dfq", weight_rounding="adaround", bias_correction=True),
    # edgeq.quantize.schemes: Linear layers only; what each runtime runs is in the manifest.
    "int8-dynamic": Recipe(name="int8-dynamic", method="dynamic"),
    "int8-w": Recipe(name="int8-w", method="weight-only", activation_bits=32),
    **{f"int4-w-g{g}": Recipe(name=f"int4-w-g{g}", method="weight-only", weight_bits=4,
                              weight_granularity="per-group", group_size=g,
                              activation_bits=32) for g in GROUP_SIZES},
}


def observer_fields(text: str, where: str) -> dict:
    """Recipe fields for an observer name: ``percentile:99.9`` gives
    ``{"activation_observer": "percentile", "percentile": 99.9}``. An unknown name is
    BadInput naming ``where``, the valid names and the nearest one."""
    name, sep, arg = str(text).strip().partition(":")
    if name not in OBSERVERS:
        near = difflib.get_close_matches(name, OBSERVERS, 1, 0.5)
        raise BadInput(f"{where}: observer '{text}' does not exist; use one of "
                       f"{', '.join(OBSERVERS)} (or percentile:P)"
                       + (f"; did you mean '{near[0]}'?" if near else ""))
    if not sep:
        return {"activation_observer": name}
    try:
        if name != "percentile":
            raise ValueError
        p = float(arg)
    except ValueError:
        raise BadInput(f"{where}: observer '{text}': only percentile takes a value, as "
                       "percentile:P with P a number in (50, 100], e.g. percentile:99.9") \
            from None
    if not 50.0 < p <= 100.0:
        raise BadInput(f"{where}: observer '{text}': P must be in (50, 100]")
    return {"activation_observer": name, "percentile": p}


def _check(r: Recipe, where: str) -> Recipe:
    def bad(field: str, value, allowed) -> BadInput:
        return BadInput(f"recipe {where}: {field} '{value}' is not one of "
                        f"{', '.join(map(str, allowed))}")

    if r.method not in METHODS:
        raise bad("method", r.method, METHODS)
    if r.activation_observer not in OBSERVERS:
        raise bad("activation_observer", r.activation_observer, OBSERVERS)
    if r.weight_rounding not in WEIGHT_ROUNDINGS:
        raise bad("weight_rounding", r.weight_rounding, WEIGHT_ROUNDINGS)
    if r.equalize_relu6 not in RELU6_CLE:
        raise bad("equalize_relu6", r.equalize_relu6, RELU6_CLE)
    for flag in ("equalize", "bias_correction"):
        if not isinstance(getattr(r, flag), bool):
            raise BadInput(f"recipe {where}: {flag} must be true or false")
    from edgeq.quantize import float_ops

    r = dataclasses.replace(r, float_ops=float_ops.check(r.float_ops, where),
                            dynamic_ops=float_ops.check_dynamic(r.dynamic_ops, where))
    if r.smoothquant is not None and (isinstance(r.smoothquant, bool) or not isinstance(
            r.smoothquant, (int, float)) or not 0.0 <= r.smoothquant <= 1.0):
        raise BadInput(f"recipe {where}: smoothquant is the migration strength alpha, a "
                       "number in [0, 1] (0.5 is usual), or null for off")
    if r.io_dtype not in IO_DTYPES:
        raise bad("io_dtype", r.io_dtype, IO_DTYPES)
    if r.weight_granularity not in GRANULARITIES:
        raise bad("weight_granularity", r.weight_granularity, GRANULARITIES)
    if r.method in ("dynamic", "weight-only"):
        from edgeq.quantize.schemes import check_recipe

        r = check_recipe(r, where)
    elif r.weight_granularity == "per-group":
        raise BadInput(f"recipe {where}: per-group weights are for method weight-only "
                       "(e.g. --recipe int4-w-g32)")
    elif r.quantized and (r.weight_bits, r.activation_bits) != (8, 8):
        raise BadInput(f"recipe {where}: static quantization is int8 (weight_bits and "
                       "activation_bits 8) in this version")
    if r.int16_layers and r.method != "static":
        raise BadInput(f"recipe {where}: int16_layers (16-bit activations) needs method "
                       f"static; method {r.method} has no quantized activations to widen")
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
    for key in ("keep_float", "int16_layers"):
        if key in data:
            kf = data[key]
            data[key] = tuple([kf] if isinstance(kf, str) else kf or ())
    if "activation_observer" in data:
        obs = observer_fields(data.pop("activation_observer"), f"recipe {where}")
        if "percentile" in data and "percentile" in obs and data["percentile"] != \
                obs["percentile"]:
            raise BadInput(f"recipe {where}: percentile {data['percentile']} contradicts "
                           f"activation_observer percentile:{obs['percentile']}; give one")
        data = {**data, **obs}
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
