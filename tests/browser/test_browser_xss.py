"""XSS vectors typed into the sidebar's text box, in Chromium: no dialog fires, nothing is injected, the text stays text.

Bounded in time: every vector one by one on the home and heatmap pages (the
two that show the tokens), one combined payload on every other page in app.py.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from browser_tools import heatmap_data, heatmap_frame, shot, wait_for_app, text_box_value
from test_hostile import XSS_PAYLOADS

ROOT = Path(__file__).resolve().parents[2]   # tests/browser/ -> the repository
PAGES = re.findall(r'url_path="([\w-]+)"', (ROOT / "app.py").read_text())
COMBINED = " ".join(XSS_PAYLOADS[:14])

# Anything a payload could have planted: inline handlers, script-ish elements, the flag some payloads set.
INJECTED = """() => {
  const handlers = document.querySelectorAll('[onerror],[onload],[onfocus],[ontoggle],[onclick]').length;
  const planted = document.querySelectorAll('img[src="x"],iframe[src^="javascript"],object[data^="javascript"],'
    + 'a[href^="javascript"],body body,details[ontoggle],input[autofocus][onfocus],video source').length;
  return {handlers, planted};
}"""


def _url(app_url: str, name: str) -> str:
    """The default page lives at "/" (Streamlit answers /home with a "page not found" dialog)."""
    return f"{app_url}/" if name == "home" else f"{app_url}/{name}"


def _submit(page, text: str) -> None:
    box = page.get_by_role("textbox", name="Text")
    box.fill(text)
    page.get_by_role("button", name="Run").click()
    wait_for_app(page)


def _assert_inert(page, text: str, where: str) -> None:
    assert page.dialogs == [], f"{where}: a dialog fired for {text!r}: {page.dialogs}"
    assert page.evaluate(INJECTED) == {"handlers": 0, "planted": 0}, f"{where}: {text!r}"
    assert page.locator("[data-testid='stException']").count() == 0, where
    # The text box holds the payload literally, and so does the shared link.
    assert text_box_value(page) == text, where
    assert parse_qs(urlparse(page.url).query).get("text") == [text], where


def test_pages_found():
    assert "home" in PAGES and "heatmap" in PAGES and len(PAGES) >= 2


@pytest.mark.parametrize("name", ["home", "heatmap"])
def test_every_vector_on_token_pages(page, app_url, name):
    page.goto(_url(app_url, name))
    wait_for_app(page)
    for vector in XSS_PAYLOADS:
        _submit(page, vector)
        _assert_inert(page, vector, f"{name}")
    if name == "heatmap":
        # The last vector's tokens reach the canvas view as text: 'data', ':', '<', 'script'...
        frame = heatmap_frame(page)
        labels = heatmap_data(frame)["k"]
        assert XSS_PAYLOADS[-1].startswith("data:text/html,<script>")
        assert "<" in labels and "script" in labels and "html" in labels
        assert frame.locator("script").count() == 2                 # the view's own data and code
        assert frame.locator("img, iframe, object, a, [onerror], [onload], [onclick]").count() == 0
    shot(page, f"xss_{name}")


@pytest.mark.parametrize("name", [p for p in PAGES if p not in ("home", "heatmap")])
def test_combined_payload_on_every_other_page(page, app_url, name):
    page.goto(_url(app_url, name))
    wait_for_app(page)
    _submit(page, COMBINED)
    _assert_inert(page, COMBINED, name)


def test_broken_utf8_in_a_shared_link(page, app_url):
    """A lone surrogate cannot be typed, but a hand-made link can carry its (invalid) UTF-8 bytes."""
    page.goto(f"{app_url}/heatmap?text=abc%ED%A0%80xyz%00%E2%80%AEend")
    wait_for_app(page)
    heatmap_frame(page)
    assert page.locator("[data-testid='stException']").count() == 0
    value = text_box_value(page)
    assert value.startswith("abc") and value.endswith("end") and "\ufffd" in value  # bad bytes replaced
    assert page.dialogs == []
