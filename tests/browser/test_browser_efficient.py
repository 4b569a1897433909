"""The efficient-attention lab in Debian's Chromium: every pattern draws, summary and cost charts draw,
long texts stay usable, token text is inert.

These tests fail (never skip) when Chromium is missing: see the `_browser` fixture.
"""
from __future__ import annotations

import re
from urllib.parse import urlencode

from browser_tools import shot, wait_for_app, wait_for_charts

from viz import efficient as ef
from viz.figures import efficient as eff

TEXT = "The animal didn't cross the street because it was too tired."
N_CHARTS = 6   # pattern grid, mask grid, detail, layers x heads, cost model, measured benchmark


def open_lab(page, app_url, **params):
    page.goto(f"{app_url}/efficient_attention?{urlencode(params)}")
    wait_for_app(page, timeout=180_000)
    wait_for_charts(page, N_CHARTS)


def drawn_charts(page) -> list[dict]:
    """What plotly actually drew, per chart: heatmap images, line traces, subplot titles, title."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
        heatmaps: el.querySelectorAll('g.hm image').length,
        lines: el.querySelectorAll('g.trace.scatter path.js-line').length,
        annotations: Array.from(el.querySelectorAll('g.annotation-text-g text, .annotation-text'))
                          .map(t => t.textContent),
        title: (el.querySelector('.gtitle') || {}).textContent || '',
    }))""")


def _check_lab(page, charts):
    titles = " | ".join(c["title"] for c in charts)
    grids = [c for c in charts if c["heatmaps"] == len(ef.PATTERNS)]
    assert len(grids) == 2, titles                               # produced attention + masks
    for grid in grids:
        for name in ef.PATTERNS:                                 # every pattern has its titled panel
            assert eff.short_title_of(name) in grid["annotations"], (name, grid["annotations"])
    assert any(c["title"].startswith("Attention each pattern produces") for c in grids)
    assert any(c["title"].startswith("Masks") for c in grids)
    summary = [c for c in charts if c["title"].startswith("Where each head")]
    assert len(summary) == 1 and summary[0]["heatmaps"] == 3
    cost = [c for c in charts if "Attention score entries" in c["annotations"]]
    assert len(cost) == 1 and cost[0]["lines"] >= 3 * 9        # 9 patterns x 3 panels
    bench = [c for c in charts if c["title"].startswith("Measured on this machine")]
    assert len(bench) == 1 and bench[0]["lines"] == 2, titles
    assert page.locator("[data-testid='stException']").count() == 0
    assert "budget 3.0 s" in bench[0]["title"], bench[0]["title"]


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label`` and wait for the rerun."""
    box = page.locator("[data-testid='stSelectbox']").filter(has_text=label).locator("input")
    wanted = page.locator("[role='option']").filter(has_text=re.compile(f"^{re.escape(option)}$"))
    for _ in range(3):          # a rerun finishing just then can close the dropdown: open it again
        box.click()
        try:
            wanted.wait_for(state="visible", timeout=5_000)
            break
        except Exception:  # noqa: BLE001 - playwright TimeoutError; retried below
            page.keyboard.press("Escape")
            wait_for_app(page, timeout=60_000)
    wanted.click()
    wait_for_app(page, timeout=60_000)


def tall_shot(page, name: str) -> str:
    """Streamlit scrolls inside its own container, so a full-page shot is one screen: grow the viewport."""
    height = page.evaluate("""() => Math.max(...Array.from(document.querySelectorAll(
        "[data-testid='stMain'], [data-testid='stAppViewContainer'], section.main")).map(e => e.scrollHeight), 900)""")
    page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, 9000)})
    page.wait_for_timeout(800)      # plotly relayouts on resize
    path = shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 900})
    return path


def _detail_heatmaps(page) -> int:
    return page.evaluate("""() => {
        const el = Array.from(document.querySelectorAll('.js-plotly-plot')).find(e =>
            Array.from(e.querySelectorAll('.annotation-text')).some(t => t.textContent === 'Attention it produces'));
        return el ? el.querySelectorAll('g.hm image').length : 0; }""")


def test_every_pattern_summary_and_cost_draw(page, app_url):
    open_lab(page, app_url, text=TEXT, layer=3, head=4)
    charts = drawn_charts(page)
    _check_lab(page, charts)
    assert "Layer 3, head 4" in page.inner_text("body")
    tall_shot(page, "efficient_attention")
    # the close-up draws for every pattern (the URL follows the choice)
    for name in ef.PATTERNS:
        choose(page, "Look closer at", eff.title_of(name))
        wait_for_charts(page, N_CHARTS)
        assert _detail_heatmaps(page) == 3, name
        assert f"pattern={name}" in page.url
    shot(page, "efficient_attention_synthesizer")


def test_long_text_and_hostile_tokens(page, app_url):
    hostile = "<img src=x onerror=alert(1)> </script><b>bold</b> "
    long_text = hostile + " ".join(["the quick brown fox jumps over the lazy dog"] * 60)   # > 512 tokens
    open_lab(page, app_url, text=long_text, pattern="longformer")
    _check_lab(page, drawn_charts(page))
    body = page.inner_text("body")
    assert "truncated" in body                                   # capped at the model's 512 tokens
    assert "(pooled" in body or any("pooled" in c["title"] for c in drawn_charts(page))
    assert page.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    tall_shot(page, "efficient_attention_long")


def test_decoder_and_cross_attention(page, app_url, tiny_models):
    open_lab(page, app_url, text="the cat sat on the mat because it was tired", model=tiny_models["decoder"])
    _check_lab(page, drawn_charts(page))
    assert "causal mask" in page.inner_text("body")
    open_lab(page, app_url, text="the cat sat on the mat", target="the dog ran",
             model=tiny_models["encoder-decoder"], kind="cross")
    _check_lab(page, drawn_charts(page))
    tall_shot(page, "efficient_attention_cross")
