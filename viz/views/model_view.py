"""Model view: every layer x head of a block laid out as one thumbnail mosaic image.

This module owns the image behind the model view page (no plotly):

- :func:`downsample` shrinks one (query_pos, key_pos) matrix by block means;
- :func:`build_mosaic` lays the (n_layers, n_heads) thumbnails out as one uint8 image;
- :func:`mosaic_png` colours it and encodes it as PNG, so the browser gets a few hundred kB
  instead of layers x heads x n^2 weights;
- :func:`build_model_view` is the same mosaic as a standalone page without plotly (notebooks):
  hover names a thumbnail, a click shows it large; it is sent as grey levels and coloured in the
  browser, so it can switch between light and dark (``assets/model_view.{html,css,js}``).

:func:`viz.figures.model_view.model_view_figure` puts that PNG into a clickable plotly figure.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from viz.figures.common import ATTENTION_SCALE
from viz.result import Block
from viz.views.page import standalone_page, view_fragment
from viz.views.theme import attention_luts, check_theme

THUMB = 64          # thumbnails are at most THUMB x THUMB pixels
GAP_RGB = (222, 222, 222)
GAP_RGB_DARK = (43, 42, 39)     # --ae-gap of the dark theme (assets/theme.css)


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
    summary = getattr(pattern, "summary", None)   # a long result's LazyPattern: thumbnails streamed at capture
    if summary is not None and summary.thumb == thumb:
        small = summary.thumbs                                 # (L, H, cell_h, cell_w)
    elif summary is not None or getattr(pattern, "layers", None) is not None:
        small = np.stack([downsample(layer, size=thumb) for layer in pattern.layers()])
    else:
        p = np.asarray(pattern, dtype=np.float32)
        if p.ndim != 4:
            raise ValueError(f"pattern must be (n_layers, n_heads, query_pos, key_pos), got {p.shape}")
        small = downsample(p, size=thumb)                      # (L, H, cell_h, cell_w)
    n_layers, n_heads = small.shape[:2]
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


def _png(pixels: np.ndarray, mode: str) -> bytes:
    from PIL import Image   # Pillow ships with streamlit; imported here to keep import time low

    buf = io.BytesIO()
    # level 1: 3x faster than the default at 512 tokens and within 3% of its size
    Image.fromarray(pixels, mode).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def mosaic_png(mosaic: Mosaic, *, colorscale: str = ATTENTION_SCALE, theme: str | None = "light") -> bytes:
    """The mosaic coloured with ``colorscale`` (its dark counterpart for ``theme="dark"``, see
    :func:`viz.views.theme.attention_luts`), gaps grey, as PNG bytes."""
    theme = check_theme(theme)
    lut = attention_luts(colorscale)[theme]
    rgb = np.asarray(lut, dtype=np.uint8).reshape(-1, 3)[mosaic.values]
    rgb[mosaic.gap] = GAP_RGB if theme == "light" else GAP_RGB_DARK
    return _png(rgb, "RGB")


def mosaic_levels_png(mosaic: Mosaic) -> bytes:
    """The mosaic as grey levels (``values``) with the gaps transparent: the page colours it."""
    alpha = np.where(mosaic.gap, 0, 255).astype(np.uint8)
    return _png(np.stack([mosaic.values, alpha], axis=-1), "LA")


@dataclass(frozen=True)
class ModelView:
    html: str       # a standalone page (no plotly, nothing fetched)
    height: int     # a good iframe height in CSS pixels (the page scrolls inside)


def build_model_view(block: Block, *, thumb: int = THUMB, normalize: str = "head", gamma: float = 0.5,
                     colorscale: str = ATTENTION_SCALE, title: str = "", theme: str | None = "light") -> ModelView:
    """Every layer x head of ``block`` as one page of thumbnails (layers down, heads across).

    ``normalize`` and ``gamma`` as in :func:`build_mosaic` (0.5, a square-root scale: a few strong
    weights, often on [CLS]/[SEP], would otherwise leave the rest of each thumbnail blank).
    """
    theme = check_theme(theme)
    mosaic = build_mosaic(block.pattern, thumb=thumb, normalize=normalize, gamma=gamma)
    height_px, width_px = mosaic.values.shape
    data = {
        "title": title, "kind": block.kind, "nLayers": mosaic.n_layers, "nHeads": mosaic.n_heads,
        "cellH": mosaic.cell_h, "cellW": mosaic.cell_w, "pad": mosaic.pad, "width": width_px, "height": height_px,
        "nQueries": len(block.queries), "nKeys": len(block.keys), "normalize": normalize, "gamma": gamma,
        "png": base64.b64encode(mosaic_levels_png(mosaic)).decode("ascii"), "luts": attention_luts(colorscale),
    }
    # Drawn at most 3x and at most as wide as a notebook cell leaves (~640 px beside the large head).
    scale = min(3.0, 640 / width_px)
    height = int(min(900, max(330, 70 + height_px * scale + 30)))
    page = standalone_page(view_fragment("model_view", data, data_id="mv-data", theme=theme),
                           title=title or "Model view", theme=theme)
    return ModelView(html=page, height=height)
