"""How attention combines across layers: rollout, flow and norm-based attention.

Owns three research measures computed from captured arrays (pure numpy/scipy, no plotly:
:mod:`viz.figures.flow` draws them for the attention-flow page):

* attention rollout (Abnar and Zuidema 2020)::

      A_hat_l   = rownorm(0.5 * mean_over_heads(A_l) + 0.5 * I)
      rollout_0 = A_hat_0
      rollout_l = A_hat_l @ rollout_{l-1}

  ``rollout[l, i, j]`` is how much of token ``j``'s input reaches position
  ``i`` after layer ``l`` if attention were the only way information mixed
  (the 0.5 * I stands for the residual connection).
* attention flow (same paper): the layered graph with one node per (level,
  token), level 0 the input tokens and level l + 1 the output of layer l, and
  an edge from (l + 1, i) to (l, j) of capacity ``A_hat_l[i, j]``.  The flow
  from output position i to input token j is the maximum flow between those two
  nodes.  One max-flow per (i, j) pair makes it expensive, so it is bounded by
  :data:`FLOW_MAX_TOKENS` and :data:`FLOW_TIME_LIMIT_S`.
* norm-based attention (Kobayashi et al. 2020): ``||alpha_ij * f(x_j)||`` with
  ``f(x_j) = (x_j W_V^h + b_V^h) W_O^h`` the head's value vector after the output
  projection (``LayerInternals.value_out``), which weighs attention by how
  much the attended vector actually contributes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from viz.result import LayerInternals, TokenSeq

# Flow runs one max-flow per (output position, input token) pair: T**2 of them
# on a graph of (layer + 2) * T nodes.  These limits keep one page view within
# a few seconds on a 2-core server.
FLOW_MAX_TOKENS = 48
FLOW_TIME_LIMIT_S = 15.0
# scipy's max-flow needs integer capacities: weights are multiplied by this and
# rounded, so flow values carry an error of at most about T / FLOW_SCALE.
FLOW_SCALE = 1_000_000


class FlowLimitError(ValueError):
    """The input is longer than the attention-flow limit."""


# --------------------------------------------------------------------------- rollout

def residual_attention(pattern: np.ndarray, *, dtype=np.float64) -> np.ndarray:
    """``A_hat``: rownorm(0.5 * mean over heads + 0.5 * I) per layer.

    ``pattern`` is ``(n_layers, n_heads, T, T)``; returns ``(n_layers, T, T)``
    in ``dtype`` (row sums are always taken in float64).
    """
    pattern = np.asarray(pattern)
    if pattern.ndim != 4 or pattern.shape[-1] != pattern.shape[-2]:
        raise ValueError("rollout and flow need self-attention shaped "
                         f"(n_layers, n_heads, T, T), got {pattern.shape}")
    n_tokens = pattern.shape[-1]
    a_hat = pattern.mean(axis=1, dtype=dtype)                  # (L, T, T)
    a_hat *= 0.5
    a_hat[:, np.arange(n_tokens), np.arange(n_tokens)] += 0.5
    totals = a_hat.sum(axis=-1, keepdims=True, dtype=np.float64).astype(dtype)
    return np.divide(a_hat, totals, out=np.zeros_like(a_hat), where=totals > 0)


def rollout(pattern: np.ndarray) -> np.ndarray:
    """Attention rollout after every layer, ``(n_layers, T, T)`` float32.

    The products run in float32 (half the time of float64 at 512 tokens); the
    result differs from a float64 computation by about 1e-6 at most, since
    every row is a probability distribution.  One layer of ``pattern`` is read at
    a time (each ``A_hat`` depends on its own layer only), so a long result's
    LazyPattern is recomputed layer by layer, never stacked.
    """
    n_layers, _, n_q, n_k = pattern.shape
    out = np.empty((n_layers, n_q, n_k), dtype=np.float32)
    for layer in range(n_layers):
        a_hat = residual_attention(np.asarray(pattern[layer])[None], dtype=np.float32)[0]
        if layer == 0:
            out[0] = a_hat
        else:
            np.matmul(a_hat, out[layer - 1], out=out[layer])
    return out


# --------------------------------------------------------------------------- flow

@dataclass(frozen=True)
class FlowResult:
    """Attention flow from the output of one layer back to the input tokens."""

    flow: np.ndarray          # (T, T) float32 max-flow value (query_pos -> input key_pos); NaN rows not computed
    layer: int                # flow through layers 0..layer
    complete: bool            # False when the time limit stopped it before every row was done
    elapsed_s: float
    max_tokens: int           # the token limit that applied
    time_limit_s: float       # the time limit that applied

    @property
    def relevance(self) -> np.ndarray:
        """Rows normalised to sum to 1 (as Abnar and Zuidema plot it); NaN rows stay NaN."""
        return row_normalise(self.flow)


def flow_graph(pattern: np.ndarray, *, layer: int) -> tuple[np.ndarray, int]:
    """Integer capacity matrix of the layered graph up to ``layer``, and T.

    Node ``level * T + t``; level 0 holds the input tokens, level ``l + 1`` the
    output of layer ``l``.  Edge ``(l + 1, i) -> (l, j)`` has capacity
    ``round(A_hat_l[i, j] * FLOW_SCALE)``.
    """
    a_hat = residual_attention(pattern)[: layer + 1]
    n_levels, n_tokens = layer + 2, a_hat.shape[-1]
    capacity = np.zeros((n_levels * n_tokens, n_levels * n_tokens), dtype=np.int32)
    for l in range(layer + 1):
        rows = slice((l + 1) * n_tokens, (l + 2) * n_tokens)
        cols = slice(l * n_tokens, (l + 1) * n_tokens)
        capacity[rows, cols] = np.rint(a_hat[l] * FLOW_SCALE).astype(np.int32)
    return capacity, n_tokens


def attention_flow(pattern: np.ndarray, *, layer: int = -1,
                   query_positions: tuple[int, ...] | None = None,
                   max_tokens: int = FLOW_MAX_TOKENS,
                   time_limit_s: float = FLOW_TIME_LIMIT_S) -> FlowResult:
    """Attention flow from every (or the chosen) output position of ``layer`` to every input token.

    ``pattern`` is ``(n_layers, n_heads, T, T)``.  Raises :class:`FlowLimitError`
    when T exceeds ``max_tokens``; stops after ``time_limit_s`` seconds with
    ``complete=False`` and the rows not reached left NaN.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    pattern = np.asarray(pattern)
    n_layers, n_tokens = pattern.shape[0], pattern.shape[-1]
    if n_tokens > max_tokens:
        raise FlowLimitError(f"attention flow is limited to {max_tokens} tokens; this input has "
                             f"{n_tokens}. Shorten the text (or use word level).")
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer {layer} out of range (the model has {n_layers} layers)")
    layer = layer % n_layers
    queries = range(n_tokens) if query_positions is None else [int(q) for q in query_positions]
    start = time.perf_counter()
    capacity, _ = flow_graph(pattern, layer=layer)
    graph = csr_array(capacity)
    graph.eliminate_zeros()
    top = (layer + 1) * n_tokens
    flow = np.full((n_tokens, n_tokens), np.nan, dtype=np.float32)
    complete = True
    for query_pos in queries:
        if time.perf_counter() - start > time_limit_s:
            complete = False
            break
        row = np.empty(n_tokens, dtype=np.float64)
        for key_pos in range(n_tokens):
            row[key_pos] = maximum_flow(graph, top + query_pos, key_pos).flow_value
        flow[query_pos] = row / FLOW_SCALE
    return FlowResult(flow=flow, layer=layer, complete=complete,
                      elapsed_s=time.perf_counter() - start,
                      max_tokens=max_tokens, time_limit_s=time_limit_s)


# --------------------------------------------------------------------------- norm-based

def norm_based(pattern: np.ndarray, value_out: np.ndarray) -> np.ndarray:
    """Per-head ``||alpha_ij f(x_j)||``, ``(n_heads, T_q, T_k)`` float32.

    ``pattern`` is one layer's ``(n_heads, T_q, T_k)``, ``value_out`` its
    ``(n_heads, T_k, d_model)`` transformed vectors ``f(x_j)``.  Since
    ``alpha >= 0`` this is ``alpha_ij * ||f(x_j)||``.
    """
    pattern, value_out = _check_norm_inputs(pattern, value_out)
    norms = np.linalg.norm(value_out.astype(np.float64), axis=-1)     # (H, T_k)
    return (pattern * norms[:, None, :]).astype(np.float32)


def norm_based_layer(pattern: np.ndarray, value_out: np.ndarray) -> np.ndarray:
    """Whole-layer ``||sum_h alpha^h_ij f^h(x_j)||``, ``(T_q, T_k)`` float32.

    Uses the Gram matrix of the heads' vectors per key so memory stays
    ``T_k * n_heads**2`` instead of ``T_q * T_k * d_model``.
    """
    pattern, value_out = _check_norm_inputs(pattern, value_out)
    value_out = value_out.astype(np.float64)
    gram = np.einsum("hkd,gkd->khg", value_out, value_out)             # (T_k, H, H)
    if pattern.size > NORM_CHUNKED_CELLS:
        return _norm_based_layer_chunked(pattern, gram)
    alpha = pattern.astype(np.float64)
    squared = np.einsum("hqk,khg,gqk->qk", alpha, gram, alpha, optimize=True)
    return np.sqrt(np.maximum(squared, 0.0)).astype(np.float32)


# Above this many attention cells (9 heads x 680^2), the quadratic form runs as one small matrix
# product per key over chunks of queries: 2,048 tokens take ~1 s instead of ~10 s, and memory stays
# at one chunk.
NORM_CHUNKED_CELLS = 1 << 22
_NORM_CHUNK = 128


def _norm_based_layer_chunked(pattern: np.ndarray, gram: np.ndarray) -> np.ndarray:
    from viz.efficient import one_blas_thread   # 9 x 9 products: OpenBLAS threads only spin
    n_heads, n_q, n_k = pattern.shape
    out = np.empty((n_q, n_k), dtype=np.float32)
    with one_blas_thread():
        _chunks(pattern, gram, out)
    return out


def _chunks(pattern: np.ndarray, gram: np.ndarray, out: np.ndarray) -> None:
    n_q = pattern.shape[1]
    for start in range(0, n_q, _NORM_CHUNK):
        alpha = pattern[:, start:start + _NORM_CHUNK].astype(np.float64).transpose(2, 1, 0)   # (T_k, c, H)
        squared = (np.matmul(alpha, gram) * alpha).sum(axis=-1)                               # (T_k, c)
        out[start:start + _NORM_CHUNK] = np.sqrt(np.maximum(squared, 0.0)).T


def norm_based_from_internals(internals: LayerInternals, *, per_head: bool = False) -> np.ndarray:
    """Norm-based attention of one captured layer (per head, or the whole layer)."""
    if internals.value_out is None:
        raise ValueError(f"the capture of {internals.kind} layer {internals.layer} has no "
                         "value_out (capture with internals=True)")
    fn = norm_based if per_head else norm_based_layer
    return fn(internals.pattern, internals.value_out)


def _check_norm_inputs(pattern, value_out):
    pattern, value_out = np.asarray(pattern), np.asarray(value_out)
    if pattern.ndim != 3 or value_out.ndim != 3 or pattern.shape[0] != value_out.shape[0] \
            or pattern.shape[2] != value_out.shape[1]:
        raise ValueError(f"pattern (n_heads, T_q, T_k) {pattern.shape} and value_out "
                         f"(n_heads, T_k, d_model) {value_out.shape} do not match")
    return pattern, value_out


# --------------------------------------------------------------------------- helpers for views

def row_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1 (zero rows stay zero, NaN rows stay NaN), float32."""
    matrix = np.asarray(matrix, dtype=np.float64)
    totals = matrix.sum(axis=-1, keepdims=True)
    out = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    out[np.isnan(totals[..., 0])] = np.nan
    return out.astype(np.float32)


def default_output_position(queries: TokenSeq, *, causal: bool) -> int:
    """The output position to explain first: [CLS] (position 0) for encoders, the last token for decoders.

    A decoder's last position is the one that predicts the next token; an
    encoder's classifier reads the first one ([CLS]).
    """
    if len(queries) == 0:
        raise ValueError("no tokens")
    return len(queries) - 1 if causal else 0


# --------------------------------------------------------------------------- one layer read four ways

@dataclass(frozen=True)
class LayerReadings:
    """One layer read four ways for the attention-flow page, each matrix as shares of its row."""

    matrices: dict            # name -> (T_q, T_k): raw attention, rollout, flow, norm-based (those computed)
    rollout: np.ndarray | None  # (n_layers, T, T) rollout after every layer (self-attention only)
    notes: tuple[str, ...]    # what was computed and what not, and why, for the page


def layer_readings(block, raw_block, *, layer: int, head: int | None, internals: LayerInternals | None,
                   flow_of, word_level: bool = False, hide_special: bool = False) -> LayerReadings:
    """Raw attention, rollout, flow and norm-based attention of ``layer`` (one head, or the mean of heads).

    ``block`` is ``raw_block`` after the word-level / hide-special options; norm-based attention is
    computed on the raw tokens from ``internals`` and then given the same options.  ``flow_of(head_mean,
    layer)`` computes (and may cache) attention flow.
    """
    from viz.aggregate import transform_matrix
    raw = block.pattern[layer].mean(axis=0) if head is None else block.pattern[layer, head]
    matrices = {"raw attention": row_normalise(raw)}
    self_attention = block.kind != "cross"
    # A long result (LazyPattern) keeps no layer's full pattern: rollout would multiply every layer's
    # (T, T) head mean, and hold (n_layers, T, T) of it (0.5 GB for the LLM at 2,048 tokens).
    long_input = not isinstance(block.pattern, np.ndarray)
    roll = rollout(block.pattern) if self_attention and not long_input else None
    if roll is not None:
        matrices["rollout"] = roll[layer]
    notes = [f"Attention flow is bounded: at most **{FLOW_MAX_TOKENS} tokens** and "
             f"**{FLOW_TIME_LIMIT_S:g} s** per computation (results are cached)."]
    n_tokens = len(block.queries)
    if long_input and self_attention:
        notes.append(f"This input is long ({n_tokens:,} tokens), so rollout is not computed: it needs every "
                     f"layer's full attention at once. Shorten the text to see it.")
    if not self_attention:
        notes.append("Rollout and flow follow one stack of self-attention, so they are not defined for "
                     "cross-attention.")
    elif n_tokens > FLOW_MAX_TOKENS:
        notes.append(f"This input has {n_tokens} tokens, so flow is not computed: shorten the text"
                     + ("." if word_level else " or switch on *Word level*."))
    else:
        flow = flow_of(block.pattern.mean(axis=1, keepdims=True), layer)
        matrices["flow"] = flow.relevance
        notes.append(f"Computed in {flow.elapsed_s:.2f} s."
                     + ("" if flow.complete else " The time limit stopped it early: blank rows were not computed."))
    if internals is not None and internals.value_out is not None:
        norms = (norm_based_layer(internals.pattern, internals.value_out) if head is None
                 else norm_based(internals.pattern, internals.value_out)[head])
        norms, _, _ = transform_matrix(norms, raw_block.queries, raw_block.keys,
                                       word_level=word_level, hide_special=hide_special)
        matrices["norm-based"] = row_normalise(norms)
    elif internals is not None:
        notes.append("Norm-based attention needs the head's output projection, which was not found for "
                     "this model.")
    return LayerReadings(matrices=matrices, rollout=roll, notes=tuple(notes))
