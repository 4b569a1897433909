"""Unit tests of the model view builder (viz/views/model_view.py, viz/figures/model_view.py) on hand-made arrays."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from viz.figures.model_view import model_view_figure, thumbnail_from_selection
from viz.views.model_view import GAP_RGB, build_mosaic, downsample, mosaic_png
from viz.result import Block, TokenSeq


def make_seq(n: int) -> TokenSeq:
    return TokenSeq(tokens=tuple(f"t{i}" for i in range(n)), labels=tuple(f"t{i}" for i in range(n)),
                    token_ids=np.arange(n), special=np.zeros(n, bool), word_ids=np.arange(n),
                    segment_ids=np.zeros(n, np.int64))


def random_pattern(n_layers, n_heads, n_q, n_k, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.random((n_layers, n_heads, n_q, n_k)).astype(np.float32) ** 4
    return p / p.sum(-1, keepdims=True)


def test_downsample_is_a_block_mean():
    m = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(downsample(m, size=2), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(downsample(m, size=8), m)          # small matrices stay as they are


def test_downsample_uneven_bins_keep_the_mean():
    m = np.random.default_rng(1).random((2, 3, 130, 70)).astype(np.float32)
    small = downsample(m, size=64)
    assert small.shape == (2, 3, 64, 64)
    # near-equal bins: each output is the mean of its bin, so the grand mean barely moves
    np.testing.assert_allclose(small.mean(axis=(-2, -1)), m.mean(axis=(-2, -1)), rtol=0.02)
    np.testing.assert_allclose(small[0, 0, 0, 0], m[0, 0, :2, :1].mean(), rtol=1e-6)


def test_mosaic_places_each_head_in_its_cell():
    pattern = np.zeros((2, 3, 4, 4), np.float32)
    for layer in range(2):
        for head in range(3):
            pattern[layer, head, layer, head] = 1.0       # one hot pixel, unique per thumbnail
    mosaic = build_mosaic(pattern, thumb=64)
    assert (mosaic.cell_h, mosaic.cell_w, mosaic.pad) == (4, 4, 1)
    assert mosaic.values.shape == (2 * 4 + 1, 3 * 4 + 2)
    for layer in range(2):
        for head in range(3):
            r, c = mosaic.origin(layer, head)
            cell = mosaic.values[r:r + 4, c:c + 4]
            assert cell[layer, head] == 255 and cell.sum() == 255
    assert mosaic.gap[4, :].all() and mosaic.gap[:, 4].all() and not mosaic.gap[:4, :4].any()


def test_mosaic_normalisation():
    pattern = np.zeros((1, 2, 2, 2), np.float32)
    pattern[0, 0] = [[1.0, 0.0], [0.5, 0.5]]
    pattern[0, 1] = [[0.5, 0.5], [0.5, 0.5]]
    per_head = build_mosaic(pattern, normalize="head")
    assert per_head.values[0, 0] == 255 and per_head.values[0, 3] == 255      # each head to its max
    shared = build_mosaic(pattern, normalize="global")
    assert shared.values[0, 0] == 255 and shared.values[0, 3] == 128          # one scale for all
    with pytest.raises(ValueError):
        build_mosaic(pattern, normalize="row")


def test_png_has_mosaic_size_and_grey_gaps():
    mosaic = build_mosaic(random_pattern(2, 3, 10, 10))
    img = np.asarray(Image.open(io.BytesIO(mosaic_png(mosaic))).convert("RGB"))
    assert img.shape[:2] == mosaic.values.shape
    assert (img[mosaic.gap] == GAP_RGB).all()
    # stronger weight -> darker pixel with the Blues scale
    hot, cold = np.unravel_index(mosaic.values.argmax(), mosaic.values.shape), None
    flat = np.where(~mosaic.gap, mosaic.values.astype(int), 999)
    cold = np.unravel_index(flat.argmin(), flat.shape)
    assert img[hot].sum() < img[cold].sum()


def test_figure_is_one_image_trace_plus_click_markers():
    n_layers, n_heads = 3, 4
    block = Block("encoder", random_pattern(n_layers, n_heads, 9, 9), make_seq(9), make_seq(9), False)
    fig = model_view_figure(block, selected=(1, 2))
    assert [t.type for t in fig.data] == ["image", "scatter"]
    markers = fig.data[1]
    assert len(markers.x) == n_layers * n_heads
    np.testing.assert_array_equal(np.asarray(markers.customdata)[6], [1, 2])   # point 6 = layer 1, head 2
    assert list(fig.layout.xaxis.ticktext) == [f"head {h}" for h in range(n_heads)]
    assert list(fig.layout.yaxis.ticktext) == [f"layer {i}" for i in range(n_layers)]
    assert len(fig.layout.shapes) == 1                                          # the selected outline
    # marker 6 sits inside the thumbnail of layer 1, head 2
    mosaic = build_mosaic(block.pattern)
    r, c = mosaic.origin(1, 2)
    assert c <= markers.x[6] <= c + mosaic.cell_w and r <= markers.y[6] <= r + mosaic.cell_h


def test_thumbnail_from_selection_shapes():
    points = [{"curve_number": 1, "point_index": 7, "customdata": [1, 3]}]
    assert thumbnail_from_selection({"selection": {"points": points}}, 4) == (1, 3)
    assert thumbnail_from_selection({"points": [{"curve_number": 1, "point_index": 7}]}, 4) == (1, 3)
    assert thumbnail_from_selection([{"curve_number": 1, "customdata": [2, 1]}], 4) == (2, 1)
    # customdata that arrived as an undecoded typed array is ignored, the index is enough
    assert thumbnail_from_selection([{"curve_number": 1, "point_index": 5,
                                      "customdata": {"dtype": "i1", "bdata": "AQI="}}], 4) == (1, 1)
    assert thumbnail_from_selection([{"curve_number": 0, "point_index": 2}], 4) is None
    assert thumbnail_from_selection({"selection": {"points": []}}, 4) is None
    assert thumbnail_from_selection(None, 4) is None


def test_512_tokens_model_view_is_small():
    n = 512
    block = Block("encoder", random_pattern(6, 12, n, n, seed=3), make_seq(n), make_seq(n), False)
    fig = model_view_figure(block)
    size = len(fig.to_json().encode())
    assert size <= 8 * 1024 * 1024
    png = base64.b64decode(fig.data[0].source.split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (12 * 64 + 11 * 6, 6 * 64 + 5 * 6)


# ------------------------------------------------------------------ page wiring (AppTest)
def test_page_opens_the_url_head(app_test):
    import json
    at = app_test("pages/model_view.py", text="The cat sat on the mat.", layer=1, head=4)
    assert not at.exception
    assert at.selectbox(key="w_layer").value == "1" and at.selectbox(key="w_head").value == "4"
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    mosaic = json.loads(charts[0].proto.spec)
    assert [t["type"] for t in mosaic["data"]] == ["image", "scatter"]
    assert len(mosaic["layout"]["shapes"]) == 1                     # the opened head is outlined
    assert "points" in list(charts[0].proto.selection_mode) or charts[0].proto.selection_mode
    big = json.loads(charts[1].proto.spec)
    assert "layer 1 · head 4" in big["layout"]["title"]["text"]
    at.selectbox(key="w_head").select("mean").run()
    big = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert "mean of heads" in big["layout"]["title"]["text"]
    assert not json.loads(at.get("plotly_chart")[0].proto.spec)["layout"].get("shapes")


def test_page_decoder_model(app_test, tiny_models):
    import json
    at = app_test("pages/model_view.py", text="the cat sat on the mat", model=tiny_models["decoder"])
    assert not at.exception
    mosaic = json.loads(at.get("plotly_chart")[0].proto.spec)
    n_layers = len(mosaic["layout"]["yaxis"]["ticktext"])
    assert len(mosaic["data"][1]["customdata"]) == n_layers * len(mosaic["layout"]["xaxis"]["ticktext"])
