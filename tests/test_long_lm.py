"""Long prompts on the language-model side (issue 16, item 4): generation, batching, predictions, the lens.

The tiny Llama of tests/test_long.py (4,096 positions, 3 layers x 4 heads, 2 KV heads) generates after a
~1,500-token prompt with VIZ_FULL_PATTERN_MB lowered to 1, so its final pass keeps queries and keys
(a LazyPattern); everything is checked against an independent transformers model loaded with eager
attention from the same folder, and against the short path (the whole pattern stacked).
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
import torch
from test_long import long_llama, long_text  # noqa: F401 - the long tests' model fixture and text

from viz import batching, lm
from viz import capture as capture_module
from viz.capture import InternalsUnavailable
from viz.generation import generate
from viz.models import load_model
from viz.result import is_lazy

NEW = 6


@contextlib.contextmanager
def pattern_mb(mb: int):
    """VIZ_FULL_PATTERN_MB for the block (module-scoped fixtures cannot use monkeypatch)."""
    saved = capture_module.SETTINGS
    capture_module.SETTINGS = dataclasses.replace(saved, full_pattern_mb=mb)
    try:
        yield
    finally:
        capture_module.SETTINGS = saved


@pytest.fixture(scope="module")
def reference(long_llama):  # noqa: F811
    """An independent copy of the model, eager attention, never touched by viz."""
    from transformers import LlamaForCausalLM
    return LlamaForCausalLM.from_pretrained(long_llama, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def gens(long_llama):  # noqa: F811
    """(long-path generation, short-path generation) of the same long prompt."""
    loaded = load_model(long_llama)
    with pattern_mb(1):
        long = generate(long_text(), loaded, max_new_tokens=NEW)
    with pattern_mb(1 << 20):
        short = generate(long_text(), loaded, max_new_tokens=NEW)
    return long, short


def greedy(model, ids: list[int], n: int, eos: int) -> list[int]:
    """Plain greedy decoding without a cache: argmax of a full forward pass per token."""
    out = []
    with torch.no_grad():
        for _ in range(n):
            token = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(token)
            if token == eos:
                break
    return out


def test_a_long_prompt_is_not_cut_and_its_attention_is_lazy(gens):
    long, short = gens
    assert len(long.tokens) > 1000 and long.truncated == 0 and not long.notice
    pattern = long.attentions
    assert is_lazy(pattern) and pattern.shape == short.attentions.shape
    assert isinstance(short.attentions, np.ndarray) and not short.attention.notice
    assert "recomputed" in long.attention.notice
    assert pattern.nbytes < short.attentions.nbytes / 10          # q and k, not L x H x T^2


def test_long_generation_equals_an_independent_forward_and_greedy_loop(gens, reference):
    long, short = gens
    ids = long.tokens.token_ids.tolist()
    with torch.no_grad():
        out = reference(input_ids=torch.tensor([ids]), output_attentions=True)
    for layer, att in enumerate(out.attentions):
        assert np.abs(long.attentions[layer] - att[0].numpy()).max() < 1e-5, layer
    prompt = ids[:long.n_prompt]
    assert long.step_ids.tolist() == greedy(reference, prompt, NEW, reference.config.eos_token_id)
    assert long.step_ids.tolist() == short.step_ids.tolist()
    np.testing.assert_array_equal(long.top_ids, short.top_ids)
    np.testing.assert_allclose(long.top_probs, short.top_probs, atol=1e-6)
    np.testing.assert_array_equal(long.tokens.special, short.tokens.special)


def test_step_rows_are_read_without_materialising_a_layer(gens):
    long, short = gens
    pattern = long.attentions
    pattern._cache.clear()
    for step in range(long.n_steps):
        rows = long.step_attention(step)                           # what the generate page reads
        assert rows.shape == short.step_attention(step).shape
        assert np.abs(rows - short.step_attention(step)).max() < 1e-5
    assert not pattern._cache                                      # no whole (H, T, T) layer was made


def test_streamed_summary_of_a_generation_matches_its_pattern(gens):
    from viz import stats
    long, short = gens
    ours, ref = stats.metric_values(long.attention.block()), stats.metric_values(short.attention.block())
    for name in stats.METRICS:
        bound = 1e-3 if name == "mean_distance" else 1e-4
        assert np.nanmax(np.abs(ours[name] - ref[name])) < bound, name


def test_batched_generation_of_a_long_prompt_runs_alone_with_the_same_result(long_llama, gens):  # noqa: F811
    loaded = load_model(long_llama)
    long, _ = gens
    engine = batching.engine_for(loaded)
    before = engine.stats["alone"]["long prompt"]
    with pattern_mb(1):
        result = batching.generate(long_text(), loaded, max_new_tokens=NEW)
    assert engine.stats["alone"]["long prompt"] == before + 1
    assert engine.stats["decode_rows"] == 0                        # nothing went through the batch's prefill
    assert is_lazy(result.attentions)
    assert result.step_ids.tolist() == long.step_ids.tolist()
    for layer in range(result.attentions.shape[0]):
        assert np.abs(result.attentions[layer] - long.attentions[layer]).max() < 1e-6


def test_batched_capture_of_a_long_text_keeps_queries_and_keys(long_llama, reference):  # noqa: F811
    loaded = load_model(long_llama)
    engine = batching.engine_for(loaded)
    passes = engine.stats["passes"]
    with pattern_mb(1):
        result = batching.capture(long_text(), model=loaded)
    assert is_lazy(result.decoder_attentions) and engine.stats["passes"] == passes   # not the padded pass
    with torch.no_grad():
        out = reference(input_ids=torch.tensor([result.decoder.token_ids.tolist()]), output_attentions=True)
    assert np.abs(result.decoder_attentions[2] - out.attentions[2][0].numpy()).max() < 1e-5


def test_one_layer_of_internals_on_a_long_generation(long_llama, gens, reference):  # noqa: F811
    loaded = load_model(long_llama)
    long, _ = gens
    forced = {t: int(i) for t, i in enumerate(long.step_ids)}
    with pattern_mb(1):
        result = generate(long_text(), loaded, max_new_tokens=NEW, forced=forced, internals=[("decoder", 1)])
        with pytest.raises(InternalsUnavailable, match="long"):
            generate(long_text(), loaded, max_new_tokens=NEW, internals=True)
    assert is_lazy(result.attentions) and set(result.attention.internals) == {("decoder", 1)}
    li = result.attention.internals[("decoder", 1)]
    with torch.no_grad():
        out = reference(input_ids=torch.tensor([result.tokens.token_ids.tolist()]), output_attentions=True)
    assert np.abs(li.pattern - out.attentions[1][0].numpy()).max() < 1e-5


def test_a_prompt_past_the_cap_is_cut_at_2048_and_the_notice_says_whose_limit(long_llama):  # noqa: F811
    loaded = load_model(long_llama)                               # 4,096 positions, the app's cap 2,048
    with pattern_mb(1):
        result = generate(long_text(3000), loaded, max_new_tokens=2)
    assert is_lazy(result.attentions) and result.n_prompt == 2048 - 2 and result.truncated > 0
    assert f"first {result.truncated} tokens" in result.notice
    assert "app's limit of 2048 tokens (VIZ_MAX_TOKENS)" in result.notice


def test_a_model_without_a_compact_path_still_cuts_the_prompt_and_says_why(long_llama, monkeypatch):  # noqa: F811
    loaded = load_model(long_llama)
    monkeypatch.setattr(capture_module, "SETTINGS",
                        dataclasses.replace(capture_module.SETTINGS, full_pattern_mb=1, full_fallback_mb=20))
    monkeypatch.setattr(loaded, "recording_supported", False)
    result = generate(long_text(), loaded, max_new_tokens=2)
    assert isinstance(result.attentions, np.ndarray)
    assert result.truncated > 0 and len(result.tokens) <= capture_module.longest_full(loaded.info)
    assert "keep whole" in result.notice and "the model's limit" not in result.notice


# ---------------------------------------------------------------- predictions and the lens
def independent_predictions(model, ids: list[int], k: int):
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    probs = torch.softmax(logits, dim=-1)
    actual = torch.tensor(ids[1:])
    rows = torch.arange(len(ids) - 1)
    p_next = probs[rows, actual].numpy()
    rank = ((logits[:-1] > logits[rows, actual].unsqueeze(1)).sum(1) + 1).numpy()
    top = torch.topk(probs, k, dim=-1)
    return p_next, rank, top.values.numpy(), top.indices.numpy()


@pytest.mark.parametrize("chunk", [lm.CHUNK_ROWS, 7])
def test_chunked_predictions_equal_an_independent_softmax(long_llama, reference, monkeypatch, chunk):  # noqa: F811
    monkeypatch.setattr(lm, "CHUNK_ROWS", chunk)
    pred = lm.predictions(long_text(), load_model(long_llama), top_k=5)
    ids = pred.tokens.token_ids.tolist()
    assert len(ids) > 1000
    p_next, rank, top_p, top_ids = independent_predictions(reference, ids, 5)
    np.testing.assert_allclose(pred.p_next[:-1], p_next, atol=1e-6)
    assert np.isnan(pred.p_next[-1]) and pred.next_ids[-1] == -1 and pred.rank_next[-1] == 0
    np.testing.assert_array_equal(pred.next_ids[:-1], ids[1:])
    np.testing.assert_array_equal(pred.rank_next[:-1], rank)
    np.testing.assert_allclose(pred.top_probs, top_p, atol=1e-6)
    np.testing.assert_array_equal(pred.top_ids, top_ids)


def test_predictions_fall_back_when_the_head_does_not_give_the_models_logits(long_llama, reference,  # noqa: F811
                                                                            monkeypatch):
    loaded = load_model(long_llama)
    wrong = torch.nn.Linear(loaded.info.d_model, loaded.model.config.vocab_size, bias=False)
    monkeypatch.setattr(loaded.model, "get_output_embeddings", lambda: wrong)
    pred = lm.predictions("the cat sat on the mat because it was", loaded, top_k=3)
    p_next, _, top_p, _ = independent_predictions(reference, pred.tokens.token_ids.tolist(), 3)
    np.testing.assert_allclose(pred.p_next[:-1], p_next, atol=1e-6)
    np.testing.assert_allclose(pred.top_probs, top_p, atol=1e-6)


@pytest.mark.parametrize("position", [700, -1])
def test_logit_lens_on_a_long_prompt(long_llama, reference, position):  # noqa: F811
    lens = lm.logit_lens(long_text(), load_model(long_llama), position=position, top_k=4)
    ids = lens.tokens.token_ids.tolist()
    pos = position % len(ids)
    assert lens.position == pos
    with torch.no_grad():
        out = reference(input_ids=torch.tensor([ids]), output_hidden_states=True)
        stream = torch.stack([h[0, pos] for h in out.hidden_states[1:-1]])
        logits = torch.cat([reference.lm_head(reference.model.norm(stream)), out.logits[0, pos][None]])
    probs = torch.softmax(logits.float(), -1)
    top = torch.topk(probs, 4, dim=-1)
    np.testing.assert_allclose(lens.top_probs, top.values.numpy(), atol=1e-6)
    np.testing.assert_array_equal(lens.top_ids, top.indices.numpy())
    if pos + 1 < len(ids):
        np.testing.assert_allclose(lens.next_probs, probs[:, ids[pos + 1]].numpy(), atol=1e-6)


# ---------------------------------------------------------------- the pages on a long prompt
@pytest.fixture
def long_mode(monkeypatch):
    monkeypatch.setattr(capture_module, "SETTINGS", dataclasses.replace(capture_module.SETTINGS, full_pattern_mb=1))


def test_generate_page_on_a_long_prompt(app_test, long_llama, long_mode):  # noqa: F811
    at = app_test("pages/generate.py", model=long_llama, text=long_text(), new=3)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("recomputed" in c.value for c in at.caption), [c.value for c in at.caption]
    assert not any("cut" in w.value for w in at.warning)


def test_predictions_page_on_a_long_prompt(app_test, long_llama, long_mode):  # noqa: F811
    at = app_test("pages/predictions.py", model=long_llama, text=long_text())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert not any("truncated" in w.value for w in at.warning)
