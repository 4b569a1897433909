"""The canvas heatmap (viz/views/heatmap.py): its payload on hand-made arrays, and the heatmap page's wiring."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from viz.figures.common import colour_lut
from viz.views.heatmap import build_heatmap


def payload(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="hm-data">(.*?)</script>', page, re.S)
    assert m, "data script not found"
    return json.loads(m.group(1))


def weights(data: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data["z"]), "<f4").reshape(data["nq"], data["nk"])


def test_weights_travel_exactly_in_row_major_order():
    pattern = np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]], dtype=np.float32)
    data = payload(build_heatmap(pattern, ["a", "b"], ["x", "y", "z"], title="t").html)
    assert (data["nq"], data["nk"]) == (2, 3) and data["q"] == ["a", "b"] and data["k"] == ["x", "y", "z"]
    np.testing.assert_array_equal(weights(data), pattern)
    assert data["zmax"] == pytest.approx(0.7)


def test_causal_masks_the_future_not_the_past():
    pattern = np.tril(np.full((4, 4), 0.25, dtype=np.float32))
    z = weights(payload(build_heatmap(pattern, list("abcd"), list("abcd"), causal=True).html))
    assert np.isnan(z[np.triu_indices(4, k=1)]).all()
    assert np.isfinite(z[np.tril_indices(4)]).all()


def test_zmax_given_and_all_zero_pattern():
    assert payload(build_heatmap(np.eye(2) * 0.3, ["a", "b"], ["a", "b"], zmax=1.0).html)["zmax"] == 1.0
    assert payload(build_heatmap(np.zeros((2, 2)), ["a", "b"], ["a", "b"]).html)["zmax"] == 1.0


def test_shape_must_match_the_labels():
    with pytest.raises(ValueError, match="does not match"):
        build_heatmap(np.ones((2, 3)), ["a", "b"], ["x", "y"])


def test_tokens_cannot_close_the_script_or_become_markup():
    hostile = ["</script><script>alert(1)</script>", "<img src=x onerror=alert(2)>", "&amp;", "\u2028"]
    view = build_heatmap(np.full((4, 4), 0.25), hostile, hostile, title="<b>title</b>")
    for text in (view.fragment, view.html):
        assert text.count("</script>") == 2                   # the data and the code blocks, nothing more
        assert "<img" not in text and "<b>" not in text
    assert view.fragment in view.html                         # the standalone page wraps the same view
    data = payload(view.html)
    assert data["q"] == hostile and data["title"] == "<b>title</b>"   # the text itself survives


def test_colours_are_plotlys_blues():
    lut = colour_lut("Blues")
    assert len(lut) == 3 * 256
    assert tuple(lut[:3]) == (247, 251, 255) and tuple(lut[-3:]) == (8, 48, 107)   # Blues' two ends
    assert lut != colour_lut("Viridis")


def test_height_grows_with_tokens_and_font():
    small = build_heatmap(np.ones((5, 5)) / 5, list("abcde"), list("abcde"))
    big = build_heatmap(np.ones((60, 60)) / 60, ["t"] * 60, ["t"] * 60)
    present = build_heatmap(np.ones((60, 60)) / 60, ["t"] * 60, ["t"] * 60, font_px=20)
    assert small.height < big.height < present.height


# ------------------------------------------------------------------ page wiring (AppTest)
def heatmaps(at) -> list:
    """The canvas heatmaps on an AppTest page (st.html blocks holding the view's data)."""
    return [el for el in at.get("html") if 'id="hm-data"' in el.proto.body]


def _view(at) -> dict:
    views = heatmaps(at)
    assert len(views) == 1 and views[0].proto.unsafe_allow_javascript
    return payload(views[0].proto.body)


def test_page_sends_the_chosen_head(app_test):
    from viz.capture import capture
    text = "The cat sat on the mat."
    at = app_test("pages/heatmap.py", text=text, layer=2, head=3)
    assert not at.exception
    data = _view(at)
    assert "layer 2" in data["title"] and "head 3" in data["title"]
    block = capture(text).block()
    assert data["q"] == list(block.queries.labels)
    np.testing.assert_allclose(weights(data), block.pattern[2, 3], atol=1e-6)
    assert not at.get("plotly_chart")                        # no plotly bundle for the default view
    at.selectbox(key="w_head").select("mean").run()
    np.testing.assert_allclose(weights(_view(at)), block.pattern[2].mean(axis=0), atol=1e-6)


def test_zoom_switches_to_the_plotly_chart_and_stays_in_the_url(app_test):
    at = app_test("pages/heatmap.py", text="The cat sat.", zoom=1)
    assert not at.exception
    assert at.toggle(key="w_zoom").value and len(at.get("plotly_chart")) == 1 and not heatmaps(at)
    at.toggle(key="w_zoom").set_value(False).run()
    assert len(heatmaps(at)) == 1 and "zoom" not in at.query_params


def test_presentation_mode_enlarges_the_heatmap_text(app_test):
    normal = _view(app_test("pages/heatmap.py", text="The cat sat."))["font"]
    present = _view(app_test("pages/heatmap.py", text="The cat sat.", present=1))["font"]
    assert present >= 1.25 * normal and present >= 14
