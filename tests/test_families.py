"""Every family capture supports: weights exact against transformers' own eager attention, and the
recorded internals right (softmax(where(mask, scores, -inf)) gives back each layer's pattern), or a
clear InternalsUnavailable, never an empty result.

Tiny random models (2 layers, 4 heads, width 32) of 21 families are built here from configs with
locally trained tokenizers and saved, then loaded through the public path (viz.models.load_model).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers as tf

from tiny_models import _tokenizer
from viz import attention_fn, families
from viz.capture import InternalsUnavailable, capture, capture_layer
from viz.models import load_model

TEXT = "the cat sat on the mat because it was too tired"
TARGET = "der hund ist"
WINDOW = 3            # sliding window of Mistral, Gemma-2 and GPT-Neo's local layer
SOFTCAP = 0.5         # Gemma-2's attention softcap, small so that it matters on a random model
W = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def _configs(bert, gpt, s2s) -> dict:
    """name -> (tokenizer, model class, config)."""
    g = dict(bos_token_id=gpt.bos_token_id, eos_token_id=gpt.eos_token_id)
    s = dict(pad_token_id=s2s.pad_token_id, bos_token_id=s2s.bos_token_id, eos_token_id=s2s.eos_token_id)
    vb, vg, vs = len(bert), len(gpt), len(s2s)
    seq2seq = dict(vocab_size=vs, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                   decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40)
    return {
        "bert": (bert, tf.BertModel, tf.BertConfig(vocab_size=vb, max_position_embeddings=64, **W)),
        # 34 positions, 2 reserved (pad_token_id 0 + 1): the token limit must be 32.
        "roberta": (bert, tf.RobertaModel, tf.RobertaConfig(vocab_size=vb, max_position_embeddings=34, pad_token_id=0,
                                                            type_vocab_size=1, **W)),
        "albert": (bert, tf.AlbertModel, tf.AlbertConfig(vocab_size=vb, embedding_size=16, max_position_embeddings=64,
                                                         **W)),
        "distilbert": (bert, tf.DistilBertModel, tf.DistilBertConfig(vocab_size=vb, dim=32, n_layers=2, n_heads=4,
                                                                     hidden_dim=64, max_position_embeddings=64)),
        "electra": (bert, tf.ElectraModel, tf.ElectraConfig(vocab_size=vb, embedding_size=32, max_position_embeddings=64,
                                                            **W)),
        "mpnet": (bert, tf.MPNetModel, tf.MPNetConfig(vocab_size=vb, max_position_embeddings=66, pad_token_id=0, **W)),
        "deberta-v2": (bert, tf.DebertaV2Model, tf.DebertaV2Config(
            vocab_size=vb, max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"],
            position_buckets=8, max_relative_positions=16, **W)),
        "gpt2": (gpt, tf.GPT2LMHeadModel, tf.GPT2Config(vocab_size=vg, n_embd=32, n_layer=2, n_head=4, n_positions=48,
                                                        **g)),
        "gpt-neo": (gpt, tf.GPTNeoForCausalLM, tf.GPTNeoConfig(
            vocab_size=vg, hidden_size=32, num_layers=2, num_heads=4, attention_types=[[["global", "local"], 1]],
            window_size=WINDOW, max_position_embeddings=48, **g)),
        "gptj": (gpt, tf.GPTJForCausalLM, tf.GPTJConfig(vocab_size=vg, n_embd=32, n_layer=2, n_head=4, rotary_dim=4,
                                                        n_positions=48, **g)),
        "bloom": (gpt, tf.BloomForCausalLM, tf.BloomConfig(vocab_size=vg, hidden_size=32, n_layer=2, n_head=4, **g)),
        "falcon": (gpt, tf.FalconForCausalLM, tf.FalconConfig(    # rotary, multi-query: one KV head
            vocab_size=vg, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=48, **g)),
        "falcon-alibi": (gpt, tf.FalconForCausalLM, tf.FalconConfig(
            vocab_size=vg, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True, multi_query=False,
            max_position_embeddings=48, **g)),
        "llama": (gpt, tf.LlamaForCausalLM, tf.LlamaConfig(vocab_size=vg, num_key_value_heads=2,
                                                           max_position_embeddings=48, **W, **g)),
        "mistral": (gpt, tf.MistralForCausalLM, tf.MistralConfig(vocab_size=vg, num_key_value_heads=2,
                                                                 sliding_window=WINDOW, max_position_embeddings=48,
                                                                 **W, **g)),
        "qwen2": (gpt, tf.Qwen2ForCausalLM, tf.Qwen2Config(vocab_size=vg, num_key_value_heads=2,
                                                           max_position_embeddings=48, **W, **g)),
        "gemma2": (gpt, tf.Gemma2ForCausalLM, tf.Gemma2Config(
            vocab_size=vg, num_key_value_heads=2, head_dim=8, sliding_window=WINDOW, attn_logit_softcapping=SOFTCAP,
            query_pre_attn_scalar=8, max_position_embeddings=48, **W, **g)),
        "phi": (gpt, tf.PhiForCausalLM, tf.PhiConfig(vocab_size=vg, max_position_embeddings=48,
                                                     partial_rotary_factor=0.5, **W, **g)),
        "bart": (s2s, tf.BartForConditionalGeneration, tf.BartConfig(
            **seq2seq, decoder_start_token_id=s2s.eos_token_id, forced_eos_token_id=None, **s)),
        "t5": (s2s, tf.T5ForConditionalGeneration, tf.T5Config(
            vocab_size=vs, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            decoder_start_token_id=s2s.pad_token_id, **s)),
        "marian": (s2s, tf.MarianMTModel, tf.MarianConfig(**seq2seq, decoder_start_token_id=s2s.pad_token_id, **s)),
    }


NAMES = ("bert", "roberta", "albert", "distilbert", "electra", "mpnet", "deberta-v2", "gpt2", "gpt-neo", "gptj",
         "bloom", "falcon", "falcon-alibi", "llama", "mistral", "qwen2", "gemma2", "phi", "bart", "t5", "marian")


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    tokenizers = (_tokenizer("bert"), _tokenizer("gpt2"), _tokenizer("seq2seq"))
    out = {}
    for name, (tok, cls, config) in _configs(*tokenizers).items():
        torch.manual_seed(0)
        config.initializer_range = 0.3     # weights wide enough that heads differ visibly
        cls(config).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    assert set(out) == set(NAMES)
    return out


@pytest.fixture(scope="session")
def loaded_families(family_dirs) -> dict:
    return {name: load_model(str(path)) for name, path in family_dirs.items()}


def _capture(loaded, text=TEXT, **kwargs):
    target = TARGET if loaded.info.family == "encoder-decoder" else None
    return capture(text, target=target, model=loaded, **kwargs)


def _reference(path: Path, result) -> dict[str, np.ndarray]:
    """The same input through transformers' own eager attention, loaded independently of viz."""
    config = tf.AutoConfig.from_pretrained(path)
    model = getattr(tf, config.architectures[0]).from_pretrained(path, attn_implementation="eager").eval()
    with torch.inference_mode():
        if result.family == "encoder-decoder":
            out = model(input_ids=torch.as_tensor(result.encoder.token_ids)[None],
                        decoder_input_ids=torch.as_tensor(result.decoder.token_ids)[None], output_attentions=True)
            raw = {"encoder": out.encoder_attentions, "decoder": out.decoder_attentions, "cross": out.cross_attentions}
        else:
            out = model(input_ids=torch.as_tensor(result.tokens.token_ids)[None], output_attentions=True)
            raw = {result.kinds[0]: out.attentions}
    return {kind: torch.stack([a[0] for a in layers]).float().numpy() for kind, layers in raw.items()}


def softmax_masked(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    s = np.where(allowed, scores.astype(np.float64), -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("name", NAMES)
def test_capture_exact_and_internals_reproduce_every_layer(name, family_dirs, loaded_families):
    loaded = loaded_families[name]
    assert loaded.internals_supported and loaded.internals_reason == ""
    result = _capture(loaded, internals=True)
    reference = _reference(family_dirs[name], result)
    for kind, pattern in reference.items():
        assert result.block(kind).pattern.shape == pattern.shape
        np.testing.assert_allclose(result.block(kind).pattern, pattern, atol=1e-6, err_msg=f"{name} {kind}")
    sites = {(kind, layer) for kind, pattern in reference.items() for layer in range(pattern.shape[0])}
    assert set(result.internals) == sites            # every layer, shared modules (ALBERT) included
    for (kind, layer), li in result.internals.items():
        expected = reference[kind][layer]
        np.testing.assert_allclose(li.pattern, expected, atol=1e-6, err_msg=f"{name} {kind} {layer}")
        np.testing.assert_allclose(softmax_masked(li.scores, li.mask), expected, atol=1e-5,
                                   err_msg=f"{name} {kind} layer {layer}: softmax(scores + mask)")
        n_heads, t_q, d_head = li.query.shape
        assert li.key.shape == li.value.shape == (n_heads, expected.shape[-1], d_head)
        np.testing.assert_allclose(li.head_output, np.einsum("hqk,hkd->hqd", expected, li.value), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_output_projection_takes_the_heads_concatenated(name, loaded_families):
    """families.output_projection is W_O: its input, split in n_heads slices, is each head's output."""
    loaded = loaded_families[name]
    modules = {id(m): m for m in loaded.model.modules()}
    calls: dict[int, list] = {}       # id(attention module) -> its W_O inputs, one per call (layer)
    handles = []
    for module_id, site in loaded.sites.items():
        projection = families.output_projection(modules[module_id])
        assert projection is not None, f"{name}: no output projection for {site}"
        assert projection.in_features % loaded.info.n_heads == 0
        assert tuple(projection.weight().shape) == (projection.in_features, projection.out_features)
        inputs = calls.setdefault(module_id, [])
        handles.append(projection.module.register_forward_pre_hook(
            lambda mod, args, inputs=inputs: inputs.append(args[0][0].detach().float().numpy())))
    try:
        result = _capture(loaded, internals=True)
    finally:
        for handle in handles:
            handle.remove()
    for module_id, site in loaded.sites.items():
        layers = modules[module_id].__dict__.get("_viz_layers") or (site,)   # ALBERT: one module, every layer
        assert len(calls[module_id]) == len(layers)
        for site, merged in zip(layers, calls[module_id]):
            li = result.internals[site]
            n_heads, t_q, d_head = li.head_output.shape
            assert merged.shape == (t_q, n_heads * d_head), (name, site)
            np.testing.assert_allclose(merged.reshape(t_q, n_heads, d_head).transpose(1, 0, 2), li.head_output,
                                       atol=1e-5, err_msg=f"{name} {site}")
    if name == "gpt2":
        assert families.output_projection(next(m for m in modules.values() if id(m) in loaded.sites)).weight_in_out


def test_family_quirks_show_in_the_internals(loaded_families):
    # Gemma-2: scores squashed by the softcap; layer 0 slides a window, layer 1 sees everything before it.
    gemma = _capture(loaded_families["gemma2"], internals=True)
    for layer in (0, 1):
        li = gemma.internals[("decoder", layer)]
        assert li.softcap == SOFTCAP and np.abs(li.scores).max() <= SOFTCAP
    q, k = np.indices(gemma.internals[("decoder", 0)].mask.shape)
    np.testing.assert_array_equal(gemma.internals[("decoder", 0)].mask, (k <= q) & (q - k < WINDOW))
    np.testing.assert_array_equal(gemma.internals[("decoder", 1)].mask, k <= q)
    # Mistral slides on every layer; GPT-Neo on its local (second) layer only.
    li = _capture(loaded_families["mistral"], internals=True).internals[("decoder", 1)]
    np.testing.assert_array_equal(li.mask, (k <= q) & (q - k < WINDOW))
    neo = _capture(loaded_families["gpt-neo"], internals=True)
    np.testing.assert_array_equal(neo.internals[("decoder", 0)].mask, k <= q)
    np.testing.assert_array_equal(neo.internals[("decoder", 1)].mask, (k <= q) & (q - k < WINDOW))
    assert neo.internals[("decoder", 0)].scaling == 1.0            # GPT-Neo does not scale q.k
    # Grouped and multi-query KV heads: query heads of a group read the same keys.
    llama = _capture(loaded_families["llama"], internals=True).internals[("decoder", 0)]
    np.testing.assert_array_equal(llama.key[0], llama.key[1])
    assert not np.allclose(llama.key[1], llama.key[2])
    falcon = _capture(loaded_families["falcon"], internals=True)
    assert loaded_families["falcon"].info.n_kv_heads == 1 and not falcon.kv_head.any()
    np.testing.assert_array_equal(falcon.internals[("decoder", 0)].key[0], falcon.internals[("decoder", 0)].key[3])
    # ALBERT: one shared module, two different layers.
    albert = _capture(loaded_families["albert"], internals=True)
    assert not np.allclose(albert.internals[("encoder", 0)].hidden, albert.internals[("encoder", 1)].hidden)
    # Position biases (T5 relative buckets, ALiBi, MPNet/DeBERTa relative terms) are part of the scores.
    for name, kind in (("t5", "encoder"), ("bloom", "decoder"), ("falcon-alibi", "decoder"), ("mpnet", "encoder"),
                       ("deberta-v2", "encoder")):
        li = _capture(loaded_families[name], internals=True).internals[(kind, 0)]
        plain = li.scaling * np.einsum("hqd,hkd->hqk", li.query, li.key)
        assert np.abs(np.where(li.mask, li.scores - plain, 0)).max() > 1e-3, name


@pytest.mark.parametrize("name", ["roberta", "mpnet", "distilbert", "albert", "electra", "deberta-v2"])
def test_encoder_pairs_and_position_limits(name, loaded_families):
    """Families without segment embeddings get no token_type_ids; RoBERTa-likes reserve 2 positions."""
    loaded = loaded_families[name]
    result = capture("the cat sat", pair="the dog ran", model=loaded)
    assert result.tokens.segment_ids.max() == 1
    if name == "roberta":
        assert loaded.info.max_length == 34 - 2
        long = capture("the cat " * 40, model=loaded)
        assert len(long.tokens) == 32 and long.truncated > 0


def test_capture_layer_on_a_shared_and_an_own_code_family(loaded_families):
    for name, site in (("albert", ("encoder", 1)), ("bloom", ("decoder", 1)), ("deberta-v2", ("encoder", 0))):
        full = _capture(loaded_families[name], internals=True).internals[site]
        one = capture_layer(TEXT, model=loaded_families[name], site=site)
        np.testing.assert_array_equal(one.scores, full.scores)
        np.testing.assert_array_equal(one.pattern, full.pattern)


def test_a_family_that_cannot_be_recorded_says_so(family_dirs, monkeypatch):
    """Without its recipe, BLOOM's own attention code records nothing: a clear error, then a flag."""
    monkeypatch.setitem(families.FAMILIES, "bloom", families.Family())
    loaded = load_model(str(family_dirs["bloom"]))
    plain = capture(TEXT, model=loaded)                 # the weights still come back
    assert plain.attentions.shape[0] == 2
    with pytest.raises(InternalsUnavailable, match="own code"):
        capture(TEXT, model=loaded, internals=True)
    assert not loaded.internals_supported and "bloom" in loaded.internals_reason
    with pytest.raises(InternalsUnavailable, match="own code"):
        capture_layer(TEXT, model=loaded, site=("decoder", 0))


def test_internals_that_would_be_wrong_are_refused(loaded_families, monkeypatch):
    """The old bug (Gemma-2's softcap left out of the scores) is caught by the self-check, not shown."""
    real = attention_fn.Recorder.record

    def without_softcap(self, module, query, key, value, mask, scaling, weights, kwargs):
        return real(self, module, query, key, value, mask, scaling, weights,
                    {k: v for k, v in kwargs.items() if k != "softcap"})
    monkeypatch.setattr(attention_fn.Recorder, "record", without_softcap)
    with pytest.raises(InternalsUnavailable, match="differs from the model's weights"):
        _capture(loaded_families["gemma2"], internals=True)


def test_family_table_lookups():
    assert families.family("roberta").drops_token_type_ids and families.family("roberta").position_reserve
    assert families.family("some-new-family") is families.DEFAULT
    assert families.internals_support("llama") == (True, "")
    config = tf.FalconConfig(num_attention_heads=8, multi_query=True)
    assert families.kv_heads(config, 8) == 1
    assert families.kv_heads(tf.LlamaConfig(num_attention_heads=8, num_key_value_heads=2), 8) == 2
    assert families.shared_layers(tf.AlbertConfig(num_hidden_layers=6, num_hidden_groups=2), 1) == (3, 4, 5)
    assert families.is_cross_attention("model.decoder.layers.0.encoder_attn")
