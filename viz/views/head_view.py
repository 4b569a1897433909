"""Head view: one attention layer as lines between two token columns, as a standalone HTML page.

This module owns the pure builder behind the head view page (bertviz's head view, rebuilt to
stay small and fast at 512 tokens and to work offline):

- :func:`pair_slice` picks the query/key positions of a sentence-pair slice (all, A->A, ...);
- :func:`prune_edges` keeps the (head, query_pos, key_pos) edges worth drawing and quantises
  their weights to uint8;
- :func:`head_colors` gives one distinguishable colour per head;
- :func:`build_head_view` turns a :class:`~viz.result.Block` into a self-contained HTML string
  that draws the edges on a canvas: the page, its CSS and its vanilla JS are
  ``viz/views/assets/head_view.{html,css,js}``, inlined (no CDN).

Why it is built this way: bertviz ships every weight of every layer as JSON floats (870 MB at
512 tokens on a 6x12 model). We send the layers asked for (the page sends one), drop faint
edges, and pack the rest as base64 uint16 key positions plus uint8 weights: about 4 bytes per
edge instead of ~20 bytes per weight.
"""
from __future__ import annotations

import base64
import colorsys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from viz.result import Block, TokenSeq, head_label
from viz.views.page import standalone_page, view_fragment
from viz.views.theme import check_theme

PAIR_SLICES = ("all", "A->A", "A->B", "B->A", "B->B")

# Greedy max-min CIE-Lab distance picks from an sRGB grid restricted to lightness 30..70, so
# every colour reads on white and the first 12 are >= 46 delta-E apart (bertviz repeats its
# colours after 10 heads).
_PALETTE = (
    "#2277bb", "#ff0000", "#00bb00", "#0000ff", "#ee00aa", "#664411", "#55bb99", "#bbaa00",
    "#ee8899", "#6644cc", "#005500", "#dd11ff", "#dd7722", "#990022", "#225555", "#883377",
    "#bbaa77", "#bb99ff", "#99aabb", "#ff3377",
)
# The same picks for a dark background: CIE lightness 60..88 and chroma >= 40 (the first 12 are
# >= 41 delta-E apart), starting from a light version of the first light colour.
_PALETTE_DARK = (
    "#4499ee", "#00ff00", "#ff6600", "#ff00ff", "#33aa77", "#eedd00", "#ee6699", "#ffbb88",
    "#aa77ff", "#55aa00", "#55eeff", "#eebbff", "#ccdd77", "#00ee88", "#bb8800", "#ff5555",
    "#ff44cc", "#aaee00", "#00eecc", "#dd7744",
)

DEFAULT_MAX_EDGES = 250_000   # per layer: ~1 MB of base64 edges, well under the 3 MB budget
# Lines shown before the user lowers the "hide below" slider. Chromium without a GPU
# rasterises ~25k long anti-aliased lines per 0.1-0.2 s; the faint ones this hides have an
# opacity (= weight) of a few percent and are nearly invisible anyway.
DEFAULT_DRAW_BUDGET = 25_000


def head_colors(n_heads: int, *, theme: str = "light") -> tuple[str, ...]:
    """One ``#rrggbb`` colour per head for a ``theme`` background; the palette first, then golden-angle hues."""
    dark = check_theme(theme) == "dark"
    colors = list((_PALETTE_DARK if dark else _PALETTE)[:n_heads])
    i = 0
    while len(colors) < n_heads:
        # Beyond 20 heads no palette stays far apart; vary hue and lightness so neighbours
        # at least differ, and skip exact repeats.
        hue = (i * 0.618033988749895) % 1.0
        light = ((0.62, 0.74, 0.55) if dark else (0.38, 0.52, 0.30))[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, 0.85)
        c = "#%02x%02x%02x" % (round(r * 255), round(g * 255), round(b * 255))
        if c not in colors:
            colors.append(c)
        i += 1
    return tuple(colors)


def pair_slice(queries: TokenSeq, keys: TokenSeq, which: str = "all") -> tuple[np.ndarray, np.ndarray]:
    """Query and key positions of a sentence-pair slice.

    ``"A->B"`` means queries from the first text (segment 0) attending to keys of the second
    text (segment 1). Raises ``ValueError`` when the slice is empty (e.g. B without a pair).
    """
    if which not in PAIR_SLICES:
        raise ValueError(f"unknown slice {which!r}; choose from {', '.join(PAIR_SLICES)}")
    q_all = np.arange(len(queries))
    k_all = np.arange(len(keys))
    if which == "all":
        return q_all, k_all
    seg = {"A": 0, "B": 1}
    q_seg, k_seg = which.split("->")
    q_idx = q_all[np.asarray(queries.segment_ids) == seg[q_seg]]
    k_idx = k_all[np.asarray(keys.segment_ids) == seg[k_seg]]
    if len(q_idx) == 0 or len(k_idx) == 0:
        raise ValueError(f"slice {which} is empty: this input has no second sentence")
    return q_idx, k_idx


@dataclass(frozen=True)
class Edges:
    """The kept edges of one layer, sorted by (head, query_pos, key_pos)."""

    head: np.ndarray        # (E,) int
    query_pos: np.ndarray   # (E,) int, index into the (sliced) query axis
    key_pos: np.ndarray     # (E,) int, index into the (sliced) key axis
    weight: np.ndarray      # (E,) uint8, round(pattern * 255), never 0
    n_possible: int         # n_heads * n_queries * n_keys
    kept_mass: float        # share of the total attention weight the kept edges carry

    def __len__(self) -> int:
        return len(self.weight)


def prune_edges(pattern: np.ndarray, *, min_weight: float = 0.01, top_mass: float | None = None,
                max_edges: int | None = DEFAULT_MAX_EDGES) -> Edges:
    """Keep the edges of ``pattern`` (n_heads, query_pos, key_pos) worth drawing.

    An edge is kept when its weight is >= ``min_weight``, when it is among the strongest
    edges of its row that together reach ``top_mass`` of the row's weight (if given), and
    when it is among the ``max_edges`` strongest overall (if given): the last rule bounds the
    bytes whatever the input. Weights are quantised to uint8 (1/255 steps); edges that round
    to 0 are dropped.
    """
    p = np.asarray(pattern, dtype=np.float32)
    if p.ndim != 3:
        raise ValueError(f"pattern must be (n_heads, query_pos, key_pos), got shape {p.shape}")
    if p.size > SPARSE_PRUNE_CELLS:
        return _prune_sparse(p, min_weight=min_weight, top_mass=top_mass, max_edges=max_edges)
    # Quantise first so the kept set and the sent weights agree exactly.
    q8 = np.rint(np.clip(p, 0.0, 1.0) * 255.0).astype(np.uint8)
    keep = q8 >= max(1, int(np.ceil(min_weight * 255.0 - 1e-6)))
    if top_mass is not None and top_mass < 1.0:
        order = np.argsort(-p, axis=-1, kind="stable")            # (H, Tq, Tk)
        srt = np.take_along_axis(p, order, axis=-1)
        before = np.cumsum(srt, axis=-1) - srt                    # mass of stronger edges
        row_total = srt.sum(axis=-1, keepdims=True)
        in_mass = before < top_mass * row_total                   # always keeps the strongest
        mass_keep = np.zeros_like(keep)
        np.put_along_axis(mass_keep, order, in_mass, axis=-1)
        keep &= mass_keep
    flat = np.flatnonzero(keep)
    if max_edges is not None and len(flat) > max_edges:
        w = q8.ravel()[flat]
        top = np.argpartition(-w.astype(np.int16), max_edges - 1)[:max_edges]
        flat = np.sort(flat[top])
    head, query_pos, key_pos = np.unravel_index(flat, p.shape)
    weight = q8.ravel()[flat]
    total = float(p.sum())
    kept_mass = float(p.ravel()[flat].sum()) / total if total > 0 else 0.0
    return Edges(head=head, query_pos=query_pos, key_pos=key_pos, weight=weight,
                 n_possible=int(p.size), kept_mass=kept_mass)


# Above this many cells (a 2,048-token layer has 38 M) the pruning works on the few edges at or above
# min_weight instead of quantising and sorting every cell: the same edges, seconds faster.
SPARSE_PRUNE_CELLS = 1 << 24


def _prune_sparse(p: np.ndarray, *, min_weight: float, top_mass: float | None, max_edges: int | None) -> Edges:
    """:func:`prune_edges` for a large layer: quantise and rank only the candidate edges.

    An edge whose uint8 weight reaches the threshold has ``p * 255 >= threshold - 0.5``, and every edge
    stronger than it is a candidate too, so the mass of the stronger edges of its row (the ``top_mass``
    rule, same stable order: weight down, then key position) is a prefix sum over the candidates alone.
    Only the row totals are summed in another order (float rounding, ~1e-7 of a row).
    """
    n_heads, n_q, n_k = p.shape
    cells = np.ascontiguousarray(p).reshape(-1)                     # a view, never a copy per use
    t8 = max(1, int(np.ceil(min_weight * 255.0 - 1e-6)))
    flat = np.flatnonzero(cells * np.float32(255.0) >= np.float32(t8 - 0.5))
    q8 = np.rint(np.clip(cells[flat], 0.0, 1.0) * 255.0).astype(np.uint8)
    ok = q8 >= t8
    flat, q8 = flat[ok], q8[ok]
    if top_mass is not None and top_mass < 1.0 and len(flat):
        w = cells[flat]
        row = flat // n_k
        order = np.lexsort((flat % n_k, -w, row))                  # rows, then weight down, then key
        w_sorted, row_sorted = w[order], row[order]
        starts = np.flatnonzero(np.r_[True, row_sorted[1:] != row_sorted[:-1]])
        sizes = np.diff(np.r_[starts, len(order)])
        which = np.repeat(np.arange(len(starts)), sizes)           # compact row index of each candidate
        rank = np.arange(len(order)) - np.repeat(starts, sizes)    # its place in the row, strongest first
        # one float32 running sum per row, as the dense path's cumsum over the sorted row
        padded = np.zeros((len(starts), int(sizes.max())), dtype=np.float32)
        padded[which, rank] = w_sorted
        before = np.cumsum(padded, axis=1)[which, rank] - w_sorted   # mass of stronger edges in this row
        row_total = cells.reshape(-1, n_k).sum(axis=-1)[row_sorted]
        keep = np.zeros(len(flat), dtype=bool)
        keep[order] = before < top_mass * row_total
        flat, q8 = flat[keep], q8[keep]
    if max_edges is not None and len(flat) > max_edges:
        top = np.argpartition(-q8.astype(np.int16), max_edges - 1)[:max_edges]
        top.sort()
        flat, q8 = flat[top], q8[top]
    head, query_pos, key_pos = np.unravel_index(flat, p.shape)
    total = float(cells.sum())
    kept_mass = float(cells[flat].sum()) / total if total > 0 else 0.0
    return Edges(head=head, query_pos=query_pos, key_pos=key_pos, weight=q8,
                 n_possible=int(p.size), kept_mass=kept_mass)


def auto_threshold(edges: Edges, *, budget: int = DEFAULT_DRAW_BUDGET, floor: float = 0.0) -> float:
    """The smallest weight threshold (a multiple of 1/255, >= ``floor``) that shows at most
    ``budget`` of ``edges``; the strongest edges always stay."""
    hist = np.bincount(edges.weight, minlength=256)            # edges per quantised weight
    shown_at = np.cumsum(hist[::-1])[::-1]                     # shown_at[t] = #edges with w8 >= t
    t = max(1, int(np.ceil(floor * 255.0 - 1e-6)))
    while t < 255 and shown_at[t] > budget:
        t += 1
    return t / 255.0


@dataclass(frozen=True)
class HeadView:
    """A built head view: the HTML plus what the page tells the user about it."""

    html: str
    n_edges: int            # edges sent, summed over the layers sent
    n_possible: int         # edges there are, summed over the layers sent
    kept_mass: float        # mean over layers of the share of attention weight kept
    height: int             # a good iframe height in CSS pixels (the view scrolls inside)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _layer_payload(layer: int, edges: Edges, n_heads: int, n_queries: int, n_keys: int,
                   threshold: float) -> dict:
    # Row counts make head and query_pos implicit (edges are sorted by head, then query).
    counts = np.bincount(edges.head * n_queries + edges.query_pos,
                         minlength=n_heads * n_queries).astype("<u4")
    key_dtype = "<u2" if n_keys <= 0xFFFF else "<u4"
    return {
        "layer": int(layer),
        "nEdges": len(edges),
        "keptMass": round(edges.kept_mass, 4),
        "threshold": round(threshold, 6),
        "counts": _b64(counts),
        "keys": _b64(edges.key_pos.astype(key_dtype)),
        "keyBytes": 2 if key_dtype == "<u2" else 4,
        "weights": _b64(edges.weight),
    }


def build_head_view(block: Block, *, layers: int | Sequence[int] = 0, pair: str = "all",
                    heads: Sequence[int] | None = None, min_weight: float = 0.01,
                    top_mass: float | None = None, max_edges: int | None = DEFAULT_MAX_EDGES,
                    draw_budget: int = DEFAULT_DRAW_BUDGET, title: str = "", theme: str | None = "light") -> HeadView:
    """The head view of ``block`` for ``layers`` as a standalone HTML page.

    ``pair`` is one of :data:`PAIR_SLICES`; ``heads`` are the heads shown at first (default
    all; the user toggles them in the view). Pruning options: see :func:`prune_edges`; of the
    edges sent, the view first hides the faintest so that at most ``draw_budget`` lines are
    drawn (its "hide below" slider starts there and goes down to ``min_weight``).
    ``theme`` ("light"/"dark", see :mod:`viz.views.theme`) is how it is drawn first; inside a
    Streamlit page the view then follows the app's theme by itself.
    """
    theme = check_theme(theme)
    layer_list = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
    if not layer_list:
        raise ValueError("give at least one layer")
    for layer in layer_list:
        if not 0 <= layer < block.n_layers:
            raise ValueError(f"layer {layer} out of range (this block has {block.n_layers})")
    n_heads = block.n_heads
    shown = list(range(n_heads)) if heads is None else sorted({int(h) for h in heads})
    if any(not 0 <= h < n_heads for h in shown):
        raise ValueError(f"heads must be in 0..{n_heads - 1}")
    q_idx, k_idx = pair_slice(block.queries, block.keys, pair)

    payloads, n_edges, n_possible, masses = [], 0, 0, []
    for layer in layer_list:
        # (n_heads, query_pos, key_pos) for the slice; the whole layer as it is (a 2,048-token layer is
        # 150 MB: fancy indexing would copy it twice, into a layout every later ravel copies again)
        pattern = block.pattern[layer]
        if len(q_idx) < pattern.shape[1] or len(k_idx) < pattern.shape[2]:
            pattern = np.ascontiguousarray(pattern[:, q_idx][:, :, k_idx])
        edges = prune_edges(pattern, min_weight=min_weight, top_mass=top_mass, max_edges=max_edges)
        threshold = auto_threshold(edges, budget=draw_budget, floor=min_weight)
        payloads.append(_layer_payload(layer, edges, n_heads, len(q_idx), len(k_idx), threshold))
        n_edges += len(edges)
        n_possible += edges.n_possible
        masses.append(edges.kept_mass)

    def side(seq: TokenSeq, idx: np.ndarray) -> dict:
        return {
            "labels": [seq.labels[i] for i in idx],
            "tokens": [seq.tokens[i] for i in idx],
            "pos": [int(i) for i in idx],
            "segment": [int(seq.segment_ids[i]) for i in idx],
        }

    data = {
        "title": title,
        "kind": block.kind,
        "pair": pair,
        "causal": bool(block.causal),
        "nHeads": n_heads,
        "colors": list(head_colors(n_heads)),
        "colorsDark": list(head_colors(n_heads, theme="dark")),
        "heads": shown,
        # the legend's names: "head 4 · KV 1" under grouped-query attention
        "headLabels": [head_label(h, block.kv_head) for h in range(n_heads)],
        "minWeight": float(min_weight),
        "queries": side(block.queries, q_idx),
        "keys": side(block.keys, k_idx),
        "layers": payloads,
    }
    rows = max(len(q_idx), len(k_idx))
    row_h = _row_height(rows)
    height = int(min(760, 110 + rows * row_h + 24))
    page = standalone_page(view_fragment("head_view", data, data_id="hv-data", theme=theme),
                           title=title or "Head view", theme=theme)
    return HeadView(html=page, n_edges=n_edges, n_possible=n_possible,
                    kept_mass=float(np.mean(masses)), height=height)


def _row_height(rows: int) -> int:
    # Mirrors rowHeight() in the JS: roomy for short inputs, compact for long ones.
    return 20 if rows <= 64 else (17 if rows <= 160 else 15)
