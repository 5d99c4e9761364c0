"""Streaming histograms and the range searches run on them (percentile, entropy/KL, MSE).

Why a histogram: calibration streams over many batches of activations and must never hold them all.
A fixed number of equal-width bins (2048 by default, as in TensorRT) summarises every batch seen so far;
the three searches below then pick a clipping range from the summary alone.

Bin policy (:class:`StreamingHistogram`): bins lie on the grid ``{k * width : k integer}``, so ``0`` is
always a bin edge, and their number stays ``bins``. When a later batch falls outside the range, the width
grows by the smallest integer factor ``k >= 2`` that covers it (after a huge jump, one at most a
fraction ``2 / bins`` larger); each new bin is then the union of exactly ``k`` old bins, so old counts
are merged exactly (no interpolation, no smearing) and memory stays bounded whatever the outliers. The
price: after growth the resolution is up to ``k`` times coarser than one pass over all data would give,
and up to half of the bins may lie beyond the data. (ONNX Runtime and NVIDIA's pytorch-quantization
instead keep the width and *add* bins, which is exact too but lets one far outlier in a late batch blow
the bin count up without bound.)

Exact zeros are counted apart from the bins: ``0`` is representable exactly by every symmetric and
asymmetric grid, so zeros (a ReLU output's spike) carry no information about the range. The entropy
search leaves them out of both distributions, which NVIDIA's pytorch-quantization approximates by
overwriting bin 0 with bin 1 (both give 4.1 sigma on ReLU of a Gaussian; keeping the spike in bin 0
halves the threshold to 2.1 sigma, because merging that bin with its neighbours looks costly to KL).
Percentiles count zeros as a point mass at 0; the MSE search gives them zero error.
"""

from __future__ import annotations

import math

import numpy as np
import torch

Tensor = torch.Tensor


class StreamingHistogram:
    """Equal-width histogram over a range containing 0 that grows by merging bins exactly.

    Args:
        bins: Number of bins, fixed for the life of the histogram.

    Attributes:
        counts: ``float64`` counts per bin (exact integers), ``None`` until a nonzero value is seen.
        width: Bin width; the bins cover ``[lo_index * width, (lo_index + bins) * width)``.
        lo_index: Grid index of the lowest edge (``<= 0``; 0 for a histogram of ``|x|``).
        zeros: Number of exact zeros seen (not in ``counts``).
        min, max: Exact extremes of every value seen, zeros included.
    """

    def __init__(self, bins: int = 2048) -> None:
        if bins < 8:
            raise ValueError(f"a histogram needs at least 8 bins, got {bins}")
        self.bins = bins
        self.counts: np.ndarray | None = None
        self.width = 0.0
        self.lo_index = 0
        self.zeros = 0
        self.min = math.inf
        self.max = -math.inf

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` bin edges, ``0`` among them."""
        return (self.lo_index + np.arange(self.bins + 1)) * self.width

    @property
    def zero_edge(self) -> int:
        """Position of the edge at ``0`` in :attr:`edges`."""
        return -self.lo_index

    @property
    def total(self) -> float:
        """Number of values seen, zeros included."""
        return (0.0 if self.counts is None else float(self.counts.sum())) + self.zeros

    def add(self, x: Tensor) -> None:
        """Count the values of ``x`` (any shape), widening the range first when needed."""
        x = x.detach().reshape(-1).to(torch.float64)
        if x.numel() == 0:
            return
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        nonzero = x[x != 0]
        self.zeros += x.numel() - nonzero.numel()
        if nonzero.numel() == 0:
            return
        lo, hi = min(float(nonzero.min()), 0.0), max(float(nonzero.max()), 0.0)
        if self.counts is None:
            self._start(lo, hi)
        elif lo < self.lo_index * self.width or hi > (self.lo_index + self.bins) * self.width:
            self._grow(lo, hi)
        idx = torch.floor(nonzero / self.width) - self.lo_index
        idx = idx.clamp_(0, self.bins - 1).long()
        self.counts += torch.bincount(idx, minlength=self.bins).double().numpy()

    def _start(self, lo: float, hi: float) -> None:
        # One-sided data get exactly [0, hi] or [lo, 0] (the grid np.histogram would use); two-sided
        # data spend one bin on putting 0 on an edge.
        n = self.bins
        if lo == 0.0:
            self.width, self.lo_index = hi / n, 0
        elif hi == 0.0:
            self.width, self.lo_index = -lo / n, -n
        else:
            self.width = (hi - lo) / (n - 1)
            self.lo_index = math.floor(lo / self.width)
        self.counts = np.zeros(n)

    def _grow(self, lo: float, hi: float) -> None:
        assert self.counts is not None
        n, w, first = self.bins, self.width, self.lo_index
        lo, hi = min(lo, first * w), max(hi, (first + n) * w)
        # New bin s covers old grid indices [s*k, s*k + k): an exact merge of k old bins. Grid
        # alignment costs at most two bins, so k_safe always fits; try the few smaller k first.
        k_min = max(2, math.ceil((hi - lo) / (n * w)))
        k_safe = max(k_min, math.ceil((hi - lo) / ((n - 2) * w)))
        for k in [*range(k_min, min(k_min + 3, k_safe)), k_safe]:
            new_first = min(math.floor(lo / (k * w)), first // k)
            top = max(math.ceil(hi / (k * w)), (first + n - 1) // k + 1)
            if new_first + n >= top:
                break
        # Python integers: exact floor division even when a far outlier makes k huge.
        old_index = np.array([(first + j) // k - new_first for j in range(n)])
        self.counts = np.bincount(np.minimum(old_index, n - 1), weights=self.counts, minlength=n)
        self.width, self.lo_index = k * w, new_first


def quantile(hist: StreamingHistogram, q: float) -> float:
    """The value below which a fraction ``q`` of the counted values lie.

    Density is taken as uniform inside each bin and the zeros as a point mass at 0, so the answer is
    interpolated inside a bin (not snapped to an edge as ONNX Runtime and pytorch-quantization do) and
    is clamped to the exact ``[min, max]`` seen.
    """
    edges = hist.edges
    counts = np.zeros(hist.bins) if hist.counts is None else hist.counts
    z = hist.zero_edge
    # A zero-width bin at the 0 edge holds the zeros.
    edges = np.concatenate([edges[: z + 1], edges[z:]])
    counts = np.concatenate([counts[:z], [float(hist.zeros)], counts[z:]])
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    target = q * cum[-1]
    k = int(np.searchsorted(cum, target, side="left"))
    if k == 0:
        value = edges[0]
    else:
        b = k - 1
        value = edges[b] + (target - cum[b]) / counts[b] * (edges[b + 1] - edges[b])
    return float(min(max(value, hist.min), hist.max))


def entropy_threshold(
    counts: np.ndarray, edges: np.ndarray, num_levels: int, start_bin: int = 128, stride: int = 1
) -> float:
    """TensorRT's entropy calibration threshold for a histogram of ``|x|`` starting at 0.

    Migacz, "8-bit Inference with TensorRT" (GTC 2017): for every candidate ``i`` (from ``start_bin``
    to the number of bins), the reference ``P`` is ``counts[:i]`` with the clipped outliers
    ``counts[i:]`` added to its last bin; the candidate ``Q`` merges ``counts[:i]`` into ``num_levels``
    levels (bin ``j`` goes to level ``floor(j * num_levels / i)``) and spreads each level's count
    evenly back over that level's *nonzero* bins. ``KL(P || Q)`` is taken on the normalised
    distributions without smoothing (``Q`` is nonzero wherever ``P`` is, except at a clipped empty
    last bin, where the divergence is infinite: the candidate is skipped).

    Returns:
        ``edges[i]`` (= ``i * width``, the top of the kept bins, as NVIDIA's pytorch-quantization does;
        Migacz's slides write ``(i + 0.5) * width``) for the minimising ``i``, the largest on ties.
        ``0.0`` for an empty histogram.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.size
    if counts.sum() == 0:
        return 0.0
    outliers = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # outliers[i] = sum(counts[i:])
    best_kl, best_i = math.inf, n
    for i in range(min(start_bin, n), n + 1, stride):
        ref = counts[:i]
        p = ref.copy()
        p[-1] += outliers[i]
        level = np.arange(i) * num_levels // i
        nonzero = ref > 0
        merged = np.bincount(level, weights=ref, minlength=num_levels)
        support = np.bincount(level, weights=nonzero, minlength=num_levels)
        q = np.where(nonzero, merged[level] / np.maximum(support[level], 1.0), 0.0)
        mask = p > 0
        if q.sum() == 0 or np.any(q[mask] == 0):
            continue
        p_n, q_n = p[mask] / p.sum(), q[mask] / q.sum()
        kl = float(np.sum(p_n * np.log(p_n / q_n)))
        if kl <= best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def _sawtooth_integral(v: np.ndarray) -> np.ndarray:
    """``∫_0^v (frac(t) - 1/2)^2 dt`` for ``v >= 0``: rounding error integrated in grid units."""
    n = np.floor(v)
    r = v - n
    return n / 12.0 + ((r - 0.5) ** 3 + 0.125) / 3.0


def expected_sq_error(
    counts: np.ndarray,
    edges: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray,
    qmin: int,
    qmax: int,
) -> np.ndarray:
    """Total squared quantize-dequantize error of a histogram, for a batch of candidate grids.

    The density is uniform inside each bin and the quantizer is ``x -> (clamp(round(x / s) + z,
    qmin, qmax) - z) * s``. In grid units ``u = x / s + z`` the error is ``s^2 (u - round u)^2``
    between ``qmin - 1/2`` and ``qmax + 1/2`` and the clipping error ``s^2 (u - qmin)^2`` or
    ``s^2 (u - qmax)^2`` outside; its antiderivative ``G`` is closed-form, so each bin contributes
    ``count / (b - a) * s^3 * (G(u_b) - G(u_a))`` exactly. (Bin centres alone would be wrong whenever a
    bin is as wide as a quantization step, which is the usual case for 8 bits over 2048 bins.)

    Args:
        counts, edges: The histogram (``n`` counts, ``n + 1`` edges).
        scale, zero_point: Candidate grids, shape ``[m]`` (``scale > 0``).
        qmin, qmax: Integer range.

    Returns:
        Shape ``[m]``: the summed squared error of each candidate.
    """
    s = np.asarray(scale, dtype=np.float64)[:, None]
    z = np.asarray(zero_point, dtype=np.float64)[:, None]
    u_lo, u_hi = qmin - 0.5, qmax + 0.5

    def antiderivative(u: np.ndarray) -> np.ndarray:
        inner = _sawtooth_integral(np.clip(u, u_lo, u_hi) - u_lo)
        below = ((np.minimum(u, u_lo) - qmin) ** 3 + 0.125) / 3.0
        above = ((np.maximum(u, u_hi) - qmax) ** 3 - 0.125) / 3.0
        return inner + below + above

    keep = counts > 0
    c, a, b = counts[keep], edges[:-1][keep], edges[1:][keep]
    g = antiderivative(b[None, :] / s + z) - antiderivative(a[None, :] / s + z)
    return (s[:, 0] ** 3) * (g * (c / (b - a))[None, :]).sum(axis=1)


def _grid(lo: np.ndarray, hi: np.ndarray, bits: int, symmetric: bool):
    """Scale and zero point of candidate ranges (the formula of ``qparams_from_range``, in float64)."""
    if symmetric:
        amax = np.maximum(np.abs(lo), np.abs(hi))
        return amax / (2 ** (bits - 1) - 1), np.zeros_like(amax), -(2 ** (bits - 1) - 1)
    qmax = 2**bits - 1
    scale = (hi - lo) / qmax
    zero_point = np.clip(np.round(-lo / np.where(scale > 0, scale, 1.0)), 0, qmax)
    return scale, zero_point, 0


def _best_index(errors: np.ndarray, candidates: np.ndarray) -> int:
    errors = np.where(np.isfinite(errors), errors, np.inf)
    return int(candidates[int(np.argmin(errors))])


def mse_range(hist: StreamingHistogram, bits: int, symmetric: bool, rounds: int = 4):
    """Clipping range minimising the expected quantization MSE of the histogrammed values.

    Candidates are bin edges. Symmetric (a histogram of ``|x|``): every edge ``i * width`` as ``amax``,
    searched on a stride of ``bins // 128`` and then refined bin by bin around the best. Asymmetric (a
    histogram of ``x``): ``lo`` among the edges ``<= 0`` and ``hi`` among those ``>= 0``, by
    coordinate descent from the min-max range (best ``hi`` for the current ``lo``, then the converse,
    until neither moves, at most ``rounds`` times), each 1-D search coarse-then-fine as above. The
    error is :func:`expected_sq_error` on the real integer grid, zero point rounding included; exact
    zeros cost nothing and are left out.

    Returns:
        ``(lo, hi)`` clamped to the exact ``[min, max]`` seen; ``(0.0, 0.0)`` for all-zero data.
    """
    if hist.counts is None:
        return 0.0, 0.0
    counts, edges, z, n = hist.counts, hist.edges, hist.zero_edge, hist.bins
    qmax = 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1

    def search(indices: np.ndarray, make_range) -> int:
        def cost(idx: np.ndarray) -> np.ndarray:
            lo, hi = make_range(edges[idx])
            scale, zp, qmin = _grid(lo, hi, bits, symmetric)
            out = np.full(idx.size, np.inf)
            ok = scale > 0
            if ok.any():
                out[ok] = expected_sq_error(counts, edges, scale[ok], zp[ok], qmin, qmax)
            return out

        stride = max(1, indices.size // 128)
        coarse = np.unique(np.concatenate([indices[::stride], indices[-1:]]))
        best = _best_index(cost(coarse), coarse)
        lo_i, hi_i = max(best - stride, indices[0]), min(best + stride, indices[-1])
        fine = np.arange(lo_i, hi_i + 1)
        return _best_index(cost(fine), fine)

    if symmetric:
        i = search(np.arange(z + 1, n + 1), lambda t: (-t, t))
        amax = min(edges[i], max(abs(hist.min), abs(hist.max)))
        return -amax, amax
    i_lo, i_hi = 0, n
    for _ in range(rounds):
        old = (i_lo, i_hi)
        lo_fixed = edges[i_lo]
        if z < n:
            i_hi = search(np.arange(z, n + 1), lambda t, lo=lo_fixed: (np.full_like(t, lo), t))
        hi_fixed = edges[i_hi]
        if z > 0:
            i_lo = search(np.arange(0, z + 1), lambda t, hi=hi_fixed: (t, np.full_like(t, hi)))
        if (i_lo, i_hi) == old:
            break
    return max(edges[i_lo], hist.min), min(edges[i_hi], hist.max)
