"""KL-divergence ("entropy") calibration: the threshold relay's ``_find_scale_by_kl`` and MXNet's
``_get_optimal_threshold`` choose (both run the same C++ search, MXNet's ``calibrate_entropy``
op, of which relay's ``FindScaleByKLMinimization`` is a port).

The search, for a symmetric histogram ``h`` of ``B`` (odd) bins over ``[-T, T]`` with centre bin
``z = B // 2`` and ``n`` quantized bins (255 for int8):

for every half-width ``i = n // 2 .. z`` (threshold = right edge of bin ``z + i``):

1. ``p`` = the ``L = 2i + 1`` bins ``h[z-i : z+i+1]``, with everything left of the slice
   folded into ``p[0]`` and everything right of it into ``p[-1]`` (the outliers are clipped);
2. ``s`` = the same slice *without* the folded outliers, except that its first entry is 0 --
   a quirk of the C++ loop, which puts ``h[z-i]`` into ``p[0]`` only (the last one, ``h[z+i]``,
   is kept): the pre-2019 Python version of MXNet kept both;
3. ``s`` is merged into ``n`` groups of ``m = L // n`` consecutive bins, the last group also
   taking the ``L - n*m`` left-over bins; each group's sum is spread evenly over the group's
   bins where ``s`` is non-zero (the count of those is the divisor), and written to ``q`` only
   where ``p`` is non-zero;
4. zeros of ``p`` and ``q`` are replaced by ``eps = 1e-4`` and the same total taken off the
   non-zero entries (``eps * #zeros / #nonzeros`` each); a ``q`` with no non-zero entry (or
   ``eps1 >= 1``) gives an infinite divergence;
5. ``KL(p || q)`` of the normalised vectors.

The smallest divergence wins (the first one on ties).

Instead of rebuilding ``p`` and ``q`` for each of the ~4000 candidates (O(B^2)), the fast path
gets every per-group quantity from prefix sums of the histogram and writes the divergence in
closed form: with ``p'``/``q'`` the smoothed vectors, ``P = sum p' = sum p`` and
``Q = sum q' = sum q`` (smoothing keeps sums),

    KL = (1/P) * sum_k p'_k log(p'_k / q'_k) + log(Q / P)

where zero entries of ``p`` contribute nothing (``p' = q' = eps``), ``q'`` is constant over the
non-zero entries of a group, so only ``sum phi(p_k - eps1)`` (``phi(x) = x log x``) needs the
individual counts: counts ``1..16`` are handled exactly through per-value prefix counts, larger
counts through a 6th-order Taylor expansion in ``eps1 < 1`` (error < 1e-9 per bin). That makes the
search O(B * n) with a dozen numpy operations. Histograms with non-integer counts fall back to
the direct per-candidate loop (``method="loop"``), which is also the reference the tests check
the fast path against.

The C++ works in float32, whose rounding (~1e-5..1e-4 on the divergences) decides between the
near-equal minima KL curves often have; by default (``precision="float32"``) the candidates
that can win are re-evaluated with the C++'s float32 operations (:class:`_Float32Search`), so
the chosen threshold is the one relay / MXNet choose (123 of 123 test cases within 0.0002 bins
of MXNet 1.9's; the exact-arithmetic ``precision="float64"`` minimum was > 1 bin away -- up to
~400 bins -- in about 1 case in 5, although the exact divergence of the C++ choice was within
0.04 % (< 1e-6 absolute) of the exact minimum: the two are equally good, just different).

Differences between the variants (for the record):

* relay passes ``hist.astype(int32)`` and float32 edges; MXNet 1.9 passes float32 counts. Same
  result for counts < 2**24 per bin.
* relay's ``_find_scale_by_kl`` histograms the whole calibration set at once; MXNet's
  ``_LayerHistogramCollector`` streams (``combine_histogram``: fixed bin width, growing bin
  count); :class:`~.histogram.HistogramCollector` streams with a fixed bin count.
* uint8: 511 quantized bins when the tensor is non-negative -- relay only for
  ``quantized_dtype="uint8"``, MXNet also for ``"auto"``; here ``signed=False``.
* the older pure-Python versions (MXNet's ``_get_optimal_threshold`` before the C++ op, and
  copies of it in early relay forks) kept ``h[z-i]`` in the merged slice, counted ``norm`` over
  the non-zero entries of ``p`` or of the slice depending on the version (some with a
  ``stop = -1`` off-by-one in the last group), and used scipy's float64 entropy; the C++
  search that relay and MXNet 1.9 share is what is reproduced here.
* when no candidate is finite both C++ versions return the smallest one; see
  :func:`kl_threshold_from_histogram`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import CalibrationError, all_zero_error
from .histogram import DEFAULT_NUM_BINS, HistogramCollector, histogram_of

EPS = 1e-4
_SMALL = 16    # integer counts 1.._SMALL: exact, by value
_TAYLOR = 6    # expansion order for counts > _SMALL
_CHUNK = 1 << 19  # (candidates x quantized bins) elements per vectorised block


def _check(hist: Any, num_quantized_bins: int) -> np.ndarray:
    h = np.asarray(hist, dtype=np.float64)
    if h.ndim != 1 or h.size < 3 or h.size % 2 == 0:
        raise ValueError(f"histogram must be 1-D with an odd number (>= 3) of bins, got shape "
                         f"{h.shape}")
    nq = num_quantized_bins
    if not isinstance(nq, (int, np.integer)) or nq < 2:
        raise ValueError(f"num_quantized_bins must be an integer >= 2, got {nq!r}")
    if nq // 2 > h.size // 2:
        raise ValueError(f"{h.size} histogram bins are too few for {nq} quantized bins")
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        raise ValueError("histogram counts must be finite and non-negative")
    return h


def _phi(x: np.ndarray) -> np.ndarray:
    """x log x (x > 0)."""
    return x * np.log(x)


class _WindowPhi:
    """sum over h[lo:hi] (non-zero entries) of phi(h - e), for many windows and e < 1 at once.

    Integer counts only: values 1.._SMALL exactly via per-value prefix counts, larger values by
    phi(h - e) = phi(h) - e (log h + 1) + sum_{k>=2} e^k / (k (k-1) h^(k-1)).
    """

    def __init__(self, h: np.ndarray):
        small_vals = np.arange(1, _SMALL + 1, dtype=np.float64)
        hi = h.astype(np.int64)
        onehot = (hi[None, :] == np.arange(1, _SMALL + 1)[:, None])
        self.small_vals = small_vals
        self.small_prefix = np.concatenate(
            [np.zeros((_SMALL, 1), np.int64), np.cumsum(onehot, axis=1)], axis=1)
        big = h > _SMALL
        hb = np.where(big, h, 1.0)
        terms = [np.where(big, _phi(hb), 0.0), np.where(big, np.log(hb) + 1.0, 0.0)]
        for k in range(2, _TAYLOR + 1):
            terms.append(np.where(big, hb ** -(k - 1), 0.0) / (k * (k - 1)))
        self.big_prefix = np.concatenate(
            [np.zeros((len(terms), 1)), np.cumsum(np.stack(terms), axis=1)], axis=1)

    def __call__(self, lo: np.ndarray, hi: np.ndarray, e: np.ndarray) -> np.ndarray:
        cnt = self.small_prefix[:, hi] - self.small_prefix[:, lo]          # (_SMALL, nc)
        out = np.sum(cnt * _phi(self.small_vals[:, None] - e[None, :]), axis=0)
        sums = self.big_prefix[:, hi] - self.big_prefix[:, lo]              # (terms, nc)
        out += sums[0] - e * sums[1]
        ek = e * e
        for k in range(2, _TAYLOR + 1):
            out += ek * sums[k]
            ek = ek * e
        return out


def _curve_fast(h: np.ndarray, nq: int, eps: float) -> np.ndarray:
    nbins = h.size
    z = nbins // 2
    half = np.arange(nq // 2, z + 1)
    C = np.concatenate(([0.0], np.cumsum(h)))
    NZ = np.concatenate(([0], np.cumsum(h != 0)))
    total = C[-1]
    wphi = _WindowPhi(h)
    g = np.arange(nq)
    out = np.empty(half.size)
    rows = max(1, _CHUNK // nq)
    for c0 in range(0, half.size, rows):
        i = half[c0:c0 + rows]
        start, stop, L = z - i, z + i + 1, 2 * i + 1
        m = L // nq
        p0 = C[start + 1]                  # h[:start+1]: left outliers + the slice's first bin
        pL = total - C[stop - 1]           # h[stop-1:]: the slice's last bin + right outliers
        hs = h[stop - 1]
        # group g covers slice positions [g*m, (g+1)*m), the last one up to L; its "interior"
        # (positions 1..L-2, where p == s == h) is [max(g*m, 1), min((g+1)*m, L-1))
        lo = g[None, :] * m[:, None]
        hi = lo + m[:, None]
        lo[:, 0] = 1
        hi[:, -1] = L - 1
        ilo, ihi = start[:, None] + lo, start[:, None] + hi
        s_int = C[ihi] - C[ilo]
        n_int = (NZ[ihi] - NZ[ilo]).astype(np.float64)
        # q's group sums / divisors: interior, plus s[L-1] = h[stop-1] in the last group
        qsum = s_int.copy()
        qsum[:, -1] += hs
        qdiv = n_int.copy()
        qdiv[:, -1] += hs != 0
        # p's non-zero entries per group and their sums: interior plus the folded ends
        pcnt = n_int
        pcnt[:, 0] += p0 != 0
        pcnt[:, -1] += pL != 0
        psum = s_int
        psum[:, 0] += p0
        psum[:, -1] += pL
        qpos = qdiv > 0
        v = np.where(qpos, qsum / np.where(qpos, qdiv, 1.0), 0.0)
        nnz_p = pcnt.sum(axis=1)
        nnz_q = np.where(qpos, pcnt, 0.0).sum(axis=1)
        e1p = eps * (L - nnz_p) / nnz_p
        e1q = eps * (L - nnz_q) / np.maximum(nnz_q, 1.0)
        bad = (nnz_q == 0) | (e1p >= 1) | (e1q >= 1)
        e1p = np.where(bad, 0.0, e1p)
        e1q = np.where(bad, 0.0, e1q)
        # sum_k p'_k log p'_k over non-zero p
        t1 = wphi(start + 1, stop - 1, e1p)
        t1 += np.where(p0 != 0, _phi(np.where(p0 != 0, p0, 1.0) - e1p), 0.0)
        t1 += np.where(pL != 0, _phi(np.where(pL != 0, pL, 1.0) - e1p), 0.0)
        # minus sum_k p'_k log q'_k: q' is (v - e1q) on a group's non-zero p, eps where v == 0
        logq = np.where(qpos, np.log(np.where(qpos, v, 1.0) - e1q[:, None]), np.log(eps))
        t2 = np.sum((psum - e1p[:, None] * pcnt) * logq, axis=1)
        qtot = np.sum(pcnt * v, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = (t1 - t2) / total + np.log(qtot / total)
        out[c0:c0 + rows] = np.where(bad, np.inf, kl)
    return out


def _smooth(p: np.ndarray, eps: float) -> np.ndarray | None:
    zero = p == 0
    nz = int(zero.sum())
    nnz = p.size - nz
    if nnz == 0:
        return None
    e1 = eps * nz / nnz
    if e1 >= 1.0:
        return None
    out = np.where(zero, eps, p - e1)
    return out if np.all(out > 0) else None


def _curve_loop(h: np.ndarray, nq: int, eps: float) -> np.ndarray:
    """The search written out candidate by candidate (reference; any non-negative counts)."""
    nbins = h.size
    z = nbins // 2
    half = np.arange(nq // 2, z + 1)
    C = np.concatenate(([0.0], np.cumsum(h)))
    total = C[-1]
    out = np.full(half.size, np.inf)
    for n, i in enumerate(half):
        start, stop, L = z - i, z + i + 1, 2 * i + 1
        p = h[start:stop].copy()
        p[0] = C[start + 1]
        p[-1] = total - C[stop - 1]
        s = h[start:stop].copy()
        s[0] = 0.0
        group = np.minimum(np.arange(L) // (L // nq), nq - 1)
        qsum = np.bincount(group, weights=s, minlength=nq)
        qdiv = np.bincount(group, weights=(s != 0), minlength=nq)
        v = np.divide(qsum, qdiv, out=np.zeros(nq), where=qdiv > 0)
        q = np.where(p != 0, v[group], 0.0)
        ps, qs = _smooth(p, eps), _smooth(q, eps)
        if ps is None or qs is None:
            continue
        ps /= ps.sum()
        qs /= qs.sum()
        out[n] = float(np.sum(ps * np.log(ps / qs)))
    return out


# --------------------------------------------------------------------------- float32 emulation
_F32 = np.float32
_EPS32 = np.float32(EPS)


class _Float32Search:
    """The divergence of one candidate computed the way the C++ does it, in float32.

    MXNet's ``calibrate_entropy`` and relay's ``FindScaleByKLMinimization`` work in float32:
    outlier folding and the normalising sums are sequential float32 additions, ``eps1``, the
    smoothing, ``q = bin_sum / norm`` and ``p / q`` are float32 operations. Their rounding moves
    divergences by up to ~1e-4 -- more than the gap between the near-equal local minima a KL
    curve often has (ReLU outputs especially), so an exact-arithmetic search can land tens of
    bins away from the C++ one. Repeating those operations in the same order reproduces the C++
    divergences bit for bit (``log`` is taken in float64 and rounded, i.e. correctly rounded
    ``logf``, which glibc's matches all but rarely).
    """

    def __init__(self, h: np.ndarray, nq: int):
        self.h = h
        self.h32 = h.astype(_F32)
        self.cum32 = np.cumsum(self.h32, dtype=_F32)   # p[0] += hist[j], j = 0..start
        self.nq = nq
        self.z = h.size // 2

    @staticmethod
    def _smooth(p: np.ndarray) -> np.ndarray | None:
        zero = p == 0
        nz = int(np.count_nonzero(zero))
        nnz = p.size - nz
        if nnz == 0:
            return None
        e1 = (_EPS32 * _F32(nz)) / _F32(nnz)
        if e1 >= 1:
            return None
        return np.where(zero, _EPS32, p - e1)

    def divergence(self, i: int) -> float:
        h, nq, z = self.h, self.nq, self.z
        start, stop, L = z - i, z + i + 1, 2 * i + 1
        p = self.h32[start:stop].copy()
        p[0] = self.cum32[start]
        p[-1] = np.cumsum(self.h32[stop - 1:], dtype=_F32)[-1]
        s = h[start:stop].copy()
        s[0] = 0.0
        m = L // nq
        qsum = s[:nq * m].reshape(nq, m).sum(axis=1).astype(_F32)   # int sums -> float
        qsum[-1] = qsum[-1] + _F32(s[nq * m:].sum())                 # float += int
        group = np.minimum(np.arange(L) // m, nq - 1)
        qdiv = np.bincount(group, weights=(s != 0), minlength=nq).astype(_F32)
        v = np.divide(qsum, qdiv, out=np.zeros(nq, _F32), where=qdiv > 0)
        q = np.where(p != 0, v[group], _F32(0))
        ps, qs = self._smooth(p), self._smooth(q)
        if ps is None or qs is None:
            return float("inf")
        ps = ps / np.cumsum(ps, dtype=_F32)[-1]
        qs = qs / np.cumsum(qs, dtype=_F32)[-1]
        logr = np.log((ps / qs).astype(np.float64)).astype(_F32)
        return float(np.cumsum(ps * logr, dtype=_F32)[-1])


def _check_precision(precision: str) -> None:
    if precision not in ("float32", "float64"):
        raise ValueError(f"unknown precision {precision!r}; valid: float32, float64")


def kl_divergence_curve(hist: Any, num_quantized_bins: int = 255, *, eps: float = EPS,
                        precision: str = "float64", method: str = "auto"
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Divergence of every candidate threshold.

    Returns ``(half_widths, divergences)``: candidate ``half_widths[k] = i`` clips at the right
    edge of bin ``B // 2 + i``; an impossible candidate has divergence ``inf``.

    ``precision="float64"``: exact arithmetic; ``method`` "fast" (integer counts), "loop"
    (reference, any counts) or "auto". ``precision="float32"``: every candidate through the
    float32 emulation of the C++ (integer counts, default eps; ~0.5 s for 8001 bins).
    """
    h = _check(hist, num_quantized_bins)
    _check_precision(precision)
    if method not in ("auto", "fast", "loop"):
        raise ValueError(f"unknown method {method!r}; valid: auto, fast, loop")
    if h.sum() == 0:
        raise CalibrationError("KL calibration: the histogram is empty")
    integer = bool(np.all(h == np.round(h)))
    half = np.arange(num_quantized_bins // 2, h.size // 2 + 1)
    if precision == "float32":
        if not integer or eps != EPS:
            raise ValueError("precision='float32' emulates the C++ search: it needs integer "
                             "counts and the default eps")
        f32 = _Float32Search(h, num_quantized_bins)
        return half, np.array([f32.divergence(int(i)) for i in half])
    if method == "fast" and not integer:
        raise ValueError("method='fast' needs integer histogram counts")
    if method == "loop" or not integer:
        return half, _curve_loop(h, num_quantized_bins, eps)
    return half, _curve_fast(h, num_quantized_bins, eps)


def _argmin_float32(h: np.ndarray, nq: int, d64: np.ndarray) -> int:
    """Index of the float32 (C++) minimum, emulating only the candidates that can win.

    The exact curve ``d64`` ranks the candidates; float32 rounding moves each by some ``err``.
    Candidates are emulated from the best ``d64`` outwards until every one left out has
    ``d64 > best32 + 3 * max(err seen, 1e-6)``: with the error level measured on dozens to
    hundreds of neighbours, the C++ winner is among those emulated (checked against the full
    emulation in the tests). Typically 10..700 candidates instead of ~4000.
    """
    f32 = _Float32Search(h, nq)
    order = np.argsort(d64, kind="stable")
    order = order[np.isfinite(d64[order])]
    d32 = np.full(d64.size, np.inf)
    ranked = d64[order]
    done, upto, err = 0, min(32, order.size), 0.0
    while upto > done:
        for k in order[done:upto]:
            d32[k] = f32.divergence(int(k) + nq // 2)
            if np.isfinite(d32[k]):
                err = max(err, abs(d32[k] - d64[k]))
        done = upto
        limit = d32.min() + 3.0 * max(err, 1e-6)
        upto = int(np.searchsorted(ranked, limit, side="right"))
    return int(np.argmin(d32))  # first minimum in candidate order, like the C++


def kl_threshold_from_histogram(hist: Any, edges: Any, num_quantized_bins: int = 255, *,
                                precision: str = "float32") -> float:
    """Threshold chosen by the KL search on a symmetric histogram with the given bin edges.

    ``precision="float32"`` (default) picks the candidate the float32 C++ search of relay /
    MXNet picks (bit-compatible, see :class:`_Float32Search`); ``"float64"`` the exact-arithmetic
    minimum (equally good by the KL measure; on flat curves it may lie tens of bins away).
    Counts that are not integers are searched in float64.

    If no candidate has a finite divergence (e.g. every value is the same negative number, so
    the quirk in step 2 leaves ``q`` empty), relay/MXNet silently return the *smallest*
    candidate (127.5 bins, clipping nearly everything); this returns the last edge (max |x|).
    """
    _check_precision(precision)
    h = _check(hist, num_quantized_bins)
    edges = np.asarray(edges, dtype=np.float64)
    if edges.shape != (h.size + 1,):
        raise ValueError("edges must have one more entry than the histogram")
    half, d64 = kl_divergence_curve(h, num_quantized_bins)
    if not np.isfinite(d64).any():
        return float(edges[-1])
    if precision == "float32" and np.all(h == np.round(h)):
        best = _argmin_float32(h, num_quantized_bins, d64)
    else:
        best = int(np.argmin(d64))  # first minimum, like std::min_element
    return float(edges[h.size // 2 + half[best] + 1])


def kl_divergence_threshold(data: Any, num_bins: int = DEFAULT_NUM_BINS,
                            num_quantized_bins: int = 255, *, signed: bool = True,
                            precision: str = "float32") -> float:
    """KL-divergence threshold (> 0) of a tensor.

    ``data``: an array of values (histogrammed here over ``[-max|x|, max|x|]`` with ``num_bins``
    bins, as relay does), a :class:`HistogramCollector` (its accumulated histogram; its own bin
    count is used), or a ``(hist, edges)`` pair.

    ``signed=False`` is the uint8 rule of relay/MXNet: when the tensor is non-negative the search
    uses ``2 * num_quantized_bins + 1`` quantized bins over ``[-T, T]``, i.e. 255 steps on
    ``[0, T]``. (MXNet's ``quantized_dtype='auto'`` does the same for non-negative tensors.)
    """
    if isinstance(data, tuple) and len(data) == 2:
        hist, edges = (np.asarray(a) for a in data)
        if hist.sum() == 0:
            raise CalibrationError("KL calibration: the histogram is empty")
        nonneg = not np.any(hist[: hist.size // 2])
    else:
        coll = data if isinstance(data, HistogramCollector) else histogram_of(data, num_bins)
        if coll.count == 0:
            raise CalibrationError("KL calibration: the collector has seen no data")
        if coll.range == 0.0:
            raise all_zero_error(coll.count)
        hist, edges = coll.hist, coll.edges
        nonneg = coll.min >= 0
    nq = 2 * num_quantized_bins + 1 if (not signed and nonneg) else num_quantized_bins
    return kl_threshold_from_histogram(hist, edges, nq, precision=precision)
