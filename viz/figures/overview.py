"""Long (query_pos, key_pos) matrices as plotly heatmaps of blocks (issue 16: what reaches the browser).

A plotly heatmap of one 2,048-token head is 16 MB of float32 (22 MB as JSON) for a plot about 900
pixels high: two rows per pixel at best. Above :data:`MAX_PLOT_SIDE` rows or keys, the pages that
draw whole matrices as plotly figures (model view, compare heads, attention flow) draw contiguous
blocks of ``ceil(T / MAX_PLOT_SIDE)`` positions instead, each block its **largest** weight (or, for a
signed difference, its value of largest magnitude): a sharp diagonal or an attention sink stays as
visible as in the full matrix, where a block mean would fade it. Hover names the block's positions
and says the value is a block's largest; the title says how the matrix was drawn, and points to the
heatmap page for single weights. Short matrices are drawn by the ordinary builders, unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from viz.figures.common import (ATTENTION_SCALE, DIFF_SCALE, MASKED_BACKGROUND, heatmap_side, margin,
                                thin_ticks)

MAX_PLOT_SIDE = 384   # rows or keys drawn one by one; 384^2 float32 is 0.8 MB of JSON


@dataclass(frozen=True)
class Blocks:
    """A matrix reduced to blocks: ``z[a, b]`` stands for rows ``q_edges[a]:q_edges[a+1]`` x keys ``k_edges[b]:...``."""

    z: np.ndarray          # (n_q_blocks, n_k_blocks) float32, NaN where a block has no finite cell
    q_edges: np.ndarray    # (n_q_blocks + 1,) int64 block boundaries over the query positions
    k_edges: np.ndarray    # (n_k_blocks + 1,) int64
    q_size: int            # positions per block (the last block may be shorter)
    k_size: int

    @property
    def pooled(self) -> bool:
        return self.q_size > 1 or self.k_size > 1


def block_size(n: int, max_side: int) -> int:
    return max(1, math.ceil(n / max(1, max_side)))


def pool_blocks(z: np.ndarray, *, max_side: int = MAX_PLOT_SIDE, signed: bool = False) -> Blocks:
    """Each block's largest value (``signed``: its value of largest magnitude, sign kept), NaN cells left
    out. A matrix no larger than ``max_side`` per axis comes back as it is."""
    z = np.asarray(z, dtype=np.float32)
    n_q, n_k = z.shape
    bq, bk = block_size(n_q, max_side), block_size(n_k, max_side)
    out_q, out_k = math.ceil(n_q / bq), math.ceil(n_k / bk)
    q_edges = np.minimum(np.arange(out_q + 1) * bq, n_q).astype(np.int64)
    k_edges = np.minimum(np.arange(out_k + 1) * bk, n_k).astype(np.int64)
    if bq == bk == 1:
        return Blocks(z, q_edges, k_edges, 1, 1)
    padded = np.full((out_q * bq, out_k * bk), np.nan, dtype=np.float32)
    padded[:n_q, :n_k] = z
    cells = padded.reshape(out_q, bq, out_k, bk)
    empty = np.isnan(cells).all(axis=(1, 3))
    with np.errstate(invalid="ignore"):
        if signed:
            top = np.nan_to_num(cells, nan=-np.inf).max(axis=(1, 3))
            bottom = np.nan_to_num(cells, nan=np.inf).min(axis=(1, 3))
            out = np.where(np.abs(bottom) > np.abs(top), bottom, top)
        else:
            out = np.nan_to_num(cells, nan=-np.inf).max(axis=(1, 3))
    out = out.astype(np.float32)
    out[empty] = np.nan
    return Blocks(out, q_edges, k_edges, bq, bk)


def causal_nan(z: np.ndarray) -> np.ndarray:
    """A float32 copy of ``z`` with the causal future (key_pos > query_pos) as NaN."""
    z = np.array(z, dtype=np.float32)
    n_q, n_k = z.shape
    z[np.arange(n_k)[None, :] > np.arange(n_q)[:, None]] = np.nan
    return z


def _block_categories(labels, edges: np.ndarray) -> list[str]:
    """Unique axis categories of the blocks: "12–17 first token"."""
    labels = [str(s) for s in labels]
    return [f"{a}–{b - 1} {labels[a]}" if b - 1 > a else f"{a} {labels[a]}" for a, b in zip(edges[:-1], edges[1:])]


def blocks_note(n_q: int, n_k: int, *, max_side: int = MAX_PLOT_SIDE, what: str = "largest weight") -> str:
    """One sentence saying how a long matrix is drawn ('' when it is drawn cell by cell)."""
    return _note(n_q, n_k, block_size(n_q, max_side), block_size(n_k, max_side), what)


def _note(n_q: int, n_k: int, bq: int, bk: int, what: str) -> str:
    if bq == bk == 1:
        return ""
    return (f"{n_q:,} × {n_k:,} positions drawn as blocks of {bq} × {bk}, each showing its {what} "
            f"(the heatmap page shows single weights).")


def _long_figure(blocks: Blocks, query_labels, key_labels, *, title: str, colorscale, zmin, zmax, zmid,
                 value: str, colorbar: str, causal: bool, query_axis: str, key_axis: str) -> go.Figure:
    q_cat = _block_categories(query_labels, blocks.q_edges)
    k_cat = _block_categories(key_labels, blocks.k_edges)
    n_q, n_k = len(query_labels), len(key_labels)
    note = _note(n_q, n_k, blocks.q_size, blocks.k_size, value)
    fig = go.Figure(go.Heatmap(
        z=blocks.z, x=k_cat, y=q_cat, colorscale=colorscale, zmin=zmin, zmax=zmax, zmid=zmid,
        hoverongaps=False, colorbar=dict(title=colorbar),
        hovertemplate="queries %{y}<br>keys %{x}<br>" + value + " %{z:.4f}<extra></extra>"))
    xv, xt = thin_ticks([c.split(" ", 1)[1] for c in k_cat], values=k_cat)
    yv, yt = thin_ticks([c.split(" ", 1)[1] for c in q_cat], values=q_cat)
    full_title = f"{title}<br><sup>{note}</sup>" if title else note
    fig.update_layout(
        title=full_title, height=heatmap_side(len(q_cat), len(k_cat)), margin=margin(full_title, top=60),
        xaxis=dict(title=key_axis, tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60, side="bottom"),
        yaxis=dict(title=query_axis, tickmode="array", tickvals=yv, ticktext=yt, autorange="reversed"),
        plot_bgcolor=MASKED_BACKGROUND if causal else None)
    return fig


def attention_figure(pattern: np.ndarray, query_labels, key_labels, *, causal: bool = False, title: str = "",
                     max_side: int = MAX_PLOT_SIDE, query_axis: str = "query (attends from)",
                     key_axis: str = "key (attends to)", **kwargs) -> go.Figure:
    """:func:`viz.figures.attention.heatmap_figure`, or above ``max_side`` rows or keys the blocks'
    largest weights (see the module docstring); ``kwargs`` go to ``heatmap_figure`` (short matrices)."""
    from viz.figures.attention import heatmap_figure
    n_q, n_k = np.shape(pattern)
    if max(n_q, n_k) <= max_side:
        return heatmap_figure(pattern, query_labels, key_labels, causal=causal, title=title,
                              query_axis=query_axis, key_axis=key_axis, **kwargs)
    z = causal_nan(pattern) if causal else np.asarray(pattern, dtype=np.float32)
    blocks = pool_blocks(z, max_side=max_side)
    top = float(np.nanmax(blocks.z)) if np.isfinite(blocks.z).any() else 1.0
    return _long_figure(blocks, query_labels, key_labels, title=title, colorscale=kwargs.get(
        "colorscale", ATTENTION_SCALE), zmin=0, zmax=kwargs.get("zmax") or top, zmid=None, value="largest weight",
        colorbar="weight", causal=causal, query_axis=query_axis, key_axis=key_axis)


def difference_blocks_figure(diff: np.ndarray, query_labels, key_labels, *, title: str = "", causal: bool = False,
                             max_side: int = MAX_PLOT_SIDE) -> go.Figure:
    """``A - B`` as :func:`viz.figures.stats.difference_figure` draws it, or above ``max_side`` as blocks,
    each its difference of largest magnitude (sign kept)."""
    from viz.figures.stats import difference_figure
    n_q, n_k = np.shape(diff)
    if max(n_q, n_k) <= max_side:
        return difference_figure(diff, query_labels, key_labels, title=title, causal=causal)
    z = causal_nan(diff) if causal else np.asarray(diff, dtype=np.float32)
    blocks = pool_blocks(z, max_side=max_side, signed=True)
    bound = float(np.nanmax(np.abs(blocks.z))) if np.isfinite(blocks.z).any() else 1.0
    bound = bound or 1.0
    return _long_figure(blocks, query_labels, key_labels, title=title, colorscale=DIFF_SCALE, zmin=-bound,
                        zmax=bound, zmid=0, value="largest difference", colorbar="A − B", causal=causal,
                        query_axis="query (attends from)", key_axis="key (attends to)")
