"""Next-token predictions and the logit lens against independent torch computations; the CLI's CSVs.

The references load the same folder with plain transformers (eager attention, not our loader) and
read the residual stream with their own forward hooks on the decoder blocks.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from viz import stats
from viz.capture import InputError, capture
from viz.lm import logit_lens, predictions
from viz.models import load_model

TEXT = "the keys to the cabinet are on the table because the cat sat"


@pytest.fixture(scope="module")
def llama(tiny_models):
    return load_model(tiny_models["llama"])


def reference(path: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval(),
            AutoTokenizer.from_pretrained(path))


def blocks_and_norm(model):
    if hasattr(model, "transformer"):                      # GPT-2
        return model.transformer.h, model.transformer.ln_f
    return model.model.layers, model.model.norm            # Llama


def reference_lens(model, ids: list[int], position: int) -> np.ndarray:
    """(n_layers, vocab) probabilities: final norm + unembedding of each block's output, read by hooks."""
    blocks, norm = blocks_and_norm(model)
    outputs = []
    hooks = [b.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
             for b in blocks]
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, position]
            rows = [torch.softmax(model.lm_head(norm(h[0, position])), -1) for h in outputs]
    finally:
        for h in hooks:
            h.remove()
    # The last block's row is the model's own output distribution.
    np.testing.assert_allclose(rows[-1].numpy(), torch.softmax(logits, -1).numpy(), atol=1e-6)
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("family", ["llama", "decoder"])
def test_predictions_match_an_independent_forward(tiny_models, family):
    path = tiny_models[family]
    model, tok = reference(path)
    ids = tok(TEXT)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0], -1).numpy()
    pred = predictions(TEXT, path, top_k=5)
    assert pred.tokens.token_ids.tolist() == ids
    assert pred.top_ids.shape == (len(ids), 5) and pred.top_probs.dtype == np.float32
    for i in range(len(ids)):
        order = np.argsort(-probs[i], kind="stable")
        np.testing.assert_allclose(pred.top_probs[i], probs[i][order[:5]], atol=1e-6)
        if i + 1 < len(ids):
            actual = ids[i + 1]
            assert pred.next_ids[i] == actual
            assert pred.p_next[i] == pytest.approx(probs[i, actual], abs=1e-6)
            assert pred.rank_next[i] == int(np.flatnonzero(order == actual)[0]) + 1
    assert pred.next_ids[-1] == -1 and np.isnan(pred.p_next[-1]) and pred.rank_next[-1] == 0
    np.testing.assert_allclose(pred.surprisal[:-1], -np.log2(pred.p_next[:-1]), rtol=1e-6)


@pytest.mark.parametrize("family", ["llama", "decoder"])
def test_logit_lens_matches_hooks_on_the_blocks(tiny_models, family):
    path = tiny_models[family]
    model, tok = reference(path)
    ids = tok(TEXT)["input_ids"]
    loaded = load_model(path)
    for position in (None, 3, -2):
        lens = logit_lens(TEXT, loaded, position=position, top_k=6)
        pos = {None: len(ids) - 1, 3: 3, -2: len(ids) - 2}[position]
        assert lens.position == pos and lens.n_layers == loaded.info.n_layers
        expected = reference_lens(model, ids, pos)
        for layer in range(lens.n_layers):
            order = np.argsort(-expected[layer], kind="stable")[:6]
            np.testing.assert_allclose(lens.top_probs[layer], expected[layer][order], atol=1e-5)
            np.testing.assert_allclose(lens.top_probs[layer], expected[layer][lens.top_ids[layer]], atol=1e-5)
        if pos + 1 < len(ids):
            assert lens.next_id == ids[pos + 1]
            np.testing.assert_allclose(lens.next_probs, expected[:, ids[pos + 1]], atol=1e-5)
        else:
            assert lens.next_id == -1 and np.isnan(lens.next_probs).all()
    # The lens's last row is the prediction at that position.
    pred = predictions(TEXT, loaded, top_k=6)
    np.testing.assert_allclose(logit_lens(TEXT, loaded, position=4, top_k=6).top_probs[-1], pred.top_probs[4],
                               atol=1e-6)


def test_lm_refusals(llama, tiny_models):
    with pytest.raises(InputError, match="decoder"):
        predictions("the cat", tiny_models["encoder"])
    with pytest.raises(InputError, match="out of range"):
        logit_lens("the cat", llama, position=40)
    with pytest.raises(InputError, match="top_k"):
        predictions("the cat", llama, top_k=0)


def cli_main(*args) -> int:
    from viz.cli import main
    return main(list(args))


def test_cli_predict_and_lens_csv(llama, tiny_models, tmp_path):
    out = tmp_path / "p.csv"
    assert cli_main("predict", "--text", TEXT, "--model", tiny_models["llama"], "--top-k", "3", "--out", str(out)) == 0
    frame = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(frame.columns[:11]) == ["position", "token", "next_token", "p_next", "rank_next",
                                        "top1", "top2", "top3", "p1", "p2", "p3"]
    pred = predictions(TEXT, llama, top_k=3)
    assert frame["token"].tolist() == list(pred.tokens.tokens)
    assert frame["next_token"].fillna("").tolist() == list(pred.tokens.tokens[1:]) + [""]
    np.testing.assert_allclose(frame["p_next"][:-1], pred.p_next[:-1], rtol=1e-6)
    assert frame["rank_next"][:-1].astype(int).tolist() == pred.rank_next[:-1].tolist()
    assert pd.isna(frame["rank_next"].iloc[-1]) and pd.isna(frame["p_next"].iloc[-1])
    np.testing.assert_allclose(frame[["p1", "p2", "p3"]].to_numpy(), pred.top_probs, rtol=1e-6)
    assert frame["top1"].tolist() == [row[0] for row in pred.top_tokens]

    lens_out = tmp_path / "l.csv"
    assert cli_main("lens", "--text", TEXT, "--model", tiny_models["llama"], "--position", "2", "--top-k", "2",
                    "--out", str(lens_out)) == 0
    lens = pd.read_csv(lens_out, keep_default_na=False, na_values=[""])
    assert list(lens.columns[:5]) == ["layer", "top1", "top2", "p1", "p2"]
    assert lens["layer"].tolist() == [0, 1]
    expected = logit_lens(TEXT, llama, position=2, top_k=2)
    np.testing.assert_allclose(lens[["p1", "p2"]].to_numpy(), expected.top_probs, rtol=1e-6)
    assert cli_main("lens", "--text", TEXT, "--model", tiny_models["llama"], "--out", str(lens_out)) == 0
    assert pd.read_csv(lens_out)["position"].iloc[0] == len(pred.tokens) - 1      # default: the last position


# ---------------------------------------------------------------- the embedded LLM
def test_embedded_llm_predictions_and_lens(embedded_llm):
    text = "The capital of France is Paris"
    pred = predictions(text, embedded_llm, top_k=5)
    assert pred.tokens.tokens[-1] == "ĠParis"
    assert pred.rank_next[-2] == 1 and pred.p_next[-2] > 0.5           # "is" -> " Paris", confidently
    lens = logit_lens(text, embedded_llm, position=-2, top_k=5)
    ids = pred.tokens.token_ids.tolist()
    with torch.no_grad():
        logits = embedded_llm.model(input_ids=torch.tensor([ids])).logits[0, -2]
    expected = torch.softmax(logits.float(), -1).numpy()
    np.testing.assert_allclose(lens.top_probs[-1], expected[lens.top_ids[-1]], atol=1e-5)
    assert lens.top_tokens[-1][0] == "ĠParis" and lens.top_tokens[0][0] != "ĠParis"   # it forms late
    assert lens.next_probs[-1] > 0.5 > lens.next_probs[0]


def test_embedded_llm_has_sink_heads_whatever_the_first_token(embedded_llm):
    """Xiao et al. 2023: most heads of the later layers park their weight on the first token."""
    for text in ("Paris is the capital of France and its largest city.",
                 "Yesterday my brother bought a very old bicycle at the market."):
        block = capture(text, model=embedded_llm).block()
        share = stats.first_token_share(block)                       # (30, 9)
        sinks = stats.sink_heads(block)
        assert sinks[2:].mean() > 0.6                                 # most heads after layer 1 (0.76-0.79 here)
        assert not sinks[0].any()                                     # none in the first layer
        manual = block.pattern[:, :, 1:, 0].mean(-1)
        np.testing.assert_allclose(share, manual, atol=1e-7)
        detected = stats.detect_heads(block)
        np.testing.assert_allclose(detected["sink"].to_numpy().reshape(30, 9), share, atol=1e-7)


def test_cli_stats_and_capture_on_the_embedded_llm(embedded_llm, tmp_path):
    """`stats --model embedded-llm` writes first_token_share as recomputed from transformers' own attentions."""
    text = "Paris is the capital of France."
    out = tmp_path / "s.csv"
    assert cli_main("stats", "--text", text, "--model", "embedded-llm", "--out", str(out)) == 0
    frame = pd.read_csv(out)
    assert len(frame) == 30 * 9 and "first_token_share" in frame.columns
    ids = embedded_llm.tokenizer(text)["input_ids"]
    with torch.no_grad():
        att = embedded_llm.model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    expected = torch.stack([a[0, :, 1:, 0].mean(-1) for a in att]).numpy()        # (30, 9)
    np.testing.assert_allclose(frame["first_token_share"].to_numpy().reshape(30, 9), expected, atol=1e-5)
    cap = tmp_path / "c.npz"
    assert cli_main("capture", "--text", text, "--model", "embedded-llm", "--out", str(cap)) == 0
    d = np.load(cap)
    assert d["kv_head"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and d["attentions"].shape == (30, 9, len(ids), len(ids))
    np.testing.assert_allclose(d["attentions"], torch.stack([a[0] for a in att]).numpy(), atol=1e-5)
