"""Light heatmap: one attention matrix drawn on a canvas, by a few kB of inline JavaScript.

The heatmap page is the view most students open first. As a plotly chart it made every
fresh browser tab load and run plotly's 4.7 MB bundle: ~1.3 s of CPU per tab, so 30 tabs
opened at once took 4x as long as a trivial Streamlit page (benchmarks/load_results.md).
This view is ~10 kB of JS plus the weights (base64 float32, exact), draws any size in one
``drawImage`` and keeps what the plotly heatmap offered: tokens on both axes (every k-th
when they crowd), hover, tap or arrow keys for query, key and weight, a colour bar, the
masked future in grey, PNG export.

Long inputs (issue 16): a matrix with more than :data:`MAX_SIDE` rows or columns is drawn as blocks
(each block's largest weight, said so on hover), and a :class:`Window` (query rows x key columns,
dragged as a box on the canvas or typed on the page) is drawn cell by cell with its tokens as
labels and exact weights on hover, so 2,048 tokens send ~1.5 MB, not 22 MB.

The plotly figure (:func:`viz.figures.attention.heatmap_figure`)
is still there for zoom and SVG. Its markup, CSS and JS are ``viz/views/assets/heatmap.{html,css,js}``,
laid out by :mod:`viz.views.page` like every view.

It goes into the app's own page (``st.html(fragment, unsafe_allow_javascript=True)``), not
an iframe: an iframe alone cost 30 tabs opened at once ~10% more CPU. Everything it adds
is scoped to ``#hm``. Token text only ever reaches the page as escaped JSON and is drawn
with ``fillText`` or set with ``textContent``: a token can never become markup or code.
"""
from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass

import numpy as np

from viz.figures.common import ATTENTION_SCALE, heatmap_side
from viz.views.page import standalone_page, view_fragment
from viz.views.theme import attention_luts, check_theme


MAX_SIDE = 512   # cells per axis drawn one by one (1 MB of float32 at most); more are drawn as blocks


@dataclass(frozen=True)
class Window:
    """The part of a (query_pos, key_pos) matrix the heatmap draws: query rows [q0, q1), key columns [k0, k1)."""

    q0: int
    q1: int
    k0: int
    k1: int

    @property
    def n_queries(self) -> int:
        return self.q1 - self.q0

    @property
    def n_keys(self) -> int:
        return self.k1 - self.k0

    def is_whole(self, n_queries: int, n_keys: int) -> bool:
        return (self.q0, self.q1, self.k0, self.k1) == (0, n_queries, 0, n_keys)

    @property
    def queries(self) -> str:
        """The query rows as a person reads them (and the URL carries them): "100-163", both ends included."""
        return f"{self.q0}-{self.q1 - 1}"

    @property
    def keys(self) -> str:
        return f"{self.k0}-{self.k1 - 1}"

    def describe(self) -> str:
        return f"query rows {self.q0:,}–{self.q1 - 1:,} × keys {self.k0:,}–{self.k1 - 1:,}"


def whole(n_queries: int, n_keys: int) -> Window:
    return Window(0, int(n_queries), 0, int(n_keys))


_RANGE = re.compile(r"^\s*(\d+)\s*(?:(?:-|–|\.\.|:)\s*(\d+)\s*)?$")


def parse_range(text, n: int) -> tuple[int, int] | None:
    """"100-163" (both ends included; also "100..163", "100:163" or one position) as [start, stop) within
    0..n, or None when absent or malformed."""
    m = _RANGE.match(str(text)) if text not in (None, "") else None
    if not m or n <= 0:
        return None
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    a, b = min(a, b), max(a, b)
    if a >= n:
        return None
    return a, min(b, n - 1) + 1


def window_of(queries, keys, n_queries: int, n_keys: int) -> Window:
    """The window named by two ranges (see :func:`parse_range`); a missing or bad range means all of that axis."""
    q = parse_range(queries, n_queries) or (0, n_queries)
    k = parse_range(keys, n_keys) or (0, n_keys)
    return Window(q[0], q[1], k[0], k[1])


def block_max(z: np.ndarray, bq: int, bk: int) -> np.ndarray:
    """(ceil(n_q / bq), ceil(n_k / bk)) float32: the largest weight of each bq x bk block, NaN cells
    (the masked future) left out; a block with no finite cell is NaN."""
    n_q, n_k = z.shape
    out_q, out_k = math.ceil(n_q / bq), math.ceil(n_k / bk)
    padded = np.full((out_q * bq, out_k * bk), -np.inf, dtype=np.float32)
    padded[:n_q, :n_k] = np.where(np.isnan(z), -np.inf, z)
    out = padded.reshape(out_q, bq, out_k, bk).max(axis=(1, 3))
    out[np.isneginf(out)] = np.nan
    return out


def window_matrix(pattern, window: Window, *, causal: bool = False) -> np.ndarray:
    """(window rows, window keys) float32 copy of ``pattern``'s window, the causal future (key_pos >
    query_pos, in the whole matrix's positions) as NaN."""
    z = np.array(pattern[window.q0:window.q1, window.k0:window.k1], dtype=np.float32)
    if causal:
        future = np.arange(window.k0, window.k1)[None, :] > np.arange(window.q0, window.q1)[:, None]
        z[future] = np.nan
    return z


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
                  file_name: str = "attention", theme: str | None = "light", window: Window | None = None,
                  zoomable: bool = False, max_side: int = MAX_SIDE) -> HeatmapView:
    """The page for one (query_pos, key_pos) matrix; with ``causal`` cells above the diagonal are masked.

    ``theme`` ("light"/"dark", see :mod:`viz.views.theme`) is how it is drawn first; inside a
    Streamlit page the view then follows the app's theme by itself.

    ``window`` (default: the whole matrix) is the part drawn, with its tokens and its own colour
    range; more than ``max_side`` rows or keys are drawn as blocks of their largest weight (the hover
    says so). ``pattern`` may be anything sliceable by rows and keys (only the window is read).
    ``zoomable``: a box dragged on the canvas asks the page for that window (a ``ae-heatmap-zoom``
    event on ``window``, see :mod:`viz.ui.zoom`), and a "Whole matrix" button goes back.
    """
    theme = check_theme(theme)
    shape = tuple(getattr(pattern, "shape", np.shape(pattern)))
    if len(shape) != 2 or shape != (len(query_labels), len(key_labels)):
        raise ValueError(f"pattern {shape} does not match {len(query_labels)} x {len(key_labels)} labels")
    window = window or whole(*shape)
    z = window_matrix(pattern, window, causal=causal)
    bq, bk = math.ceil(z.shape[0] / max_side), math.ceil(z.shape[1] / max_side)
    if bq > 1 or bk > 1:
        z = block_max(z, bq, bk)
    finite = z[np.isfinite(z)]
    top = float(zmax) if zmax is not None else float(finite.max()) if finite.size else 1.0
    data = {
        "title": title, "qAxis": query_axis, "kAxis": key_axis, "file": file_name,
        # every token of the window (not one per block): the hover names a block's tokens
        "q": [str(t) for t in query_labels[window.q0:window.q1]],
        "k": [str(t) for t in key_labels[window.k0:window.k1]],
        "nq": int(z.shape[0]), "nk": int(z.shape[1]), "zmax": top if top > 0 else 1.0,
        "z": base64.b64encode(np.ascontiguousarray(z, dtype="<f4").tobytes()).decode("ascii"),
        "luts": attention_luts(colorscale), "font": int(font_px),
        "height": plot_height(*z.shape, font_px=font_px) + 30,
        # where the window sits in the whole matrix, and how many positions one drawn cell holds
        "q0": window.q0, "k0": window.k0, "qs": bq, "ks": bk, "nQ": int(shape[0]), "nK": int(shape[1]),
        "whole": window.is_whole(*shape), "zoom": bool(zoomable),
    }
    fragment = view_fragment("heatmap", data, data_id="hm-data", theme=theme, HEIGHT=str(data["height"]))
    page = standalone_page(fragment, title=title or "Attention heatmap", theme=theme)
    return HeatmapView(fragment=fragment, html=page, height=data["height"])
