"""Every gallery preset runs through capture; links carry the whole input; exports are well formed."""
from __future__ import annotations

import io
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from viz import explain, export, gallery, mathsteps
from viz.ui import state as ui_state
from viz.capture import capture
from viz.models import load_model


@pytest.fixture(scope="module")
def embedded():
    return load_model(None)


@pytest.mark.parametrize("preset", [p for p in gallery.PRESETS if p.family not in ("encoder-decoder", "decoder")],
                         ids=lambda p: p.key)
def test_preset_runs_on_embedded_model(embedded, preset):
    r = capture(preset.text, pair=preset.pair or None, target=preset.target or None, model=embedded)
    assert np.isfinite(r.attentions).all()
    picks = preset.picks()
    if "layer" in picks:
        assert 0 <= int(picks["layer"]) < r.model.n_layers
    if picks.get("head", "mean") != "mean":
        assert 0 <= int(picks["head"]) < r.model.n_heads
    query = preset.page_params().get("query")
    if query:   # the token the math page should open on is in the text
        pos = mathsteps.query_position(r.tokens.labels, query, default=-1)
        assert r.tokens.labels[pos].lower() == query
    if preset.key == "long":
        assert r.truncated > 0 and r.attentions.shape[-1] == r.model.max_length
    else:
        assert r.truncated == 0
    if preset.key == "pair":
        assert set(r.tokens.segment_ids) == {0, 1}
    if preset.key == "induction":
        words = preset.text.split()
        assert words[: len(words) // 2] == words[len(words) // 2:]


def test_llm_presets_show_what_they_say_on_the_embedded_llm(embedded_llm):
    """The heads the LLM presets point at do what their notes claim, on the real model."""
    from viz import stats
    from viz.models import EMBEDDED_LLM
    llm = [p for p in gallery.PRESETS if p.family == "decoder"]
    assert {p.key for p in llm} == {"llm_induction", "llm_sink", "llm_coreference", "llm_knockout"}
    assert all(p.model == EMBEDDED_LLM for p in llm)
    head = {p.key: (int(p.picks()["layer"]), int(p.picks()["head"])) for p in llm if "layer" in p.picks()}

    induction = capture(gallery.BY_KEY["llm_induction"].text, model=embedded_llm).block()
    scores = stats.detect_heads(induction).set_index(["layer", "head"])
    assert scores.loc[head["llm_induction"], "induction"] > 0.8
    assert scores["induction"].idxmax() == head["llm_induction"]      # the strongest induction head

    block = capture(gallery.BY_KEY["llm_sink"].text, model=embedded_llm).block()
    layer, h = head["llm_sink"]
    assert block.pattern[layer, h, 1:, 0].mean() > 0.95                # ~all weight on the first token
    assert 0.5 < block.pattern[:, :, 1:, 0].mean() < 0.8               # "about 65%" over all heads

    labels = list(block.queries.labels)
    it, animal, street = labels.index("it"), labels.index("animal"), labels.index("street")
    layer, h = head["llm_coreference"]
    row = block.pattern[layer, h, it]
    assert row[animal] > 0.6 and row[street] < 0.05 and row[0] < 0.15
    assert embedded_llm.info.kv_head[h] == 2

    # knocking the induction heads out stops the copying in the third copy
    from viz.ablation import decoder_effect
    from viz.ablation_result import parse_heads
    knockout = gallery.BY_KEY["llm_knockout"]
    effect = decoder_effect(knockout.text, parse_heads(dict(knockout.params)["ablate"]), model=embedded_llm)
    third = slice(2 * len(effect.tokens) // 3 + 1, len(effect.tokens) - 1)
    assert np.nanmean(effect.p_next_before[third]) > 0.5 > 0.15 > np.nanmean(effect.p_next_after[third])


def test_translation_preset_on_tiny_encoder_decoder(tiny_models):
    preset = gallery.BY_KEY["translation"]
    model = tiny_models["encoder-decoder"]
    assert gallery.model_for(preset, current_model=model, current_family="encoder-decoder") == model
    assert gallery.model_for(preset, current_model="embedded", current_family="encoder") == gallery.TRANSLATION_MODEL
    r = capture(preset.text, target=preset.target, model=model)
    assert r.cross_attentions.shape[2:] == (len(r.decoder), len(r.encoder)) and not r.generated
    assert dict(preset.params)["kind"] == "cross"


def test_links_reproduce_the_preset():
    for preset in gallery.PRESETS:
        link = gallery.relative_link(preset, model="gpt2")
        parts = urlsplit(link)
        assert parts.path == preset.page
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert params["text"] == preset.text and params["model"] == "gpt2"
        assert params.get("pair", "") == preset.pair and params.get("target", "") == preset.target
        assert all(params[k] == v for k, v in preset.params)
    assert "model" not in gallery.url_params(gallery.PRESETS[0])   # the embedded model is the default


def test_every_page_has_an_explanation():
    pages = ("home", "heatmap", "head_view", "model_view", "compare_heads", "attention_flow",
             "efficient_attention", "attention_math", "gallery", "glossary")
    texts = {p: explain.for_page(p) for p in pages}
    assert len(set(texts.values())) == len(pages)
    assert explain.for_page("some_new_page") == explain.GENERAL_TEXT
    body = explain.core_ideas_markdown() + explain.glossary_markdown()
    for idea in ("√d_k", "subspace", "cross attention", "parallel", "window", "trained", "square"):
        assert idea in body


def test_share_url():
    url = ui_state.share_url("http://host:8501/base/", "heatmap", {"text": "a & b?", "layer": "2", "pair": ""})
    parts = urlsplit(url)
    assert parts.path == "/base/heatmap" and parse_qs(parts.query) == {"text": ["a & b?"], "layer": ["2"]}
    assert ui_state.share_url(None, "", {}) == "/"
    pages = {"heatmap", "attention_math", "home"}
    assert ui_state.app_base("http://h:1/heatmap/heatmap", pages) == "http://h:1"
    assert ui_state.app_base("http://h:1/base/attention_math/", pages) == "http://h:1/base"
    assert ui_state.app_base("http://h:1", pages) == "http://h:1" and ui_state.app_base(None, pages) == ""




def test_csv_is_long_form_and_bounded(embedded):
    block = capture("the cat sat on the mat", model=embedded).block()
    L, H, T, _ = block.pattern.shape
    scope = export.csv_scope(block, layer=2, head=5)
    assert scope.layers == tuple(range(L)) and scope.n_rows(block) == L * H * T * T
    frame = pd.read_csv(io.BytesIO(export.attention_csv(block, scope)), keep_default_na=False)
    assert list(frame.columns) == ["layer", "head", "query_pos", "key_pos", "query_token", "key_token", "weight"]
    assert len(frame) == L * H * T * T
    pick = (frame["layer"] == 4) & (frame["head"] == 7) & (frame["query_pos"] == 2) & (frame["key_pos"] == 3)
    row = frame[pick].iloc[0]
    assert row.weight == pytest.approx(block.pattern[4, 7, 2, 3], rel=1e-5)
    assert row.query_token == block.queries.tokens[2] and row.key_token == block.keys.tokens[3]
    np.testing.assert_allclose(frame.groupby(["layer", "head", "query_pos"]).weight.sum(), 1, atol=1e-4)
    small = export.csv_scope(block, layer=2, head=5, max_rows=H * T * T)
    assert small.layers == (2,) and small.heads == tuple(range(H))
    tiny = export.csv_scope(block, layer=2, head=5, max_rows=T * T)
    assert tiny.layers == (2,) and tiny.heads == (5,) and tiny.n_rows(block) == T * T


def test_npz_has_the_cli_layout(embedded):
    r = capture("the cat sat", model=embedded)
    data = np.load(io.BytesIO(export.npz_bytes(r)))
    assert set(data.files) == {"tokens", "attentions", "truncated", "kv_head"}   # kv_head: issue 14
    np.testing.assert_array_equal(data["kv_head"], np.arange(r.model.n_heads))   # no GQA in MiniLM
    np.testing.assert_array_equal(data["attentions"], r.attentions)
    assert tuple(data["tokens"]) == r.tokens.tokens
