"""Tokens of a text, each coloured by a number: an attention row on the text, or surprisal.

Plain HTML and CSS (no script): every token is a span whose background is the value on a colour
scale, with a tooltip (hover, or tab to it) holding its details. Token text is user input and
goes in only through :func:`viz.views.escape.html_text`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from viz.figures.common import ATTENTION_SCALE, colour_lut
from viz.views.escape import html_text
from viz.views.template import asset

SURPRISAL_SCALE = "OrRd"


def _colour(lut: tuple[int, ...], value: float) -> tuple[str, bool]:
    """(css colour, dark background?) for ``value`` in [0, 1] on a flattened RGB table."""
    n = len(lut) // 3
    i = int(round(min(max(value, 0.0), 1.0) * (n - 1)))
    r, g, b = lut[3 * i: 3 * i + 3]
    return f"rgb({r},{g},{b})", (0.299 * r + 0.587 * g + 0.114 * b) < 140


def token_text(labels: Sequence[str], values: np.ndarray, *, tips: Sequence[str] | None = None,
               vmax: float | None = None, scale: str = ATTENTION_SCALE, special: np.ndarray | None = None,
               mark: int | None = None, shown: int | None = None, title: str = "", note: str = "",
               theme: str = "light") -> str:
    """An HTML fragment: ``labels[i]`` on a background of ``values[i] / vmax`` (NaN: no colour).

    ``tips[i]`` is the tooltip of token i (plain text, lines split by newlines); ``mark`` outlines
    one token (the one that is looking, say); tokens from ``shown`` on are drawn faded (the future
    a decoder cannot see).
    """
    values = np.asarray(values, dtype=float)
    if len(values) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(values)} values")
    finite = values[np.isfinite(values)]
    top = float(vmax) if vmax else (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
    lut = colour_lut(scale)
    spans = []
    for i, label in enumerate(labels):
        classes = ["tok"]
        if special is not None and special[i]:
            classes.append("special")
        if mark is not None and i == mark:
            classes.append("mark")
        style = ""
        if shown is not None and i >= shown:
            classes.append("future")
        elif np.isfinite(values[i]):
            colour, dark = _colour(lut, values[i] / top)
            style = f' style="background:{colour}' + (';color:#fff"' if dark else '"')
        tip = f'<span class="tip">{html_text(tips[i])}</span>' if tips is not None else ""
        spans.append(f'<span class="{" ".join(classes)}" tabindex="0" data-pos="{i}"{style}>'
                     f'{html_text(label)}{tip}</span>')
    head = f'<div class="tt-title">{html_text(title)}</div>' if title else ""
    foot = f'<div class="tt-note">{html_text(note)}</div>' if note else ""
    dark = " dark" if theme == "dark" else ""
    # <wbr> between tokens: labels carry no spaces (the spans' margins show them), so without a break
    # opportunity the whole text is one unbreakable word running off the page.
    return (f'<style>{asset("token_text.css")}</style><div class="tt{dark}">{head}<div>{"<wbr>".join(spans)}</div>'
            f'{foot}</div>')
