"""Helpers for tests that drive the app in Debian's Chromium through Playwright."""
from __future__ import annotations

import os
import shutil

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def wait_for_app(page, *, timeout: float = 60_000, settle_ms: int = 300) -> None:
    """Wait until the Streamlit script has finished running (as Streamlit's own e2e tests do)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_timeout(settle_ms)  # a rerun triggered by the last interaction may not have started yet
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    # Spinners (model loading, capture) mean the page is still settling.
    page.wait_for_function("!document.querySelector(\"[data-testid='stSpinner']\")", timeout=timeout)


def wait_for_charts(page, n: int, *, timeout: float = 120_000) -> None:
    """Wait until ``n`` plotly charts are on the page and every one is drawn.

    Charts appear one by one; a chart still drawing has no traces yet, or heatmap
    groups without their image.
    """
    page.wait_for_function(f"""() => {{
        const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
        return plots.length >= {int(n)} && plots.every(el =>
            el.querySelector('g.hm, g.trace') &&
            Array.from(el.querySelectorAll('g.hm')).every(hm => hm.querySelector('image')));
    }}""", timeout=timeout)


def heatmap_frame(page, *, timeout: float = 60_000):
    """The heatmap page's canvas view (viz/views/heatmap.py, in the page via st.html), once it has drawn.

    A locator scoped to the st.html block that holds it: ``.locator("#hm-tip")`` etc.
    """
    page.locator("#hm[data-drawn='1']").wait_for(timeout=timeout)
    return page.locator("[data-testid='stHtml']", has=page.locator("#hm")).first


def heatmap_data(frame) -> dict:
    """What the canvas heatmap was given: title, labels ``q``/``k``, sizes, font."""
    return frame.locator("#hm").evaluate(
        "() => { const d = window.heatmap.data; return {title: d.title, q: d.q, k: d.k, nq: d.nq, nk: d.nk,"
        " font: d.font}; }")


def hover_heatmap_cell(page, frame, i: int, j: int) -> str:
    """Move the real mouse over cell (query i, key j) and return the tooltip's text."""
    frame.locator("#hm").scroll_into_view_if_needed()
    box = frame.locator("#hm").bounding_box()
    centre = frame.locator("#hm").evaluate(f"() => window.heatmap.cellCentre({int(i)}, {int(j)})")
    page.mouse.move(box["x"] + centre["x"], box["y"] + centre["y"])
    frame.locator(f"#hm[data-hover='{int(i)},{int(j)}']").wait_for(timeout=10_000)
    return frame.locator("#hm-tip").inner_text()


def shot(page, name: str) -> str:
    """Save a screenshot under $VIZ_SHOTS (default /tmp/shots) for a person to look at."""
    folder = os.environ.get("VIZ_SHOTS", "/tmp/shots")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path


def text_box_value(page, *, timeout: float = 30_000) -> str:
    """The sidebar's Text box once it holds a value: right after a rerun from a link, the box can be drawn a
    moment before Streamlit fills it in."""
    box = page.get_by_role("textbox", name="Text")
    box.wait_for(timeout=timeout)
    page.wait_for_function("el => el.value !== ''", arg=box.element_handle(), timeout=timeout)
    return box.input_value()
