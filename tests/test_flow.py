"""Rollout, attention flow and norm-based attention on hand-made arrays."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from viz.flow import (FlowLimitError, attention_flow, norm_based, norm_based_layer,
                      residual_attention, rollout, row_normalise)

# layer 0: head mean [[.5,.5],[.5,.5]] -> A_hat_0 = [[.75,.25],[.25,.75]]
# layer 1: head mean [[1,0],[1,0]]     -> A_hat_1 = [[1,0],[.5,.5]]
TWO_LAYERS = np.array([[[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]],
                       [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]]], np.float32)


def loop_rollout(pattern):
    """Rollout written out with plain loops, as in the paper."""
    n_layers, n_heads, n_tokens, _ = pattern.shape
    result, previous = [], None
    for layer in range(n_layers):
        a_hat = np.zeros((n_tokens, n_tokens))
        for i in range(n_tokens):
            for j in range(n_tokens):
                a_hat[i, j] = 0.5 * sum(pattern[layer, h, i, j] for h in range(n_heads)) / n_heads \
                    + (0.5 if i == j else 0.0)
            a_hat[i] /= a_hat[i].sum()
        current = a_hat if previous is None else np.array(
            [[sum(a_hat[i, k] * previous[k, j] for k in range(n_tokens)) for j in range(n_tokens)]
             for i in range(n_tokens)])
        result.append(current)
        previous = current
    return np.array(result)


def random_pattern(rng, n_layers, n_heads, n_tokens, *, causal=False):
    raw = rng.random((n_layers, n_heads, n_tokens, n_tokens)) + 0.01
    if causal:
        raw = np.tril(raw)
    return (raw / raw.sum(-1, keepdims=True)).astype(np.float32)


def test_rollout_by_hand():
    out = rollout(TWO_LAYERS)
    assert out.shape == (2, 2, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], [[0.75, 0.25], [0.25, 0.75]], atol=1e-7)
    # A_hat_1 @ A_hat_0 = [[1,0],[.5,.5]] @ [[.75,.25],[.25,.75]]
    np.testing.assert_allclose(out[1], [[0.75, 0.25], [0.5, 0.5]], atol=1e-7)


def test_rollout_renormalises_rows_that_do_not_sum_to_one():
    # head mean row 0 is [.2, .2]: 0.5 * [.2, .2] + [.5, 0] = [.6, .1] -> [6/7, 1/7]
    pattern = np.array([[[[0.2, 0.2], [0.0, 1.0]]]])
    np.testing.assert_allclose(rollout(pattern)[0], [[6 / 7, 1 / 7], [0.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(residual_attention(pattern)[0, 0], [6 / 7, 1 / 7])


@pytest.mark.parametrize("causal", [False, True])
def test_rollout_matches_loops(causal):
    pattern = random_pattern(np.random.default_rng(2), 3, 2, 5, causal=causal)
    out = rollout(pattern)
    np.testing.assert_allclose(out, loop_rollout(pattern), atol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-6)
    if causal:
        np.testing.assert_array_equal(np.triu(out, 1), 0.0)


def test_rollout_rejects_cross_attention():
    with pytest.raises(ValueError, match="self-attention"):
        rollout(np.ones((1, 1, 2, 3)) / 3)


def test_flow_of_one_layer_is_the_residual_attention():
    out = attention_flow(TWO_LAYERS, layer=0)
    np.testing.assert_allclose(out.flow, [[0.75, 0.25], [0.25, 0.75]], atol=1e-5)
    assert out.complete and out.layer == 0


def test_flow_through_two_layers_by_hand():
    # paths (2,i) -> (1,k) -> (0,j) are edge-disjoint, so flow = sum_k min(A1[i,k], A0[k,j])
    # row 0: min(1,.75)+min(0,.25) = .75, min(1,.25)+min(0,.75) = .25
    # row 1: min(.5,.75)+min(.5,.25) = .75, min(.5,.25)+min(.5,.75) = .75
    out = attention_flow(TWO_LAYERS, layer=1)
    np.testing.assert_allclose(out.flow, [[0.75, 0.25], [0.75, 0.75]], atol=1e-5)
    np.testing.assert_allclose(out.relevance, [[0.75, 0.25], [0.5, 0.5]], atol=1e-5)
    assert attention_flow(TWO_LAYERS).layer == 1


def test_flow_matches_networkx_on_a_random_graph():
    pattern = random_pattern(np.random.default_rng(3), 3, 2, 4)
    a_hat = residual_attention(pattern)
    graph = nx.DiGraph()
    for layer in range(3):
        for i in range(4):
            for j in range(4):
                graph.add_edge((layer + 1, i), (layer, j), capacity=float(a_hat[layer, i, j]))
    out = attention_flow(pattern, layer=2)
    for i in range(4):
        for j in range(4):
            expected = nx.maximum_flow_value(graph, (3, i), (0, j))
            assert out.flow[i, j] == pytest.approx(expected, abs=1e-4)


def test_flow_is_bounded_in_tokens_and_time():
    pattern = random_pattern(np.random.default_rng(4), 2, 1, 6)
    with pytest.raises(FlowLimitError, match="limited to 5 tokens"):
        attention_flow(pattern, max_tokens=5)
    stopped = attention_flow(pattern, time_limit_s=0.0)
    assert not stopped.complete
    assert np.isnan(stopped.flow).all()
    some = attention_flow(pattern, query_positions=(0, 5))
    assert not np.isnan(some.flow[[0, 5]]).any()
    assert np.isnan(some.flow[1:5]).all()


def test_norm_based_by_hand():
    pattern = np.array([[[0.5, 0.5], [1.0, 0.0]]])          # (1 head, 2, 2)
    value_out = np.array([[[3.0, 4.0], [0.0, 1.0]]])        # ||f(x_0)|| = 5, ||f(x_1)|| = 1
    np.testing.assert_allclose(norm_based(pattern, value_out), [[[2.5, 0.5], [5.0, 0.0]]])


def test_norm_based_layer_matches_direct_sum_over_heads():
    rng = np.random.default_rng(5)
    pattern = random_pattern(rng, 1, 3, 4)[0]               # (3 heads, 4, 4)
    value_out = rng.normal(size=(3, 4, 6))
    direct = np.array([[np.linalg.norm(sum(pattern[h, i, j] * value_out[h, j] for h in range(3)))
                        for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(norm_based_layer(pattern, value_out), direct, rtol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        norm_based_layer(pattern, value_out[:, :3])


def test_row_normalise_keeps_zero_and_nan_rows():
    out = row_normalise(np.array([[1.0, 3.0], [0.0, 0.0], [np.nan, np.nan]]))
    np.testing.assert_allclose(out[:2], [[0.25, 0.75], [0.0, 0.0]])
    assert np.isnan(out[2]).all()


# --------------------------------------------------------------------------- CLI flags

REPO = Path(__file__).resolve().parents[1]
CLI_TEXT = "Attention rollout multiplies the unbelievably tangled layers, doesn't it?"


def run_capture(tmp_path, *flags, model=None):
    out = tmp_path / ("capture" + "".join(flags).replace("-", "_") + ".npz")
    cmd = [sys.executable, "-m", "viz", "capture", "--text", CLI_TEXT, "--out", str(out), *flags]
    if model is not None:
        cmd += ["--model", str(model)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with np.load(out) as data:
        return {key: data[key] for key in data.files}


def loop_word_merge(pattern, word_ids, special):
    """Word-level merge written with loops: to a word summed, from a word averaged."""
    units = []
    for pos, (word, is_special) in enumerate(zip(word_ids, special)):
        if units and not is_special and word >= 0 and units[-1][1] == word:
            units[-1][0].append(pos)
        else:
            units.append(([pos], -1 if is_special or word < 0 else word))
    n_layers, n_heads = pattern.shape[:2]
    merged = np.zeros((n_layers, n_heads, len(units), len(units)))
    for a, (q_tokens, _) in enumerate(units):
        for b, (k_tokens, _) in enumerate(units):
            merged[:, :, a, b] = np.mean([pattern[:, :, q, k_tokens].sum(-1) for q in q_tokens], axis=0)
    return merged, units


@pytest.fixture(scope="module")
def embedded_capture():
    from viz.capture import capture
    return capture(CLI_TEXT)


def test_cli_rollout_matches_independent_loops(tmp_path, embedded_capture):
    data = run_capture(tmp_path, "--rollout")
    assert data["rollout"].dtype == np.float32
    n_layers, _, n_tokens, _ = data["attentions"].shape
    assert data["rollout"].shape == (n_layers, n_tokens, n_tokens)
    assert np.abs(data["rollout"] - loop_rollout(data["attentions"].astype(np.float64))).max() <= 1e-5
    # the same as rollout of the attentions the Python API returns for this text
    assert np.abs(data["rollout"] - loop_rollout(embedded_capture.attentions)).max() <= 1e-4


def test_cli_word_level_with_rollout(tmp_path, embedded_capture):
    data = run_capture(tmp_path, "--word-level", "--rollout")
    seq = embedded_capture.tokens
    expected, units = loop_word_merge(embedded_capture.attentions.astype(np.float64),
                                      seq.word_ids.tolist(), seq.special.tolist())
    assert len(units) < len(seq)          # the text has split words
    assert data["attentions"].shape == expected.shape
    np.testing.assert_allclose(data["attentions"], expected, atol=1e-5)
    words = data["tokens"].tolist()
    assert len(words) == len(units) and words[0] == "[CLS]" and words[-1] == "[SEP]"
    assert "unbelievably" in words and not any(word.startswith("##") for word in words)
    assert np.abs(data["rollout"] - loop_rollout(data["attentions"].astype(np.float64))).max() <= 1e-5


def test_relevance_bars_one_trace_per_method_at_integer_positions():
    from viz.figures.flow import relevance_figure
    labels = ["[CLS]", "the", "cat", "the", "[SEP]"]
    rows = {"raw": np.array([0.1, 0.2, 0.3, 0.2, 0.2]), "flow": np.full(5, np.nan),
            "rollout": np.array([0.5, 0.1, 0.1, 0.1, 0.2])}
    fig = relevance_figure(rows, labels, title="t")
    assert [trace.name for trace in fig.data] == ["raw", "rollout"]      # the NaN row is skipped
    np.testing.assert_allclose(fig.data[1].y, rows["rollout"])
    assert list(fig.data[0].x) == [0, 1, 2, 3, 4]
    assert list(fig.layout.xaxis.ticktext) == labels
    with pytest.raises(ValueError, match="3 values for 5 tokens"):
        relevance_figure({"raw": np.ones(3)}, labels)


# --------------------------------------------------------------------------- norm-based on tiny models

def direct_value_out(loaded, kind, layer, text, target=None):
    """f(x_j) = (x_j W_V^h + b_V^h) W_O^h per head, computed from the model's own weights and hidden states."""
    import torch
    model, tok = loaded.model, loaded.tokenizer
    n_heads = loaded.info.n_heads
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        if loaded.info.family == "encoder":            # BERT: the layer input is hidden_states[layer]
            out = model(**enc, output_hidden_states=True)
            x = out.hidden_states[layer][0]
            attn = model.encoder.layer[layer].attention
            value = attn.self.value(x)
            w_o = attn.output.dense.weight.T            # Linear stores (out, in)
        elif loaded.info.family == "decoder":          # GPT-2: ln_1 of the block input, then c_attn
            out = model(**enc, output_hidden_states=True)
            block = model.transformer.h[layer]          # GPT2LMHeadModel: decoders load with their LM head
            x = block.ln_1(out.hidden_states[layer][0])
            value = block.attn.c_attn(x).split(loaded.info.d_model, dim=-1)[2]
            w_o = block.attn.c_proj.weight              # Conv1D stores (in, out)
        else:                                          # BART cross-attention: values from the encoder output
            decoder_ids = torch.tensor([target])
            out = model(**enc, decoder_input_ids=decoder_ids)
            x = out.encoder_last_hidden_state[0]
            attn = model.model.decoder.layers[layer].encoder_attn
            value = attn.v_proj(x)
            w_o = attn.out_proj.weight.T
        d_head = value.shape[-1] // n_heads
        value = value.reshape(-1, n_heads, d_head).transpose(0, 1)           # (H, T_k, d_head)
        return torch.stack([value[h] @ w_o[h * d_head:(h + 1) * d_head] for h in range(n_heads)]).numpy()


@pytest.mark.parametrize("family,kind", [("encoder", "encoder"), ("decoder", "decoder"),
                                         ("encoder-decoder", "cross")])
def test_norm_based_matches_direct_computation_on_tiny_models(tiny_models, family, kind):
    from viz.capture import capture
    from viz.flow import norm_based_from_internals
    from viz.models import load_model
    loaded = load_model(tiny_models[family])
    text = "the quick brown fox jumps over the lazy dog"
    layer = 1
    result = capture(text, model=loaded, internals=[(kind, layer)],
                     target="the dog sat" if family == "encoder-decoder" else None)
    internals = result.internals[(kind, layer)]
    assert internals.value_out is not None, f"{family}: capture recorded no value_out"
    f_x = direct_value_out(loaded, kind, layer, text,
                           target=result.decoder.token_ids.tolist() if family == "encoder-decoder" else None)
    assert internals.value_out.shape == f_x.shape
    np.testing.assert_allclose(internals.value_out, f_x, atol=1e-5)
    alpha = result.block(kind).pattern[layer]                                 # (H, T_q, T_k)
    expected = alpha * np.linalg.norm(f_x, axis=-1)[:, None, :]
    np.testing.assert_allclose(norm_based_from_internals(internals, per_head=True), expected, atol=1e-5)
    summed = np.linalg.norm(np.einsum("hqk,hkd->qkd", alpha, f_x), axis=-1)
    np.testing.assert_allclose(norm_based_from_internals(internals), summed, atol=1e-5)


# --------------------------------------------------------------------------- the page (AppTest)

PAGE = "pages/attention_flow.py"


def chart_titles(at):
    import json
    titles = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec).get("layout", {})
        title = layout.get("title", {})
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles


def test_page_shows_the_four_methods_relevance_and_evolution(app_test):
    at = app_test(PAGE, text="The unbelievably tired animal didn't cross the street.", layer="2")
    assert not at.exception
    titles = chart_titles(at)
    for name in ("raw attention", "rollout", "flow", "norm-based"):
        assert any(t.startswith(f"{name} · layer 2") for t in titles), titles
    assert any(t.startswith("Where output 0 ([CLS])") for t in titles), titles
    assert any(t.startswith("Rollout of output 0") for t in titles), titles
    captions = " ".join(c.value for c in at.caption)
    assert "at most **48 tokens**" in captions
    assert at.query_params["pos"] == "0"


def test_page_word_level_on_a_decoder_defaults_to_the_last_token(app_test, tiny_models):
    text = "the quick brown fox jumps over the lazy dog"
    at = app_test(PAGE, model=tiny_models["decoder"], text=text, words="1")
    assert not at.exception
    assert any("Word level" in info.value for info in at.info)
    last = int(at.query_params["pos"])
    assert at.selectbox(key="w_pos").value == last
    assert last == len(at.selectbox(key="w_pos").options) - 1
    assert len(chart_titles(at)) == 6


def test_page_cross_attention_has_no_rollout_or_flow(app_test, tiny_models):
    at = app_test(PAGE, model=tiny_models["encoder-decoder"], text="the dog sat", target="the cat",
                  kind="cross")
    assert not at.exception
    titles = chart_titles(at)
    assert not any(t.startswith(("rollout", "flow", "Rollout")) for t in titles), titles
    assert any(t.startswith("norm-based") for t in titles) and any(t.startswith("raw") for t in titles)
    assert "not defined for cross-attention" in " ".join(c.value for c in at.caption)


def test_page_states_the_flow_limit_for_long_input(app_test):
    at = app_test(PAGE, text="word " * 60)
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "flow is not computed" in captions and "62 tokens" in captions
    assert not any(t.startswith("flow") for t in chart_titles(at))


def test_cli_flags_on_an_encoder_decoder(tmp_path, tiny_models):
    data = run_capture(tmp_path, "--word-level", "--rollout", model=tiny_models["encoder-decoder"])
    n_enc, n_dec = len(data["encoder_tokens"]), len(data["decoder_tokens"])
    assert data["encoder_attentions"].shape[-2:] == (n_enc, n_enc)
    assert data["cross_attentions"].shape[-2:] == (n_dec, n_enc)
    assert data["rollout"].shape[1:] == (n_enc, n_enc)
    assert np.abs(data["rollout"] - loop_rollout(data["encoder_attentions"])).max() <= 1e-5
    assert np.abs(data["decoder_rollout"] - loop_rollout(data["decoder_attentions"])).max() <= 1e-5
    np.testing.assert_array_equal(np.triu(data["decoder_rollout"], 1), 0.0)
