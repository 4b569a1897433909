"""Chromium: knock a head out from a head picker, see the banner on every page and the prediction change."""
from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from browser_tools import shot, wait_for_app

from viz.ablation import decoder_effect
from viz.models import load_model

WORDS = "yellow candle tiger basket violin window forest apple pencil rocket"
TEXT = f"{WORDS}. {WORDS}. {WORDS}."


def test_knock_out_a_head_and_see_the_prediction_change(page, app_url):
    page.goto(f"{app_url}/")
    wait_for_app(page, timeout=300_000)
    page.goto(f"{app_url}/heatmap?model=embedded-llm&text={quote(TEXT)}&layer=18&head=6")
    wait_for_app(page, timeout=300_000)
    page.get_by_role("button", name="Knock this head out").click()
    wait_for_app(page, timeout=300_000)
    assert parse_qs(urlsplit(page.url).query)["ablate"] == ["18:6"]
    assert page.get_by_text("Heads knocked out (zero): L18 H6").is_visible()
    page.get_by_role("link", name="Ablation").click()
    wait_for_app(page, timeout=300_000)
    expected = decoder_effect(TEXT, [(18, 6)], model=load_model("embedded-llm"))
    shown = page.locator("[data-testid='stMetric']", has_text="Mean KL").locator("[data-testid='stMetricValue']")
    assert abs(float(shown.inner_text().split()[0]) - expected.mean_kl) < 1e-4
    assert expected.mean_kl > 0.05 and np.nanmax(np.abs(expected.p_next_before - expected.p_next_after)) > 0.1
    page.locator(".js-plotly-plot").first.wait_for()
    shot(page, "ablation_L18H6")
