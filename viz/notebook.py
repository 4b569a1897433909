"""The attention views in notebooks (Jupyter, VS Code, Colab): ``from viz import notebook``.

    from viz.capture import capture
    from viz import notebook

    r = capture("The animal didn't cross the street because it was too tired.")
    notebook.head_view(r, layer=2)                  # the last expression of a cell is shown inline
    notebook.model_view(r)
    notebook.heatmap(r, layer=2, head=3, theme="dark").save("heatmap.html")
    notebook.metric_grid(r)                          # every head metric as a layers x heads grid

Each function returns a :class:`View`.  A notebook shows it through ``_repr_html_``: an iframe
whose ``srcdoc`` holds the whole page, so several views in one notebook never share ids, styles
or scripts, and nothing is fetched (no CDN: the views' JavaScript is inlined, a plotly figure
carries its own copy of plotly.js).  The iframe is sandboxed (scripts and downloads only), so a
view cannot reach the notebook page or its kernel.  ``View.save(path)`` writes the same page as a
standalone HTML file.  ``theme="light"`` or ``"dark"`` picks the colours (viz.views.theme).

This module owns only that wrapping; the pages come from viz.views and viz.figures.  numpy,
plotly and HTML: no streamlit, no torch (a result captured elsewhere and loaded is enough).
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from viz import stats
from viz.result import AttentionResult, Block, head_label
from viz.views import head_view as head_view_builder
from viz.views.heatmap import build_heatmap
from viz.views.model_view import build_model_view
from viz.views.theme import check_theme

if TYPE_CHECKING:   # plotly's graph objects load only when a plotly view is built
    import plotly.graph_objects as go

# Page colours for plotly figures, the same as --ae-bg / --ae-fg in viz/views/assets/theme.css.
_PLOTLY_THEMES = {
    "light": {"template": "plotly_white", "bg": "#ffffff", "fg": "#222222"},
    "dark": {"template": "plotly_dark", "bg": "#171614", "fg": "#e8e6e3"},
}
_SANDBOX = "allow-scripts allow-downloads"


@dataclass(frozen=True)
class View:
    """One view: a standalone HTML page, shown inline in a notebook or saved to a file."""

    html: str        # the whole page (no external resources)
    height: int      # the iframe's height in CSS pixels (the page scrolls inside when taller)
    title: str

    def _repr_html_(self) -> str:
        # srcdoc: the browser un-escapes the attribute and gets the page exactly as built.
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" title="{html.escape(self.title, quote=True)}"'
                f' sandbox="{_SANDBOX}" loading="eager" style="width:100%;height:{int(self.height)}px;border:0;'
                f'display:block"></iframe>')

    def save(self, path: str | Path) -> Path:
        """Write the page to ``path`` (a standalone file that works offline); returns the path."""
        path = Path(path)
        path.write_text(self.html, encoding="utf-8")
        return path


def _block(result: AttentionResult | Block, kind: str | None) -> Block:
    if isinstance(result, Block):
        if kind not in (None, result.kind):
            raise ValueError(f"this block holds {result.kind} attention, not {kind}")
        return result
    return result.block(kind)


def _check_layer_head(block: Block, layer: int, head: int | None) -> None:
    if not 0 <= layer < block.n_layers:
        raise ValueError(f"layer {layer} out of range: this block has layers 0..{block.n_layers - 1}")
    if head is not None and not 0 <= head < block.n_heads:
        raise ValueError(f"head {head} out of range: this block has heads 0..{block.n_heads - 1}")


def head_view(result: AttentionResult | Block, *, layer: int | Sequence[int] | None = None, kind: str | None = None,
              heads: Sequence[int] | None = None, pair: str = "all", top_mass: float | None = None,
              theme: str = "light") -> View:
    """Lines from each query token to the key tokens it attends to, one colour per head.

    ``layer``: one layer, a list of layers, or ``None`` for every layer (a selector in the view).
    ``heads`` are shown at first (default all; toggle them in the legend).  ``pair`` picks a
    sentence-pair slice ("A->B", ...); ``top_mass`` keeps only each row's strongest edges holding
    that share of its weight (see :func:`viz.views.head_view.prune_edges`).
    """
    block = _block(result, kind)
    layers = list(range(block.n_layers)) if layer is None else layer
    which = "every layer" if layer is None else f"layer {layer}" if isinstance(layer, int) else "layers"
    built = head_view_builder.build_head_view(block, layers=layers, heads=heads, pair=pair, top_mass=top_mass,
                                              title=f"{block.kind} · {which}", theme=check_theme(theme))
    return View(built.html, built.height, f"Head view, {block.kind} attention")


def model_view(result: AttentionResult | Block, *, kind: str | None = None, normalize: str = "head",
               gamma: float = 0.5, theme: str = "light") -> View:
    """Every layer x head as a thumbnail (layers down, heads across); hover names one, a click enlarges it.

    ``normalize="head"`` scales each thumbnail to its own maximum, ``"global"`` uses one scale;
    ``gamma`` 0.5 is a square-root colour scale (faint structure shows).
    """
    block = _block(result, kind)
    built = build_model_view(block, normalize=normalize, gamma=gamma, title=f"Model view · {block.kind}",
                             theme=check_theme(theme))
    return View(built.html, built.height, f"Model view, {block.kind} attention")


def heatmap(result: AttentionResult | Block, *, layer: int = 0, head: int | None = None, kind: str | None = None,
            theme: str = "light") -> View:
    """One head's (query_pos, key_pos) attention matrix with tokens on both axes; ``head=None``:
    the mean of the layer's heads.  Hover, tap or arrow keys read single weights; PNG export."""
    block = _block(result, kind)
    _check_layer_head(block, layer, head)
    pattern = block.pattern[layer].mean(axis=0) if head is None else block.pattern[layer, head]
    which = "mean of heads" if head is None else head_label(head, block.kv_head)
    title = f"{block.kind} · layer {layer} · {which}"
    built = build_heatmap(pattern, list(block.queries.labels), list(block.keys.labels), causal=block.causal,
                          title=title, file_name=f"attention_{block.kind}_L{layer}_{'mean' if head is None else head}",
                          theme=check_theme(theme))
    return View(built.html, built.height + 4, title)


def metric_grid(result: AttentionResult | Block, *, metric: str | None = None, kind: str | None = None,
                theme: str = "light") -> View:
    """A head metric of :data:`viz.stats.METRICS` (entropy, prev_share, ...) as a layers x heads grid;
    ``metric=None``: every metric, small multiples on one page (one copy of plotly.js)."""
    from viz.figures.stats import metric_grid_figure

    block = _block(result, kind)
    names = stats.METRICS if metric is None else (metric,)
    unknown = [m for m in names if m not in stats.METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(stats.METRICS)}")
    frame = stats.head_metrics(block)
    small = len(names) > 1
    figures = [metric_grid_figure(stats.metric_grid(frame, m), metric=m, title=m if small else f"{m} per head",
                                  clickable=False, kv_head=block.kv_head, height=260 if small else None)
               for m in names]
    title = f"Head metrics · {block.kind}" if small else f"{names[0]} per head · {block.kind}"
    return _plotly_page(figures, title=title, theme=check_theme(theme), columns=4 if small else 1)


def figure(fig: go.Figure, *, title: str = "", theme: str = "light") -> View:
    """Any plotly figure (e.g. from viz.figures) as a self-contained view with plotly.js inlined."""
    return _plotly_page([fig], title=title or (fig.layout.title.text or "Figure"), theme=check_theme(theme))


def _plotly_page(figures: Sequence[go.Figure], *, title: str, theme: str, columns: int = 1) -> View:
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    colours = _PLOTLY_THEMES[theme]
    config = {"displaylogo": False, "responsive": True}
    divs, heights = [], []
    for fig in figures:
        themed = go.Figure(fig)   # a copy: the caller's figure keeps its own look
        themed.update_layout(template=colours["template"], paper_bgcolor=colours["bg"], plot_bgcolor=colours["bg"],
                             font_color=colours["fg"])
        heights.append(int(themed.layout.height or 450))
        divs.append(f'<div class="fig">{pio.to_html(themed, include_plotlyjs=False, full_html=False, config=config)}</div>')
    rows = -(-len(figures) // columns)
    height = 40 + sum(max(heights[r * columns:(r + 1) * columns]) + 8 for r in range(rows))
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        f"<style>html,body{{margin:0;background:{colours['bg']};color:{colours['fg']};"
        "font:13px/1.3 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}"
        "h1{font-size:14px;font-weight:600;margin:6px 8px}"
        f".grid{{display:grid;grid-template-columns:repeat({columns},minmax(0,1fr));gap:8px;padding:0 6px}}</style>"
        # plotly.js once for the page, inline: the view must draw offline.
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f'<h1>{html.escape(title)}</h1><div class="grid">{"".join(divs)}</div></body></html>')
    return View(page, height, title)
