"""Light and dark for the HTML views: the theme names and what a view carries for each theme.

A view is built with ``theme="light"`` or ``"dark"`` and then decides in the browser:

- its colours are the ``--ae-*`` CSS variables of ``assets/theme.css``, switched by the
  ``data-ae-theme`` attribute on the view's root element (its canvas reads the same variables);
- ``assets/theme.js`` makes a view inside a Streamlit page follow the app's real background, live.
  ``st.html`` content cannot use ``prefers-color-scheme`` (Streamlit's theme is not the system's),
  Streamlit does not rerun when a person switches its theme, and ``st.context.theme.type`` can be
  wrong on a session's first run, so the built theme is a first guess there;
- in a notebook (a sandboxed iframe) or a saved file the built theme is final.

Each view sends both themes' colour tables (a few kB), so switching needs no new data.
"""
from __future__ import annotations

from viz.figures.common import ATTENTION_SCALE, DARK_ATTENTION_SCALE, colour_lut
from viz.views.template import asset

THEMES = ("light", "dark")


def check_theme(theme: str | None) -> str:
    """``theme`` itself when it is one of :data:`THEMES`; ``None`` (e.g. an unknown
    ``st.context.theme.type``) means light."""
    if theme is None:
        return "light"
    if theme not in THEMES:
        raise ValueError(f"theme must be one of {', '.join(THEMES)}, not {theme!r}")
    return theme


def attention_luts(colorscale: str | tuple = ATTENTION_SCALE) -> dict[str, tuple[int, ...]]:
    """The attention colour table per theme.  The default scale gets its dark counterpart
    (weight 0 recedes into the dark background); any other scale is used as it is in both."""
    dark = DARK_ATTENTION_SCALE if colorscale == ATTENTION_SCALE else colorscale
    return {"light": colour_lut(colorscale), "dark": colour_lut(dark)}


def theme_css() -> str:
    """The ``--ae-*`` variables of both themes (``assets/theme.css``)."""
    return asset("theme.css")


def theme_js() -> str:
    """``followTheme``, ``themeColour`` and ``themeRGB`` (``assets/theme.js``): inline it in the same
    function scope as the view's own script."""
    return asset("theme.js")
