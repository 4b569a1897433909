"""The one place where text meets HTML or a ``<script>`` element in the views.

Token text is user input: it reaches a view only through :func:`script_json` (inside
``<script type="application/json">``) or :func:`html_text` (element text and attribute values),
and the scripts then set it with ``textContent`` or draw it with ``fillText``, never as markup.
``tests/browser/test_browser_xss.py`` and ``tests/test_hostile.py`` try hostile tokens on both.
"""
from __future__ import annotations

import html
import json


def script_json(obj) -> str:
    """JSON that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c`` etc. so no token can close the script element or
    open a comment, and U+2028/U+2029 are escaped for old JS parsers.
    """
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def html_text(text: str) -> str:
    """``text`` escaped for HTML element content or a quoted attribute value (``<>&"'``)."""
    return html.escape(str(text), quote=True)
