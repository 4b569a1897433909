"""Capture engine: shapes, normalisation, masks, tokens, truncation, pairs, errors, internals."""
from __future__ import annotations

import numpy as np
import pytest

from viz.capture import InputError, capture
from viz.models import ModelError, load_model, resolve

SENTENCE = "The keys to the cabinet are on the table."


@pytest.fixture(scope="module")
def embedded():
    return load_model(None)


def test_embedded_model_shapes_and_rows(embedded):
    r = capture(SENTENCE, model=embedded)
    assert r.family == "encoder" and r.kinds == ("encoder",)
    T = len(r.tokens)
    assert r.attentions.shape == (6, 12, T, T) and r.attentions.dtype == np.float32
    np.testing.assert_allclose(r.attentions.sum(-1), 1.0, atol=1e-5)
    assert r.tokens.tokens[0] == "[CLS]" and r.tokens.tokens[-1] == "[SEP]"
    assert r.tokens.special[0] and r.tokens.special[-1] and not r.tokens.special[1:-1].any()
    assert r.tokens.labels[1:4] == ("the", "keys", "to")
    assert r.truncated == 0


def test_embedded_attention_matches_independent_recomputation(embedded):
    """softmax(QK^T/sqrt(d)) recomputed from the model's own weights and hidden states, for every layer."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    path = embedded.path
    tok = AutoTokenizer.from_pretrained(path)
    ref = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = tok("Attention is all you need, they said.", return_tensors="pt")
    with torch.no_grad():
        hidden = ref(**enc, output_hidden_states=True).hidden_states
    r = capture("Attention is all you need, they said.", model=embedded)
    H, d = 12, 32
    for layer in range(6):
        att = ref.encoder.layer[layer].attention.self
        x = hidden[layer][0]
        q = (x @ att.query.weight.T + att.query.bias).reshape(-1, H, d).transpose(0, 1)
        k = (x @ att.key.weight.T + att.key.bias).reshape(-1, H, d).transpose(0, 1)
        expected = torch.softmax(q @ k.transpose(1, 2) / d ** 0.5, dim=-1).detach().numpy()
        assert np.abs(expected - r.attentions[layer]).max() <= 1e-4


def test_sentence_pair_segments(embedded):
    r = capture("Is it raining?", pair="No, it is sunny.", model=embedded)
    seg = r.tokens.segment_ids
    assert seg[0] == 0 and seg[-1] == 1 and set(np.unique(seg)) == {0, 1}
    assert r.tokens.tokens.count("[SEP]") == 2
    first_sep = r.tokens.tokens.index("[SEP]")
    assert (seg[: first_sep + 1] == 0).all() and (seg[first_sep + 1:] == 1).all()
    words = r.tokens.word_ids[~r.tokens.special]
    assert (np.diff(words) >= 0).all() and len(np.unique(words)) == len(words)  # unique across the pair


def test_word_ids_group_subwords(embedded):
    r = capture("unbelievably tokenization", model=embedded)
    labels, words = r.tokens.labels, r.tokens.word_ids
    assert any(lab.startswith("##") for lab in labels)
    assert set(words[~r.tokens.special]) == {0, 1}


def test_truncation_reports_dropped_tokens(embedded):
    r = capture("word " * 3000, model=embedded)
    assert r.attentions.shape[-1] == embedded.info.max_length == 512
    assert r.truncated == 3002 - 512  # [CLS] + 3000 words + [SEP]
    assert r.tokens.tokens[-1] == "[SEP]"


@pytest.mark.parametrize("bad", ["", "   \n\t ", "\x00\x01"])
def test_empty_text_is_refused(embedded, bad):
    with pytest.raises(InputError, match="empty"):
        capture(bad, model=embedded)


def test_hostile_characters_are_captured(embedded):
    r = capture("a\u202eb \ud800 c\u200bd 😀 漢字 <img src=x onerror=alert(1)>", model=embedded)
    assert np.isfinite(r.attentions).all()


def test_model_errors_are_one_line():
    for name, pattern in [("/no/such/folder", "No model folder"), ("bad id with spaces", "valid"),
                          ("org/not-downloaded-model", "cannot be reached|not downloaded")]:
        with pytest.raises(ModelError, match=pattern) as info:
            load_model(name)
        assert "\n" not in str(info.value)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        resolve(str(tmp_path))


def test_result_arrays_are_frozen_dataclass(embedded):
    r = capture(SENTENCE, model=embedded)
    with pytest.raises(Exception):
        r.text = "other"  # frozen


# ----------------------------------------------------------------- tiny models of each family
def _recompute(li):
    s = np.where(li.mask, li.scores, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return p / p.sum(-1, keepdims=True)


def test_tiny_encoder_pair_and_internals(tiny_models):
    r = capture("the cat sat on the mat", pair="the dog ran", model=tiny_models["encoder"], internals=True)
    assert r.family == "encoder" and r.attentions.shape[:2] == (2, 4)
    assert set(r.tokens.segment_ids) == {0, 1}
    for layer in range(2):
        li = r.internals[("encoder", layer)]
        np.testing.assert_allclose(_recompute(li), r.attentions[layer], atol=1e-5)
        np.testing.assert_allclose(li.head_output, np.einsum("hqk,hkd->hqd", li.pattern, li.value), atol=1e-5)


def test_tiny_decoder_is_causal(tiny_models):
    r = capture("the cat sat on the mat because it was tired", model=tiny_models["decoder"], internals=True)
    assert r.family == "decoder" and r.kinds == ("decoder",)
    a = r.attentions
    T = a.shape[-1]
    assert a.shape == (2, 4, T, T)
    assert (a[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all()  # exactly 0
    np.testing.assert_allclose(a.sum(-1), 1, atol=1e-5)
    assert not r.internals[("decoder", 1)].mask[0, 1]
    np.testing.assert_allclose(_recompute(r.internals[("decoder", 1)]), a[1], atol=1e-5)


def test_tiny_decoder_truncates_at_positions(tiny_models):
    r = capture("the cat " * 100, model=tiny_models["decoder"])
    assert r.attentions.shape[-1] == 48 and r.truncated == 200 - 48


@pytest.mark.parametrize("family", ["encoder-decoder", "t5"])
def test_tiny_encoder_decoder_with_target(tiny_models, family):
    r = capture("the cat sat on the mat", target="der hund ist", model=tiny_models[family], internals=True)
    assert r.kinds == ("encoder", "decoder", "cross")
    Te, Td = len(r.encoder), len(r.decoder)
    assert r.encoder_attentions.shape == (2, 4, Te, Te)
    assert r.decoder_attentions.shape == (2, 4, Td, Td)
    assert r.cross_attentions.shape == (2, 4, Td, Te)
    assert r.decoder.labels[1:4] == ("der", "hund", "ist") and not r.generated
    iu = np.triu_indices(Td, 1)
    assert (r.decoder_attentions[..., iu[0], iu[1]] == 0).all()
    for kind in r.kinds:
        np.testing.assert_allclose(r.block(kind).pattern.sum(-1), 1, atol=1e-5)
        np.testing.assert_allclose(_recompute(r.internals[(kind, 1)]), r.block(kind).pattern[1], atol=1e-5)
    assert r.block("cross").queries is r.decoder and r.block("cross").keys is r.encoder


def test_tiny_encoder_decoder_generates_bounded_target(tiny_models):
    r = capture("the cat sat", model=tiny_models["encoder-decoder"], max_new_tokens=5)
    assert r.generated and 2 <= len(r.decoder) <= 6 and r.cross_attentions.shape[2] == len(r.decoder)


def test_block_kind_errors(tiny_models):
    r = capture("the cat", model=tiny_models["encoder"])
    with pytest.raises(ValueError, match="no cross"):
        r.block("cross")


def test_concurrent_recordings_do_not_leak(embedded):
    """Two threads capture on the shared model; only the recording thread gets internals."""
    import threading
    out = {}

    def plain():
        for _ in range(3):
            out.setdefault("plain", []).append(capture("one two three", model=embedded))

    def recorded():
        out["rec"] = capture("four five six seven", model=embedded, internals=[("encoder", 3)])

    threads = [threading.Thread(target=plain), threading.Thread(target=recorded)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert all(not r.internals for r in out["plain"])
    assert set(out["rec"].internals) == {("encoder", 3)}
    assert out["rec"].internals[("encoder", 3)].query.shape[1] == len(out["rec"].tokens)


def test_concurrent_model_loads_leave_torch_usable(tiny_models):
    """Loads overlapping in threads once left transformers' init patches in place for the whole process."""
    import threading
    from viz.models import load_model
    errors = []

    def load(family):
        try:
            load_model(tiny_models[family])
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(f,)) for f in ("encoder-decoder", "t5", "decoder", "t5")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    r = capture("the cat sat", target="der hund", model=tiny_models["t5"])
    assert r.cross_attentions.shape[2:] == (len(r.decoder), len(r.encoder))


@pytest.mark.parametrize("family,site", [("encoder", ("encoder", 1)), ("decoder", ("decoder", 1)),
                                         ("encoder-decoder", ("cross", 1)), ("t5", ("decoder", 0))])
def test_one_layer_internals_equal_a_full_recording_and_stop_the_pass_there(tiny_models, family, site, monkeypatch):
    """capture_layer records one layer, stops the forward pass after it, and gives what a full
    recording of that layer gives (the math, flow and efficient pages use it on a layer pick)."""
    from viz import attention_fn
    from viz.capture import capture_layer
    loaded = load_model(tiny_models[family])
    text, target = "the cat sat on the mat", ("die Katze" if family != "decoder" else None)
    full = capture(text, target=target, model=loaded, internals=[site]).internals[site]
    calls = []
    real = attention_fn.viz_attention

    def counting(module, *args, **kwargs):
        calls.append(loaded.sites.get(id(module)))
        return real(module, *args, **kwargs)
    monkeypatch.setitem(attention_fn.AttentionInterface._global_mapping, attention_fn.NAME, counting)
    one = capture_layer(text, target=target, model=loaded, site=site)
    for name in ("query", "key", "value", "scores", "mask", "pattern", "head_output"):
        np.testing.assert_array_equal(getattr(one, name), getattr(full, name), err_msg=name)
    assert calls and calls[-1] == site                  # nothing ran after the recorded layer
    n_all = sum(1 for s in loaded.sites.values())
    assert len(calls) < n_all or site[1] == max(s[1] for s in loaded.sites.values() if s[0] == site[0])
