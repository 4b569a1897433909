"""Reading the views' asset files (viz/views/assets/*.html, *.css, *.js) and filling their placeholders.

The JavaScript, CSS and HTML of the views live in real files so they can be linted, highlighted
and diffed; they are read once per process through :mod:`importlib.resources` (so they work from
a wheel or a zip as well as from a checkout) and inlined into the page: no CDN, a classroom may
be offline.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_PLACEHOLDER = re.compile(r"__([A-Z]+)__")


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The text of ``viz/views/assets/<name>`` (read once, then cached)."""
    return resources.files("viz.views").joinpath("assets", name).read_text(encoding="utf-8")


def fill(template: str, **fields: str) -> str:
    """``template`` with every ``__NAME__`` replaced by ``fields["NAME"]``, in one pass.

    One pass means text that was put in is never searched again: a token that reads
    ``__JS__`` stays a token.  The values go in as they are, so the caller escapes them for
    their place (:mod:`viz.views.escape`); a placeholder without a value raises ``KeyError``.
    """
    return _PLACEHOLDER.sub(lambda m: fields[m.group(1)], template)
