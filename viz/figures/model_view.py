"""The model view as a plotly figure: the thumbnail mosaic plus one clickable marker per head.

- :func:`model_view_figure` draws the mosaic of :mod:`viz.views.model_view` as ONE plotly image
  trace plus one transparent marker per thumbnail, so ``st.plotly_chart(on_select=...)`` can
  report which head was clicked (plotly selections report points, not image pixels);
- :func:`thumbnail_from_selection` maps that selection back to ``(layer, head)``.
"""
from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go

from viz.figures.common import ATTENTION_SCALE, customdata_layer_head, selection_points
from viz.result import Block, has_gqa, head_label
from viz.views.model_view import THUMB, build_mosaic, mosaic_png

SELECTED_COLOR = "#d62728"


def model_view_figure(block: Block, *, thumb: int = THUMB, normalize: str = "head", gamma: float = 1.0,
                      selected: tuple[int, int] | None = None, colorscale: str = ATTENTION_SCALE,
                      title: str = "", theme: str | None = "light") -> go.Figure:
    """All layers x heads of ``block`` as a clickable thumbnail grid.

    Trace 0 is the mosaic image (no hover); trace 1 holds one invisible marker per
    thumbnail, point index ``layer * n_heads + head``, with customdata ``[layer, head]``.
    ``selected`` outlines one thumbnail.  ``theme`` ("light"/"dark") colours the mosaic for that
    page background (a PNG cannot follow a later theme switch by itself: pass the current one).
    """
    mosaic = build_mosaic(block.pattern, thumb=thumb, normalize=normalize, gamma=gamma)
    png = base64.b64encode(mosaic_png(mosaic, colorscale=colorscale, theme=theme)).decode("ascii")
    n_layers, n_heads = mosaic.n_layers, mosaic.n_heads
    layer_idx, head_idx = np.divmod(np.arange(n_layers * n_heads), n_heads)
    centers = np.array([mosaic.center(int(l_), int(h_)) for l_, h_ in zip(layer_idx, head_idx)])
    height_px, width_px = mosaic.values.shape

    fig = go.Figure()
    fig.add_trace(go.Image(source=f"data:image/png;base64,{png}", x0=0, dx=1, y0=0, dy=1,
                           hoverinfo="skip", name="mosaic"))
    fig.add_trace(go.Scatter(
        x=centers[:, 0], y=centers[:, 1], mode="markers", name="heads",
        # a plain list: numpy arrays travel as base64 typed arrays, which selection events
        # then report as an undecoded object
        customdata=[[int(l_), int(h_)] for l_, h_ in zip(layer_idx, head_idx)],
        marker=dict(symbol="square", size=1, opacity=0),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
        text=[head_label(int(h_), block.kv_head) for h_ in head_idx],
        hovertemplate="layer %{customdata[0]}, %{text}<br>click to open<extra></extra>",
        showlegend=False))
    if selected is not None:
        r, c = mosaic.origin(*selected)
        fig.add_shape(type="rect", x0=c - 0.5 - mosaic.pad / 2, x1=c + mosaic.cell_w - 0.5 + mosaic.pad / 2,
                      y0=r - 0.5 - mosaic.pad / 2, y1=r + mosaic.cell_h - 0.5 + mosaic.pad / 2,
                      line=dict(color=SELECTED_COLOR, width=2))
    head_ticks = [mosaic.center(0, h)[0] for h in range(n_heads)]
    layer_ticks = [mosaic.center(layer, 0)[1] for layer in range(n_layers)]
    # Keep pixels square: the plot is as wide as the container, height follows the aspect.
    aspect = height_px / width_px
    fig.update_layout(
        title=title or None,
        height=int(min(1400, max(240, 40 + 820 * aspect))),
        margin=dict(l=60, r=8, t=60 if title else 28, b=6),
        hovermode="closest", hoverdistance=-1,   # a click anywhere picks the nearest thumbnail
        clickmode="event+select", dragmode=False,
        xaxis=dict(tickmode="array", tickvals=head_ticks, ticktext=[head_label(h, block.kv_head).replace("head ", "") if has_gqa(block.kv_head)
                                                          else f"head {h}" for h in range(n_heads)],
                   side="top", showgrid=False, zeroline=False, range=[-0.5, width_px - 0.5],
                   constrain="domain", fixedrange=True),
        yaxis=dict(tickmode="array", tickvals=layer_ticks, ticktext=[f"layer {i}" for i in range(n_layers)],
                   showgrid=False, zeroline=False, range=[height_px - 0.5, -0.5], scaleanchor="x",
                   constrain="domain", fixedrange=True),
        plot_bgcolor="rgba(0,0,0,0)")   # the gaps are in the PNG; around it the page shows
    return fig


def thumbnail_from_selection(selection, n_heads: int) -> tuple[int, int] | None:
    """``(layer, head)`` of the first selected thumbnail in a ``st.plotly_chart`` selection.

    Accepts the selection state (``{"selection": {"points": [...]}}``), its ``"selection"``
    part, or the list of points; points of other traces are ignored.
    """
    for point in selection_points(selection):
        if point.get("curve_number", 1) != 1:
            continue
        index = point.get("point_index", point.get("point_number"))
        if index is not None:
            return divmod(int(index), n_heads)
        picked = customdata_layer_head(point)
        if picked is not None:
            return picked
    return None
