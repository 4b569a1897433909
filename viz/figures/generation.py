"""Figures for language models: one generation step's attention over every head, the top-k next
tokens, and the logit lens (numpy in, ``go.Figure`` out)."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.common import ATTENTION_SCALE, margin, thin_ticks
from viz.figures.overview import MAX_PLOT_SIDE, pool_blocks
from viz.result import has_gqa

MIN_ROW_PX = 3      # one (layer, head) row of the step grid: 270 heads of the embedded LLM fit in ~1.4k px


def step_grid_figure(rows: np.ndarray, key_labels, *, kv_head: np.ndarray | None = None, title: str = "",
                     selected: tuple[int, int] | None = None) -> go.Figure:
    """Every layer x head's attention row at one step: one row per (layer, head), keys across.

    ``rows`` is ``(n_layers, n_heads, n_keys)``: the attention of the query that produced the step's
    token, over the tokens before it. Rows run layer by layer, heads within a layer.  More than
    :data:`~viz.figures.overview.MAX_PLOT_SIDE` keys are drawn in blocks (each its largest weight; the
    title and hover say so).
    """
    rows = np.asarray(rows, dtype=np.float32)
    n_layers, n_heads, n_keys = rows.shape
    gqa = kv_head is not None and has_gqa(kv_head)
    names = [f"L{layer} H{head}" + (f"·KV{int(kv_head[head])}" if gqa else "")
             for layer in range(n_layers) for head in range(n_heads)]
    z = rows.reshape(n_layers * n_heads, n_keys)
    # A long context (2,000 keys x 270 heads is 3.7 MB of JSON): keys in blocks, each its largest weight,
    # so a sharp look at one token stays visible; the text view and the heatmap page give single weights.
    blocks = pool_blocks(z, max_side=MAX_PLOT_SIDE)
    if blocks.pooled:
        z, edges = blocks.z, blocks.k_edges
        key_labels = [key_labels[a] for a in edges[:-1]]
        k_cat = [f"{a}-{b - 1} {lab}…" for a, b, lab in zip(edges[:-1], edges[1:], key_labels)]
        hover = "%{y}<br>keys %{x}<br>largest weight %{z:.4f}<extra></extra>"
        note = f"keys in blocks of {blocks.k_size} (each its largest weight)"
        title = f"{title} · {note}" if title else note
    else:
        k_cat = [f"{j} {lab}" for j, lab in enumerate(key_labels)]
        hover = "%{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>"
    fig = go.Figure(go.Heatmap(
        z=z, x=k_cat, y=names, colorscale=ATTENTION_SCALE, zmin=0, zmax=float(np.nanmax(z)) if np.isfinite(z).any() else 1,
        colorbar=dict(title="weight"), hovertemplate=hover))
    xv, xt = thin_ticks(key_labels, values=k_cat)
    row_px = max(MIN_ROW_PX, min(14, 1400 // max(1, n_layers * n_heads)))
    fig.update_layout(   # one tick per layer, at its first head
        title=title, height=120 + row_px * n_layers * n_heads, margin=margin(title),
        xaxis=dict(title="earlier token (key)", tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60),
        yaxis=dict(title="layer, head", tickmode="array", autorange="reversed",
                   tickvals=[names[layer * n_heads] for layer in range(n_layers)],
                   ticktext=[f"layer {layer}" for layer in range(n_layers)]))
    # Thin lines between layers, as add_hline draws them, added in one call: 29 add_hline calls take
    # ~1.5 s (each one re-validates the figure), a cost every student's page paid after generating.
    def hline(y, **line):
        return dict(type="line", xref="x domain", x0=0, x1=1, yref="y", y0=y, y1=y, line=line)
    shapes = [hline(layer * n_heads - 0.5, color="rgba(128,128,128,0.5)", width=1) for layer in range(1, n_layers)]
    if selected is not None:
        layer, head = selected
        shapes.append(hline(layer * n_heads + head, color="red", width=1, dash="dot"))
    fig.update_layout(shapes=shapes)
    return fig


def topk_figure(labels, probs: np.ndarray, *, chosen: int | None = None, title: str = "") -> go.Figure:
    """Horizontal bars of the top-k next tokens (most probable on top); ``chosen`` is drawn in red."""
    probs = np.asarray(probs, dtype=float)
    names = [f"{i + 1}. {lab}" for i, lab in enumerate(labels)]
    colours = ["#d62728" if chosen is not None and i == chosen else "#4c78a8" for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for p in probs], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}<br>p = %{x:.4f}<extra></extra>"))
    fig.update_layout(title=title, height=90 + 24 * len(probs), margin=margin(title),
                      xaxis=dict(title="probability", range=[0, min(1.0, float(probs.max()) * 1.25 + 0.02)
                                                            if probs.size else 1]),
                      yaxis=dict(autorange="reversed", type="category"))
    return fig


def lens_figure(top_labels, top_probs: np.ndarray, *, title: str = "") -> go.Figure:
    """The logit lens: layers down, the top-k tokens across, each cell its token and probability."""
    top_probs = np.asarray(top_probs, dtype=float)
    n_layers, k = top_probs.shape
    text = [[str(top_labels[layer][j]) for j in range(k)] for layer in range(n_layers)]
    hover = [[f"after layer {layer}<br>#{j + 1} {top_labels[layer][j]!s}<br>p = {top_probs[layer, j]:.4f}"
              for j in range(k)] for layer in range(n_layers)]
    fig = go.Figure(go.Heatmap(
        z=top_probs, x=[f"#{j + 1}" for j in range(k)], y=[f"layer {layer}" for layer in range(n_layers)],
        text=text, texttemplate="%{text}", textfont=dict(size=11), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", colorscale=ATTENTION_SCALE, zmin=0, zmax=1,
        colorbar=dict(title="p")))
    fig.update_layout(title=title, height=90 + 26 * n_layers, margin=margin(title),
                      xaxis=dict(title="rank", side="top"), yaxis=dict(title="residual stream after", autorange="reversed"))
    return fig
