"""A long input's heatmap in Chromium: the block overview, a box dragged to zoom in, labels and exact weights.

The tiny Llama of tests/test_long.py (4,096 positions) at ~1,500 tokens, served with VIZ_FULL_PATTERN_MB=1
so the capture takes the long path (a LazyPattern recomputing each layer). Fails, never skips, without
Chromium (see the `_browser` fixture).
"""
from __future__ import annotations

from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
from browser_tools import heatmap_frame, hover_heatmap_cell, shot, wait_for_app
from test_long import long_llama, long_text  # noqa: F401 - the shared long-input model
from test_long_views import eager  # noqa: F401 - transformers' own eager attention of long_text()


@pytest.fixture(scope="module")
def long_app_url(tmp_path_factory):
    from conftest import streamlit_server
    with streamlit_server(tmp_path_factory.mktemp("long-server") / "streamlit.log", VIZ_FULL_PATTERN_MB="1") as url:
        yield url


def heatmap_state(frame) -> dict:
    return frame.locator("#hm").evaluate(
        "() => { const d = window.heatmap.data; return {q0: d.q0, k0: d.k0, qs: d.qs, ks: d.ks, nq: d.nq, nk: d.nk,"
        " whole: d.whole, q: d.q, k: d.k, bytes: document.getElementById('hm-data').textContent.length}; }")


def test_drag_a_box_on_a_long_heatmap_to_read_labels_and_exact_weights(page, long_app_url, long_llama, eager):  # noqa: F811
    tokens, reference = eager
    t = len(tokens)
    page.goto(f"{long_app_url}/heatmap?model={quote(long_llama)}&text={quote(long_text())}&layer=1&head=2")
    wait_for_app(page, timeout=240_000)
    frame = heatmap_frame(page, timeout=120_000)
    overview = heatmap_state(frame)
    assert overview["whole"] is True and overview["qs"] == 3 and overview["nq"] == -(-t // 3)
    assert overview["bytes"] < 2_000_000                       # blocks, not 1,500 x 1,500 floats
    tip = hover_heatmap_cell(page, frame, 420, 100)
    assert "largest weight" in tip and "drag a box" in tip and "queries 1260\u20131262" in tip
    shot(page, "long_heatmap_overview")

    # drag a box over block cells 400..413 x 396..409: positions 1200..1241 x 1188..1229
    box = frame.locator("#hm").bounding_box()
    start = frame.locator("#hm").evaluate("() => window.heatmap.cellCentre(400, 396)")
    end = frame.locator("#hm").evaluate("() => window.heatmap.cellCentre(413, 409)")
    page.mouse.move(box["x"] + start["x"], box["y"] + start["y"])
    page.mouse.down()
    page.mouse.move(box["x"] + end["x"], box["y"] + end["y"], steps=8)
    page.mouse.up()
    page.wait_for_function("() => window.heatmap && window.heatmap.data.whole === false", timeout=120_000)
    wait_for_app(page, timeout=120_000)
    frame = heatmap_frame(page)
    region = heatmap_state(frame)
    assert (region["q0"], region["k0"], region["qs"], region["ks"]) == (1200, 1188, 1, 1)
    assert (region["nq"], region["nk"]) == (42, 42)
    labels = overview["q"]                                       # every token's label, sent with the overview
    assert len(labels) == t and all(lab.strip() in tok for lab, tok in zip(labels, tokens))
    assert region["q"] == labels[1200:1242] and region["k"] == labels[1188:1230]
    assert "queries=1200-1241" in page.url and "keys=1188-1229" in page.url

    # a cell of the region: its tokens and the exact weight (eager attention, 4 decimals)
    tip = hover_heatmap_cell(page, frame, 22, 15)                 # query 1222, key 1203
    assert f"query 1222 {labels[1222]}" in tip and f"key 1203 {labels[1203]}" in tip
    shown = float(tip.split("weight ")[1].split()[0])
    assert abs(shown - reference[1, 2, 1222, 1203]) <= 0.5e-4 + 1e-6
    # the labels are drawn: the canvas holds the region's tokens as tick text (read back from its pixels
    # is not possible; the accessible description lists them)
    assert labels[1222] in frame.locator("#hm-desc").text_content()
    path = shot(page, "long_heatmap_region")
    assert path.endswith(".png")

    # the page's downloads: the region's CSV and the shown layer's NPZ, both exact
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name="Download CSV").click()
    frame_csv = pd.read_csv(info.value.path(), keep_default_na=False)
    assert len(frame_csv) == 42 * 42 and set(frame_csv["head"]) == {2} and set(frame_csv["layer"]) == {1}
    np.testing.assert_allclose(frame_csv["weight"], reference[1, 2, 1200:1242, 1188:1230].ravel(), atol=1e-6)
    with page.expect_download(timeout=120_000) as info:
        page.get_by_role("button", name="Download NPZ").click()
    assert info.value.suggested_filename == "attention_L1.npz"
    with np.load(info.value.path()) as data:
        assert list(data["layers"]) == [1] and data["attentions"].shape == (1, 4, t, t)
        assert np.abs(data["attentions"][0] - reference[1]).max() < 1e-5

    # the form shows the same region; "Whole matrix" goes back to the blocks
    values = [page.locator("[data-testid='stNumberInput'] input").nth(i).input_value() for i in range(4)]
    assert values == ["1200", "1241", "1188", "1229"]
    frame.locator("#hm-whole").click()
    page.wait_for_function("() => window.heatmap && window.heatmap.data.whole === true", timeout=120_000)
    wait_for_app(page, timeout=120_000)
    assert "queries=" not in page.url
    assert np.isfinite(reference).all()
