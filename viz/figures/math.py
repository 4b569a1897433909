"""Figures for the attention-math page: compact vector strips and per-key bars (numpy in, plotly out).

Vectors are drawn as one-row-per-token heatmap strips (diverging colours
centred on 0), not as walls of numbers; rows are integer positions with the
token text as tick labels, so repeated tokens never merge.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from viz.figures.common import VECTOR_SCALE, margin, thin_ticks


def vector_strip_figure(vectors: np.ndarray, row_labels, *, title: str = "", highlight: int | None = None,
                        value_name: str = "value", max_height: int = 520) -> go.Figure:
    """(n_rows, d) vectors as a heatmap strip: rows are tokens, columns are dimensions."""
    z = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    n_rows, dim = z.shape
    labels = [str(s) for s in row_labels]
    if len(labels) != n_rows:
        raise ValueError(f"{n_rows} rows but {len(labels)} labels")
    lim = float(np.nanmax(np.abs(z))) if z.size and np.isfinite(z).any() else 1.0
    text = np.broadcast_to(np.asarray(labels, dtype=object)[:, None], z.shape)
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(dim), y=np.arange(n_rows), colorscale=VECTOR_SCALE, zmid=0, zmin=-lim, zmax=lim,
        customdata=text, colorbar=dict(title=value_name, thickness=12, nticks=3 if n_rows <= 3 else 6),
        hovertemplate="%{customdata} · dim %{x}<br>" + value_name + " %{z:.4f}<extra></extra>"))
    yv, yt = thin_ticks(labels, 40)
    row_px = 22 if n_rows <= 12 else 14
    height = int(min(max_height, 70 + (title != "") * 30 + row_px * n_rows))
    fig.update_layout(title=title, height=max(130, height),
                      margin=margin(title, top=36, untitled_top=8, bottom=30),
                      xaxis=dict(title=None, showgrid=False),
                      yaxis=dict(tickmode="array", tickvals=yv, ticktext=yt, autorange="reversed", showgrid=False))
    if highlight is not None and 0 <= highlight < n_rows:
        fig.add_shape(type="rect", x0=-0.5, x1=dim - 0.5, y0=highlight - 0.5, y1=highlight + 0.5,
                      line=dict(color="#f5a623", width=3))
    return fig


def key_bars_figure(values: np.ndarray, key_labels, *, allowed: np.ndarray | None = None, title: str = "",
                    value_name: str = "value", color: str = "#4c78a8") -> go.Figure:
    """One bar per key position (scores or weights); masked keys are drawn as grey stubs."""
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[0]
    labels = [str(s) for s in key_labels]
    ok = np.ones(n, dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    shown = np.where(ok & np.isfinite(v), v, 0.0)
    colors = [color if a else "rgba(128,128,128,0.5)" for a in ok]
    hover = [f"{v[j]:.4f}" if ok[j] and np.isfinite(v[j]) else "masked" for j in range(n)]
    fig = go.Figure(go.Bar(x=np.arange(n), y=shown, marker_color=colors, customdata=np.stack(
        [np.asarray(labels, dtype=object), np.asarray(hover, dtype=object)], axis=-1),
        hovertemplate="key %{x}: %{customdata[0]}<br>" + value_name + " %{customdata[1]}<extra></extra>"))
    xv, xt = thin_ticks(labels)
    fig.update_layout(title=title, height=260, margin=margin(title, top=36, untitled_top=8),
                      yaxis=dict(title=value_name),
                      xaxis=dict(tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60))
    return fig
