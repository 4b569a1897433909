"""Head statistics: per-head metrics, head-to-head similarity and head detectors.

Pure numpy / scipy / scikit-learn on captured patterns, no torch and no
streamlit.  Everything takes either a :class:`~viz.result.Block` or a bare
pattern array shaped ``(n_layers, n_heads, query_pos, key_pos)`` (rows summing
to 1) plus per-key token flags, and returns a :class:`pandas.DataFrame` with one
row per ``(layer, head)`` (both 0-based).

Metric definitions (issue 4), ``A`` = one head's pattern, averaged over all
query rows unless stated:

* ``entropy``: Shannon entropy of each row, in nats;
* ``special_share``: weight on special tokens ([CLS], [SEP], BOS/EOS, pad...);
* ``punct_share``: weight on punctuation tokens;
* ``self_share``: ``A[i, i]``;
* ``prev_share``: ``A[i, i-1]`` over ``i >= 1``;
* ``next_share``: ``A[i, i+1]`` over ``i <= T-2``;
* ``mean_distance``: ``sum_j A[i, j] * |i - j|``;
* ``confidence``: ``max_j A[i, j]`` (Voita et al. 2019);
* ``first_token_share``: ``A[i, 0]`` over ``i >= 1`` (query 0 can only look at itself): the
  weight parked on the first token, an attention sink (Xiao et al. 2023).

Similarity: Jensen-Shannon distance between two heads' rows, averaged over
query rows (Clark et al. 2019), embedded in 2-D with metric MDS.

Detectors: previous-token, duplicate-token and induction scores (Olsson et al.
2022, prefix matching on a repeated random token sequence) for causal blocks;
positional and special-token scores (Voita et al. 2019, Clark et al. 2019) for
bidirectional blocks.  Causal blocks also get ``sink`` (the first-token share) and
:func:`sink_heads` flags a head as a sink head when it is at least :data:`SINK_THRESHOLD`.
"""
from __future__ import annotations

import inspect
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial.distance import jensenshannon
from scipy.special import entr
from sklearn.manifold import MDS

from viz import families
from viz.result import Block, TokenSeq, is_lazy

METRICS: tuple[str, ...] = (
    "entropy", "special_share", "punct_share", "self_share",
    "prev_share", "next_share", "mean_distance", "confidence", "first_token_share",
)

# One plain sentence per metric, shown on the page next to its heatmap.
METRIC_EXPLANATIONS: dict[str, str] = {
    "entropy": "How spread out the attention is (in nats): 0 means every token looks at "
               "exactly one token, higher means it spreads its attention over many tokens.",
    "special_share": "The share of attention that goes to special tokens such as [CLS], "
                     "[SEP], BOS/EOS or padding, which heads often use as a 'no-op' target.",
    "punct_share": "The share of attention that goes to punctuation tokens such as "
                   "commas and full stops.",
    "self_share": "The share of attention a token gives to itself.",
    "prev_share": "The share of attention a token gives to the token just before it "
                  "(from the second token on).",
    "next_share": "The share of attention a token gives to the token just after it "
                  "(up to the second-to-last token).",
    "mean_distance": "How many positions away, on average, the attended tokens are.",
    "confidence": "The weight of the single most-attended token, averaged over tokens "
                  "(Voita et al. 2019): near 1 means the head is sure where to look.",
    "first_token_share": "The share of attention that goes to the very first token (from the second "
                         "token on). Many LLM heads park most of their weight there whatever the token "
                         "is, an attention sink (Xiao et al. 2023): it is a resting place, not meaning.",
}

DETECTORS: tuple[str, ...] = (
    "previous_token", "duplicate_token", "induction", "sink", "positional", "special",
)

# A head is a sink head when, on average, at least half of each query's weight (queries from
# the second on) lands on the first token.  Uniform causal attention over T tokens gives
# mean over i >= 1 of 1/(i+1), about 0.16 at T = 16 and 0.06 at T = 64, so half is far above chance for
# any text of more than a few tokens, and well below what real sink heads show (0.8-1.0).
SINK_THRESHOLD = 0.5

DETECTOR_EXPLANATIONS: dict[str, str] = {
    "previous_token": "Average weight on the token just before the query. Previous-token "
                      "heads copy 'what came before' forward (Olsson et al. 2022).",
    "duplicate_token": "Average weight on earlier copies of the query's own token, over "
                       "queries whose token already appeared.",
    "induction": "On a random token sequence shown twice, the average weight the second "
                 "copy puts on the token that followed the same token in the first copy "
                 "(prefix matching, Olsson et al. 2022). Induction heads complete "
                 "'A B ... A' with 'B'.",
    "positional": "Share of (non-special) tokens whose most-attended token is the "
                  "neighbour at a fixed offset, -1 or +1 (Voita et al. 2019); "
                  "positional_offset says which.",
    "special": "Average weight that ordinary tokens put on special tokens; heads that "
               "park their attention on [CLS]/[SEP] score high (Clark et al. 2019).",
    "sink": "Average weight on the first token, from the second query on (first_token_share). "
            f"Heads at {SINK_THRESHOLD} or more are sink heads (Xiao et al. 2023): they park "
            "their attention on the first token whatever it is; it is not a sign of meaning.",
}

# Sentencepiece / byte-level BPE / WordPiece markers that are not part of the text.
_TOKEN_MARKERS = families.TOKEN_MARKERS


def is_punctuation(token: str) -> bool:
    """True when the token's text (markers stripped) is made only of punctuation.

    Punctuation means Unicode category P* or ASCII ``string.punctuation``
    (which also counts symbols such as ``$`` and ``%``).
    """
    text = token
    for marker in _TOKEN_MARKERS:
        text = text.replace(marker, "")
    text = text.strip()
    if not text:
        return False
    return all(ch in string.punctuation or unicodedata.category(ch).startswith("P")
               for ch in text)


def punctuation_flags(seq: TokenSeq) -> np.ndarray:
    """(T,) bool: True for non-special tokens that are punctuation."""
    special = np.asarray(seq.special, dtype=bool)
    flags = np.array([is_punctuation(tok) for tok in seq.tokens], dtype=bool)
    return flags & ~special


def _as_pattern(data: Block | np.ndarray) -> np.ndarray:
    """The pattern as float64 (n_layers, n_heads, query_pos, key_pos)."""
    pattern = data.pattern if isinstance(data, Block) else data
    pattern = np.asarray(pattern, dtype=np.float64)
    if pattern.ndim != 4:
        raise ValueError(f"expected a (n_layers, n_heads, query_pos, key_pos) array, "
                         f"got shape {pattern.shape}")
    return pattern


def _index_frame(n_layers: int, n_heads: int) -> pd.DataFrame:
    layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
    return pd.DataFrame({"layer": layer, "head": head})


def _key_flags(flags, n_keys: int, name: str) -> np.ndarray | None:
    if flags is None:
        return None
    flags = np.asarray(flags, dtype=bool)
    if flags.shape != (n_keys,):
        raise ValueError(f"{name} flags must have one entry per key position "
                         f"({n_keys}), got shape {flags.shape}")
    return flags


def _diagonal_mean(pattern: np.ndarray, offset: int) -> np.ndarray:
    """Mean over query rows i of A[i, i + offset], where that key exists -> (L, H)."""
    n_q, n_k = pattern.shape[-2:]
    rows = np.arange(n_q)
    cols = rows + offset
    ok = (cols >= 0) & (cols < n_k)
    if not ok.any():
        return np.full(pattern.shape[:2], np.nan)
    return pattern[..., rows[ok], cols[ok]].mean(axis=-1)


def head_metrics(data: Block | np.ndarray, *, special=None, punct=None) -> pd.DataFrame:
    """One row per (layer, head): ``layer``, ``head`` and the :data:`METRICS`.

    ``data`` is a Block (token flags come from its key tokens) or a pattern
    array; for an array pass ``special`` / ``punct`` as (key_pos,) bool flags,
    otherwise those two columns are NaN.  Query position ``i`` and key
    position ``j`` are compared directly for self/prev/next/mean_distance, so
    for cross attention those read as "same index in the other stream".
    """
    values = metric_values(data, special=special, punct=punct)
    n_layers, n_heads = values[METRICS[0]].shape
    # One constructor call, not a column at a time: pandas' per-column insert costs more
    # than the metrics themselves.
    layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
    return pd.DataFrame({"layer": layer, "head": head,
                         **{name: values[name].reshape(-1) for name in METRICS}})


METRIC_ROWS = 128   # query units a long result's metrics under the view options are estimated from


def estimated_head_metrics(block: Block, *, max_rows: int = METRIC_ROWS, **options) -> pd.DataFrame:
    """:func:`head_metrics` of ``block`` under the view options, from :func:`estimated_metrics`; the frame's
    ``attrs`` hold ``sampled_rows`` and ``stderr`` (metric -> largest standard error) for the page to say."""
    values, stderr, n_rows = estimated_metrics(block, max_rows=max_rows, **options)
    layer, head = np.divmod(np.arange(block.n_layers * block.n_heads), block.n_heads)
    frame = pd.DataFrame({"layer": layer, "head": head, **{name: values[name].reshape(-1) for name in METRICS}})
    frame.attrs.update(sampled_rows=n_rows, stderr=stderr)
    return frame


def metric_values(data: Block | np.ndarray, *, special=None, punct=None) -> dict[str, np.ndarray]:
    """:func:`head_metrics` as plain arrays: metric name -> (n_layers, n_heads) float64.

    No pandas: corpus runs (:mod:`viz.batch`) call this once per text.  A long result's
    :class:`~viz.result.LazyPattern` gives the values streamed during its capture, or (other
    token flags, a transformed block) is measured one layer at a time.
    """
    raw = data.pattern if isinstance(data, Block) else data
    if is_lazy(raw):
        if raw.summary is not None and special is None and punct is None and isinstance(data, Block):
            return {name: raw.summary.metrics[name].copy() for name in METRICS}
        special, punct = _flags(data, special, punct)
        # float32 per layer: a float64 copy of one 2,048-token layer is 300 MB (means agree to ~1e-6)
        per_layer = [_metric_values(np.asarray(layer, dtype=np.float32)[None], special, punct)
                     for layer in raw.layers()]
        return {name: np.concatenate([v[name] for v in per_layer]) for name in METRICS}
    return _metric_values(_as_pattern(data), *_flags(data, special, punct))


def _flags(data, special, punct):
    if isinstance(data, Block):
        special = data.keys.special if special is None else special
        punct = punctuation_flags(data.keys) if punct is None else punct
    return special, punct


def _metric_values(pattern: np.ndarray, special, punct) -> dict[str, np.ndarray]:
    """The metrics of a (L, H, Tq, Tk) array (float64, or float32 for a long result's layers)."""
    n_layers, n_heads, _, n_k = pattern.shape
    special = _key_flags(special, n_k, "special")
    punct = _key_flags(punct, n_k, "punct")

    q_pos = np.arange(pattern.shape[2])[:, None]
    k_pos = np.arange(n_k)[None, :]
    distance = np.abs(q_pos - k_pos)               # (Tq, Tk)
    single = pattern.dtype == np.float32
    if single:   # scipy's entr has no fast float32 loop; x log x with 0 log 0 = 0 is the same sum
        distance = distance.astype(np.float32)

    def share(flags):
        if flags is None:
            return np.full((n_layers, n_heads), np.nan)
        return pattern[..., flags].sum(axis=-1).mean(axis=-1)

    values = {
        "entropy": (-(pattern * np.log(pattern + np.float32(1e-38))).sum(axis=-1).mean(axis=-1, dtype=np.float64)
                    if single else entr(pattern).sum(axis=-1).mean(axis=-1)),
        "special_share": share(special),
        "punct_share": share(punct),
        "self_share": _diagonal_mean(pattern, 0),
        "prev_share": _diagonal_mean(pattern, -1),
        "next_share": _diagonal_mean(pattern, +1),
        "mean_distance": (pattern * distance).sum(axis=-1).mean(axis=-1),
        "confidence": pattern.max(axis=-1).mean(axis=-1),
        "first_token_share": (pattern[:, :, 1:, 0].mean(axis=-1) if pattern.shape[2] >= 2
                              else np.full((n_layers, n_heads), np.nan)),
    }
    return {name: np.asarray(values[name], dtype=np.float64) for name in METRICS}


def estimated_metrics(block: Block, *, max_rows: int, **options) -> tuple[dict, dict, int]:
    """The :data:`METRICS` of ``block`` under the view options (word level, hidden tokens), estimated from
    ``max_rows`` evenly spaced query units of each layer (:func:`viz.aggregate.sampled_rows`: a long result
    recomputes only the raw rows those need) instead of every layer whole.

    Returns ``(values, stderr, n_rows)``: metric -> (n_layers, n_heads) mean over the sampled rows (each
    metric's own rows, as :func:`metric_values` takes them), metric -> the largest standard error of those
    means, and how many rows were sampled. With every row sampled the values are :func:`metric_values`'s.
    """
    from viz.aggregate import sampled_rows
    units, _, keys, rows_of = sampled_rows(block, max_rows, **options)
    n_layers, n_heads = block.n_layers, block.n_heads
    special = np.asarray(keys.special, dtype=bool)
    punct = punctuation_flags(keys)
    n_k = len(keys)
    distance = np.abs(units[:, None] - np.arange(n_k)[None, :]).astype(np.float32)   # (R, K')
    per_row = {name: np.full((n_layers, n_heads, len(units)), np.nan) for name in METRICS}
    r = np.arange(len(units))
    def at(rows, offset, valid):
        cols = units + offset
        ok = valid & (cols >= 0) & (cols < n_k)
        out = np.full(rows.shape[:2], np.nan)
        out[:, ok] = rows[:, r[ok], cols[ok]]
        return out
    def measure(layer: int) -> None:
        rows = rows_of(layer)                                                         # (H, R, K')
        m = {name: per_row[name][layer] for name in METRICS}
        m["entropy"][:] = -(rows * np.log(rows + np.float32(1e-38))).sum(axis=-1)
        m["special_share"][:] = rows[..., special].sum(axis=-1)
        m["punct_share"][:] = rows[..., punct].sum(axis=-1)
        everywhere = np.ones(len(units), bool)
        m["self_share"][:] = at(rows, 0, everywhere)
        m["prev_share"][:] = at(rows, -1, everywhere)
        m["next_share"][:] = at(rows, 1, everywhere)
        m["mean_distance"][:] = (rows * distance).sum(axis=-1)
        m["confidence"][:] = rows.max(axis=-1)
        m["first_token_share"][:] = np.where(units >= 1, rows[..., 0], np.nan) if len(keys) >= 2 else np.nan
    from viz.efficient import one_blas_thread   # small products: OpenBLAS threads only spin on a busy server
    with one_blas_thread():
        for layer in range(n_layers):
            measure(layer)
    values, stderr = {}, {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, v in per_row.items():
            n = np.isfinite(v).sum(axis=-1)
            values[name] = np.nanmean(v, axis=-1) if n.any() else np.full((n_layers, n_heads), np.nan)
            spread = np.nanstd(v, axis=-1, ddof=1) / np.sqrt(np.maximum(n, 1)) if (n > 1).any() else np.zeros(1)
            stderr[name] = float(np.nanmax(spread)) if np.isfinite(spread).any() else 0.0
    return values, stderr, len(units)


def first_token_share(data: Block | np.ndarray) -> np.ndarray:
    """Mean over query positions i >= 1 of A[i, 0] -> (n_layers, n_heads); NaN with one query."""
    raw = data.pattern if isinstance(data, Block) else data
    if is_lazy(raw) and raw.summary is not None:
        return raw.summary.metrics["first_token_share"].copy()
    pattern = _as_pattern(data)
    if pattern.shape[2] < 2:
        return np.full(pattern.shape[:2], np.nan)
    return pattern[:, :, 1:, 0].mean(axis=-1)


def sink_heads(data: Block | np.ndarray, *, threshold: float = SINK_THRESHOLD) -> np.ndarray:
    """(n_layers, n_heads) bool: heads whose first-token share is at least ``threshold``."""
    share = first_token_share(data)
    return np.nan_to_num(share, nan=0.0) >= threshold


def metric_grid(frame: pd.DataFrame, metric: str) -> np.ndarray:
    """A metric column of a per-head frame as an (n_layers, n_heads) array."""
    grid = frame.pivot(index="layer", columns="head", values=metric)
    return grid.sort_index().sort_index(axis=1).to_numpy(dtype=float)


def top_metric(frame: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.Series:
    """For each head, the metric where it stands out most (largest |z-score| across heads).

    Returns strings like ``"prev_share 0.93"`` for hover labels.
    """
    values = frame[list(metrics)].astype(float)
    spread = values.std(axis=0, ddof=0).replace(0.0, np.nan)
    z = ((values - values.mean(axis=0)) / spread).abs().fillna(0.0)
    best = z.to_numpy().argmax(axis=1)
    names = np.asarray(metrics)[best]
    chosen = values.to_numpy()[np.arange(len(values)), best]
    return pd.Series([f"{n} {v:.2f}" for n, v in zip(names, chosen)], index=frame.index)


# --------------------------------------------------------------------------- similarity

def query_rows(n_queries: int, max_rows: int | None) -> np.ndarray:
    """All query positions, or ``max_rows`` evenly spaced ones (first and last included)."""
    if max_rows is None or n_queries <= max_rows:
        return np.arange(n_queries)
    return np.unique(np.linspace(0, n_queries - 1, max_rows).round().astype(int))


def head_distances(data: Block | np.ndarray, *, max_rows: int | None = None) -> np.ndarray:
    """Jensen-Shannon distance (base 2, in [0, 1]) between every pair of heads.

    Rows of the two heads are compared query by query and the distances are
    averaged over query rows (Clark et al. 2019).  Returns an
    (n_layers * n_heads, n_layers * n_heads) symmetric matrix with a zero
    diagonal; head ``(layer, head)`` is index ``layer * n_heads + head``.

    The cost grows with heads² x tokens²: ``max_rows`` averages over that many
    evenly spaced query rows instead of all of them (an estimate, for long texts).
    """
    raw = data.pattern if isinstance(data, Block) else data
    n_layers, n_heads, n_q, n_k = raw.shape
    rows = query_rows(n_q, max_rows)
    # Rows first: a long result's LazyPattern recomputes only these rows of each layer.
    flat = _as_pattern(raw[:, :, rows]).reshape(n_layers * n_heads, len(rows), n_k)
    n = flat.shape[0]
    dist = np.zeros((n, n))
    # One head against all later heads at a time: memory stays at n * Tq * Tk.
    for a in range(n - 1):
        js = jensenshannon(flat[a][None], flat[a + 1:], base=2, axis=-1)  # (n-a-1, Tq)
        row = np.nanmean(js, axis=-1)
        dist[a, a + 1:] = row
        dist[a + 1:, a] = row
    return dist


def js_distance_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon distance (base 2) between the rows of ``p`` and ``q`` along the last axis,
    broadcast: scipy's ``jensenshannon(p, q, base=2, axis=-1)`` in float32 at ~20x its speed.

    Written as ``sum_j p_j log1p(r_j) + q_j log1p(-r_j)`` with ``r = (p - q) / (p + q)``, so every
    term stays accurate when the two rows nearly agree (no difference of two large logarithms):
    within ~1e-6 of scipy's float64 result on attention rows. A row summing to 0 gives NaN, as in scipy.
    """
    p = np.asarray(p, dtype=np.float32)
    q = np.asarray(q, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = p / p.sum(axis=-1, keepdims=True)
        q = q / q.sum(axis=-1, keepdims=True)
        total = p + q
        r = (p - q) / np.maximum(total, np.float32(1e-37))
        np.clip(r, np.float32(-1 + 1e-7), np.float32(1 - 1e-7), out=r)
        terms = p * np.log1p(r) + q * np.log1p(-r)
        js = terms.sum(axis=-1, dtype=np.float64) / (2 * np.log(2))
    return np.sqrt(np.maximum(js, 0.0))


def layer_rows(pattern, layer: int, rows: np.ndarray) -> np.ndarray:
    """(n_heads, len(rows), T_k): some query rows of one layer (a LazyPattern recomputes only those)."""
    if is_lazy(pattern):
        return pattern[layer, :, rows]
    return np.asarray(pattern[layer])[:, rows]


def distances_from(data: Block | np.ndarray, layer: int, head: int, *, max_rows: int | None = None) -> np.ndarray:
    """(n_layers * n_heads,) mean Jensen-Shannon distance from head ``(layer, head)`` to every head, over
    the query rows of :func:`query_rows`: one row of :func:`head_distances`, for a long result, one layer
    at a time (a LazyPattern recomputes only those rows), in float32 (:func:`js_distance_rows`)."""
    raw = data.pattern if isinstance(data, Block) else data
    n_layers, n_heads, n_q, _ = raw.shape
    rows = query_rows(n_q, max_rows)
    me = np.asarray(raw[layer, head, rows], dtype=np.float32)             # (R, T_k)
    # causal rows are zero past their own position: compare each group of rows up to its last key only
    causal = isinstance(data, Block) and data.causal and n_q == raw.shape[3]
    groups = np.array_split(np.arange(len(rows)), max(1, len(rows) // 8)) if causal else [np.arange(len(rows))]
    out = np.empty(n_layers * n_heads)
    from viz.efficient import one_blas_thread   # small products: OpenBLAS threads only spin on a busy server
    with one_blas_thread():
        for other in range(n_layers):
            theirs = np.asarray(layer_rows(raw, other, rows), dtype=np.float32)   # (H, R, T_k): these rows only
            js = np.empty(theirs.shape[:2])
            for g in groups:
                stop = int(rows[g[-1]]) + 1 if causal else theirs.shape[-1]
                js[:, g] = js_distance_rows(me[None, g, :stop], theirs[:, g, :stop])   # (H, len(g))
            out[other * n_heads:(other + 1) * n_heads] = np.nanmean(js, axis=-1)
    out[layer * n_heads + head] = 0.0
    return out


def thumbnail_distances(thumbs: np.ndarray, n_queries: int, n_keys: int) -> np.ndarray:
    """Head-to-head Jensen-Shannon distances on the thumbnails a long capture streamed
    (:class:`~viz.result.PatternSummary`): each thumbnail row, times its key blocks' widths, is where
    that block of queries puts its weight among the key blocks; distances are averaged over the
    thumbnail rows. A coarse picture of :func:`head_distances` (blocks blur detail, so distances come
    out smaller), with the cost of a 64-token input."""
    n_layers, n_heads, t_q, t_k = thumbs.shape
    # the thumbnails' near-equal bins (viz.views.model_view.downsample)
    starts = np.floor(np.arange(t_k) * n_keys / t_k).astype(np.int64)
    widths = np.diff(np.append(starts, n_keys)).astype(np.float32)
    mass = (np.asarray(thumbs, dtype=np.float32) * widths).reshape(n_layers * n_heads, t_q, t_k)
    with np.errstate(invalid="ignore", divide="ignore"):
        mass /= mass.sum(axis=-1, keepdims=True)
    mass = np.nan_to_num(mass) * np.float32(0.5)          # halves: m = p/2 + q/2 below
    tiny = np.float32(1e-30)
    # JSD = H(m) - (H(p) + H(q)) / 2: one logarithm per pair and cell (the map is a picture; the
    # float32 cancellation this allows, ~1e-3 in distance between near-identical heads, does not show)
    half_h = -(mass * np.log(2 * mass + tiny)).sum(axis=-1)  # (N, R) = H(p) / 2
    n = mass.shape[0]
    dist = np.zeros((n, n))
    for a in range(n - 1):
        m = mass[a][None] + mass[a + 1:]                   # (n-a-1, R, K)
        h_m = -(m * np.log(m + tiny)).sum(axis=-1)
        jsd = np.maximum(h_m - half_h[a][None] - half_h[a + 1:], 0.0) / np.log(2)
        row = np.sqrt(jsd).mean(axis=-1)
        dist[a, a + 1:] = row
        dist[a + 1:, a] = row
    return dist


def _mds_kwargs() -> dict:
    """MDS options for the installed scikit-learn (its keywords moved in 1.8)."""
    params = inspect.signature(MDS).parameters
    if "metric_mds" in params:
        kwargs = {"metric": "precomputed", "metric_mds": True}
    else:  # scikit-learn < 1.8
        kwargs = {"dissimilarity": "precomputed", "metric": True}
    if "init" in params:
        kwargs["init"] = "classical_mds"
    else:
        kwargs["n_init"] = 4
    return kwargs


def embed_heads(distances: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D metric MDS embedding of a head distance matrix -> (n_heads_total, 2)."""
    distances = np.asarray(distances, dtype=float)
    n = distances.shape[0]
    if n == 1:
        return np.zeros((1, 2))
    mds = MDS(n_components=2, random_state=seed, normalized_stress="auto", **_mds_kwargs())
    return mds.fit_transform(distances)


@dataclass(frozen=True)
class SimilarityMap:
    """Head-to-head distances and their 2-D embedding."""

    distances: np.ndarray      # (N, N) mean Jensen-Shannon distance, N = n_layers * n_heads
    coords: np.ndarray         # (N, 2) MDS embedding
    n_layers: int
    n_heads: int
    # "rows": distances over query rows (head_distances); "thumbnails": over a long result's streamed
    # thumbnails (thumbnail_distances), a coarser picture
    basis: str = "rows"

    def index(self, layer: int, head: int) -> int:
        return layer * self.n_heads + head

    def frame(self) -> pd.DataFrame:
        """``layer``, ``head``, ``x``, ``y`` for plotting."""
        frame = _index_frame(self.n_layers, self.n_heads)
        frame["x"] = self.coords[:, 0]
        frame["y"] = self.coords[:, 1]
        return frame


def similarity_map(data: Block | np.ndarray, *, seed: int = 0,
                   max_rows: int | None = None) -> SimilarityMap:
    """Distances between all heads plus a seeded 2-D MDS embedding (see :func:`head_distances`).

    A long result (a LazyPattern with its streamed summary) is compared on its thumbnails
    (:func:`thumbnail_distances`, ``basis="thumbnails"``): every pair of its heads over sampled rows
    would take minutes. Use :func:`distances_from` for one head's distances on token rows.
    """
    raw = data.pattern if isinstance(data, Block) else data
    summary = getattr(raw, "summary", None) if is_lazy(raw) else None
    if summary is not None:
        distances = thumbnail_distances(summary.thumbs, raw.shape[2], raw.shape[3])
        return SimilarityMap(distances, embed_heads(distances, seed=seed), raw.shape[0], raw.shape[1],
                             basis="thumbnails")
    pattern = raw if is_lazy(raw) else _as_pattern(data)
    distances = head_distances(pattern, max_rows=max_rows)
    return SimilarityMap(distances, embed_heads(distances, seed=seed),
                         pattern.shape[0], pattern.shape[1])


def nearest_heads(sim: SimilarityMap, layer: int, head: int, *, k: int = 5,
                  row: np.ndarray | None = None) -> pd.DataFrame:
    """The ``k`` heads closest to (layer, head): ``layer``, ``head``, ``distance``.

    ``row``: that head's distances to every head to rank by instead of the map's (e.g. from
    :func:`distances_from` when the map was drawn from thumbnails).
    """
    if not (0 <= layer < sim.n_layers and 0 <= head < sim.n_heads):
        raise ValueError(f"no head ({layer}, {head}) in a {sim.n_layers} x {sim.n_heads} model")
    me = sim.index(layer, head)
    row = sim.distances[me] if row is None else np.asarray(row, dtype=float)
    order = [i for i in np.argsort(row, kind="stable") if i != me][:k]
    layers, heads = np.divmod(np.asarray(order, dtype=int), sim.n_heads)
    return pd.DataFrame({"layer": layers, "head": heads, "distance": row[order]})


def head_difference(data: Block | np.ndarray, first: tuple[int, int],
                    second: tuple[int, int]) -> np.ndarray:
    """``A_first - A_second`` for two (layer, head) pairs -> (query_pos, key_pos)."""
    raw = data.pattern if isinstance(data, Block) else data
    if is_lazy(raw):   # a long result: only the two heads are recomputed
        return np.asarray(raw[first], dtype=np.float64) - np.asarray(raw[second], dtype=np.float64)
    pattern = _as_pattern(data)
    return pattern[first] - pattern[second]


# --------------------------------------------------------------------------- detectors

def repeated_random_ids(candidate_ids: Sequence[int] | np.ndarray, *, length: int = 20,
                        seed: int = 0, prefix: Sequence[int] = ()) -> np.ndarray:
    """``prefix + r_1..r_n + r_1..r_n``: a random token sequence shown twice.

    The ``length`` tokens are drawn without replacement from ``candidate_ids``
    (so every repeat in the sequence is the planted one), seeded.  ``prefix`` is
    e.g. the BOS id.  This is the input Olsson et al. (2022) use to score
    induction heads.
    """
    candidates = np.unique(np.asarray(candidate_ids, dtype=np.int64))
    if length < 2:
        raise ValueError("the repeated sequence needs at least 2 tokens")
    if len(candidates) < length:
        raise ValueError(f"need {length} distinct candidate tokens, got {len(candidates)}")
    rng = np.random.default_rng(seed)
    half = rng.choice(candidates, size=length, replace=False)
    return np.concatenate([np.asarray(prefix, dtype=np.int64), half, half])


def word_tokens(vocab: Mapping[str, int] | Iterable[str], *, min_chars: int = 3) -> list[str]:
    """Vocabulary entries that are whole lower-case words (markers stripped), sorted.

    These re-tokenize to themselves when written as space-separated text, so a
    text made of them gives the model (close to) the planted token sequence.
    WordPiece continuations (``##x``) and bracketed specials are skipped; with
    byte-level BPE / sentencepiece only word-start pieces (``Ġx``, ``▁x``) count.
    """
    entries = list(vocab.keys() if isinstance(vocab, Mapping) else vocab)
    marked = {e for e in entries if e.startswith(families.SPACE_MARKERS)}
    words = set()
    for entry in entries:
        if marked and entry not in marked:
            continue          # BPE/sentencepiece: only pieces that start a word
        word = entry[1:] if entry in marked else entry
        if len(word) >= min_chars and word.isascii() and word.isalpha() and word.islower():
            words.add(word)
    return sorted(words)


def repeated_random_text(vocab: Mapping[str, int] | Iterable[str], *, length: int = 20,
                         seed: int = 0, pool: Iterable[str] | None = None,
                         max_tokens: int | None = None) -> str:
    """``" w_1 ... w_n w_1 ... w_n"``: :func:`repeated_random_ids` as text.

    ``capture`` takes text, so the induction test writes the random sequence
    with whole-word vocabulary entries (:func:`word_tokens`).  The leading space
    makes byte-level BPE read every word as its ``Ġword`` token.  The detectors
    work on the ids the model actually saw, so a word that still splits only
    costs a little precision, never a wrong target.

    ``pool`` restricts the words to a known-clean list (e.g. the words of the
    sample corpus): a raw vocabulary holds words nobody wants on a classroom
    projector.  ``max_tokens`` (the model's limit) shortens the sequence so both
    copies plus a few special tokens fit.
    """
    words = word_tokens(vocab)
    if pool is not None:
        allowed = {w.lower() for w in pool}
        words = [w for w in words if w in allowed]
    if max_tokens is not None:
        length = min(length, (max_tokens - 4) // 2)
    length = min(length, len(words))
    if length < 2:
        raise ValueError(f"cannot build a repeated random sequence: {len(words)} usable words, "
                         f"need at least 2 that fit twice in the model's limit")
    rng = np.random.default_rng(seed)
    half = [words[i] for i in rng.choice(len(words), size=length, replace=False)]
    return " " + " ".join(half + half)


def _earlier_matches(token_ids: np.ndarray, ignore: np.ndarray) -> list[np.ndarray]:
    """For each position i, the earlier positions j < i holding the same token."""
    out = []
    for i, tok in enumerate(token_ids):
        if ignore[i]:
            out.append(np.empty(0, dtype=int))
            continue
        earlier = np.flatnonzero((token_ids[:i] == tok) & ~ignore[:i])
        out.append(earlier)
    return out


def _target_score(pattern: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    """Mean over queries with targets of the summed weight on them -> (L, H)."""
    rows = [i for i, t in enumerate(targets) if len(t)]
    if not rows:
        return np.full(pattern.shape[:2], np.nan)
    per_row = [pattern[:, :, i, targets[i]].sum(axis=-1) for i in rows]
    return np.mean(per_row, axis=0)


def previous_token_scores(data: Block | np.ndarray) -> np.ndarray:
    """Mean of A[i, i-1] over i >= 1 -> (n_layers, n_heads)."""
    return _diagonal_mean(_as_pattern(data), -1)


def duplicate_token_scores(data: Block | np.ndarray, token_ids=None, *,
                           special=None) -> np.ndarray:
    """Mean weight on earlier copies of the query's token -> (n_layers, n_heads).

    Averaged over the queries whose token appeared before; special tokens are
    neither queries nor targets.  NaN when no token repeats.
    """
    pattern = _as_pattern(data)
    token_ids, special = _ids_and_special(data, token_ids, special, pattern.shape[-1])
    return _target_score(pattern, _earlier_matches(token_ids, special))


def induction_scores(data: Block | np.ndarray, token_ids=None, *, special=None) -> np.ndarray:
    """Prefix-matching score (Olsson et al. 2022) -> (n_layers, n_heads).

    For a query whose token appeared earlier at ``j``, the target is ``j + 1``,
    the token that followed it (skipped when ``j + 1`` is the query itself).
    The score is the summed weight on the targets, averaged over queries that
    have one.  On ``prefix + r + r`` (see :func:`repeated_random_ids`) it is the
    mean of ``A[i, i - n + 1]`` over the second copy.
    """
    pattern = _as_pattern(data)
    token_ids, special = _ids_and_special(data, token_ids, special, pattern.shape[-1])
    targets = [m[m + 1 < i] + 1 for i, m in enumerate(_earlier_matches(token_ids, special))]
    return _target_score(pattern, targets)


def positional_scores(data: Block | np.ndarray, *, special=None,
                      offsets: Sequence[int] = (-1, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Share of non-special queries whose arg-max key is ``i + offset``.

    Returns ``(score, offset)``, both (n_layers, n_heads): the best share over
    ``offsets`` and the offset that achieved it (Voita et al. 2019 call a head
    positional when this share is at least 0.9 for offset -1 or +1).
    """
    pattern = _as_pattern(data)
    n_q, n_k = pattern.shape[-2:]
    special = _special(data, special, n_k)
    rows = np.arange(n_q)
    keep = rows < n_k
    if special is not None:
        keep &= ~special[np.minimum(rows, n_k - 1)]
    top = pattern.argmax(axis=-1)                   # (L, H, Tq)
    if not keep.any():
        nan = np.full(pattern.shape[:2], np.nan)
        return nan, nan
    shares = np.stack([(top[..., keep] == rows[keep] + off).mean(axis=-1) for off in offsets])
    best = shares.argmax(axis=0)
    return shares.max(axis=0), np.asarray(offsets)[best].astype(float)


def special_scores(data: Block | np.ndarray, *, special=None) -> np.ndarray:
    """Mean weight non-special queries put on special keys -> (n_layers, n_heads)."""
    pattern = _as_pattern(data)
    n_q, n_k = pattern.shape[-2:]
    special = _special(data, special, n_k)
    if special is None or not special.any():
        return np.zeros(pattern.shape[:2]) if special is not None else np.full(pattern.shape[:2], np.nan)
    rows = np.arange(n_q)
    # Query flags only exist when queries and keys are the same stream.
    if isinstance(data, Block):
        query_special = np.asarray(data.queries.special, dtype=bool)
    else:
        query_special = special if n_q == n_k else np.zeros(n_q, dtype=bool)
    rows = rows[~query_special]
    if not len(rows):
        return np.full(pattern.shape[:2], np.nan)
    return pattern[:, :, rows][..., special].sum(axis=-1).mean(axis=-1)


def _special(data, special, n_k: int) -> np.ndarray | None:
    if special is None and isinstance(data, Block):
        special = data.keys.special
    return _key_flags(special, n_k, "special")


def _ids_and_special(data, token_ids, special, n_k: int) -> tuple[np.ndarray, np.ndarray]:
    if token_ids is None:
        if not isinstance(data, Block):
            raise ValueError("token_ids are needed for a bare pattern array")
        token_ids = data.keys.token_ids
    token_ids = np.asarray(token_ids)
    if token_ids.shape != (n_k,):
        raise ValueError(f"token_ids must have one entry per key position ({n_k}), "
                         f"got shape {token_ids.shape}")
    special = _special(data, special, n_k)
    if special is None:
        special = np.zeros(n_k, dtype=bool)
    return token_ids, special


def detect_heads(data: Block | np.ndarray, token_ids=None, *, special=None,
                 causal: bool | None = None) -> pd.DataFrame:
    """Detector scores per (layer, head).

    Causal (decoder) blocks get ``previous_token``, ``duplicate_token``,
    ``induction`` (feed them the repeated random sequence for the Olsson
    induction score) and ``sink`` (first-token share; a sink head when at least
    :data:`SINK_THRESHOLD`); bidirectional (encoder) blocks get ``positional``,
    ``positional_offset`` and ``special``.  ``causal`` defaults to the block's.
    """
    pattern = _as_pattern(data)
    n_layers, n_heads = pattern.shape[:2]
    if causal is None:
        causal = data.causal if isinstance(data, Block) else bool(
            np.allclose(np.triu(pattern, k=1), 0.0))
    frame = _index_frame(n_layers, n_heads)
    if causal:
        ids, flags = _ids_and_special(data, token_ids, special, pattern.shape[-1])
        frame["previous_token"] = previous_token_scores(pattern).reshape(-1)
        frame["duplicate_token"] = duplicate_token_scores(pattern, ids, special=flags).reshape(-1)
        frame["induction"] = induction_scores(pattern, ids, special=flags).reshape(-1)
        frame["sink"] = first_token_share(pattern).reshape(-1)
    else:
        score, offset = positional_scores(data, special=special)
        frame["positional"] = score.reshape(-1)
        frame["positional_offset"] = offset.reshape(-1)
        frame["special"] = special_scores(data, special=special).reshape(-1)
    return frame


@dataclass(frozen=True)
class Highlight:
    """A head worth showing first, and one sentence saying why."""

    layer: int
    head: int
    why: str


def interesting_head(frame: pd.DataFrame) -> Highlight:
    """The head to greet a newcomer with: one that looks at particular tokens with confidence,
    not at [CLS]/[SEP], punctuation, the first token (a sink) or itself.

    Score = confidence x (1 - special_share) x (1 - first_token_share) x (1 - self_share)
    x (1 - punct_share / 2); NaN metrics count as 0 (absent).  ``frame`` is :func:`head_metrics`.
    """
    if frame.empty:
        raise ValueError("no heads")
    def col(name):
        return frame[name].fillna(0.0).to_numpy() if name in frame else np.zeros(len(frame))
    score = (col("confidence") * (1 - col("special_share")) * (1 - col("first_token_share"))
             * (1 - col("self_share")) * (1 - col("punct_share") / 2))
    best = frame.iloc[int(np.argmax(score))]
    layer, head = int(best["layer"]), int(best["head"])
    if col("prev_share")[int(np.argmax(score))] > 0.5:
        what = f"mostly looks at the token just before ({best['prev_share']:.0%} of its weight)"
    elif col("next_share")[int(np.argmax(score))] > 0.5:
        what = f"mostly looks at the token just after ({best['next_share']:.0%} of its weight)"
    else:
        what = (f"puts {best['confidence']:.0%} of each token's attention on one other token, on average, "
                f"and little on special tokens")
    return Highlight(layer, head, f"Layer {layer}, head {head} {what}.")
