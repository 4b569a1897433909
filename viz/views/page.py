"""How a view becomes HTML: one fragment layout shared by every view, one standalone page shell.

A view ``name`` is four asset files: ``name.html`` (its markup only), ``name.css``, ``name.js``
and the data the builder sends.  :func:`view_fragment` puts them in the one layout
(``assets/view.html``): the theme variables and the view's CSS, the markup, the data as escaped
JSON in ``<script type="application/json">``, then ``theme.js`` and the view's script in one
function scope.  :func:`standalone_page` wraps a fragment as a page of its own (``assets/page.html``):
for an iframe, a notebook or a saved file.
"""
from __future__ import annotations

from viz.views.escape import html_text, script_json
from viz.views.template import asset, fill
from viz.views.theme import theme_css, theme_js


def view_fragment(name: str, data, *, data_id: str, theme: str, **markup: str) -> str:
    """The view ``name`` as an HTML fragment; ``markup`` fills the placeholders of ``name.html``.

    ``data`` is anything JSON can hold; the view's script reads it from the element ``data_id``.
    ``theme`` must already be checked (:func:`viz.views.theme.check_theme`).
    """
    return fill(asset("view.html"), THEMECSS=theme_css(), CSS=asset(f"{name}.css"),
                MARKUP=fill(asset(f"{name}.html"), THEME=theme, **markup).rstrip("\n"), DATAID=data_id,
                DATA=script_json(data), THEMEJS=theme_js(), JS=asset(f"{name}.js"))


def standalone_page(fragment: str, *, title: str, theme: str) -> str:
    """``fragment`` as a whole page with ``title`` (escaped here) and the theme on ``<html>``."""
    return fill(asset("page.html"), TITLE=html_text(title), THEME=theme, BODY=fragment)
