"""The attention math of one head and one query token, step by step (pure numpy).

From a :class:`~viz.result.LayerInternals` captured from the running model
(its real q, k, v, pre-softmax scores, mask and returned weights) this module
recomputes what the head did for query position ``i``::

    dots_j    = q_i . k_j                       (dot products)
    scaled_j  = scaling * dots_j                (usually 1/sqrt(d_k); T5 uses 1)
    bias_j    = scores_j - scaled_j             (a learned position bias, T5; else ~0)
    masked_j  = scores_j where allowed, else -inf  (causal or padding mask)
    weights   = softmax(masked)                 (what the views draw)
    output    = sum_j weights_j v_j             (the head's output for token i)

and checks the recomputed softmax against the weights the model returned.
Nothing here re-implements an architecture: the projections were applied by the
model itself; we only redo the last, architecture-independent steps in float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viz.result import LayerInternals

# A bias smaller than this (relative to the scores) is float error, not a position bias.
BIAS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ProjectionShapes:
    """Shapes of the head's projection matrices, derived from the captured arrays."""

    d_model: int | None   # width of the input vectors (None when the input was not recorded)
    d_head: int           # d_k = d_v of one head
    n_heads: int

    @property
    def per_head(self) -> tuple[int | None, int]:
        """W_Q^h, W_K^h, W_V^h are each (d_model, d_head)."""
        return (self.d_model, self.d_head)

    @property
    def all_heads(self) -> tuple[int | None, int]:
        """The layer's W_Q (all heads side by side) is (d_model, n_heads * d_head)."""
        return (self.d_model, self.n_heads * self.d_head)


@dataclass(frozen=True)
class MathSteps:
    """Every intermediate of one head's attention for one query token."""

    kind: str
    layer: int
    head: int
    query_pos: int
    shapes: ProjectionShapes
    scaling: float
    x: np.ndarray | None       # (d_model,) the query token's input vector, if recorded
    q: np.ndarray              # (d_head,)
    keys: np.ndarray           # (T_k, d_head) k_j
    values: np.ndarray         # (T_k, d_head) v_j
    dots: np.ndarray           # (T_k,) q . k_j
    scaled: np.ndarray         # (T_k,) scaling * q . k_j
    bias: np.ndarray | None    # (T_k,) position bias added by the model, None when there is none
    scores: np.ndarray         # (T_k,) the model's pre-softmax scores (scaled + bias), unmasked
    allowed: np.ndarray        # (T_k,) bool, False where the mask hides key j
    masked: np.ndarray         # (T_k,) scores with -inf where masked
    weights: np.ndarray        # (T_k,) softmax(masked), recomputed here
    model_weights: np.ndarray  # (T_k,) the weights the model returned
    output: np.ndarray         # (d_head,) sum_j weights_j v_j, recomputed here
    model_output: np.ndarray   # (d_head,) the head output captured from the model
    max_abs_diff: float        # max_j |weights_j - model_weights_j|
    head_max_abs_diff: float   # the same over every query row of this head
    output_max_abs_diff: float  # max |output - model_output|

    @property
    def d_k(self) -> int:
        return self.shapes.d_head

    @property
    def standard_scaling(self) -> bool:
        """True when the scaling is the textbook 1/sqrt(d_k)."""
        return bool(np.isclose(self.scaling, 1.0 / np.sqrt(self.d_k), rtol=1e-4))

    @property
    def n_masked(self) -> int:
        return int((~self.allowed).sum())


def softmax_masked(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the allowed keys (float64); a row with no allowed key is all zeros."""
    s = np.where(allowed, np.asarray(scores, dtype=np.float64), -np.inf)
    top = s.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(allowed, np.exp(s - top), 0.0)
    total = e.sum(axis=-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def projection_shapes(li: LayerInternals) -> ProjectionShapes:
    n_heads, _, d_head = li.query.shape
    d_model = None if li.hidden is None else int(li.hidden.shape[-1])
    return ProjectionShapes(d_model=d_model, d_head=int(d_head), n_heads=int(n_heads))


def head_check(li: LayerInternals, head: int) -> float:
    """max |softmax(ours) - model's weights| over every (query_pos, key_pos) of ``head``."""
    ours = softmax_masked(li.scores[head], li.mask)
    return float(np.abs(ours - li.pattern[head].astype(np.float64)).max())


def math_steps(li: LayerInternals, *, head: int, query_pos: int) -> MathSteps:
    """Recompute head ``head``'s attention for ``query_pos`` from the captured internals."""
    n_heads, t_q, _ = li.query.shape
    if not 0 <= head < n_heads:
        raise ValueError(f"head {head} is out of range (this layer has {n_heads} heads)")
    if not 0 <= query_pos < t_q:
        raise ValueError(f"query position {query_pos} is out of range (0..{t_q - 1})")
    q = li.query[head, query_pos].astype(np.float64)             # (d_head,)
    keys = li.key[head].astype(np.float64)                       # (T_k, d_head)
    values = li.value[head].astype(np.float64)                   # (T_k, d_head)
    dots = keys @ q                                              # (T_k,)
    scaled = li.scaling * dots
    scores = li.scores[head, query_pos].astype(np.float64)       # (T_k,) includes any bias
    allowed = np.asarray(li.mask[query_pos], dtype=bool)
    bias = scores - scaled
    visible = np.abs(np.where(allowed, bias, 0.0))
    has_bias = visible.size and visible.max() > BIAS_TOLERANCE * (1.0 + np.abs(scaled).max())
    weights = softmax_masked(scores, allowed)
    model_weights = li.pattern[head, query_pos].astype(np.float64)
    output = weights @ values                                    # (d_head,)
    model_output = li.head_output[head, query_pos].astype(np.float64)
    return MathSteps(
        kind=li.kind, layer=li.layer, head=head, query_pos=query_pos, shapes=projection_shapes(li),
        scaling=float(li.scaling),
        x=None if li.hidden is None else li.hidden[query_pos].astype(np.float64),
        q=q, keys=keys, values=values, dots=dots, scaled=scaled,
        bias=np.where(allowed, bias, 0.0) if has_bias else None, scores=scores, allowed=allowed,
        masked=np.where(allowed, scores, -np.inf), weights=weights, model_weights=model_weights,
        output=output, model_output=model_output,
        max_abs_diff=float(np.abs(weights - model_weights).max()),
        head_max_abs_diff=head_check(li, head),
        output_max_abs_diff=float(np.abs(output - model_output).max()))


def mask_reason(allowed: np.ndarray, *, kind: str, query_pos: int) -> str:
    """One sentence on why some keys are hidden from this query (or that none are)."""
    hidden = np.flatnonzero(~np.asarray(allowed, dtype=bool))
    if hidden.size == 0:
        return "No mask applies: this query may look at every key."
    if kind != "cross" and (hidden > query_pos).all() and hidden.min() == query_pos + 1:
        return (f"Causal mask: the {hidden.size} keys after position {query_pos} are hidden "
                f"(set to -inf before the softmax), so the token cannot look ahead.")
    return f"Padding mask: {hidden.size} keys are hidden (set to -inf before the softmax)."


def query_position(labels, value, *, default: int = 0) -> int:
    """A URL's ``query`` parameter as a position: an integer, or a token text (its first occurrence)."""
    n = len(labels)
    if value is None or str(value).strip() == "":
        return min(max(default, 0), max(n - 1, 0))
    text = str(value).strip()
    if text.lstrip("-").isdigit():
        pos = int(text)
        return pos if 0 <= pos < n else min(max(default, 0), max(n - 1, 0))
    lowered = [str(lab).strip().lower() for lab in labels]
    return lowered.index(text.lower()) if text.lower() in lowered else min(max(default, 0), max(n - 1, 0))


def default_query(special) -> int:
    """The first non-special token ([CLS] and BOS are dull queries to start with)."""
    special = np.asarray(special, dtype=bool)
    plain = np.flatnonzero(~special)
    return int(plain[0]) if plain.size else 0


STRIP_ROWS = 64   # token rows the page's vector strips show; a 2,048-token input shows the query's neighbourhood


def strip_rows(n: int, center: int, *, max_rows: int = STRIP_ROWS) -> np.ndarray:
    """The positions a vector strip shows: all ``n``, or ``max_rows`` consecutive ones around ``center``
    (a strip of 2,048 tokens x 576 numbers would be ~16 MB in the browser and one pixel per token)."""
    if n <= max_rows:
        return np.arange(n)
    start = min(max(0, int(center) - max_rows // 2), n - max_rows)
    return np.arange(start, start + max_rows)


@dataclass(frozen=True)
class Strip:
    """The rows of a vector strip: positions, their labels, and the page's sentence when not all are shown."""

    rows: np.ndarray
    labels: list
    note: str


def strip_of(labels, center: int, *, max_rows: int = STRIP_ROWS) -> Strip:
    """:func:`strip_rows` with "position token" labels and a note when the strip is a window of a long text."""
    rows = strip_rows(len(labels), center, max_rows=max_rows)
    if len(rows) == len(labels):
        return Strip(rows, list(labels), "")
    return Strip(rows, [f"{i} {labels[i]}" for i in rows],
                 f" Rows {rows[0]}–{rows[-1]} of {len(labels):,} are shown (around the query token).")

