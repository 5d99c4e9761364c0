"""Streaming histograms and the range searches run on them (percentile, entropy/KL, MSE).

Why a histogram: calibration streams over many batches of activations and must never hold them all.
A histogram summarises every batch seen so far, and the three searches below pick a clipping range
from the summary alone; the entropy search is TensorRT's, on 2048 equal-width bins over
``[0, max |x|]``.

Bin policy (:class:`StreamingHistogram`): streamed batches must give the range one pass over all the
data gives, yet the final ``max`` is known only at the end, and the entropy search gives a different
answer on other bins (how many bins make a level is part of it). So the histogram holds bins
``oversample`` (32) times finer than the search reads, and re-bins them onto the one-pass grid when
read (:meth:`StreamingHistogram.resampled`):

* Internal bins lie on the grid ``{k * width : k integer}``, so 0 is always an edge. The first batch's
  nonzero values are held until a second batch comes, so a one-batch histogram (a weight, per
  channel) is exactly the one-pass histogram and costs no fine bins; the bins are then laid over both
  batches' range.
* A later batch beyond the range first adds bins at the same width (an exact copy, as the histograms
  of TensorRT's pytorch-quantization and ONNX Runtime do); past ``capacity`` (``2 * oversample *
  bins`` counts, 1 MiB) the width grows by the smallest integer factor ``k`` that fits, each new bin
  the union of exactly ``k`` old ones. Merges stay exact, memory bounded, and the data's range always
  spans at least ``oversample`` internal bins per search bin.
* Reading evaluates the internal counts' cumulative distribution (uniform inside a bin, clipped to the
  exact ``[min, max]``) at the search edges, rounded to whole counts: a search bin is empty or not, as
  a one-pass histogram's is (TensorRT spreads ``Q`` over nonzero bins only, so fractional crumbs would
  move it). A value thus lands at most one internal bin, 1/32 of a search bin, from where one pass puts
  it; where the grids coincide (one batch, or later batches inside the first two's range) the result
  is the one-pass histogram exactly.

Measured on 100,000 ``torch.randn`` samples, 20 seeds, Gaussian and ReLU of it, each streamed as 10
equal batches, with a first batch 10x or 100x narrower than the rest, and as a 100x geometric ramp
(160 streams): the former policy (a fixed bin count whose width grew by ``k >= 2``, so the search got
up to ``k`` times coarser with up to half its bins beyond the data) put the entropy threshold more than
1% from one pass in 113 streams, by up to 21%; this one in 6 (10 with 16 times finer bins, 4 with 64 at
twice the memory). In each of those 6 the one-pass threshold itself moves by more than 1% when the data
are jittered by 1/256 of a bin: TensorRT's threshold picks among near-equal minima of the divergence,
and no summary short of the data reproduces such a pick. Percentiles of ``|x|`` land within 0.03 of
a search bin of numpy's. The MSE objective is flat near its minimum, so its range may still move by a
few percent (1 of 60 symmetric and 4 of 60 asymmetric streams beyond 1%, against 2 and 25 before)
while its error stays within 0.2% of the one-pass range's. Unbounded growth instead
(pytorch-quantization) lets one far outlier in a late batch blow the bin count up, and searches more
than 2048 bins, which moves the threshold too.

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
    """Equal-width histogram of a stream, held finer than the searches read it (module docstring).

    Args:
        bins: Bins of the search grid that :meth:`resampled` returns (2048, as TensorRT).
        oversample: Internal bins per search bin, at least, over the range seen; the internal count
            starts at ``oversample * bins`` and never exceeds :attr:`capacity`, twice that.

    Attributes:
        counts: ``float64`` internal counts (exact integers); ``None`` while nothing is binned (no
            nonzero value yet, or only a first batch, which is held as values until a second comes).
        width: Internal bin width; the bins cover ``[lo_index * width, (lo_index + size) * width)``.
        lo_index: Grid index of the lowest edge (``<= 0``; 0 for a histogram of ``|x|``).
        zeros: Number of exact zeros seen (never binned).
        min, max: Exact extremes of every value seen, zeros included.
    """

    def __init__(self, bins: int = 2048, oversample: int = 32) -> None:
        if bins < 8:
            raise ValueError(f"a histogram needs at least 8 bins, got {bins}")
        if oversample < 1:
            raise ValueError(f"oversample must be at least 1, got {oversample}")
        self.bins, self.oversample = bins, oversample
        self.counts: np.ndarray | None = None
        self.width = 0.0
        self.lo_index = 0
        self.zeros = 0
        self.min = math.inf
        self.max = -math.inf
        self._first: Tensor | None = None  # the first batch's nonzero values, until a second comes

    @property
    def size(self) -> int:
        """Number of internal bins (0 while none are laid out)."""
        return 0 if self.counts is None else self.counts.size

    @property
    def capacity(self) -> int:
        """The most internal bins this histogram will ever hold: ``2 * oversample * bins``."""
        return 2 * self.oversample * self.bins

    @property
    def edges(self) -> np.ndarray:
        """The ``size + 1`` internal bin edges, ``0`` among them."""
        return (self.lo_index + np.arange(self.size + 1)) * self.width

    @property
    def zero_edge(self) -> int:
        """Position of the edge at ``0`` in :attr:`edges`."""
        return -self.lo_index

    @property
    def total(self) -> float:
        """Number of values seen, zeros included."""
        held = 0 if self._first is None else self._first.numel()
        return (0.0 if self.counts is None else float(self.counts.sum())) + held + self.zeros

    def add(self, x: Tensor) -> None:
        """Count the values of ``x`` (any shape), widening the range first when needed."""
        x = x.detach().reshape(-1)
        if x.numel() == 0:
            return
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        nonzero = x[x != 0]  # a copy: holding it keeps no reference to the caller's tensor
        self.zeros += x.numel() - nonzero.numel()
        if nonzero.numel() == 0:
            return
        if self.counts is None and self._first is None:
            self._first = nonzero
            return
        if self._first is not None:  # lay the bins over both batches' range
            first, self._first = self._first, None
            (lo1, hi1), (lo2, hi2) = _span(first), _span(nonzero)
            self._start(min(lo1, lo2), max(hi1, hi2))
            self._bin(first)
        self._bin(nonzero)

    def binned(self) -> StreamingHistogram:
        """Every value seen, in internal bins: this histogram, or while it holds only a first batch,
        a new histogram of that batch (so reading never changes what later batches give)."""
        if self._first is None:
            return self
        out = self._empty_copy(self.oversample)
        out._bin(self._first)
        return out

    def resampled(self) -> StreamingHistogram:
        """The histogram on the search grid: ``bins`` bins where one pass over all the values would
        put them (``[0, max]`` for non-negative data, ``[min, 0]`` for non-positive, otherwise
        ``[min, max]`` with one bin spent on putting 0 on an edge).

        A held first batch is binned directly: the one-pass histogram itself. Otherwise the internal
        counts' cumulative distribution, uniform inside each bin and clipped to the exact ``[min,
        max]``, is read at the new edges and rounded to whole counts; where the edges coincide (a
        range the first batches already spanned) that is exact.
        """
        out = self._empty_copy(1)
        if self._first is not None:
            out._bin(self._first)
            return out
        if self.counts is None:
            return out
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        out._start(lo, hi)
        cum = np.concatenate([[0.0], np.cumsum(self.counts)])
        at = np.interp(out.edges, np.clip(self.edges, lo, hi), cum)
        at[0], at[-1] = 0.0, cum[-1]  # out's first and last bins take what lies on its outer edges
        out.counts = np.diff(np.round(at))
        return out

    def _empty_copy(self, oversample: int) -> StreamingHistogram:
        out = StreamingHistogram(self.bins, oversample)
        out.zeros, out.min, out.max = self.zeros, self.min, self.max
        return out

    def _bin(self, values: Tensor) -> None:
        values = values.to(torch.float64)
        lo, hi = _span(values)
        if self.counts is None:
            self._start(lo, hi)
        elif lo < self.lo_index * self.width or hi > (self.lo_index + self.size) * self.width:
            self._grow(lo, hi)
        assert self.counts is not None
        idx = torch.floor(values / self.width) - self.lo_index
        idx = idx.clamp_(0, self.size - 1).long()
        self.counts += torch.bincount(idx, minlength=self.size).double().numpy()

    def _start(self, lo: float, hi: float) -> None:
        # The search grid for [lo, hi] (see resampled), each bin split in `oversample`: with a power
        # of two the split edges are the search edges bit for bit.
        n, f = self.bins, self.oversample
        if lo == 0.0:
            width, first = hi / n, 0
        elif hi == 0.0:
            width, first = -lo / n, -n
        else:
            width = (hi - lo) / (n - 1)
            first = math.floor(lo / width)
        self.width, self.lo_index = width / f, first * f
        self.counts = np.zeros(n * f)

    def _grow(self, lo: float, hi: float) -> None:
        assert self.counts is not None
        cap, w, first, size = self.capacity, self.width, self.lo_index, self.size
        # Same width, more bins, while they fit: an exact copy.
        new_first = min(math.floor(lo / w), first)
        top = max(math.ceil(hi / w), first + size)
        if top - new_first <= cap:
            counts = np.zeros(top - new_first)
            counts[first - new_first : first - new_first + size] = self.counts
            self.counts, self.lo_index = counts, new_first
            return
        # Wider bins: new bin s covers old grid indices [s*k, s*k + k), an exact merge of k old
        # bins. Grid alignment costs at most two bins, so k_safe always fits; try smaller k first.
        lo, hi = min(lo, first * w), max(hi, (first + size) * w)
        k_min = max(2, math.ceil((hi - lo) / (cap * w)))
        k_safe = max(k_min, math.ceil((hi - lo) / ((cap - 2) * w)))
        for k in [*range(k_min, min(k_min + 3, k_safe)), k_safe]:
            new_first = min(math.floor(lo / (k * w)), first // k)
            top = max(math.ceil(hi / (k * w)), (first + size - 1) // k + 1)
            if top - new_first <= cap:
                break
        # Old grid indices lie in [-size, size]: any k beyond that maps them as size + 1 does (to -1
        # or 0), which keeps the division in int64 even when a far outlier makes k huge.
        old = (first + np.arange(size)) // min(k, size + 1) - new_first
        self.counts = np.bincount(old, weights=self.counts, minlength=top - new_first)
        self.width, self.lo_index = k * w, new_first


def _span(values: Tensor) -> tuple[float, float]:
    """Range of (nonzero) values, widened to contain 0."""
    return min(float(values.min()), 0.0), max(float(values.max()), 0.0)


def quantile(hist: StreamingHistogram, q: float) -> float:
    """The value below which a fraction ``q`` of the counted values lie.

    Read on the internal bins, the finest there are. Density is taken as uniform inside each bin and
    the zeros as a point mass at 0, so the answer is interpolated inside a bin (not snapped to an edge
    as ONNX Runtime and pytorch-quantization do) and is clamped to the exact ``[min, max]`` seen.
    """
    hist = hist.binned()
    edges = hist.edges
    counts = np.zeros(hist.size) if hist.counts is None else hist.counts
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


#: Largest share of the values the entropy threshold may clip (TensorRT's choices on data with the
#: mass near zero clip far fewer; see :func:`entropy_threshold`).
MAX_CLIPPED = 0.01


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

    A candidate that clips more than ``MAX_CLIPPED`` of the values is skipped too. TensorRT's search
    assumes the mass sits near zero; for data away from zero (pooled features, all in [0.2, 1.1]) the
    candidate just above the smallest value puts everything into one last bin, where ``P`` and ``Q``
    agree after normalising: KL 0, and the whole tail clipped (a small CNN's int8 file went from 74%
    to 23% accuracy that way).

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
        if outliers[i] > MAX_CLIPPED * outliers[0]:
            continue
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

    Candidates are the edges of the search grid (:meth:`StreamingHistogram.resampled`). Symmetric (a
    histogram of ``|x|``): every edge ``i * width`` as ``amax``, searched on a stride of
    ``bins // 128`` and then refined bin by bin around the best. Asymmetric (a histogram of ``x``):
    ``lo`` among the edges ``<= 0`` and ``hi`` among those ``>= 0``, by coordinate descent from the
    min-max range (best ``hi`` for the current ``lo``, then the converse, until neither moves, at most
    ``rounds`` times), each 1-D search coarse-then-fine as above. The error is
    :func:`expected_sq_error` on the real integer grid, zero point rounding included; exact zeros
    cost nothing and are left out.

    Returns:
        ``(lo, hi)`` clamped to the exact ``[min, max]`` seen; ``(0.0, 0.0)`` for all-zero data.
    """
    hist = hist.resampled()
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
