"""AppTest of the classroom pages: attention math, gallery, glossary, presentation mode, link and downloads."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from viz import gallery

ROOT = Path(__file__).resolve().parents[1]


def _texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def _link(at) -> str:
    codes = _texts(at.code)
    assert len(codes) == 1, codes
    return codes[0]


def _link_params(at) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(_link(at)).query).items()}


def _check_value(at) -> float:
    (message,) = _texts(at.success)
    return float(re.search(r"= \*\*([0-9.e+-]+)\*\*", message).group(1))


def test_math_page_from_a_shared_url(app_test):
    text = "The keys that the man near the cabinets holds are on the table."
    at = app_test("pages/attention_math.py", text=text, layer=3, head=1, query="are")
    assert not at.exception and not at.error
    assert _check_value(at) <= 1e-5
    values = {s.label: s.value for s in at.selectbox}
    assert values["Layer"] == "3" and values["Head"] == "1"
    query = values["Query token (the token that is looking)"]
    params = _link_params(at)
    assert params["text"] == text and params["layer"] == "3" and params["head"] == "1"
    assert params["query"] == str(query) and urlsplit(_link(at)).path.endswith("/attention_math")
    assert at.session_state["viz_text"] == text
    # another head and another query token: the check is recomputed for them
    at.selectbox(key="w_head").set_value("7").run()
    at.selectbox(key="w_query").set_value(2).run()
    assert _check_value(at) <= 1e-5 and _link_params(at)["head"] == "7" and _link_params(at)["query"] == "2"


@pytest.mark.parametrize("family,kind", [("encoder", None), ("decoder", None), ("encoder-decoder", "cross"),
                                         ("encoder-decoder", "decoder"), ("t5", "encoder"), ("t5", "cross")])
def test_math_page_every_family(app_test, tiny_models, family, kind):
    params = dict(model=tiny_models[family], text="the animal didn't cross the street", layer=1, head=2, query=3)
    if family in ("encoder-decoder", "t5"):
        params["target"] = "der hund ist"
    if kind:
        params["kind"] = kind
    at = app_test("pages/attention_math.py", **params)
    assert not at.exception and not at.error, [e.value for e in at.exception]
    assert _check_value(at) <= 1e-5
    markdown = " ".join(_texts(at.markdown))
    assert "× 8" in markdown   # W_Q etc. are (d_model x d_head) = 32 x 8 on the tiny models
    if family == "t5" and kind == "encoder":
        assert "position bias" in markdown
    if kind == "cross":
        assert any("Cross attention" in i for i in _texts(at.info))
    if family == "decoder":
        assert "Causal mask" in markdown


def test_gallery_preset_opens_its_view(app_test):
    at = app_test("pages/gallery.py")
    assert not at.exception
    assert len([b for b in at.button if b.key and b.key.startswith("preset_")]) == len(gallery.PRESETS)
    preset = gallery.BY_KEY["agreement"]
    at.button(key="preset_agreement").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["viz_text"] == preset.text
    assert _texts(at.title) == ["The attention math, step by step"]
    values = {s.label: s.value for s in at.selectbox}
    assert values["Layer"] == "3" and values["Head"] == "1"
    assert at.text_area(key="w_text").value == preset.text   # the sidebar shows the preset's text
    params = _link_params(at)
    assert params["text"] == preset.text and params["query"] == str(values["Query token (the token that is looking)"])
    assert _check_value(at) <= 1e-5


def test_glossary_page(app_test):
    at = app_test("pages/glossary.py")
    assert not at.exception
    everything = " ".join(_texts(at.markdown))
    assert "softmax" in everything and "cross attention" in everything
    at.text_input(key="glossary_search").input("induction").run()
    terms = [m for m in _texts(at.markdown) if m.startswith("- **")]
    assert any("induction head" in m for m in terms) and not any("**softmax**" in m for m in terms)
    assert _link(at).endswith("/glossary") or "/glossary?" in _link(at)


@pytest.mark.parametrize("page", ["pages/home.py", "pages/heatmap.py", "pages/attention_math.py",
                                  "pages/gallery.py", "pages/glossary.py"])
def test_every_page_has_link_downloads_and_explanation(app_test, page):
    at = app_test(page, text="Attention is all you need.", layer=2, head=4)
    assert not at.exception
    params = _link_params(at)
    assert params["text"] == "Attention is all you need."
    labels = [e.proto.label for e in at.get("download_button")]
    assert {"Download CSV", "Download NPZ"} <= set(labels)
    assert any(e.label == "What am I looking at?" for e in at.expander)


def test_url_round_trip_on_heatmap(app_test):
    at = app_test("pages/heatmap.py", text="One two three.", pair="Four five.", layer=4, head=9)
    state = at.session_state
    assert (state["viz_text"], state["viz_pair"], state["viz_layer"], state["viz_head"]) == (
        "One two three.", "Four five.", "4", "9")
    params = _link_params(at)
    assert params == {"text": "One two three.", "pair": "Four five.", "layer": "4", "head": "9"}
    assert urlsplit(_link(at)).path.endswith("/heatmap")


def test_presentation_mode(app_test):
    at = app_test("pages/heatmap.py", present=1)
    assert not at.exception
    assert at.toggle(key="w_present").value is True
    assert _link_params(at)["present"] == "1"
    styles = [e.proto.body for e in at.get("html")]
    assert any("font-size" in s for s in styles)
    at.button(key="present_exit").click().run()
    assert at.toggle(key="w_present").value is False and "present" not in at.query_params
    assert not any("font-size" in e.proto.body for e in at.get("html"))
    at.toggle(key="w_present").set_value(True).run()
    assert at.query_params["present"] == ["1"] or at.query_params["present"] == "1"
