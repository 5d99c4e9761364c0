"""Histogram calibrators against independent oracles: KL, percentile, MSE, streaming merges, ORT.

The KL oracle below is written from the algorithm's description (Migacz, "8-bit Inference with
TensorRT", GTC 2017), not from distiq's code: ``np.histogram`` of ``|x|`` (exact zeros left out, as
distiq documents), level boundaries by ``ceil(l * i / L)``, prefix sums and ``scipy.stats.entropy``.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import scipy.stats
import torch

from distiq.quant.calibrate import calibrate
from distiq.quant.histogram import StreamingHistogram, expected_sq_error, quantile

N = 200_000


def trt_entropy_threshold(values: np.ndarray, levels: int, bins: int = 2048, start: int = 128):
    """Reference TensorRT entropy calibration; returns (threshold, bin width). (It clips at most 1%
    of the values in no test below but the one on data away from zero.)"""
    a = np.abs(values[values != 0]).astype(np.float64)
    hist, edges = np.histogram(a, bins=bins, range=(0.0, a.max()))
    best, best_kl = bins, np.inf
    for i in range(start, bins + 1):
        src = hist[:i].astype(np.float64)
        p = src.copy()
        p[-1] += hist[i:].sum()  # clipped outliers join the last kept bin
        bounds = np.ceil(np.arange(levels + 1) * i / levels).astype(int)  # level l: [b_l, b_l+1)
        csum = np.concatenate([[0.0], np.cumsum(src)])
        cnz = np.concatenate([[0], np.cumsum(src > 0)])
        level_sum = csum[bounds[1:]] - csum[bounds[:-1]]
        level_nonzero = cnz[bounds[1:]] - cnz[bounds[:-1]]
        owner = np.searchsorted(bounds, np.arange(i), side="right") - 1
        q = np.where(src > 0, level_sum[owner] / np.maximum(level_nonzero[owner], 1), 0.0)
        kl = scipy.stats.entropy(p, q)
        if kl <= best_kl:
            best, best_kl = i, kl
    return edges[best], edges[1]


def _data(name: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    g = rng.standard_normal(N).astype(np.float32)
    if name == "gauss":
        return g
    if name == "laplace":
        return rng.laplace(size=N).astype(np.float32)
    if name == "relu":
        return np.maximum(g, 0)
    if name == "outliers":  # 0.01% of values at 20 sigma
        return np.where(rng.random(N) < 1e-4, 20 * np.sign(g), g).astype(np.float32)
    if name == "skewed":
        return (rng.exponential(size=N) - 0.3).astype(np.float32)
    raise KeyError(name)


@pytest.mark.parametrize(
    "name, bits, symmetric",
    [
        ("gauss", 8, True),
        ("gauss", 4, True),
        ("laplace", 8, True),
        ("relu", 8, True),
        ("relu", 8, False),  # unsigned: 2**bits levels
        ("outliers", 8, True),
    ],
)
def test_kl_matches_independent_tensorrt_implementation(name, bits, symmetric):
    x = _data(name)
    levels = 2 ** (bits - 1) if symmetric else 2**bits
    expected, width = trt_entropy_threshold(x, levels)
    qp = calibrate(torch.from_numpy(x), "kl", bits=bits, symmetric=symmetric)
    assert abs(qp.hi.item() - expected) <= 2 * width
    assert qp.lo.item() == (-qp.hi.item() if symmetric else 0.0)


@pytest.mark.parametrize("symmetric", [True, False])
def test_kl_on_data_away_from_zero_keeps_the_range(symmetric):
    """TensorRT's search on values all in [0.3, 1] picks the smallest value (everything clipped into
    one bin, where P and Q agree: KL 0); distiq clips at most 1% of the values instead."""
    x = np.random.default_rng(0).uniform(0.3, 1.0, N).astype(np.float32)
    trt, _ = trt_entropy_threshold(x, 256 if not symmetric else 128)
    assert trt == pytest.approx(0.3, abs=0.01)  # the degenerate choice
    qp = calibrate(torch.from_numpy(x), "kl", symmetric=symmetric)
    assert qp.hi.item() >= np.quantile(x, 0.99) - 1e-3


def test_kl_signed_asymmetric_is_symmetric_search_clipped_to_data():
    x = _data("gauss") + 0.5
    sym = calibrate(torch.from_numpy(x), "kl")
    asym = calibrate(torch.from_numpy(x), "kl", symmetric=False)
    assert asym.hi.item() == pytest.approx(min(sym.hi.item(), x.max()))
    assert asym.lo.item() == pytest.approx(max(-sym.hi.item(), x.min()))


@pytest.mark.parametrize("oversample", [32, 1])  # the default, and one that merges at every growth
def test_streaming_histogram_merges_exactly(oversample):
    """After any growth, the internal counts equal one np.histogram of all the data on their edges."""
    rng = np.random.default_rng(1)
    h = StreamingHistogram(bins=256, oversample=oversample)
    seen = []
    for scale, shift in [(0.1, 0.0), (0.3, 0.2), (1.0, -0.5), (0.5, 3.0), (7.0, 0.0), (0.2, 0.0)]:
        b = (rng.standard_normal(5000) * scale + shift).astype(np.float32)
        b[:100] = 0.0
        h.add(torch.from_numpy(b))
        seen.append(b)
        allv = np.concatenate(seen).astype(np.float64)
        binned = h.binned()  # the first batch alone is held as values
        ref, _ = np.histogram(allv[allv != 0], bins=binned.edges)
        assert h.zeros == 100 * len(seen) and h.total == allv.size
        assert np.abs(binned.counts - ref).sum() <= 2  # at most a value or two on an edge
        assert binned.counts.sum() == (allv != 0).sum()
        assert (h.min, h.max) == (allv.min(), allv.max())
        edges = binned.edges
        assert 0.0 in edges and edges[0] <= allv.min() and edges[-1] >= allv.max()
        assert 256 * oversample <= binned.size <= h.capacity == 2 * 256 * oversample


def test_far_outlier_keeps_memory_bounded_and_every_count():
    h = StreamingHistogram(bins=64)
    for batch in ([1e-3, -2e-3, 5e-4], [3e25, -1.0], [-7e30, 0.0]):
        h.add(torch.tensor(batch))
    assert h.size <= h.capacity == 2 * 32 * 64
    assert h.counts.sum() == 6 and h.zeros == 1
    assert h.edges[0] <= -7e30 and h.edges[-1] >= 3e25
    values = [1e-3, -2e-3, 5e-4, 3e25, -1.0, -7e30]
    assert np.array_equal(h.counts, np.histogram(np.float32(values), bins=h.edges)[0])


def test_one_batch_is_exactly_the_one_pass_histogram_and_reading_changes_nothing():
    x = torch.from_numpy(np.abs(_data("laplace")))
    h = StreamingHistogram()
    h.add(x[:1000])
    view = h.resampled()
    ref, edges = np.histogram(x[:1000].double().numpy(), bins=2048, range=(0.0, float(x[:1000].max())))
    assert np.array_equal(view.counts, ref) and np.array_equal(view.edges, edges)
    quantile(h, 0.5)
    h.add(x[1000:])
    unread = StreamingHistogram()
    unread.add(x[:1000])
    unread.add(x[1000:])
    assert np.array_equal(h.counts, unread.counts) and h.width == unread.width


def test_resampled_is_exact_where_the_grids_coincide():
    """Batches inside the range the first two spanned: the one-pass 2048 bins, count for count."""
    x = np.abs(_data("gauss"))
    top = int(np.argmax(x))
    order = np.concatenate([[top], np.delete(np.arange(x.size), top)])
    parts = np.array_split(x[order], 7)  # the maximum comes in the first batch
    h = StreamingHistogram()
    for p in parts:
        h.add(torch.from_numpy(p))
    ref, edges = np.histogram(x.astype(np.float64), bins=2048, range=(0.0, float(x.max())))
    view = h.resampled()
    assert np.array_equal(view.edges, edges)
    assert np.abs(view.counts - ref).sum() <= 2


def _randn(seed: int) -> torch.Tensor:
    """``torch.randn(100_000)`` after ``torch.manual_seed(seed)``, as in the issue's report."""
    return torch.randn(100_000, generator=torch.Generator().manual_seed(seed))


def _stream(x: torch.Tensor, growth: int) -> list[torch.Tensor]:
    """``growth == 1``: 10 equal batches. Otherwise a 1,000-value first batch ``growth`` times
    narrower than the rest, which follows in batches of 11,000 (the range grows ``growth``-fold)."""
    if growth == 1:
        return list(x.split(10_000))
    return [x[:1000] / growth, *x[1000:].split(11_000)]


@pytest.mark.parametrize("seed", [0, 121, 220])
def test_streamed_kl_in_ten_batches_matches_tensorrt_one_pass(seed):
    """Issue 8: 100k Gaussian samples in 10 batches gave a KL threshold 5-11% off one pass (width
    grown by 2: a coarser search with bins beyond the data). Seed 220 is the issue's one-pass 4.145;
    there the maximum comes in batch 2, for seeds 0 and 121 in batches 4 and 7, so bins must grow."""
    x = _randn(seed)
    expected, width = trt_entropy_threshold(x.numpy(), 128)
    if seed == 220:
        assert expected == pytest.approx(4.145, abs=1e-3)
    one_pass = calibrate(x, "kl").hi.item()
    assert abs(one_pass - expected) <= 2 * width
    streamed = calibrate(_stream(x, 1), "kl").hi.item()
    assert streamed == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("growth", [10, 100])
@pytest.mark.parametrize("relu", [False, True])
def test_streamed_kl_with_growing_range_matches_one_pass(relu, growth):
    """Over five seeds, at most one stream lands more than 1% from one pass over the same values.

    One pass is TensorRT's threshold (the tests above check it against the reference). Not all five
    streams: that threshold chooses among near-equal minima of the divergence and jumps by 5-10% when
    the data move by 1/32 of a bin, less than re-binning may move them (module docstring).
    """
    misses = []
    for seed in range(5):
        x = _randn(seed).clamp(min=0) if relu else _randn(seed)
        parts = _stream(x, growth)
        one_pass = calibrate(torch.cat(parts), "kl").hi.item()
        streamed = calibrate(parts, "kl").hi.item()
        misses += [seed] if abs(streamed / one_pass - 1) > 0.01 else []
    assert len(misses) <= 1, misses


@pytest.mark.parametrize("growth", [1, 10, 100])
@pytest.mark.parametrize("relu", [False, True])
def test_streamed_percentile_matches_numpy(relu, growth):
    """Within a tenth of a search bin of numpy on all the data (the bins read are 32 times finer)."""
    x = _randn(220).clamp(min=0) if relu else _randn(220)
    parts = _stream(x, growth)
    allv = torch.cat(parts).double().numpy()
    width = np.abs(allv).max() / 2048
    qp = calibrate(parts, "percentile", percentile=99.99)
    assert qp.hi.item() == pytest.approx(np.percentile(np.abs(allv), 99.99), abs=0.1 * width)
    if not relu:
        lo, hi = np.percentile(allv, [0.005, 99.995])
        qp = calibrate(parts, "percentile", percentile=99.99, symmetric=False)
        width = (allv.max() - allv.min()) / 2047
        assert qp.lo.item() == pytest.approx(lo, abs=0.1 * width)
        assert qp.hi.item() == pytest.approx(hi, abs=0.1 * width)


@pytest.mark.parametrize("growth", [1, 10, 100])
@pytest.mark.parametrize("relu", [False, True])
def test_streamed_mse_matches_one_pass(relu, growth):
    """The range within 1% of one pass and its quantization error as small (the one-pass MSE search
    is checked against brute force on raw data above)."""
    x = _randn(220).clamp(min=0) if relu else _randn(220)
    parts = _stream(x, growth)
    allv = torch.cat(parts).double().numpy()
    one_pass = calibrate(torch.cat(parts), "mse").hi.item()
    streamed = calibrate(parts, "mse").hi.item()
    assert streamed == pytest.approx(one_pass, rel=0.01)
    errors = _raw_mse(allv, [-one_pass, -streamed], [one_pass, streamed], 8, True)
    assert errors[1] <= 1.001 * errors[0]


def test_streaming_kl_with_range_doubling_equals_single_pass():
    x = np.clip(_data("gauss"), -3.9, 3.9)
    first, rest = x[np.abs(x) < 2], x[np.abs(x) >= 2]
    first[0], rest[0] = 2.0, 4.0  # maxima 2 then 4: the width exactly doubles
    single = calibrate(torch.from_numpy(np.concatenate([first, rest])), "kl").hi.item()
    streamed = calibrate([torch.from_numpy(first), torch.from_numpy(rest)], "kl").hi.item()
    assert streamed == pytest.approx(single, abs=4.0 / 2048)


@pytest.mark.parametrize("name", ["gauss", "laplace"])
def test_streaming_kl_with_growing_range_stays_close(name):
    x = _data(name)
    parts = [x[i::8] * (0.6 + 0.1 * i) for i in range(8)]  # each batch wider than the last
    single = calibrate(torch.from_numpy(np.concatenate(parts)), "kl").hi.item()
    streamed = calibrate([torch.from_numpy(p) for p in parts], "kl").hi.item()
    hist = StreamingHistogram()
    for p in parts:
        hist.add(torch.from_numpy(np.abs(p)))
    assert hist.size > 2048 * 32  # bins were added after the first two batches
    assert streamed == pytest.approx(single, rel=0.01)


@pytest.mark.parametrize("name", ["laplace", "relu", "outliers"])
@pytest.mark.parametrize("percentile", [99.9, 99.99])
def test_percentile_matches_numpy(name, percentile):
    x = _data(name)
    width = float(np.abs(x).max()) / 2048
    qp = calibrate(torch.from_numpy(x), "percentile", percentile=percentile)
    assert qp.hi.item() == pytest.approx(np.percentile(np.abs(x), percentile), abs=width)
    if name == "laplace":
        tail = (100 - percentile) / 2
        lo, hi = np.percentile(x, [tail, 100 - tail])
        qp = calibrate(torch.from_numpy(x), "percentile", percentile=percentile, symmetric=False)
        width = float(x.max() - x.min()) / 2047
        assert qp.lo.item() == pytest.approx(lo, abs=2 * width)
        assert qp.hi.item() == pytest.approx(hi, abs=2 * width)


def _raw_mse(x: np.ndarray, lo, hi, bits: int, symmetric: bool) -> np.ndarray:
    """Actual quantize-dequantize MSE of raw data for candidate ranges (numpy, float64)."""
    lo = np.minimum(np.atleast_1d(lo), 0)[:, None]
    hi = np.maximum(np.atleast_1d(hi), 0)[:, None]
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale, zp, qmin = np.maximum(-lo, hi) / qmax, 0.0, -qmax
    else:
        qmin, qmax = 0, 2**bits - 1
        scale = (hi - lo) / qmax
        zp = np.clip(np.round(-lo / scale), qmin, qmax)
    q = np.clip(np.round(x[None, :] / scale) + zp, qmin, qmax)
    return (((q - zp) * scale - x[None, :]) ** 2).mean(axis=1)


@pytest.mark.parametrize("name", ["gauss", "laplace", "outliers"])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_mse_symmetric_matches_brute_force_on_raw_data(name, bits):
    x = _data(name)[:50_000].astype(np.float64)
    amax = np.abs(x).max()
    grid = np.linspace(0.005, 1.0, 400) * amax
    brute = np.concatenate([_raw_mse(x, -t, t, bits, True) for t in np.array_split(grid, 8)])
    qp = calibrate(torch.from_numpy(x), "mse", bits=bits)
    ours = _raw_mse(x, qp.lo.item(), qp.hi.item(), bits, True)[0]
    assert ours <= 1.02 * brute.min()


def test_mse_asymmetric_matches_brute_force_on_raw_data():
    x = _data("skewed")[:20_000].astype(np.float64)
    his = np.linspace(0.1, 1.0, 40) * x.max()
    los = np.linspace(0.1, 1.0, 12) * x.min()
    lo_grid, hi_grid = (a.ravel() for a in np.meshgrid(los, his))
    brute = _raw_mse(x, lo_grid, hi_grid, 4, False)
    qp = calibrate(torch.from_numpy(x), "mse", bits=4, symmetric=False)
    ours = _raw_mse(x, qp.lo.item(), qp.hi.item(), 4, False)[0]
    assert ours <= 1.02 * brute.min()
    relu = _data("relu")[:20_000].astype(np.float64)
    his = np.linspace(0.05, 1.0, 200) * relu.max()
    brute = _raw_mse(relu, np.zeros_like(his), his, 4, False)
    qp = calibrate(torch.from_numpy(relu), "mse", bits=4, symmetric=False)
    assert qp.lo.item() == 0.0
    assert _raw_mse(relu, 0.0, qp.hi.item(), 4, False)[0] <= 1.02 * brute.min()


@pytest.mark.parametrize("symmetric", [True, False])
def test_expected_error_of_histogram_equals_raw_error(symmetric):
    x = _data("laplace")
    h = StreamingHistogram(bins=4096)
    h.add(torch.from_numpy(np.abs(x) if symmetric else x))
    h = h.resampled()  # 4096 bins over the data, as one np.histogram would put them
    for bits, frac in [(8, 1.0), (8, 0.3), (4, 0.5), (2, 0.2)]:
        amax = frac * np.abs(x).max()
        lo, hi = (-amax, amax) if symmetric else (frac * x.min(), frac * x.max())
        raw = _raw_mse(x.astype(np.float64), lo, hi, bits, symmetric)[0] * x.size
        if symmetric:
            qm = 2 ** (bits - 1) - 1
            scale, zp, qmin, qmax = amax / qm, 0.0, -qm, qm
        else:
            qmin, qmax = 0, 2**bits - 1
            scale = (hi - lo) / qmax
            zp = np.clip(np.round(-lo / scale), qmin, qmax)
        est = expected_sq_error(h.counts, h.edges, np.array([scale]), np.array([zp]), qmin, qmax)
        assert est[0] == pytest.approx(raw, rel=0.02)


def _ort_collector(x: np.ndarray, method: str, **kw):
    from onnxruntime.quantization.calibrate import HistogramCollector

    kw = {"symmetric": True, "num_bins": 128, "num_quantized_bins": 128, "percentile": 99.99} | kw
    collector = HistogramCollector(method=method, scenario="same", **kw)
    with contextlib.redirect_stdout(io.StringIO()):  # ORT prints progress
        collector.collect({"t": x})
        return collector.compute_collection_result()["t"]


def test_onnxruntime_peer():
    """How ORT's histogram calibrators compare (see the observers module docstring)."""
    x = _data("gauss")[:100_000]
    # Percentile: same |x| histogram; ORT snaps to a bin's lower edge, distiq interpolates.
    ort_lo, ort_hi = _ort_collector(x, "percentile", num_bins=2048, percentile=99.9)[:2]
    ours = calibrate(torch.from_numpy(x), "percentile", percentile=99.9).hi.item()
    assert ours == pytest.approx(float(ort_hi), abs=3 * float(np.abs(x).max()) / 2048)
    # Entropy with ORT's defaults (128 bins, 128 quantized bins) has a single candidate: min-max.
    ort_lo, ort_hi = _ort_collector(x, "entropy")[:2]
    assert (float(ort_lo), float(ort_hi)) == (x.min(), x.max())
    # With 2048 bins over [-amax, amax] and 256 levels over both signs (distiq: 1024 bins of |x|,
    # 128 levels per sign) the thresholds are close on a Gaussian.
    ort_lo, ort_hi = _ort_collector(x, "entropy", num_bins=2048, num_quantized_bins=256)[:2]
    ours = calibrate(torch.from_numpy(x), "kl", bins=1024).hi.item()
    assert ours == pytest.approx(float(ort_hi), rel=0.05)
