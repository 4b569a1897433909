"""The attention-flow page in Debian's Chromium: the charts draw, the limit is stated, token text is inert.

These tests fail (never skip) when Chromium is missing: see the `_browser` fixture.
"""
from __future__ import annotations

from urllib.parse import urlencode

from browser_tools import shot, wait_for_app, wait_for_charts

TEXT = "The unbelievably tired animal didn't cross the street because it was too tired."


def open_flow(page, app_url, **params):
    page.goto(f"{app_url}/attention_flow?{urlencode(params)}")
    wait_for_app(page, timeout=120_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)


def drawn_charts(page) -> dict:
    """What plotly actually drew: per chart, heatmap images and bar paths."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
        heatmaps: el.querySelectorAll('g.hm image').length,
        bars: el.querySelectorAll('g.trace.bars path').length,
        title: (el.querySelector('.gtitle') || {}).textContent || '',
    }))""")


def test_attention_flow_page_draws_every_chart(page, app_url):
    open_flow(page, app_url, text=TEXT, layer=5)
    wait_for_charts(page, 6)   # four matrices, the rollout evolution, the bars
    charts = drawn_charts(page)
    titles = " | ".join(chart["title"] for chart in charts)
    # four matrices (raw, rollout, flow, norm-based) and the per-layer rollout evolution
    assert sum(chart["heatmaps"] > 0 for chart in charts) == 5, titles
    for name in ("raw attention", "rollout", "flow", "norm-based"):
        assert any(chart["title"].startswith(f"{name} · layer 5") for chart in charts), titles
    bars = [chart for chart in charts if chart["bars"] > 0]
    assert len(bars) == 1 and bars[0]["bars"] >= 4 * 10     # four methods x at least 10 tokens
    body = page.inner_text("body")
    assert "at most 48 tokens" in body
    assert page.locator("[data-testid='stException']").count() == 0
    path = shot(page, "attention_flow")
    assert path.endswith("attention_flow.png")


def test_long_input_says_flow_is_bounded_and_token_text_is_inert(page, app_url):
    hostile = "<img src=x onerror=alert(1)> </script><b>bold</b> " + "word " * 60
    open_flow(page, app_url, text=hostile, words="1")
    body = page.inner_text("body")
    assert "flow is not computed" in body and "tokens" in body
    charts = drawn_charts(page)
    # raw, rollout and norm-based still draw; flow is left out
    assert sum(chart["heatmaps"] > 0 for chart in charts) == 4
    assert page.dialogs == []
    assert page.locator("img[src='x']").count() == 0
    shot(page, "attention_flow_long")
