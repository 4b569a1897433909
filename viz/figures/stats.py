"""Plotly builders for head statistics: metric grids, the head similarity map, difference heatmaps.

The numbers come from :mod:`viz.stats`; this module only draws them.

Pure numpy/pandas in, ``go.Figure`` out (no streamlit).  Grids plot integer
layer/head positions with the y axis reversed (layer 0 on top).  Clickable
figures carry an invisible marker per head whose ``customdata`` is
``[layer, head]``: Streamlit reports selections of points, not heatmap cells.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from viz.figures.common import (
    DIFF_SCALE,
    GRID_SCALE,
    MASKED_BACKGROUND,
    customdata_layer_head,
    heatmap_side,
    margin,
    mask_future,
    selection_points,
    thin_ticks,
)
from viz.result import has_gqa


def _cell_markers(n_layers: int, n_heads: int, hover: str) -> go.Scatter:
    layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
    return go.Scatter(
        x=head, y=layer, mode="markers", customdata=np.stack([layer, head], axis=-1),
        marker=dict(size=max(8, min(28, 600 // max(n_heads, n_layers))), color="rgba(0,0,0,0)",
                    symbol="square"),
        hovertemplate=hover, showlegend=False, name="heads")


def metric_grid_figure(grid: np.ndarray, *, metric: str, title: str = "",
                       selected: tuple[int, int] | None = None, zmin: float | None = None,
                       zmax: float | None = None, height: int | None = None,
                       clickable: bool = True, kv_head: np.ndarray | None = None) -> go.Figure:
    """A (n_layers, n_heads) metric as a heatmap, layers down, heads across, with hover.

    ``selected`` outlines one (layer, head) cell.  ``clickable`` adds the
    invisible per-head marker layer that makes cells selectable in Streamlit.
    ``kv_head`` (grouped-query models) labels each head column with its key/value group.
    """
    grid = np.asarray(grid, dtype=float)
    n_layers, n_heads = grid.shape
    gqa = kv_head is not None and has_gqa(kv_head)
    where = "layer %{y}, head %{x}" + (" · KV %{customdata}" if gqa else "")
    hover = where + "<br>" + metric + " %{z:.3f}<extra></extra>"
    fig = go.Figure(go.Heatmap(
        z=grid, x=np.arange(n_heads), y=np.arange(n_layers), colorscale=GRID_SCALE,
        customdata=np.broadcast_to(np.asarray(kv_head), grid.shape) if gqa else None,
        zmin=zmin, zmax=zmax, hovertemplate=hover, hoverongaps=False,
        # small multiples carry their metric name above the chart; a colorbar title would be clipped
        colorbar=dict(title=dict(text=metric if (height or 300) > 260 else "", side="right"), thickness=12)))
    if clickable:
        cells = grid.reshape(-1)
        markers = _cell_markers(n_layers, n_heads, "layer %{y}, head %{x}<br>" + metric + " %{text}<extra></extra>")
        kv = np.tile(np.asarray(kv_head), n_layers) if gqa else None
        markers.text = [f"{v:.3f}" + (f" (KV {kv[i]})" if gqa else "") for i, v in enumerate(cells)]
        fig.add_trace(markers)
    if selected is not None:
        layer, head = selected
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line=dict(color="red", width=3))
    fig.update_layout(
        title=title, height=height or max(220, 70 + 34 * n_layers),
        margin=margin(title), clickmode="event+select",
        xaxis=dict(title="head · KV group" if gqa else "head", tickmode="array", tickvals=list(range(n_heads)),
                   ticktext=[f"{h}·{int(kv_head[h])}" for h in range(n_heads)] if gqa else None,
                   range=[-0.5, n_heads - 0.5], showgrid=False, zeroline=False),
        yaxis=dict(title="layer", tickmode="array", tickvals=list(range(n_layers)),
                   autorange="reversed", showgrid=False, zeroline=False))
    return fig


def similarity_figure(points: pd.DataFrame, *, labels: pd.Series | None = None,
                      selected: tuple[int, int] | None = None,
                      nearest: pd.DataFrame | None = None, title: str = "") -> go.Figure:
    """The head similarity map: one marker per head at its MDS position, coloured by layer.

    ``points`` has ``layer``, ``head``, ``x``, ``y`` (see
    :meth:`viz.stats.SimilarityMap.frame`); ``labels`` (e.g.
    :func:`viz.stats.top_metric`) is shown on hover.  The selected head gets a
    ring and its nearest heads a thinner one.
    """
    n_layers = int(points["layer"].max()) + 1
    colours = sample_colorscale("Plasma", [0.0] if n_layers == 1 else
                                list(np.linspace(0, 0.9, n_layers)))
    text = labels if labels is not None else pd.Series([""] * len(points), index=points.index)
    fig = go.Figure()
    for layer in range(n_layers):
        rows = points["layer"] == layer
        part = points[rows]
        fig.add_trace(go.Scatter(
            x=part["x"], y=part["y"], mode="markers+text", name=f"layer {layer}",
            text=[f"{layer}.{h}" for h in part["head"]], textposition="top center",
            textfont=dict(size=9),
            customdata=np.stack([part["layer"], part["head"], text[rows].astype(str)], axis=-1),
            marker=dict(size=11, color=colours[layer], line=dict(width=0.5, color="white")),
            hovertemplate="layer %{customdata[0]}, head %{customdata[1]}"
                          "<br>top metric: %{customdata[2]}<extra></extra>"))
    rings = []
    if nearest is not None and len(nearest):
        rings.append((nearest, "near", 17, 2))
    if selected is not None:
        rings.append((pd.DataFrame({"layer": [selected[0]], "head": [selected[1]]}), "selected", 22, 3))
    for heads, name, size, width in rings:
        picked = points.merge(heads[["layer", "head"]], on=["layer", "head"])
        fig.add_trace(go.Scatter(
            x=picked["x"], y=picked["y"], mode="markers", name=name, hoverinfo="skip",
            marker=dict(size=size, color="rgba(0,0,0,0)", line=dict(width=width, color="red"))))
    fig.update_layout(
        title=title, height=520, margin=margin(title),
        legend=dict(title="colour = layer"), clickmode="event+select",
        xaxis=dict(title="MDS 1", zeroline=False), yaxis=dict(title="MDS 2", zeroline=False,
                                                              scaleanchor="x", scaleratio=1))
    return fig


def difference_figure(diff: np.ndarray, query_labels, key_labels, *, title: str = "",
                      causal: bool = False) -> go.Figure:
    """``A - B`` for two (query_pos, key_pos) patterns on a diverging scale centred on 0."""
    z = np.asarray(diff, dtype=float).copy()
    n_q, n_k = z.shape
    if causal:
        mask_future(z)
    bound = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    bound = bound or 1.0
    q_text = np.asarray([str(s) for s in query_labels], dtype=object)
    k_text = np.asarray([str(s) for s in key_labels], dtype=object)
    custom = np.stack(np.broadcast_arrays(q_text[:, None], k_text[None, :]), axis=-1)
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(n_k), y=np.arange(n_q), customdata=custom, colorscale=DIFF_SCALE,
        zmid=0, zmin=-bound, zmax=bound, hoverongaps=False, colorbar=dict(title="A − B"),
        hovertemplate="query %{y}: %{customdata[0]}<br>key %{x}: %{customdata[1]}"
                      "<br>difference %{z:+.4f}<extra></extra>"))
    xv, xt = thin_ticks(k_text)
    yv, yt = thin_ticks(q_text)
    fig.update_layout(
        title=title, height=heatmap_side(n_q, n_k), margin=margin(title),
        xaxis=dict(title="key (attends to)", tickmode="array", tickvals=xv, ticktext=xt, tickangle=-60),
        yaxis=dict(title="query (attends from)", tickmode="array", tickvals=yv, ticktext=yt,
                   autorange="reversed"),
        plot_bgcolor=MASKED_BACKGROUND if causal else None)
    return fig


def selected_head(event) -> tuple[int, int] | None:
    """(layer, head) from a Streamlit plotly selection event of one of these figures, or None."""
    for point in selection_points(event):
        picked = customdata_layer_head(point)
        if picked is not None:
            return picked
    return None
