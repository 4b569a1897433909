"""Model view: every layer x head of a block as one thumbnail mosaic (a plotly figure).

This module owns the pure builder behind the model view page:

- :func:`downsample` shrinks one (query_pos, key_pos) matrix by block means;
- :func:`build_mosaic` lays the (n_layers, n_heads) thumbnails out as one uint8 image;
- :func:`model_view_figure` draws that image as ONE plotly image trace (a PNG, so the browser
  gets a few hundred kB instead of layers x heads x n^2 weights) plus one transparent marker
  per thumbnail, so ``st.plotly_chart(on_select=...)`` can report which head was clicked
  (plotly selections report points, not image pixels);
- :func:`thumbnail_from_selection` maps that selection back to ``(layer, head)``.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from viz.result import Block

THUMB = 64          # thumbnails are at most THUMB x THUMB pixels
GAP_RGB = (222, 222, 222)
SELECTED_COLOR = "#d62728"


def _bins(n: int, size: int) -> np.ndarray:
    """Start index of each of ``min(n, size)`` near-equal bins over ``range(n)``."""
    k = min(n, size)
    return np.floor(np.arange(k) * n / k).astype(np.int64)


def downsample(matrix: np.ndarray, *, size: int = THUMB) -> np.ndarray:
    """Block means of ``matrix`` (..., n_q, n_k) down to at most ``size`` x ``size``.

    Matrices already that small come back unchanged (as float32); bins are near-equal when
    ``size`` does not divide the length.
    """
    m = np.asarray(matrix, dtype=np.float32)
    n_q, n_k = m.shape[-2:]
    rows, cols = _bins(n_q, size), _bins(n_k, size)
    summed = np.add.reduceat(np.add.reduceat(m, rows, axis=-2), cols, axis=-1)
    counts = np.diff(np.append(rows, n_q))[:, None] * np.diff(np.append(cols, n_k))[None, :]
    return summed / counts


@dataclass(frozen=True)
class Mosaic:
    """The thumbnails of one block laid out as an image: layers down, heads across."""

    values: np.ndarray      # (height_px, width_px) uint8 intensity, 0 in gaps
    gap: np.ndarray         # (height_px, width_px) bool, True between thumbnails
    cell_h: int             # thumbnail height in pixels
    cell_w: int
    pad: int                # pixels between thumbnails
    n_layers: int
    n_heads: int

    def origin(self, layer: int, head: int) -> tuple[int, int]:
        """Top-left pixel (row, col) of a thumbnail."""
        return layer * (self.cell_h + self.pad), head * (self.cell_w + self.pad)

    def center(self, layer: int, head: int) -> tuple[float, float]:
        """Centre of a thumbnail in plot coordinates (x, y) of the image trace."""
        r, c = self.origin(layer, head)
        return c + (self.cell_w - 1) / 2, r + (self.cell_h - 1) / 2


def build_mosaic(pattern: np.ndarray, *, thumb: int = THUMB, normalize: str = "head",
                 gamma: float = 1.0) -> Mosaic:
    """Thumbnails of ``pattern`` (n_layers, n_heads, n_q, n_k) as one image.

    ``normalize="head"`` scales each thumbnail to its own maximum (structure shows in every
    head, even where the block means are small); ``"global"`` uses one scale for all, so
    thumbnails compare. ``gamma`` < 1 brightens faint structure.
    """
    if normalize not in ("head", "global"):
        raise ValueError("normalize must be 'head' or 'global'")
    p = np.asarray(pattern, dtype=np.float32)
    if p.ndim != 4:
        raise ValueError(f"pattern must be (n_layers, n_heads, query_pos, key_pos), got {p.shape}")
    n_layers, n_heads = p.shape[:2]
    small = downsample(p, size=thumb)                          # (L, H, cell_h, cell_w)
    cell_h, cell_w = small.shape[-2:]
    if normalize == "head":
        top = small.max(axis=(-2, -1), keepdims=True)
    else:
        top = np.full((1, 1, 1, 1), small.max())
    scaled = np.divide(small, top, out=np.zeros_like(small), where=top > 0)
    if gamma != 1.0:
        scaled = scaled ** gamma
    pad = max(1, min(cell_h, cell_w) // 10)
    height = n_layers * cell_h + (n_layers - 1) * pad
    width = n_heads * cell_w + (n_heads - 1) * pad
    values = np.zeros((height, width), np.uint8)
    gap = np.ones((height, width), bool)
    mosaic = Mosaic(values, gap, cell_h, cell_w, pad, n_layers, n_heads)
    q8 = np.rint(np.clip(scaled, 0, 1) * 255).astype(np.uint8)
    for layer in range(n_layers):
        for head in range(n_heads):
            r, c = mosaic.origin(layer, head)
            values[r:r + cell_h, c:c + cell_w] = q8[layer, head]
            gap[r:r + cell_h, c:c + cell_w] = False
    return mosaic


def _lut(colorscale: str) -> np.ndarray:
    """(256, 3) uint8 colours of a plotly colour scale."""
    cols = sample_colorscale(colorscale, list(np.linspace(0, 1, 256)), colortype="tuple")
    return np.rint(np.array(cols) * 255).astype(np.uint8)


def mosaic_png(mosaic: Mosaic, *, colorscale: str = "Blues") -> bytes:
    """The mosaic coloured with ``colorscale`` (gaps grey) as PNG bytes."""
    from PIL import Image   # Pillow ships with streamlit; imported here to keep import time low

    rgb = _lut(colorscale)[mosaic.values]
    rgb[mosaic.gap] = GAP_RGB
    buf = io.BytesIO()
    # level 1: 3x faster than the default at 512 tokens and within 3% of its size
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def model_view_figure(block: Block, *, thumb: int = THUMB, normalize: str = "head", gamma: float = 1.0,
                      selected: tuple[int, int] | None = None, colorscale: str = "Blues",
                      title: str = "") -> go.Figure:
    """All layers x heads of ``block`` as a clickable thumbnail grid.

    Trace 0 is the mosaic image (no hover); trace 1 holds one invisible marker per
    thumbnail, point index ``layer * n_heads + head``, with customdata ``[layer, head]``.
    ``selected`` outlines one thumbnail.
    """
    mosaic = build_mosaic(block.pattern, thumb=thumb, normalize=normalize, gamma=gamma)
    png = base64.b64encode(mosaic_png(mosaic, colorscale=colorscale)).decode("ascii")
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
        hovertemplate="layer %{customdata[0]}, head %{customdata[1]}<br>click to open<extra></extra>",
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
        xaxis=dict(tickmode="array", tickvals=head_ticks, ticktext=[f"head {h}" for h in range(n_heads)],
                   side="top", showgrid=False, zeroline=False, range=[-0.5, width_px - 0.5],
                   constrain="domain", fixedrange=True),
        yaxis=dict(tickmode="array", tickvals=layer_ticks, ticktext=[f"layer {i}" for i in range(n_layers)],
                   showgrid=False, zeroline=False, range=[height_px - 0.5, -0.5], scaleanchor="x",
                   constrain="domain", fixedrange=True),
        plot_bgcolor="white")
    return fig


def thumbnail_from_selection(selection, n_heads: int) -> tuple[int, int] | None:
    """``(layer, head)`` of the first selected thumbnail in a ``st.plotly_chart`` selection.

    Accepts the selection state (``{"selection": {"points": [...]}}``), its ``"selection"``
    part, or the list of points; points of other traces are ignored.
    """
    if not selection:
        return None
    points = selection
    if isinstance(points, dict) or hasattr(points, "get"):
        points = points.get("selection", points)
        points = points.get("points", []) if hasattr(points, "get") else points
    for point in points or []:
        if point.get("curve_number", 1) != 1:
            continue
        index = point.get("point_index", point.get("point_number"))
        if index is not None:
            return divmod(int(index), n_heads)
        custom = point.get("customdata")
        if isinstance(custom, (list, tuple)) and len(custom) >= 2:
            return int(custom[0]), int(custom[1])
    return None
