"""Activation observers for PT2E, one per edgeq observer name (``recipes.OBSERVERS``).

They plug into any PT2E quantizer config (XNNPACKQuantizer, litert-torch) as
``observer_or_fake_quant_ctr=observer_for(recipe)``, and edgeq's ONNX Runtime flow feeds
the same classes with ORT's activations, so a name means one algorithm on every target.

- ``minmax``: torchao's MinMaxObserver (running min and max).
- ``moving-average``: the mean over samples of each sample's min and max
  (``MeanMinMaxObserver``; batch-size independent, unlike an exponential average per batch).
- ``histogram``: torchao's HistogramObserver (greedy L2-optimal range search).
- ``percentile``: ``PercentileObserver`` cuts ``(100 - P) / 2`` % of the values off each end
  (ONNX Runtime's ``symmetric=False`` convention), interpolated within a bin.
- ``entropy``: ``EntropyObserver``, TensorRT's KL-divergence calibration generalised to an
  affine grid: candidate ranges are ``[-T, T]`` cut to the observed ``[min, max]`` (a ReLU
  output only loses its top); each keeps its outliers in its edge bins (P), is
  re-quantized to the grid's levels and expanded back over the non-empty bins (Q); the
  candidate with the least KL(P || Q) wins (both smoothed as ONNX Runtime does), among
  those clipping at most 0.1% of the values (``ENTROPY_MAX_CLIPPED``: KL alone clipped
  EfficientNet-Lite0's ReLU6 outputs, saturated at 6, to [0, 0.75]).
- ``mse``: ``MSEObserver``: over the same candidates, the least expected squared error:
  rounding (``step**2 / 12`` per value inside; exact zeros cost nothing) plus clipping
  (squared distance outside).

The histogram observers keep a fixed number of bins; when a batch widens the range the old
histogram is re-binned into the new one: memory does not grow with the data. Histogram
updates and range searches are vectorised (the searches over all candidates at once).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torchao.quantization.pt2e import (HistogramObserver, MinMaxObserver,
                                       MovingAverageMinMaxObserver)

ACT_EPS = 2 ** -12  # the activation scale floor XNNPACK's and litert-torch's configs use
SEARCH_CANDIDATES = 256  # candidate ranges per mse search
KL_CANDIDATES = 128  # per entropy search (each costs a re-quantized histogram)
KL_SMOOTHING = 1e-4  # as ONNX Runtime's smooth_distribution
ENTROPY_MAX_CLIPPED = 1e-3  # share of the observed values an entropy range may clip


class MeanMinMaxObserver(MovingAverageMinMaxObserver):
    """Range = mean over samples of each sample's min and max. The first axis is the
    sample axis (as in the activations PT2E and the ONNX flow observe); a 0-d or 1-d
    tensor counts as one sample."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.pop("averaging_constant", None)
        super().__init__(*args, averaging_constant=1.0, **kwargs)
        self.register_buffer("samples", torch.tensor(0, dtype=torch.int64))

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().to(self.min_val.dtype)
        x = x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)
        lo, hi = x.amin(1), x.amax(1)
        n, k = int(self.samples), x.shape[0]
        if n == 0:
            self.min_val.copy_(lo.mean())
            self.max_val.copy_(hi.mean())
        else:
            self.min_val.copy_((self.min_val * n + lo.sum()) / (n + k))
            self.max_val.copy_((self.max_val * n + hi.sum()) / (n + k))
        self.samples.fill_(n + k)
        return x_orig


class _RangeSearchObserver(HistogramObserver):
    """A bounded histogram (``bins`` float64 counts over the observed ``[min, max]``) whose
    range is chosen by ``clip_range`` instead of HistogramObserver's greedy L2 search;
    scale and zero point then follow the base class (dtype, qscheme, quant_min /
    quant_max, eps). ``forward`` is HistogramObserver's idea made cheaper: counts by
    ``bincount`` of bin indices, and when a batch widens the range the old counts are
    re-binned exactly (linear interpolation of their cumulative sum, i.e. uniform density
    within a bin) instead of upsampling by 16 and bucketizing."""

    count_zeros = False  # MSEObserver needs the count of exact zeros; it costs a pass

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.histogram = torch.zeros(self.bins, dtype=torch.float64)
        # Exact zeros (ReLU outputs: often half the values) are represented without error
        # on any affine grid; the MSE search must not charge them a rounding error.
        self.register_buffer("zeros", torch.tensor(0.0, dtype=torch.float64))

    def forward(self, x_orig):
        if x_orig.numel() == 0:
            return x_orig
        x = x_orig.detach().reshape(-1).float()
        lo, hi = (float(v) for v in torch.aminmax(x))
        if not (np.isfinite(lo) and np.isfinite(hi)):  # as HistogramObserver: ignore inf
            x = x[torch.isfinite(x)]
            if x.numel() == 0:
                return x_orig
            lo, hi = (float(v) for v in torch.aminmax(x))
        if self.count_zeros:
            self.zeros += float(x.numel() - torch.count_nonzero(x))
        old_lo, old_hi = float(self.min_val), float(self.max_val)
        first = old_lo == float("inf")
        if not first:
            lo, hi = min(lo, old_lo), max(hi, old_hi)
        self.min_val.fill_(lo)
        self.max_val.fill_(hi)
        lo, hi = float(self.min_val), float(self.max_val)  # as stored (float32)
        if first:
            self.histogram.zero_()
        elif (lo, hi) != (old_lo, old_hi):
            self.histogram.copy_(self._rebin(old_lo, old_hi, lo, hi))
        if hi > lo:  # bin index in place, as int32: the cheapest passes over big tensors
            idx = x.sub(lo).mul_(self.bins / (hi - lo)).clamp_(0, self.bins - 0.5)
            idx = idx.to(torch.int32)
        else:
            idx = torch.zeros(x.numel(), dtype=torch.int32)
        self.histogram += torch.bincount(idx, minlength=self.bins).to(self.histogram.dtype)
        return x_orig

    def _rebin(self, lo: float, hi: float, new_lo: float, new_hi: float) -> torch.Tensor:
        hist = self.histogram.detach().double().cpu().numpy()
        if hi <= lo:  # everything so far was one value
            out = np.zeros(self.bins)
            j = int((lo - new_lo) / (new_hi - new_lo) * self.bins)
            out[min(max(j, 0), self.bins - 1)] = hist.sum()
        else:
            cdf = np.concatenate([[0.0], np.cumsum(hist)])
            new_edges = np.linspace(new_lo, new_hi, self.bins + 1)
            out = np.diff(np.interp(new_edges, np.linspace(lo, hi, self.bins + 1), cdf))
        return torch.from_numpy(out)

    def clip_range(self) -> tuple[float, float]:
        raise NotImplementedError

    def _geometry(self):
        """(histogram as float64 numpy, bin edges, bin width)."""
        hist = self.histogram.detach().double().cpu().numpy()
        lo, hi = float(self.min_val), float(self.max_val)
        edges = np.linspace(lo, hi, len(hist) + 1)
        return hist, edges, (hi - lo) / len(hist)

    def _levels(self) -> int:
        return int(self.quant_max - self.quant_min + 1)

    def _candidates(self, most: int = SEARCH_CANDIDATES):
        """Kept-bin spans ``[start, end)`` of the candidate ranges: ``[-T, T]`` cut to the
        observed ``[min, max]``, for magnitudes T up to the largest, keeping at least as
        many bins as the grid has levels. A one-sided (ReLU) tensor so only loses its top;
        a two-sided one loses the far tail of each side first."""
        nbins = len(self.histogram)
        lo, hi = float(self.min_val), float(self.max_val)
        width = (hi - lo) / nbins
        zero = min(max(-lo / width, 0.0), float(nbins))  # zero's position, in bins
        far = max(zero, nbins - zero)
        t = np.linspace(0.0, far, 8 * most + 1)[1:]
        start = np.clip(np.floor(zero - t), 0, nbins).astype(int)
        end = np.clip(np.ceil(zero + t), 0, nbins).astype(int)
        ok = end - start >= min(nbins, self._levels())
        if not ok.any():
            return np.array([0]), np.array([nbins])
        pairs = np.unique(np.stack([start[ok], end[ok]], 1), axis=0)
        pairs = pairs[np.argsort(pairs[:, 1] - pairs[:, 0], kind="stable")]  # full range last
        if len(pairs) > most:
            pairs = pairs[np.linspace(0, len(pairs) - 1, most).round().astype(int)]
        return pairs[:, 0], pairs[:, 1]

    def calculate_qparams(self):
        if self.min_val == float("inf") and self.max_val == float("-inf"):
            warnings.warn("must run observer before calling calculate_qparams. Returning "
                          "default scale and zero point")
            return (torch.tensor([1.0], device=self.min_val.device.type),
                    torch.tensor([0], device=self.min_val.device.type))
        if float(self.min_val) == float(self.max_val):
            lo = hi = float(self.min_val)
        else:
            lo, hi = self.clip_range()
        return self._calculate_qparams(torch.tensor(lo, dtype=torch.float32),
                                       torch.tensor(hi, dtype=torch.float32))

    def extra_repr(self):
        return f"bins={self.bins}, min_val={self.min_val}, max_val={self.max_val}"


class PercentileObserver(_RangeSearchObserver):
    """Clip ``(100 - percentile) / 2`` % of the observed values off each end."""

    def __init__(self, percentile: float = 99.99, bins: int = 2048, **kwargs) -> None:
        super().__init__(bins=bins, **kwargs)
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile {percentile} must be in (0, 100]")
        self.percentile = float(percentile)

    def clip_range(self):
        hist, edges, _ = self._geometry()
        cdf = np.concatenate([[0.0], np.cumsum(hist)]) / max(hist.sum(), 1e-300)
        cut = (100.0 - self.percentile) / 200.0
        # cdf is non-decreasing; interpolating on its strictly increasing points is exact.
        keep = np.concatenate([[True], np.diff(cdf) > 0])
        lo, hi = np.interp([cut, 1.0 - cut], cdf[keep], edges[keep])
        return float(lo), float(hi)

    def extra_repr(self):
        return f"percentile={self.percentile}, " + super().extra_repr()


class EntropyObserver(_RangeSearchObserver):
    """The range minimising KL(P || Q) between the clipped histogram P (outliers folded
    into its edge bins) and its re-quantized version Q, over all candidates at once."""

    def clip_range(self):
        hist, edges, _ = self._geometry()
        nbins, levels = len(hist), self._levels()
        if nbins <= levels:
            return float(edges[0]), float(edges[-1])
        start, end = self._candidates(KL_CANDIDATES)
        j = np.arange(nbins, dtype=np.int32)[None, :]
        s, e = start[:, None].astype(np.int32), end[:, None].astype(np.int32)
        inside = (j >= s) & (j < e)
        sliced = np.where(inside, hist.astype(np.float32)[None, :], np.float32(0))
        cum = np.concatenate([[0.0], np.cumsum(hist)])
        p = sliced.copy()
        rows = np.arange(len(start))
        p[rows, start] += cum[start]
        p[rows, end - 1] += cum[-1] - cum[end]
        # Level of each kept bin: its position within the span, on the grid's level count
        # (bins outside the span are empty in ``sliced``: level 0 takes nothing from them).
        level = np.clip(((j - s) * levels) // (e - s), 0, levels - 1)
        nonzero = sliced > 0
        flat = (level + (rows * levels).astype(np.int32)[:, None]).ravel()
        size = len(start) * levels
        sums = np.bincount(flat, sliced.ravel(), size).reshape(-1, levels)
        counts = np.bincount(flat, nonzero.ravel(), size).reshape(-1, levels)
        per_bin = (sums / np.maximum(counts, 1)).astype(np.float32)
        q = np.where(nonzero, np.take_along_axis(per_bin, level, 1), np.float32(0))
        kl = _kl(p, q)
        # KL sees how the kept values are shaped, not how far the clipped ones move: a
        # ReLU6 output's spike of saturated values at 6 folds into the edge bin as happily
        # as a rare outlier, and [0, 0.75] won (EfficientNet-Lite0: 0.8 dB SQNR). So only
        # ranges that clip at most ENTROPY_MAX_CLIPPED of the values compete.
        clipped = (cum[start] + cum[-1] - cum[end]) / max(cum[-1], 1e-300)
        kl = np.where(clipped <= ENTROPY_MAX_CLIPPED, kl, np.inf)
        best = int(np.argmin(kl)) if np.isfinite(kl).any() else len(start) - 1
        return float(edges[start[best]]), float(edges[end[best]])


class MSEObserver(_RangeSearchObserver):
    """The range minimising the expected squared quantization error over the histogram:
    ``step**2 / 12`` per value inside, the squared distance to the range for values
    outside (bin centres stand for their values)."""

    count_zeros = True

    def clip_range(self):
        hist, edges, _ = self._geometry()
        start, end = self._candidates()
        lo, hi = edges[start][:, None], edges[end][:, None]
        centres = (0.5 * (edges[:-1] + edges[1:]))[None, :]
        step = (np.maximum(hi, 0) - np.minimum(lo, 0)) / (self._levels() - 1)
        below, above = centres < lo, centres > hi
        err = np.where(below, (lo - centres) ** 2,
                       np.where(above, (centres - hi) ** 2, step ** 2 / 12))
        if edges[0] <= 0 <= edges[-1]:  # exact zeros cost nothing (never clipped either)
            hist = hist.copy()
            z = min(int(np.searchsorted(edges, 0.0, "right")) - 1, len(hist) - 1)
            hist[z] = max(hist[z] - float(self.zeros), 0.0)
        best = int(np.argmin((err * hist[None, :]).sum(1)))
        return float(lo[best, 0]), float(hi[best, 0])


def _smooth(dist: np.ndarray) -> np.ndarray:
    """Per row, normalised, with ``KL_SMOOTHING`` moved from the non-empty bins to the
    empty ones (ONNX Runtime's ``smooth_distribution``), so KL stays finite."""
    dist = dist / np.maximum(dist.sum(1, keepdims=True), 1e-30)
    zero = dist == 0
    nz = dist.shape[1] - zero.sum(1, keepdims=True)
    eps1 = KL_SMOOTHING * (dist.shape[1] - nz) / np.maximum(nz, 1)
    return np.maximum(np.where(zero, KL_SMOOTHING, dist - eps1), 1e-12)


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(P || Q) per row, both smoothed."""
    p, q = _smooth(p), _smooth(q)
    p = p / p.sum(1, keepdims=True)
    q = q / q.sum(1, keepdims=True)
    return (p * np.log(p / q)).sum(1)


def observer_class(name: str):
    """The observer class for an edgeq observer name."""
    return {"minmax": MinMaxObserver, "moving-average": MeanMinMaxObserver,
            "histogram": HistogramObserver, "percentile": PercentileObserver,
            "entropy": EntropyObserver, "mse": MSEObserver}[name]


def observer_for(recipe, eps: float = ACT_EPS):
    """``observer_or_fake_quant_ctr`` for the recipe's activation observer (bins,
    percentile and the activation scale floor ``eps`` bound in)."""
    name = recipe.activation_observer
    cls = observer_class(name)
    kw = {"eps": eps}
    if name in ("histogram", "percentile", "entropy", "mse"):
        kw["bins"] = int(recipe.histogram_bins)
    if name == "percentile":
        kw["percentile"] = float(recipe.percentile)
    return cls.with_args(**kw)


def describe(recipe) -> str:
    """One line for manifests: which algorithm, with its settings."""
    name, bins = recipe.activation_observer, recipe.histogram_bins
    return {
        "minmax": "MinMaxObserver (running min / max)",
        "moving-average": "edgeq MeanMinMaxObserver (mean of per-sample min / max)",
        "histogram": f"torchao HistogramObserver (L2-optimal range), {bins} bins",
        "percentile": f"edgeq PercentileObserver, {bins} bins, {recipe.percentile} two-sided",
        "entropy": f"edgeq EntropyObserver (KL divergence), {bins} bins",
        "mse": f"edgeq MSEObserver (expected squared error), {bins} bins",
    }[name]


def observed_range(obs) -> tuple[float, float]:
    """The float range ``[(qmin - zp) * scale, (qmax - zp) * scale]`` an observer's
    qparams represent (what a runtime taking ranges instead of qparams needs)."""
    scale, zp = obs.calculate_qparams()
    scale, zp = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
    return (obs.quant_min - zp) * scale, (obs.quant_max - zp) * scale
