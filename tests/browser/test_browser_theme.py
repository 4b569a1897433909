"""The custom views follow Streamlit's light or dark theme in the running app (viz/views/theme.py).

The app's theme here follows the system setting; Chromium's emulated colour scheme switches it
while the page stays open.  Streamlit does not rerun on a switch, so the views must follow by
themselves: the canvas heatmap (st.html, the app's own document) and the head view (st.iframe,
a same-origin page) read the app's background and redraw.  Screenshots go to /tmp/shots.
"""
from __future__ import annotations

import re

from browser_tools import heatmap_frame, shot, wait_for_app
from viz.figures.common import DARK_ATTENTION_SCALE, colour_lut

TEXT = "The animal didn't cross the street because it was too tired."
APP_BACKGROUND = "getComputedStyle(document.querySelector('.stApp')).backgroundColor"
CORNER_PIXEL = """sel => {
    const c = document.querySelector(sel);
    return Array.from(c.getContext('2d').getImageData(2, c.height - 2, 1, 1).data.slice(0, 3));
}"""


def rgb(css: str) -> list[int]:
    return [int(float(v)) for v in re.findall(r"[\d.]+", css)[:3]]


def test_heatmap_and_head_view_follow_a_live_theme_switch(app_url, page):
    page.emulate_media(color_scheme="light")
    page.goto(f"{app_url}/heatmap?text={TEXT}&layer=2&head=3")
    wait_for_app(page, timeout=120_000)
    view = heatmap_frame(page)
    hm = view.locator("#hm")
    assert hm.get_attribute("data-ae-theme") == "light"
    assert page.evaluate(CORNER_PIXEL, "#hm-plot") == rgb(page.evaluate(APP_BACKGROUND)) == [255, 255, 255]
    runs = page.evaluate("document.querySelectorAll('#hm-data').length")

    page.emulate_media(color_scheme="dark")          # the OS goes dark: Streamlit restyles, no rerun
    page.locator("#hm[data-ae-theme='dark']").wait_for(timeout=10_000)
    app_bg = rgb(page.evaluate(APP_BACKGROUND))
    assert sum(app_bg) < 150
    page.wait_for_function(f"""() => {{ const c = document.querySelector('#hm-plot');
        const p = c.getContext('2d').getImageData(2, c.height - 2, 1, 1).data;
        return p[0] === {app_bg[0]} && p[1] === {app_bg[1]} && p[2] === {app_bg[2]}; }}""", timeout=10_000)
    # the cells switched to the dark colour scale: a cell's pixel is the dark LUT colour of its weight
    data = hm.evaluate("() => window.heatmap.data")
    centre = hm.evaluate("() => window.heatmap.cellCentre(1, 0)")
    dpr = page.evaluate("window.devicePixelRatio")
    pixel = hm.evaluate(f"""() => Array.from(document.getElementById('hm-plot').getContext('2d')
        .getImageData({int(centre['x'] * dpr)}, {int(centre['y'] * dpr)}, 1, 1).data.slice(0, 3))""")
    t = 3 * max(0, min(255, round(hm.evaluate("() => window.heatmap.weight(1, 0)") / data["zmax"] * 255)))
    assert pixel == list(colour_lut(DARK_ATTENTION_SCALE)[t:t + 3])
    assert page.evaluate("document.querySelectorAll('#hm-data').length") == runs   # the same view, redrawn
    shot(page, "app_heatmap_dark")

    page.goto(f"{app_url}/head_view?text={TEXT}&layer=2")
    wait_for_app(page, timeout=120_000)
    frame = page.frame_locator("iframe").first
    frame.locator("#hv[data-ready='1']").wait_for(timeout=60_000)
    frame.locator("html[data-ae-theme='dark']").wait_for(timeout=10_000)
    assert rgb(frame.locator("body").evaluate("b => getComputedStyle(b).backgroundColor")) == app_bg
    dark_swatch = frame.locator(".hv-head .sw").first.evaluate("s => getComputedStyle(s).backgroundColor")
    shot(page, "app_head_view_dark")

    page.emulate_media(color_scheme="light")         # and back, still without a rerun
    frame.locator("html[data-ae-theme='light']").wait_for(timeout=10_000)
    assert rgb(frame.locator("body").evaluate("b => getComputedStyle(b).backgroundColor")) == [255, 255, 255]
    assert frame.locator(".hv-head .sw").first.evaluate("s => getComputedStyle(s).backgroundColor") != dark_swatch
