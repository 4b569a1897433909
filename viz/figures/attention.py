"""The token x token attention heatmap that the pages share (numpy in, ``go.Figure`` out).

Axes are categories "position token" (unique) with the bare token as tick text, because
plotly merges rows whose category labels repeat ("the ... the").  The canvas heatmap
(:func:`viz.views.heatmap.build_heatmap`) draws the same matrix without plotly; this figure
stays for zoom and SVG export.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.common import (ATTENTION_SCALE, MASKED_BACKGROUND, heatmap_side, margin, thin_ticks)


def heatmap_figure(pattern: np.ndarray, query_labels, key_labels, *, causal: bool = False,
                   title: str = "", zmax: float | None = None, colorscale: str = ATTENTION_SCALE,
                   query_axis: str = "query (attends from)", key_axis: str = "key (attends to)",
                   query_start: int = 0, key_start: int = 0) -> go.Figure:
    """One head's (query_pos, key_pos) matrix with tokens on both axes and hover of query, key, weight.

    With ``causal`` the masked future (key_pos > query_pos) is drawn as a gap
    (NaN, hatched grey background), not as zeros. ``query_start`` / ``key_start``: the matrix is
    a region of a larger one whose first row / column sits at that position (the heatmap's zoom).
    """
    pattern = np.asarray(pattern, dtype=np.float32)
    n_q, n_k = pattern.shape
    z = pattern.copy()
    if causal:
        z[np.arange(key_start, key_start + n_k)[None, :] > np.arange(query_start, query_start + n_q)[:, None]] = np.nan
    # Axis categories "position token" are unique even when tokens repeat, and let the
    # hover name both tokens without a per-cell customdata array (5 MB at 512 tokens).
    q_cat = [f"{query_start + i} {lab}" for i, lab in enumerate(query_labels)]
    k_cat = [f"{key_start + j} {lab}" for j, lab in enumerate(key_labels)]
    finite = np.isfinite(z)
    fig = go.Figure(go.Heatmap(
        z=z, x=k_cat, y=q_cat, colorscale=colorscale,
        zmin=0, zmax=zmax if zmax is not None else float(np.nanmax(z)) if finite.any() else 1,
        hoverongaps=False, colorbar=dict(title="weight"),
        hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.4f}<extra></extra>"))
    xv, xt = thin_ticks(key_labels, values=k_cat)
    yv, yt = thin_ticks(query_labels, values=q_cat)
    fig.update_layout(
        title=title, height=heatmap_side(n_q, n_k), margin=margin(title),
        xaxis=dict(title=key_axis, tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60, side="bottom"),
        yaxis=dict(title=query_axis, tickmode="array", tickvals=yv, ticktext=yt, autorange="reversed"),
        plot_bgcolor=MASKED_BACKGROUND if causal else None)
    return fig
