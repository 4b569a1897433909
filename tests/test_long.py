"""Long inputs (issue 16): results that keep queries and keys instead of every layer's pattern.

A tiny Llama with 4,096 positions (grouped-query attention, 3 layers x 4 heads, 2 KV heads) is
captured at ~1,500-2,048 tokens twice: the ordinary way (the model's own weights, stacked) and
the long way (:class:`viz.result.LazyPattern`); every figure of the long result is checked
against the stacked weights and against stats / views computed from them.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from viz import capture as capture_module
from viz import stats
from viz.capture import capture, capture_layer, pattern_bytes
from viz.models import load_model
from viz.result import MATERIALISE_LIMIT, PatternTooLarge, is_lazy, layer_pattern

N_WORDS = 1500


@pytest.fixture(scope="module")
def long_llama(tmp_path_factory):
    """A tiny Llama trained on nothing, with a 4,096-position limit (the app's decoder cap is 2,048)."""
    import torch
    from tiny_models import _bpe_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("long-llama")
    tok = _bpe_tokenizer()
    tok.model_max_length = 4096
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=4096, initializer_range=0.3, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture
def long_mode(monkeypatch):
    """Every decoder input above 1 MB of attention takes the long path (the default is 128 MB), and
    at most 40 MB of it may be materialised at once: one layer here (36 MB at 1,500 tokens), not all
    three, as one 151 MB layer fits the default 512 MB and the LLM's 4.5 GB whole does not."""
    import viz.result
    monkeypatch.setattr(capture_module, "SETTINGS", dataclasses.replace(capture_module.SETTINGS, full_pattern_mb=1))
    monkeypatch.setattr(viz.result, "MATERIALISE_LIMIT", 40 * 1024 * 1024)


@pytest.fixture
def full_mode(monkeypatch):
    monkeypatch.setattr(capture_module, "SETTINGS",
                        dataclasses.replace(capture_module.SETTINGS, full_pattern_mb=1 << 20))


def long_text(n_words: int = N_WORDS) -> str:
    from tiny_models import WORDS
    rng = np.random.default_rng(0)
    return " ".join(rng.choice(WORDS[:40], size=n_words))


@pytest.fixture(scope="module")
def pair(long_llama):
    """(long result, full result) of the same ~1,500-token text."""
    loaded = load_model(long_llama)
    text = long_text()
    saved = capture_module.SETTINGS
    try:
        capture_module.SETTINGS = dataclasses.replace(saved, full_pattern_mb=1)
        lazy = capture(text, model=loaded)
        capture_module.SETTINGS = dataclasses.replace(saved, full_pattern_mb=1 << 20)
        full = capture(text, model=loaded)
    finally:
        capture_module.SETTINGS = saved
    return lazy, full


def test_the_decoder_cap_is_2048_and_encoders_keep_theirs(long_llama, tiny_models):
    from viz.models import default_cap
    assert default_cap("decoder") == 2048 and default_cap("encoder") == 512
    assert load_model(long_llama).info.max_length == 2048         # 4,096 positions, the app's cap
    assert load_model(tiny_models["encoder"]).info.max_length == 64   # the model's own limit


def test_long_result_is_lazy_and_holds_far_less_than_the_pattern(pair):
    from viz.cache import nbytes
    lazy, full = pair
    assert is_lazy(lazy.decoder_attentions) and isinstance(full.decoder_attentions, np.ndarray)
    assert lazy.decoder_attentions.shape == full.decoder_attentions.shape
    t = len(lazy.decoder)
    assert t > 1000
    # q (4 heads) + k (2 KV heads) per layer, the layer-mean map and the thumbnails: not L x H x T^2
    pattern = lazy.decoder_attentions
    held = sum(layer.query.nbytes + layer.key.nbytes for layer in pattern.qk)
    assert held == 3 * (4 + 2) * t * 8 * 4
    assert nbytes(lazy) < held + 4 * t * t + pattern.summary.thumbs.nbytes + 100_000
    assert nbytes(lazy) < full.decoder_attentions.nbytes / 10
    assert lazy.notice and "recomputed" in lazy.notice


def test_every_layer_recomputed_exactly(pair):
    lazy, full = pair
    lp, fp = lazy.decoder_attentions, full.decoder_attentions
    for layer in range(lp.shape[0]):
        assert np.abs(lp[layer] - fp[layer]).max() < 1e-5
    assert np.abs(lp[1, 3] - fp[1, 3]).max() < 1e-5                    # one head only
    rows = np.array([0, 7, 500, len(lazy.decoder) - 1])
    assert np.abs(lp[:, :, rows] - fp[:, :, rows]).max() < 1e-5         # a few rows of every layer
    assert np.abs(lp[:, :, 9, :10] - fp[:, :, 9, :10]).max() < 1e-5     # the generate page's slice
    assert np.abs(lp[np.ix_([0, 2], [1, 3])] - fp[np.ix_([0, 2], [1, 3])]).max() < 1e-5
    assert lp.max_error < 1e-5                                          # the capture's own check
    np.testing.assert_allclose(lp[2].sum(-1), 1.0, atol=1e-5)


def test_gqa_keys_are_kept_once_per_kv_head(pair):
    lazy, _ = pair
    layer = lazy.decoder_attentions.qk[0]
    assert layer.query.shape[0] == 4 and layer.key.shape[0] == 2 and layer.mask is None   # plain causal


def test_layer_pattern_against_an_independent_softmax():
    from viz.result import LayerQK
    rng = np.random.default_rng(1)
    q, k = rng.normal(size=(4, 6, 8)).astype(np.float32), rng.normal(size=(2, 9, 8)).astype(np.float32)
    allowed = rng.random((6, 9)) > 0.3
    allowed[:, 0] = True
    qk = LayerQK(query=q, key=k, scaling=0.3, softcap=5.0, mask=np.packbits(allowed, axis=-1))
    kv = np.array([0, 0, 1, 1])
    scores = 5.0 * np.tanh(np.einsum("hqd,hkd->hqk", q.astype(np.float64), k[kv].astype(np.float64)) * 0.3 / 5.0)
    scores = np.where(allowed, scores, -np.inf)
    ref = np.exp(scores - scores.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(layer_pattern(qk, kv, causal=False), ref, atol=1e-6)
    np.testing.assert_allclose(layer_pattern(qk, kv, causal=False, heads=[3], rows=[2, 5]), ref[[3]][:, [2, 5]],
                               atol=1e-6)


def test_streamed_metrics_match_stats_on_the_full_pattern(pair):
    lazy, full = pair
    ours = stats.metric_values(lazy.block())
    ref = stats.metric_values(full.block())
    for name in stats.METRICS:
        bound = 1e-3 if name == "mean_distance" else 1e-4    # distances are in tokens (hundreds here)
        assert np.nanmax(np.abs(ours[name] - ref[name])) < bound, name
    frame = stats.head_metrics(lazy.block())
    assert len(frame) == 12 and np.isfinite(frame["entropy"]).all()
    np.testing.assert_allclose(stats.first_token_share(lazy.block()), stats.first_token_share(full.block()),
                               atol=1e-6)


def test_streamed_thumbnails_and_layer_mean_match(pair):
    from viz.views.model_view import THUMB, build_mosaic, downsample
    lazy, full = pair
    summary = lazy.decoder_attentions.summary
    assert summary.thumb == THUMB
    np.testing.assert_allclose(summary.thumbs, downsample(full.decoder_attentions), atol=1e-6)
    np.testing.assert_allclose(summary.layer_mean, full.decoder_attentions.mean(axis=(0, 1)), atol=1e-6)
    a, b = build_mosaic(lazy.decoder_attentions, gamma=0.5), build_mosaic(full.decoder_attentions, gamma=0.5)
    assert np.abs(a.values.astype(int) - b.values.astype(int)).max() <= 1


def test_whole_array_of_a_long_result_is_refused_not_swapped(pair):
    lazy, _ = pair
    big = dataclasses.replace(lazy)   # same object graph
    pattern = big.decoder_attentions
    if pattern.full_nbytes > MATERIALISE_LIMIT:
        with pytest.raises(PatternTooLarge):
            np.asarray(pattern)
    else:
        assert np.asarray(pattern).shape == pattern.shape


def test_short_inputs_keep_the_plain_array(long_llama):
    r = capture("the cat sat on the mat", model=load_model(long_llama))
    assert isinstance(r.decoder_attentions, np.ndarray) and not r.notice


def test_one_layer_internals_on_a_long_input(long_llama, pair):
    lazy, full = pair
    li = capture_layer(lazy.text, site=("decoder", 1), model=load_model(long_llama))
    assert np.abs(li.pattern - full.decoder_attentions[1]).max() < 1e-5
    assert np.abs(lazy.decoder_attentions[1] - li.pattern).max() < 1e-5


def test_unrecordable_model_falls_back_to_the_full_pattern_and_says_so(long_llama, monkeypatch):
    loaded = load_model(long_llama)
    monkeypatch.setattr(capture_module, "SETTINGS",
                        dataclasses.replace(capture_module.SETTINGS, full_pattern_mb=1, full_fallback_mb=20))
    monkeypatch.setattr(loaded, "recording_supported", False)
    monkeypatch.setattr(loaded, "internals_reason", "This model's attention cannot be recorded")
    r = capture(long_text(), model=loaded)
    assert isinstance(r.decoder_attentions, np.ndarray)
    assert pattern_bytes(loaded.info, len(r.decoder)) <= 20 * 1024 * 1024
    assert r.truncated > 0 and "cut to" in r.notice and "cannot be recorded" in r.notice


# ---------------------------------------------------------------- every page at ~1,500 tokens
PAGES = ("pages/home.py", "pages/heatmap.py", "pages/head_view.py", "pages/model_view.py", "pages/compare_heads.py",
         "pages/attention_math.py", "pages/attention_flow.py", "pages/efficient_attention.py", "pages/generate.py",
         "pages/predictions.py")


@pytest.mark.parametrize("page", PAGES)
def test_every_page_runs_on_a_long_input(app_test, long_llama, long_mode, page):
    at = app_test(page, model=long_llama, text=long_text(), new=2)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_whole_block_helpers_stream_over_layers(pair, long_mode):
    from viz import aggregate, efficient
    lazy, full = pair
    lp, fp = lazy.decoder_attentions, full.decoder_attentions
    for head, how in ((None, "mean"), (None, "max"), (2, "mean")):
        np.testing.assert_allclose(aggregate.layers_mean(lp, head=head, how=how),
                                   aggregate.layers_mean(fp, head=head, how=how), atol=1e-5)
    moved = aggregate.transform_block(lazy.block(), word_level=True, hide_first=True)
    ref = aggregate.transform_block(full.block(), word_level=True, hide_first=True)
    assert moved.queries.labels == ref.queries.labels and moved.pattern.shape == ref.pattern.shape
    assert np.abs(moved.pattern[1] - ref.pattern[1]).max() < 1e-5
    config = efficient.PatternConfig()
    a = efficient.head_summary(lp, config=config, causal=True)
    b = efficient.head_summary(fp, config=config, causal=True)
    np.testing.assert_allclose(a.local, b.local, atol=1e-5)
    np.testing.assert_allclose(a.kept, b.kept, atol=1e-5)


@pytest.mark.parametrize("n_tokens", [256, 250])
def test_thumbnails_of_equal_and_unequal_bins(long_llama, n_tokens):
    """256 tokens split into 64 equal bins (summed by a reshape), 250 into unequal ones (index_add): both are
    the block means of the exact pattern."""
    from viz.views.model_view import downsample
    loaded = load_model(long_llama)
    words = long_text().split()
    text = next(" ".join(words[:n]) for n in range(n_tokens - 8, n_tokens + 8)
                if len(loaded.tokenizer(" ".join(words[:n]))["input_ids"]) == n_tokens)
    saved = capture_module.SETTINGS
    try:
        capture_module.SETTINGS = dataclasses.replace(saved, full_pattern_mb=0)
        lazy = capture(text, model=loaded)
    finally:
        capture_module.SETTINGS = saved
    full = capture(text, model=loaded)
    assert lazy.decoder_attentions.summary is not None and len(lazy.tokens) == n_tokens
    np.testing.assert_allclose(lazy.decoder_attentions.summary.thumbs, downsample(full.decoder_attentions),
                               atol=1e-6)
