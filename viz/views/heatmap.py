"""Light heatmap: one attention matrix drawn on a canvas, by a few kB of inline JavaScript.

The heatmap page is the view most students open first. As a plotly chart it made every
fresh browser tab load and run plotly's 4.7 MB bundle: ~1.3 s of CPU per tab, so 30 tabs
opened at once took 4x as long as a trivial Streamlit page (benchmarks/load_results.md).
This view is ~10 kB of JS plus the weights (base64 float32, exact), draws any size in one
``drawImage`` and keeps what the plotly heatmap offered: tokens on both axes (every k-th
when they crowd), hover, tap or arrow keys for query, key and weight, a colour bar, the
masked future in grey, PNG export. The plotly figure (:func:`viz.figures.attention.heatmap_figure`)
is still there for zoom and SVG. Its markup, CSS and JS are ``viz/views/assets/heatmap.{html,css,js}``,
laid out by :mod:`viz.views.page` like every view.

It goes into the app's own page (``st.html(fragment, unsafe_allow_javascript=True)``), not
an iframe: an iframe alone cost 30 tabs opened at once ~10% more CPU. Everything it adds
is scoped to ``#hm``. Token text only ever reaches the page as escaped JSON and is drawn
with ``fillText`` or set with ``textContent``: a token can never become markup or code.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

from viz.figures.common import ATTENTION_SCALE, heatmap_side, mask_future
from viz.views.page import standalone_page, view_fragment
from viz.views.theme import attention_luts, check_theme


@dataclass(frozen=True)
class HeatmapView:
    fragment: str   # for st.html(..., unsafe_allow_javascript=True): style, view, data, script
    html: str       # the same as a standalone page
    height: int     # CSS pixels


def plot_height(n_queries: int, n_keys: int, *, font_px: int = 12) -> int:
    """The plotly heatmap's height (:func:`~viz.figures.common.heatmap_side`), scaled with the font."""
    return int(heatmap_side(n_queries, n_keys) * font_px / 12)


def build_heatmap(pattern: np.ndarray, query_labels, key_labels, *, causal: bool = False, title: str = "",
                  zmax: float | None = None, colorscale: str = ATTENTION_SCALE, font_px: int = 12,
                  query_axis: str = "query (attends from)", key_axis: str = "key (attends to)",
                  file_name: str = "attention", theme: str | None = "light") -> HeatmapView:
    """The page for one (query_pos, key_pos) matrix; with ``causal`` cells above the diagonal are masked.

    ``theme`` ("light"/"dark", see :mod:`viz.views.theme`) is how it is drawn first; inside a
    Streamlit page the view then follows the app's theme by itself.
    """
    theme = check_theme(theme)
    z = np.array(pattern, dtype=np.float32)
    if z.ndim != 2 or z.shape != (len(query_labels), len(key_labels)):
        raise ValueError(f"pattern {z.shape} does not match {len(query_labels)} x {len(key_labels)} labels")
    if causal:
        mask_future(z)
    finite = z[np.isfinite(z)]
    top = float(zmax) if zmax is not None else float(finite.max()) if finite.size else 1.0
    data = {
        "title": title, "qAxis": query_axis, "kAxis": key_axis, "file": file_name,
        "q": [str(t) for t in query_labels], "k": [str(t) for t in key_labels],
        "nq": int(z.shape[0]), "nk": int(z.shape[1]), "zmax": top if top > 0 else 1.0,
        "z": base64.b64encode(np.ascontiguousarray(z, dtype="<f4").tobytes()).decode("ascii"),
        "luts": attention_luts(colorscale), "font": int(font_px),
        "height": plot_height(*z.shape, font_px=font_px) + 30,
    }
    fragment = view_fragment("heatmap", data, data_id="hm-data", theme=theme, HEIGHT=str(data["height"]))
    page = standalone_page(fragment, title=title or "Attention heatmap", theme=theme)
    return HeatmapView(fragment=fragment, html=page, height=data["height"])
