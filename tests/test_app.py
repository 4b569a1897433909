"""AppTest wiring of the shell: sidebar, home, heatmap, URL state, errors shown as messages."""
from __future__ import annotations

import pytest

HOSTILE = "<img src=x onerror=alert(1)> </script><script>alert(2)</script>"


def _text_of(at) -> str:
    parts = [m.value for m in at.markdown] + [str(m.value) for m in at.metric] + [c.value for c in at.caption]
    return "\n".join(parts)


def test_home_embedded_shows_tokens_and_facts(app_test):
    at = app_test(text="The cat sat on the mat.")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["token"])[:3] == ["[CLS]", "the", "cat"]
    assert table["special"].iloc[0] and not table["special"].iloc[1]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Family"] == "encoder" and metrics["Layers"] == "6" and metrics["Heads per layer"] == "12"


def test_home_truncation_notice(app_test):
    at = app_test(text="word " * 700)
    assert any("truncated" in w.value for w in at.warning)


def test_heatmap_reads_layer_head_from_url(app_test):
    at = app_test("pages/heatmap.py", text="Hello there world", layer=2, head=3)
    assert not at.exception
    assert at.selectbox(key="w_layer").value == "2" and at.selectbox(key="w_head").value == "3"
    assert at.query_params["layer"] == ["2"] or at.query_params["layer"] == "2"


def test_heatmap_controls_update_url(app_test):
    at = app_test("pages/heatmap.py", text="Hello there world")
    at.selectbox(key="w_layer").select("4").run()
    at.selectbox(key="w_head").select("mean").run()
    assert not at.exception
    qp = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert qp["layer"] == "4" and qp["head"] == "mean" and qp["text"] == "Hello there world"


def test_run_button_applies_text(app_test):
    at = app_test()
    at.sidebar.text_area(key="w_text").input("A brand new sentence.")
    at.sidebar.button[0].click().run()
    assert not at.exception
    assert "new" in list(at.dataframe[0].value["token"])
    assert at.session_state["viz_text"] == "A brand new sentence."  # the URL side is checked in Chromium


def test_hostile_text_is_not_markdown(app_test):
    at = app_test(text=HOSTILE)
    assert not at.exception
    assert "<img" not in _text_of(at)  # tokens only ever go into the dataframe, never into markdown
    assert "script" in list(at.dataframe[0].value["token"])


@pytest.mark.parametrize("family", ["encoder", "decoder", "encoder-decoder", "t5"])
def test_pages_with_tiny_models(app_test, tiny_models, family):
    extra = {"target": "der hund"} if family in ("encoder-decoder", "t5") else {}
    for page in (None, "pages/heatmap.py"):
        at = app_test(page, model=tiny_models[family], text="the cat sat on the mat", **extra)
        assert not at.exception, at.exception
        assert not at.error, [e.value for e in at.error]


def test_encoder_decoder_kind_picker(app_test, tiny_models):
    at = app_test("pages/heatmap.py", model=tiny_models["encoder-decoder"], text="the cat", target="der hund",
                  kind="cross")
    assert not at.exception
    assert at.segmented_control[0].value == "cross"


def test_bad_model_is_a_message_not_a_crash(app_test):
    at = app_test(model="/definitely/not/here")
    assert not at.exception
    assert any("No model folder" in e.value for e in at.error)


def test_heatmap_view_options(app_test):
    at = app_test("pages/heatmap.py", text="unbelievably tokenization works", words=1, nospecial=1)
    assert not at.exception
    assert at.toggle(key="w_words").value and at.toggle(key="w_nospecial").value
    captions = " ".join(c.value for c in at.caption)
    assert "Word level" in captions and "renormalised" in captions
    at.radio[0].set_value("max").run()  # head combination is wired even when disabled
    at.checkbox[0].check().run()
    assert not at.exception
