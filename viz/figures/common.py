"""What every figure builder shares: colour scales, the colour LUT, tick thinning, heatmap sizes, margins.

One copy of each, so the plotly heatmaps, the canvas heatmap (:mod:`viz.views.heatmap`) and the
model view mosaic (:mod:`viz.views.model_view`) draw the same colours at the same sizes.
Only ``plotly.colors`` is imported here (no graph objects), so the HTML views can use it cheaply.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import plotly.colors
from plotly.colors import get_colorscale, sample_colorscale, unlabel_rgb

from viz.export import safe_name

ATTENTION_SCALE = "Blues"     # attention weights (0 .. max)
# The same weights on a dark page: from a blue-grey just above the background (weight 0 recedes, as
# white does on a light page) to near white, so strong weights glow instead of the whole matrix.
DARK_ATTENTION_SCALE = ((0.0, "#1c2330"), (0.3, "#1f4f8f"), (0.65, "#4a95e0"), (1.0, "#dcefff"))
GRID_SCALE = "Viridis"        # per-head metrics on a layers x heads grid
DIFF_SCALE = "RdBu"           # signed differences, centred on 0
VECTOR_SCALE = "RdBu"         # vector components (q, k, v, hidden states), centred on 0
MASKED_BACKGROUND = "rgba(128,128,128,0.25)"   # shows through the NaN gap of a causal mask
MAX_TICKS = 80  # beyond this, label every k-th token so the axis stays readable


def tick_step(n: int, n_max: int = MAX_TICKS) -> int:
    """Label every ``tick_step``-th of ``n`` positions so at most ``n_max`` labels show."""
    return max(1, int(np.ceil(n / n_max)))


def thin_ticks(labels: Sequence, n_max: int = MAX_TICKS, *, values: Sequence | None = None
               ) -> tuple[list, list[str]]:
    """Every k-th tick value (default the integer positions) with its label as text.

    Axes plot integer positions (or unique "position token" categories, given as ``values``)
    because plotly merges rows whose category labels repeat ("the ... the").
    """
    picked = range(0, len(labels), tick_step(len(labels), n_max))
    tickvals = list(picked) if values is None else [values[i] for i in picked]
    return tickvals, [str(labels[i]) for i in picked]


def heatmap_side(n_queries: int, n_keys: int) -> int:
    """Height in CSS pixels of a token x token heatmap: rows of ~16 px, between 360 and 900."""
    return max(360, min(900, 60 + 16 * max(n_queries, n_keys)))


def margin(title: str = "", *, top: int = 40, bottom: int = 10, untitled_top: int = 10) -> dict:
    """The house margins: tight sides, room at the top only when there is a title."""
    return dict(l=10, r=10, t=top if title else untitled_top, b=bottom)


def mask_future(z: np.ndarray) -> np.ndarray:
    """``z`` (query_pos, key_pos) with the causal future (key_pos > query_pos) set to NaN, in place."""
    n_q, n_k = z.shape
    z[np.triu_indices(n_q, k=1, m=n_k)] = np.nan
    return z


@lru_cache(maxsize=8)
def colour_lut(colorscale: str | tuple = ATTENTION_SCALE, n: int = 256) -> tuple[int, ...]:
    """``n`` RGB triples (flattened) sampled from a plotly colour scale: the same colours as its heatmap.

    ``colorscale`` is a plotly scale name or a tuple of ``(position, colour)`` stops.
    """
    scale = get_colorscale(colorscale) if isinstance(colorscale, str) else [list(stop) for stop in colorscale]
    rgb = sample_colorscale(scale, list(np.linspace(0, 1, n)), colortype="rgb")
    return tuple(int(round(c)) for colour in rgb for c in unlabel_rgb(colour))


def attention_scale(zmin: float, zmax: float, *, gamma: float = 1.0) -> list:
    """Colour scale: Blues from 0 to zmax, red below zero (only the low-rank bound goes negative).

    ``gamma`` < 1 spreads the colours over small weights (colour ~ weight**gamma):
    at 512 tokens most weights are ~1/512 and vanish on a linear scale.  The
    z values stay the real weights, so hover and the colour bar read true.
    """
    blues = plotly.colors.sequential.Blues
    zero = -zmin / (zmax - zmin) if zmin < 0 else 0.0
    n = len(blues)
    stops = [[zero + (1 - zero) * (i / (n - 1)) ** (1 / gamma), blues[i]] for i in range(n)]
    if zmin < 0:
        stops = [[0.0, "rgb(178,24,43)"], [zero, "rgb(255,255,255)"]] + stops[1:]
    stops[-1][0] = 1.0
    return stops


def selection_points(selection) -> list:
    """The points of a ``st.plotly_chart`` selection, whatever shape it comes in.

    Accepts the selection state (``{"selection": {"points": [...]}}``), its ``"selection"`` part,
    or the list of points; anything else means no points.
    """
    points = selection or []
    if hasattr(points, "get"):
        points = points.get("selection", points)
        points = points.get("points", []) if hasattr(points, "get") else points
    return [point for point in points or [] if hasattr(point, "get")]


def customdata_layer_head(point) -> tuple[int, int] | None:
    """``(layer, head)`` from the ``customdata`` of a selected point (``[layer, head, ...]``), or None."""
    custom = point.get("customdata")
    if isinstance(custom, dict):  # the browser sends typed arrays as {"0": layer, "1": head}
        custom = [custom.get("0", custom.get(0)), custom.get("1", custom.get(1))]
    if not isinstance(custom, (list, tuple)) or len(custom) < 2:
        return None
    try:
        return int(float(custom[0])), int(float(custom[1]))
    except (TypeError, ValueError):
        return None


def export_config(name: str, *, scale: int = 3) -> dict:
    """plotly toolbar config: PNG export with a sensible file name and print resolution."""
    return {"displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": safe_name(name, default="figure"),
                                     "scale": scale},
            "modeBarButtonsToAdd": ["toImage"]}
