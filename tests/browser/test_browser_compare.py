"""The compare_heads page: AppTest wiring, then what a person sees in Chromium."""
from __future__ import annotations

import dataclasses
import re
import urllib.parse

import numpy as np

from browser_tools import shot, wait_for_app
from viz import stats

PAGE = "pages/compare_heads.py"
TEXT = "The animal didn't cross the street, because it was too tired."


def _no_errors(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# ------------------------------------------------------------------ AppTest

def test_metrics_tab_table_matches_stats(app_test):
    at = app_test(PAGE, text=TEXT, metric="prev_share", layer="2", head="5")
    _no_errors(at)
    assert at.title[0].value == "Compare heads"
    assert at.selectbox(key="w_metric").value == "prev_share"
    table = at.dataframe[0].value
    assert list(table.columns) == ["layer", "head", *stats.METRICS] and len(table) == 6 * 12
    from viz.capture import capture
    expected = stats.head_metrics(capture(TEXT).block())
    np.testing.assert_allclose(table["prev_share"], expected["prev_share"].round(4), atol=1e-4)
    # the selected head from the URL is the one opened
    assert at.selectbox(key="w_layer").value == "2" and at.selectbox(key="w_head").value == "5"
    assert any(c.value.startswith("entropy ") for c in at.caption)
    assert stats.METRIC_EXPLANATIONS["punct_share"] in [c.value for c in at.caption]


def test_similarity_tab_lists_nearest_heads(app_test):
    at = app_test(PAGE, text=TEXT, cmp_tab="Similarity map", layer="1", head="3")
    _no_errors(at)
    nearest = at.dataframe[0].value
    assert list(nearest.columns) == ["layer", "head", "distance"] and len(nearest) == 5
    assert (1, 3) not in set(zip(nearest["layer"], nearest["head"]))
    assert nearest["distance"].is_monotonic_increasing
    assert any("layer 1, head 3" in m.value for m in at.markdown)


def test_side_by_side_two_heads_from_url(app_test):
    at = app_test(PAGE, text=TEXT, cmp_tab="Side by side", a="0.1", b="5.11")
    _no_errors(at)
    assert at.dataframe[0].value.index.tolist() == ["A (layer 0, head 1)", "B (layer 5, head 11)"]


def test_side_by_side_two_models(app_test, tiny_models):
    at = app_test(PAGE, text="the cat sat on the mat", cmp_tab="Side by side", compare="Two models",
                  model2=tiny_models["encoder"])
    _no_errors(at)
    summary = at.dataframe[0].value
    assert len(summary) == 2 and "mean entropy" in summary.columns


def test_detectors_for_a_decoder(app_test, tiny_models):
    at = app_test(PAGE, text="the cat sat on the mat", model=tiny_models["decoder"], cmp_tab="Detectors")
    _no_errors(at)
    det = at.dataframe[0].value
    assert list(det.columns) == ["layer", "head", "previous_token", "duplicate_token", "induction", "sink"]  # sink: issue 14
    assert len(det) == 2 * 4 and det["induction"].between(0, 1).all()


def test_detectors_for_an_encoder(app_test):
    at = app_test(PAGE, text=TEXT, cmp_tab="Detectors")
    _no_errors(at)
    det = at.dataframe[0].value
    assert list(det.columns) == ["layer", "head", "positional", "positional_offset", "special"]


def test_corpus_tab_runs_capped_sample_corpus(app_test, monkeypatch):
    import viz.settings
    monkeypatch.setattr(viz.settings, "SETTINGS", dataclasses.replace(viz.settings.SETTINGS, upload_max_lines=4))
    at = app_test(PAGE, text=TEXT, cmp_tab="Corpus")
    _no_errors(at)
    assert any("only the first 4 are used" in w.value for w in at.warning)
    at.button(key="cmp_corpus_start").click().run(timeout=300)
    _no_errors(at)
    assert [s.value for s in at.success] == ["Mean metrics over 4 texts."]
    table = at.dataframe[0].value
    assert (table["n_texts"] == 4).all() and len(table) == 6 * 12


# ------------------------------------------------------------------ Chromium

def test_compare_heads_in_chromium(page, app_url):
    text = 'Mary said: "the <b>keys</b> are here", and she left.'
    page.goto(f"{app_url}/compare_heads?text={urllib.parse.quote(text)}&metric=confidence")
    wait_for_app(page)
    # plotly charts and the table are drawn lazily after the script finished
    page.wait_for_selector("[data-testid='stPlotlyChart'] .js-plotly-plot", timeout=30_000)
    page.wait_for_selector("[data-testid='stDataFrame']", timeout=30_000)
    page.wait_for_timeout(500)
    path = shot(page, "compare_heads")
    assert page.get_by_role("heading", name="Compare heads").is_visible()
    charts = page.locator("[data-testid='stPlotlyChart']")
    assert charts.count() >= 3                            # metric grid, head heatmap, small multiples
    grid = charts.first
    assert grid.locator(".hm, .heatmaplayer image, g.heatmaplayer").count() > 0   # drawn as a heatmap
    assert "confidence" in grid.inner_text()
    table = page.locator("[data-testid='stDataFrame']").first
    assert table.is_visible()
    # the grid draws on a canvas; its accessible table carries the headers and values
    headers = table.locator("[role='columnheader']").all_text_contents()
    assert [h.strip() for h in headers] == ["layer", "head", *stats.METRICS]
    assert table.locator("tbody tr").count() >= 10
    table.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    shot(page, "compare_heads_table")
    # user text is shown as text, never as markup
    assert page.locator("b", has_text="keys").count() == 0
    assert page.dialogs == []

    # click the cell of layer 3, head 7 in the metric grid: that head opens
    grid.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    box = grid.locator(".nsewdrag").first.bounding_box()
    x = box["x"] + box["width"] * (7 + 0.5) / 12
    y = box["y"] + box["height"] * (3 + 0.5) / 6
    page.mouse.click(x, y)
    wait_for_app(page)
    page.wait_for_function("location.search.includes('layer=3') && location.search.includes('head=7')",
                           timeout=30_000)
    wait_for_app(page)
    assert re.search(r"layer 3 · head 7", page.locator("[data-testid='stPlotlyChart']").nth(1).inner_text())
    shot(page, "compare_heads_clicked")
    assert path.endswith("compare_heads.png")


def test_similarity_map_in_chromium(page, app_url):
    page.goto(f"{app_url}/compare_heads?text=The+cat+sat+on+the+mat.&cmp_tab=Similarity+map&layer=2&head=4")
    wait_for_app(page)
    page.wait_for_selector("[data-testid='stPlotlyChart'] .js-plotly-plot", timeout=30_000)
    page.wait_for_timeout(500)
    chart = page.locator("[data-testid='stPlotlyChart']").first
    assert chart.locator(".scatterlayer .trace").count() >= 6 + 2        # one trace per layer + rings
    assert "layer 5" in chart.inner_text()                              # legend: colour = layer
    assert page.get_by_text("Heads nearest to layer 2, head 4").is_visible()
    shot(page, "compare_heads_similarity")
