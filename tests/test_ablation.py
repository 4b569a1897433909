"""Head ablation and head importance (viz.ablation) against independent hooks written here.

The reference models are loaded straight from the tiny checkpoints with transformers (eager
attention), and heads are removed with hooks written in this file on modules found by their
known paths, never through viz's own site lookup.
"""
from __future__ import annotations

import csv
import functools
import threading

import numpy as np
import pytest
import tiny_models as model_builder
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertForMaskedLM,
)

from viz import ablation
from viz.ablation_result import (
    DecoderEffect,
    EncoderEffect,
    HeadSpecError,
    effect_table,
    importance_table,
    parse_heads,
    spearman,
)
from viz.capture import capture
from viz.cli import main as cli_main
from viz.models import load_model

TEXT = "the quick brown fox jumps over the lazy dog because it was too tired"
DECODERS = ("decoder", "llama")   # GPT-2 (bias in c_proj) and Llama with grouped-query attention


# ---------------------------------------------------------------- independent reference
def reference_model(path: str, family: str, *, dtype=torch.float32):
    cls = AutoModel if family == "encoder" else AutoModelForCausalLM
    return cls.from_pretrained(path, attn_implementation="eager").to(dtype).eval()


def w_o(model, family: str, layer: int):
    """W_O of one layer, by the family's own module path."""
    if family == "decoder":
        return model.transformer.h[layer].attn.c_proj
    if family == "llama":
        return model.model.layers[layer].self_attn.o_proj
    base = model.bert if hasattr(model, "bert") else model
    return base.encoder.layer[layer].attention.output.dense


def n_heads_of(model) -> int:
    return model.config.num_attention_heads


def edit_heads(model, family: str, heads, *, mode: str = "zero", scale: float | None = None):
    """Hooks removing (or scaling by ``scale``) heads; returns the handles."""
    n = n_heads_of(model)
    handles = []
    for layer in sorted({lay for lay, _ in heads}):
        chosen = [h for lay, h in heads if lay == layer]

        def hook(module, args, chosen=chosen):
            x = args[0].clone()
            d = x.shape[-1] // n
            for h in chosen:
                part = x[..., h * d:(h + 1) * d]
                if scale is not None:
                    x[..., h * d:(h + 1) * d] = part * scale
                elif mode == "zero":
                    x[..., h * d:(h + 1) * d] = 0
                else:
                    x[..., h * d:(h + 1) * d] = part.mean(dim=1, keepdim=True).expand_as(part)
            return (x,)
        handles.append(w_o(model, family, layer).register_forward_pre_hook(hook))
    return handles


class removed:
    """with removed(model, family, heads): ... (independent of viz.ablation)."""

    def __init__(self, model, family, heads, **kw):
        self.args = (model, family, heads)
        self.kw = kw

    def __enter__(self):
        self.handles = edit_heads(*self.args, **self.kw)

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@functools.cache
def _tokenizer(path: str):
    return AutoTokenizer.from_pretrained(path)


def ids_of(path: str, text: str) -> dict:
    enc = _tokenizer(path)(text, return_tensors="pt")
    return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}


@pytest.fixture(scope="module")
def loaded(tiny_models):
    return {f: load_model(tiny_models[f]) for f in ("decoder", "llama", "encoder")}


@pytest.fixture(scope="module")
def refs(tiny_models):
    return {f: reference_model(tiny_models[f], f) for f in ("decoder", "llama", "encoder")}


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    """A tiny BERT with its masked-LM head, saved the way a user's folder would be."""
    torch.manual_seed(1)
    tok = model_builder._tokenizer("bert")
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    out = tmp_path_factory.mktemp("mlm") / "bert-mlm"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def _logits(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits[0].double()


def _kl(lp_b, lp_a):
    return (lp_b.exp() * (lp_b - lp_a)).sum(-1)


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("family", ["decoder", "llama", "encoder"])
def test_zeroing_no_heads_changes_nothing_exactly(loaded, family):
    m = loaded[family]
    inputs = ids_of(m.path, TEXT)
    with torch.inference_mode():
        plain = m.model(**inputs)[0]
        with ablation.ablated(m, []):
            same = m.model(**inputs)[0]
    assert torch.equal(plain, same)
    eff = ablation.effect(TEXT, [], model=m)
    if family == "encoder":
        assert eff.sentence_cosine == pytest.approx(1.0, abs=1e-12)
        assert np.allclose(eff.token_cosine, 1.0, atol=1e-12)
    else:
        assert np.array_equal(eff.kl, np.zeros_like(eff.kl))
        assert np.array_equal(eff.p_next_before, eff.p_next_after, equal_nan=True)


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_decoder_effect_matches_an_independent_hook(loaded, refs, family, mode):
    heads = [(0, 1), (1, 2), (1, 3)]   # in llama, heads 0 and 1 share KV head 0: only query head 1 goes
    eff = ablation.decoder_effect(TEXT, heads, model=loaded[family], mode=mode, k=5)
    ref = refs[family]
    inputs = ids_of(loaded[family].path, TEXT)
    before = torch.log_softmax(_logits(ref, inputs), -1)
    with removed(ref, family, heads, mode=mode):
        after = torch.log_softmax(_logits(ref, inputs), -1)
    ids = inputs["input_ids"][0]
    n = len(ids)
    assert isinstance(eff, DecoderEffect) and eff.heads == tuple(sorted(heads))
    assert np.allclose(eff.kl, _kl(before, after).numpy(), atol=1e-6)
    assert eff.kl.max() > 1e-4    # the heads matter in these random models
    assert np.allclose(eff.p_next_before[:-1], before[torch.arange(n - 1), ids[1:]].exp().numpy(), atol=1e-6)
    assert np.allclose(eff.p_next_after[:-1], after[torch.arange(n - 1), ids[1:]].exp().numpy(), atol=1e-6)
    assert np.isnan(eff.p_next_after[-1]) and eff.next_ids[-1] == -1
    top = eff.top_k(3)
    assert list(top.after_ids) == torch.topk(after[3], 5).indices.tolist()
    assert np.allclose(top.before_probs_after, after[3, top.before_ids].exp().numpy(), atol=1e-6)


def test_gqa_query_heads_are_removed_one_by_one(loaded):
    """Under GQA two query heads read one KV head; knocking out one of them is not knocking out both."""
    m = loaded["llama"]
    one = ablation.decoder_effect(TEXT, [(0, 0)], model=m).kl
    both = ablation.decoder_effect(TEXT, [(0, 0), (0, 1)], model=m).kl
    other = ablation.decoder_effect(TEXT, [(0, 1)], model=m).kl
    assert not np.allclose(one, both) and not np.allclose(one, other)


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_encoder_effect_matches_an_independent_hook(loaded, refs, mode):
    heads = [(0, 0), (1, 3)]
    eff = ablation.encoder_effect(TEXT, heads, model=loaded["encoder"], mode=mode)
    ref = refs["encoder"]
    inputs = ids_of(loaded["encoder"].path, TEXT)
    with torch.no_grad():
        before = ref(**inputs).last_hidden_state[0].double()
        with removed(ref, "encoder", heads, mode=mode):
            after = ref(**inputs).last_hidden_state[0].double()
    cos = torch.nn.functional.cosine_similarity
    assert isinstance(eff, EncoderEffect)
    assert eff.sentence_cosine == pytest.approx(float(cos(before.mean(0), after.mean(0), dim=0)), abs=1e-6)
    assert np.allclose(eff.token_cosine, cos(before, after, dim=-1).numpy(), atol=1e-6)
    # Random tiny BERT heads attend almost uniformly, so a head's mean is close to its output.
    assert eff.sentence_cosine < (1 - 1e-7 if mode == "zero" else 1)


@pytest.mark.parametrize("family", ["decoder", "llama", "encoder"])
def test_zeroing_every_head_of_a_layer_leaves_only_the_residual_path(loaded, refs, family):
    """With all heads of layer 0 gone, the attention block adds W_O's bias only (GPT-2, BERT) or nothing (Llama)."""
    m, ref = loaded[family], refs[family]
    n = n_heads_of(ref)
    proj = w_o(ref, family, 0)

    def only_bias(module, args, output):
        bias = getattr(module, "bias", None)
        return torch.zeros_like(output) if bias is None else bias.expand_as(output).clone()

    inputs = ids_of(m.path, TEXT)
    handle = proj.register_forward_hook(only_bias)
    try:
        with torch.no_grad():
            expected = ref(**inputs)[0]
    finally:
        handle.remove()
    with torch.inference_mode(), ablation.ablated(m, [(0, h) for h in range(n)]):
        got = m.model(**inputs)[0]
    assert torch.allclose(got, expected, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(ref(**inputs)[0], expected, atol=1e-3)


def test_ablated_capture_changes_later_layers_only(loaded, refs):
    m, ref = loaded["llama"], refs["llama"]
    plain = capture(TEXT, model=m)
    knocked = ablation.ablated_capture(TEXT, [(0, 2)], model=m)
    inputs = ids_of(m.path, TEXT)
    with torch.no_grad(), removed(ref, "llama", [(0, 2)]):
        expected = ref(**inputs, output_attentions=True).attentions
    assert np.allclose(knocked.attentions[0], plain.attentions[0], atol=1e-7)   # its own pattern stays
    assert not np.allclose(knocked.attentions[1], plain.attentions[1], atol=1e-4)
    assert np.allclose(knocked.attentions[1], expected[1][0].numpy(), atol=1e-6)
    assert not ablation.active()


def test_continuation_before_and_after(loaded, refs):
    m, ref = loaded["llama"], refs["llama"]
    prompt = "the cat sat on"
    inputs = ids_of(m.path, prompt)

    def greedy(n, heads, mode):
        ids = inputs["input_ids"]
        with torch.no_grad(), removed(ref, "llama", heads, mode=mode):
            for _ in range(n):
                nxt = ref(input_ids=ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], 1)
        return ids[0, inputs["input_ids"].shape[1]:].tolist()

    heads = [(0, 1), (1, 0), (1, 2)]
    cont = ablation.continuation(prompt, heads, model=m, max_new_tokens=6)
    assert cont.before.step_ids.tolist()[:6] == greedy(6, [], "zero")[:len(cont.before.step_ids)]
    assert cont.after.step_ids.tolist() == greedy(6, heads, "zero")[:len(cont.after.step_ids)]
    assert cont.changed
    # Mean mode: the first new token comes from the prompt pass, whose means are over the prompt.
    mean = ablation.continuation(prompt, heads, model=m, mode="mean", max_new_tokens=3)
    assert int(mean.after.step_ids[0]) == greedy(1, heads, "mean")[0]


@pytest.mark.parametrize("family", ["encoder-decoder", "t5"])
@pytest.mark.parametrize("kind", ["encoder", "cross"])
def test_encoder_decoder_ablated_capture(tiny_models, family, kind):
    """BART's out_proj and T5's o: encoder heads, and cross-attention heads of the decoder."""
    from transformers import AutoModelForSeq2SeqLM
    m = load_model(tiny_models[family])
    target = "the cat sat"
    plain = capture(TEXT, target=target, model=m)
    knocked = ablation.ablated_capture(TEXT, [(0, 1), (0, 3)], model=m, kind=kind, target=target)
    ref = AutoModelForSeq2SeqLM.from_pretrained(tiny_models[family], attn_implementation="eager").eval()
    if family == "t5":
        stack = ref.encoder.block if kind == "encoder" else ref.decoder.block
        proj = stack[0].layer[0 if kind == "encoder" else 1].EncDecAttention.o if kind == "cross" \
            else stack[0].layer[0].SelfAttention.o
    else:
        layer = (ref.model.encoder if kind == "encoder" else ref.model.decoder).layers[0]
        proj = layer.self_attn.out_proj if kind == "encoder" else layer.encoder_attn.out_proj
    d = proj.in_features // 4

    def hook(module, args):
        x = args[0].clone()
        for h in (1, 3):
            x[..., h * d:(h + 1) * d] = 0
        return (x,)

    tok = _tokenizer(m.path)
    enc = tok(TEXT, return_tensors="pt")
    dec = torch.from_numpy(knocked.decoder.token_ids)[None]
    handle = proj.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            out = ref(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=dec,
                      output_attentions=True)
    finally:
        handle.remove()
    changed = "encoder_attentions" if kind == "encoder" else "decoder_attentions"
    assert not np.allclose(getattr(knocked, changed)[1], getattr(plain, changed)[1], atol=1e-6)
    assert np.allclose(getattr(knocked, changed)[1], getattr(out, changed)[1][0].numpy(), atol=1e-6)
    assert np.allclose(knocked.cross_attentions[1], out.cross_attentions[1][0].numpy(), atol=1e-6)


# ---------------------------------------------------------------- isolation
def test_concurrent_sessions_never_see_each_others_ablation(loaded):
    m = loaded["llama"]
    inputs = ids_of(m.path, TEXT)
    heads = [(0, 1), (1, 3)]
    state = {k: v.clone() for k, v in m.model.state_dict().items()}
    with torch.inference_mode():
        lone_plain = m.model(**inputs).logits
        with ablation.ablated(m, heads):
            lone_ablated = m.model(**inputs).logits
    assert not torch.allclose(lone_plain, lone_ablated)

    inside, plain_done = threading.Event(), threading.Event()
    results, errors = {"ablated": [], "plain": []}, []

    def ablating():
        try:
            for i in range(20):
                with torch.inference_mode(), ablation.ablated(m, heads):
                    if i == 0:
                        inside.set()            # the other session runs while this one's ablation is open
                        plain_done.wait(30)
                    results["ablated"].append(m.model(**inputs).logits)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def plain():
        try:
            inside.wait(30)
            for i in range(20):
                with torch.inference_mode():
                    results["plain"].append(m.model(**inputs).logits)
                if i == 0:
                    plain_done.set()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=ablating), threading.Thread(target=plain)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results["ablated"]) == len(results["plain"]) == 20
    assert all(torch.equal(r, lone_ablated) for r in results["ablated"])
    assert all(torch.equal(r, lone_plain) for r in results["plain"])
    # The public API from two threads: the same numbers as alone.
    alone = ablation.decoder_effect(TEXT, heads, model=m).kl
    out = {}
    ts = [threading.Thread(target=lambda: out.setdefault("a", ablation.decoder_effect(TEXT, heads, model=m).kl)),
          threading.Thread(target=lambda: out.setdefault("b", ablation.decoder_effect(TEXT, [], model=m).kl))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert np.allclose(out["a"], alone, atol=1e-12) and not out["b"].any()
    # Nothing left behind: same weights, no plan open, no hooks added by the calls.
    assert all(torch.equal(v, state[k]) for k, v in m.model.state_dict().items())
    assert not ablation.active()
    hooks = sum(len(mod._forward_pre_hooks) for mod in m.model.modules())
    ablation.decoder_effect(TEXT, heads, model=m)
    assert sum(len(mod._forward_pre_hooks) for mod in m.model.modules()) == hooks


def test_ablation_is_scoped_to_its_model(tiny_models, loaded):
    other = load_model(tiny_models["llama"])
    inputs = ids_of(other.path, TEXT)
    with torch.inference_mode():
        plain = other.model(**inputs).logits
        with ablation.ablated(loaded["llama"], [(0, 0), (1, 1)]):
            assert torch.equal(other.model(**inputs).logits, plain)


def test_the_plan_is_reset_after_an_error(loaded):
    m = loaded["decoder"]
    with pytest.raises(RuntimeError), ablation.ablated(m, [(0, 0)]):
        assert ablation.active()
        raise RuntimeError("boom")
    assert not ablation.active()


# ---------------------------------------------------------------- importance
# Llama's eager attention takes its softmax in float32 even for a float64 model, so its loss is
# only smooth to ~1e-8: it needs a larger step, and the differences carry ~1e-5 of rounding noise.
@pytest.mark.parametrize("family, eps, rtol, atol", [("decoder", 1e-5, 1e-5, 1e-9), ("llama", 1e-3, 1e-4, 1e-4)])
def test_gradient_importance_matches_finite_differences(tiny_models, family, eps, rtol, atol):
    m = load_model(tiny_models[family])
    m.model.double()   # a private copy: float64 so finite differences are exact to ~1e-8
    grad = ablation.gradient_importance(TEXT, model=m).importance
    ref = reference_model(tiny_models[family], family, dtype=torch.float64)
    inputs = ids_of(m.path, TEXT)
    ids = inputs["input_ids"][0]

    def loss(heads=(), scale=1.0):
        with torch.no_grad(), removed(ref, family, list(heads), scale=scale):
            logits = ref(**inputs).logits[0]
        return float(torch.nn.functional.cross_entropy(logits[:-1], ids[1:]))

    fd = np.zeros_like(grad)
    for layer in range(grad.shape[0]):
        for head in range(grad.shape[1]):
            fd[layer, head] = (loss([(layer, head)], 1 + eps) - loss([(layer, head)], 1 - eps)) / (2 * eps)
    # One-sided with the gate at 1 - eps, as Michel et al. define the importance.
    one_sided = (loss() - loss([(0, 1)], 1 - eps)) / eps
    assert np.allclose(grad, np.abs(fd), rtol=rtol, atol=atol)
    assert grad[0, 1] == pytest.approx(abs(one_sided), rel=100 * eps)
    assert spearman(grad, np.abs(fd)) > 0.999


def test_gradient_importance_of_a_masked_lm(mlm_dir):
    m = load_model(mlm_dir)
    m.model.double()
    ablation.masked_lm(m).double()
    grad = ablation.gradient_importance(TEXT, model=m)
    assert "masked-LM" in grad.objective
    ref = BertForMaskedLM.from_pretrained(mlm_dir, attn_implementation="eager").double().eval()
    inputs = ids_of(mlm_dir, TEXT)
    ids = inputs["input_ids"][0]
    keep = torch.ones(len(ids), dtype=torch.bool)
    keep[0] = keep[-1] = False    # [CLS], [SEP]

    def loss(head, scale):
        with torch.no_grad(), removed(ref, "encoder", [head], scale=scale):
            logits = ref(**inputs).logits[0]
        return float(torch.nn.functional.cross_entropy(logits[keep], ids[keep]))

    eps = 1e-5
    for head in [(0, 0), (0, 3), (1, 2)]:
        fd = (loss(head, 1 + eps) - loss(head, 1 - eps)) / (2 * eps)
        assert grad.importance[head] == pytest.approx(abs(fd), rel=1e-5, abs=1e-9)


def test_embedding_gradient_importance_is_the_second_order_ablation_effect(tiny_models):
    """For an encoder without an MLM head: 1/2 |P de/dg_h|^2 / |e|^2, exact with d_model - 1 probes."""
    m = load_model(tiny_models["encoder"])
    m.model.double()
    exact = ablation.gradient_importance(TEXT, model=m, probes=10_000).importance
    ref = reference_model(tiny_models["encoder"], "encoder", dtype=torch.float64)
    inputs = ids_of(m.path, TEXT)

    def emb(head=None, scale=1.0):
        with torch.no_grad(), removed(ref, "encoder", [head] if head else [], scale=scale):
            return ref(**inputs).last_hidden_state[0].mean(0)

    e = emb()
    u = e / e.norm()
    eps = 1e-5
    for head in [(0, 0), (0, 2), (1, 1), (1, 3)]:
        jac = (emb(head, 1 + eps) - emb(head, 1 - eps)) / (2 * eps)
        orth = jac - (jac @ u) * u
        assert exact[head] == pytest.approx(float(0.5 * (orth @ orth) / (e @ e)), rel=1e-5)
    sampled = ablation.gradient_importance(TEXT, model=m, probes=16).importance
    assert spearman(sampled, exact) > 0.5


@pytest.mark.parametrize("family", ["decoder", "llama", "encoder"])
@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_batched_all_heads_ablation_equals_one_at_a_time(loaded, family, mode):
    m = loaded[family]
    calls = []
    fanned = ablation.ablation_importance(TEXT, model=m, mode=mode, on_progress=lambda d, t: calls.append((d, t)))
    single = ablation.ablation_importance(TEXT, model=m, mode=mode, rows_per_pass=1)
    per_layer = ablation.ablation_importance(TEXT, model=m, mode=mode, rows_per_pass=4)   # one layer a pass
    repeated = ablation.ablation_importance(TEXT, model=m, mode=mode, fanout=False)
    odd = ablation.ablation_importance(TEXT, model=m, mode=mode, fanout=False, rows_per_pass=3)  # spans layers
    for other in (single, per_layer, repeated, odd):
        assert np.allclose(fanned.importance, other.importance, atol=1e-5, rtol=0)
    assert calls == [(8, 8)]                         # both layers' heads in one pass
    assert (fanned.importance > 0).all()
    if family != "encoder":
        assert fanned.importance[1, 2] == pytest.approx(
            ablation.decoder_effect(TEXT, [(1, 2)], model=m, mode=mode).mean_kl, abs=1e-5)
    else:
        assert fanned.importance[1, 2] == pytest.approx(
            1 - ablation.encoder_effect(TEXT, [(1, 2)], model=m, mode=mode).sentence_cosine, abs=1e-6)


@pytest.mark.parametrize("family", ["decoder", "llama", "encoder"])
def test_rows_fanned_out_from_one_input_row(loaded, family):
    """ablated_rows with a one-row input: the batch fans out at the first ablated layer."""
    m = loaded[family]
    inputs = ids_of(m.path, TEXT)
    rows = [[(1, 0)], [(0, 2), (1, 1)], [], [(1, 3)]]
    with torch.inference_mode():
        with ablation.ablated_rows(m, rows):
            fanned = m.model(**inputs)[0]
        with ablation.ablated_rows(m, rows):
            repeated = m.model(**{k: v.expand(len(rows), -1) for k, v in inputs.items()})[0]
        alone = []
        for heads in rows:
            with ablation.ablated(m, heads):
                alone.append(m.model(**inputs)[0][0])
    assert fanned.shape[0] == len(rows)
    assert torch.allclose(fanned, repeated, atol=1e-5)
    assert torch.allclose(fanned, torch.stack(alone), atol=1e-5)


def test_one_at_a_time_ablation_matches_the_independent_kl(loaded, refs):
    m, ref = loaded["decoder"], refs["decoder"]
    imp = ablation.ablation_importance(TEXT, model=m).importance
    inputs = ids_of(m.path, TEXT)
    before = torch.log_softmax(_logits(ref, inputs), -1)
    for head in [(0, 0), (1, 3)]:
        with removed(ref, "decoder", [head]):
            after = torch.log_softmax(_logits(ref, inputs), -1)
        assert imp[head] == pytest.approx(float(_kl(before, after).mean()), abs=1e-6)


def test_importance_of_a_long_text_scores_its_first_tokens(loaded, refs, monkeypatch):
    """Past IMPORTANCE_MAX_TOKENS, both methods score the first tokens and say how many were left out."""
    m, ref = loaded["decoder"], refs["decoder"]
    monkeypatch.setattr(ablation, "IMPORTANCE_MAX_TOKENS", 8)
    inputs = ids_of(m.path, TEXT)
    n = inputs["input_ids"].shape[1]
    first = {k: v[:, :8] for k, v in inputs.items()}
    imp = ablation.ablation_importance(TEXT, model=m)
    assert len(imp.tokens) == 8 and imp.truncated == n - 8
    before = torch.log_softmax(_logits(ref, first), -1)
    with removed(ref, "decoder", [(1, 3)]):
        after = torch.log_softmax(_logits(ref, first), -1)
    assert imp.importance[1, 3] == pytest.approx(float(_kl(before, after).mean()), abs=1e-6)
    grad = ablation.gradient_importance(TEXT, model=m)
    assert grad.truncated == n - 8 and len(grad.tokens) == 8


# ---------------------------------------------------------------- masked-LM head
def test_masked_top_k_before_and_after(mlm_dir, tiny_models):
    m = load_model(mlm_dir)
    assert ablation.has_masked_lm(m)
    heads = [(0, 1), (1, 0), (1, 2)]
    text = "the cat [MASK] on the mat"
    got = ablation.masked_top_k(text, heads, model=m, k=5)
    ref = BertForMaskedLM.from_pretrained(mlm_dir, attn_implementation="eager").eval()
    inputs = ids_of(mlm_dir, text)
    pos = int((inputs["input_ids"][0] == m.tokenizer.mask_token_id).nonzero()[0])
    before = torch.softmax(_logits(ref, inputs)[pos], -1)
    with removed(ref, "encoder", heads):
        after = torch.softmax(_logits(ref, inputs)[pos], -1)
    assert got.top.position == pos
    assert got.top.before_ids.tolist() == torch.topk(before, 5).indices.tolist()
    assert got.top.after_ids.tolist() == torch.topk(after, 5).indices.tolist()
    assert np.allclose(got.top.after_probs, torch.topk(after, 5).values.numpy(), atol=1e-6)
    assert np.allclose(got.top.before_probs_after, after[got.top.before_ids].numpy(), atol=1e-6)
    # The MLM model reads the shared encoder: no second copy of its weights.
    assert ablation.masked_lm(m).bert is m.model
    # A checkpoint without MLM weights has no head (a random one would be no head).
    plain = load_model(tiny_models["encoder"])
    assert not ablation.has_masked_lm(plain)
    with pytest.raises(ablation.AblationError, match="no masked-LM head"):
        ablation.masked_top_k(text, heads, model=plain)


# ---------------------------------------------------------------- input checks and helpers
def test_bad_heads_and_modes_are_one_line_errors(loaded):
    m = loaded["llama"]
    for heads, message in [([(2, 0)], "layer 2 is out of range"), ([(0, 4)], "head 4 is out of range"),
                           ([(0, -1)], "head -1"), ([("a", 0)], "pair of integers")]:
        with pytest.raises(ablation.AblationError, match=message):
            ablation.decoder_effect(TEXT, heads, model=m)
    with pytest.raises(ablation.AblationError, match="unknown ablation mode"):
        ablation.decoder_effect(TEXT, [(0, 0)], model=m, mode="half")
    with pytest.raises(ablation.AblationError, match="encoder model"):
        ablation.encoder_effect(TEXT, [(0, 0)], model=m)
    assert parse_heads(" 3:4, 0:1,3:4", n_layers=5, n_heads=5) == ((0, 1), (3, 4))
    for spec in ("", "3", "3:4:5", "a:b", "3-4"):
        with pytest.raises(HeadSpecError):
            parse_heads(spec)


def test_spearman_and_tables():
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert spearman(a, a * 10 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    from scipy.stats import spearmanr
    rng = np.random.default_rng(0)
    x, y = rng.random((3, 4)), rng.random((3, 4))
    assert spearman(x, y) == pytest.approx(spearmanr(x.ravel(), y.ravel()).statistic)
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


# ---------------------------------------------------------------- CLI
def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_cli_ablate_decoder(tmp_path, loaded, refs, capsys):
    out = tmp_path / "ablate.csv"
    m = loaded["llama"]
    assert cli_main(["ablate", "--text", TEXT, "--heads", "0:1,1:3", "--mode", "mean", "--model", m.path,
                     "--out", str(out)]) == 0
    rows = _rows(out)
    assert list(rows[0])[:6] == ["position", "token", "next_token", "p_next_before", "p_next_after", "kl"]
    ref = refs["llama"]
    inputs = ids_of(m.path, TEXT)
    before = torch.log_softmax(_logits(ref, inputs), -1)
    with removed(ref, "llama", [(0, 1), (1, 3)], mode="mean"):
        after = torch.log_softmax(_logits(ref, inputs), -1)
    ids = inputs["input_ids"][0]
    assert len(rows) == len(ids)
    kl = _kl(before, after)
    tokens = m.tokenizer.convert_ids_to_tokens(ids.tolist())
    for p, row in enumerate(rows):
        assert int(row["position"]) == p and row["token"] == tokens[p]
        assert float(row["kl"]) == pytest.approx(float(kl[p]), abs=1e-6)
        if p < len(ids) - 1:
            assert row["next_token"] == tokens[p + 1]
            assert float(row["p_next_after"]) == pytest.approx(float(after[p, ids[p + 1]].exp()), abs=1e-7)
            assert float(row["p_next_before"]) == pytest.approx(float(before[p, ids[p + 1]].exp()), abs=1e-7)
        else:
            assert row["next_token"] == "" and row["p_next_after"] == ""


def test_cli_ablate_encoder(tmp_path, loaded):
    out = tmp_path / "ablate.csv"
    m = loaded["encoder"]
    assert cli_main(["ablate", "--text", TEXT, "--heads", "1:2", "--model", m.path, "--out", str(out)]) == 0
    rows = _rows(out)
    eff = ablation.encoder_effect(TEXT, [(1, 2)], model=m)
    assert list(rows[0]) == ["position", "token", "cosine"]
    assert rows[0]["position"] == "-1" and float(rows[0]["cosine"]) == pytest.approx(eff.sentence_cosine, abs=1e-12)
    assert [float(r["cosine"]) for r in rows[1:]] == pytest.approx(list(eff.token_cosine), abs=1e-12)
    assert effect_table(eff).shape[0] == len(eff.tokens) + 1


@pytest.mark.parametrize("method", ["gradient", "ablation"])
def test_cli_importance(tmp_path, loaded, method):
    out = tmp_path / "importance.csv"
    m = loaded["decoder"]
    assert cli_main(["importance", "--text", TEXT, "--method", method, "--model", m.path, "--out", str(out)]) == 0
    rows = _rows(out)
    api = ablation.head_importance(TEXT, method=method, model=m)
    assert list(rows[0])[:3] == ["layer", "head", "importance"] and len(rows) == 8
    for row in rows:
        assert float(row["importance"]) == pytest.approx(api.importance[int(row["layer"]), int(row["head"])],
                                                         rel=1e-6, abs=1e-12)
    assert importance_table(api)["rank"].min() == 1


@pytest.mark.parametrize("args, message", [
    (["ablate", "--heads", "0-1"], "cannot read head '0-1'"),
    (["ablate", "--heads", "7:0"], "layer 7 is out of range"),
    (["ablate", "--heads", "0:9"], "head 9 is out of range"),
    (["ablate", "--heads", "0:0", "--mode", "half"], "unknown --mode"),
    (["importance", "--method", "guess"], "unknown --method"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, loaded, capsys, args, message):
    code = cli_main([*args, "--text", TEXT, "--model", loaded["decoder"].path, "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.csv").exists()
