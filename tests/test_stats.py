"""Head metrics, similarity map and detectors on hand-made patterns (viz.stats)."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from viz import stats
from viz.result import Block, TokenSeq

T = 4


def identity(t=T):
    return np.eye(t)


def shifted_identity(t=T):
    """A[i, i-1] = 1 for i >= 1; row 0 can only look at itself."""
    a = np.eye(t, k=-1)
    a[0, 0] = 1.0
    return a


def uniform(t=T):
    return np.full((t, t), 1.0 / t)


def causal_uniform(t=T):
    a = np.tril(np.ones((t, t)))
    return a / a.sum(axis=1, keepdims=True)


def stack(*heads_per_layer):
    """stack([h00, h01], [h10, h11]) -> (n_layers, n_heads, T, T)."""
    return np.array([list(layer) for layer in heads_per_layer], dtype=float)


def token_seq(tokens, special, token_ids=None):
    n = len(tokens)
    ids = np.arange(n) if token_ids is None else np.asarray(token_ids)
    return TokenSeq(tuple(tokens), tuple(tokens), ids.astype(np.int64),
                    np.asarray(special, dtype=bool), np.arange(n), np.zeros(n, dtype=np.int64))


# ------------------------------------------------------------------ metrics

def test_metrics_identity():
    row = stats.head_metrics(stack([identity()]), special=[1, 0, 0, 0],
                             punct=[0, 0, 1, 0]).iloc[0]
    assert (row["layer"], row["head"]) == (0, 0)
    assert row["entropy"] == pytest.approx(0.0)
    assert row["self_share"] == pytest.approx(1.0)
    assert row["prev_share"] == pytest.approx(0.0)
    assert row["next_share"] == pytest.approx(0.0)
    assert row["mean_distance"] == pytest.approx(0.0)
    assert row["confidence"] == pytest.approx(1.0)
    # each query only looks at itself: 1 of 4 rows is the special token, 1 is punctuation
    assert row["special_share"] == pytest.approx(0.25)
    assert row["punct_share"] == pytest.approx(0.25)


def test_metrics_shifted_identity():
    row = stats.head_metrics(stack([shifted_identity()])).iloc[0]
    assert row["entropy"] == pytest.approx(0.0)
    assert row["self_share"] == pytest.approx(1 / 4)          # only row 0
    assert row["prev_share"] == pytest.approx(1.0)            # rows 1..3
    assert row["next_share"] == pytest.approx(0.0)
    assert row["mean_distance"] == pytest.approx(3 / 4)       # (0 + 1 + 1 + 1) / 4
    assert row["confidence"] == pytest.approx(1.0)
    assert math.isnan(row["special_share"]) and math.isnan(row["punct_share"])


def test_metrics_uniform():
    row = stats.head_metrics(stack([uniform()]), special=[1, 0, 0, 1],
                             punct=[0, 0, 1, 0]).iloc[0]
    assert row["entropy"] == pytest.approx(math.log(4))
    assert row["self_share"] == pytest.approx(0.25)
    assert row["prev_share"] == pytest.approx(0.25)
    assert row["next_share"] == pytest.approx(0.25)
    # rows: (0+1+2+3)/4, (1+0+1+2)/4, (2+1+0+1)/4, (3+2+1+0)/4
    assert row["mean_distance"] == pytest.approx((1.5 + 1 + 1 + 1.5) / 4)
    assert row["confidence"] == pytest.approx(0.25)
    assert row["special_share"] == pytest.approx(0.5)
    assert row["punct_share"] == pytest.approx(0.25)


def test_metrics_causal_uniform():
    row = stats.head_metrics(stack([causal_uniform()]), special=[1, 0, 0, 0],
                             punct=[0, 0, 0, 0]).iloc[0]
    assert row["entropy"] == pytest.approx((0 + math.log(2) + math.log(3) + math.log(4)) / 4)
    assert row["self_share"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert row["prev_share"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    assert row["next_share"] == pytest.approx(0.0)
    assert row["mean_distance"] == pytest.approx((0 + 0.5 + 1 + 1.5) / 4)
    assert row["confidence"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert row["special_share"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert row["punct_share"] == pytest.approx(0.0)


def test_metrics_frame_layout_and_order():
    pattern = stack([identity(), uniform()], [shifted_identity(), causal_uniform()])
    frame = stats.head_metrics(pattern)
    assert list(frame.columns) == ["layer", "head", *stats.METRICS]
    assert list(zip(frame["layer"], frame["head"])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert frame["prev_share"].tolist() == pytest.approx([0, 0.25, 1, 13 / 36])
    grid = stats.metric_grid(frame, "self_share")
    assert grid.shape == (2, 2)
    assert grid[1, 0] == pytest.approx(0.25) and grid[0, 0] == pytest.approx(1.0)


def test_metrics_from_block_use_token_flags():
    seq = token_seq(["[CLS]", "hello", ",", "[SEP]"], [1, 0, 0, 1])
    block = Block("encoder", stack([uniform()]), seq, seq, False)
    row = stats.head_metrics(block).iloc[0]
    assert row["special_share"] == pytest.approx(0.5)
    assert row["punct_share"] == pytest.approx(0.25)


def test_metrics_single_token_prev_next_are_nan():
    row = stats.head_metrics(np.ones((1, 1, 1, 1))).iloc[0]
    assert math.isnan(row["prev_share"]) and math.isnan(row["next_share"])
    assert row["self_share"] == 1.0


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="n_layers, n_heads"):
        stats.head_metrics(np.eye(3))
    with pytest.raises(ValueError, match="one entry per key"):
        stats.head_metrics(stack([identity()]), special=[True, False])


@pytest.mark.parametrize("token,expected", [
    (",", True), ("Ġ.", True), ("...", True), ("\u201c", True), ("?!", True),
    ("##s", False), ("the", False), ("Ġ", False), ("3.5", False), ("don't", False),
])
def test_is_punctuation(token, expected):
    assert stats.is_punctuation(token) is expected


def test_special_tokens_are_not_punctuation():
    seq = token_seq(["<s>", "hi", "!", "</s>"], [1, 0, 0, 1])
    assert stats.punctuation_flags(seq).tolist() == [False, False, True, False]


def test_top_metric_names_the_standout():
    frame = pd.DataFrame({"layer": [0, 0, 0, 0], "head": [0, 1, 2, 3],
                          "entropy": [1.0, 1.1, 0.9, 1.0],
                          "prev_share": [0.1, 0.1, 0.1, 0.9],
                          "confidence": [0.5, 0.5, 0.5, 0.5]})
    labels = stats.top_metric(frame, ["entropy", "prev_share", "confidence"])
    assert labels.iloc[3] == "prev_share 0.90"
    assert labels.iloc[1] == "entropy 1.10"


# ------------------------------------------------------------------ similarity

def test_head_distances_hand_values():
    pattern = stack([identity(), shifted_identity(), identity()])
    dist = stats.head_distances(pattern)
    # identity vs shifted identity: row 0 equal (0), rows 1..3 disjoint (1 in base 2)
    assert dist[0, 1] == pytest.approx(3 / 4)
    assert dist[0, 2] == pytest.approx(0.0)
    assert np.allclose(dist, dist.T) and np.allclose(np.diag(dist), 0)


def test_head_distances_match_rowwise_scipy():
    rng = np.random.default_rng(1)
    pattern = rng.dirichlet(np.ones(5), size=(2, 2, 5))       # (2, 2, 5, 5)
    dist = stats.head_distances(pattern)
    flat = pattern.reshape(4, 5, 5)
    expected = np.mean([jensenshannon(flat[1, i], flat[3, i], base=2) for i in range(5)])
    assert dist[1, 3] == pytest.approx(expected)


def test_head_distances_on_sampled_query_rows():
    rng = np.random.default_rng(2)
    pattern = rng.dirichlet(np.ones(9), size=(1, 3, 9))       # (1, 3, 9, 9)
    assert stats.query_rows(9, 3).tolist() == [0, 4, 8]
    assert stats.query_rows(9, None).tolist() == list(range(9))
    sampled = stats.head_distances(pattern, max_rows=3)
    expected = np.mean([jensenshannon(pattern[0, 0, i], pattern[0, 2, i], base=2) for i in (0, 4, 8)])
    assert sampled[0, 2] == pytest.approx(expected)
    assert np.allclose(stats.head_distances(pattern, max_rows=50), stats.head_distances(pattern))


def _two_cluster_pattern(seed=0):
    """3 heads near 'look at self' and 3 heads near 'look at previous', scattered over layers."""
    rng = np.random.default_rng(seed)
    t = 8
    heads = []
    for base in (identity(t), shifted_identity(t), identity(t), shifted_identity(t),
                 identity(t), shifted_identity(t)):
        noisy = 0.85 * base + 0.15 * rng.dirichlet(np.ones(t), size=t)
        heads.append(noisy / noisy.sum(axis=1, keepdims=True))
    return np.array(heads).reshape(2, 3, t, t)


def test_similarity_map_recovers_known_clusters():
    sim = stats.similarity_map(_two_cluster_pattern(), seed=0)
    cluster = np.array([0, 1, 0, 1, 0, 1])
    same = cluster[:, None] == cluster[None, :]
    off_diag = ~np.eye(6, dtype=bool)
    assert sim.distances[same & off_diag].max() < sim.distances[~same].min()
    # the embedding keeps the clusters apart too
    xy = sim.coords
    pair = np.linalg.norm(xy[:, None] - xy[None, :], axis=-1)
    assert pair[same & off_diag].max() < pair[~same].min()
    frame = sim.frame()
    assert list(frame.columns) == ["layer", "head", "x", "y"] and len(frame) == 6


def test_similarity_map_is_seeded():
    a = stats.similarity_map(_two_cluster_pattern(), seed=3).coords
    b = stats.similarity_map(_two_cluster_pattern(), seed=3).coords
    assert np.allclose(a, b)


def test_nearest_heads_are_the_cluster_mates():
    sim = stats.similarity_map(_two_cluster_pattern())
    near = stats.nearest_heads(sim, 0, 1, k=2)          # flat index 1: a 'previous' head
    assert set(zip(near["layer"], near["head"])) == {(1, 0), (1, 2)}   # flat 3 and 5
    assert near["distance"].is_monotonic_increasing
    with pytest.raises(ValueError, match="no head"):
        stats.nearest_heads(sim, 5, 0)


def test_head_difference():
    pattern = stack([identity(), uniform()])
    diff = stats.head_difference(pattern, (0, 0), (0, 1))
    assert diff[0, 0] == pytest.approx(0.75) and diff[0, 1] == pytest.approx(-0.25)


# ------------------------------------------------------------------ detectors

N = 5                       # length of the random half
IDS = stats.repeated_random_ids(np.arange(100, 200), length=N, seed=7, prefix=[1])  # BOS + r + r


def _decoder_heads():
    """Four causal heads on BOS + r + r: induction, previous-token, duplicate-token, BOS sink."""
    t = len(IDS)
    induction = np.zeros((t, t))
    previous = shifted_identity(t)
    duplicate = np.zeros((t, t))
    sink = np.zeros((t, t))
    sink[:, 0] = 1
    for i in range(t):
        second_half = i >= 1 + N
        induction[i, i - N + 1 if second_half else 0] = 1
        duplicate[i, i - N if second_half else 0] = 1
    return stack([induction, previous], [duplicate, sink])


def test_repeated_random_ids():
    assert len(IDS) == 1 + 2 * N and IDS[0] == 1
    assert (IDS[1:1 + N] == IDS[1 + N:]).all()
    assert len(set(IDS[1:1 + N])) == N
    assert (stats.repeated_random_ids(range(100), length=N, seed=7) ==
            stats.repeated_random_ids(range(100), length=N, seed=7)).all()
    with pytest.raises(ValueError, match="distinct"):
        stats.repeated_random_ids([1, 2, 3], length=N)


def test_decoder_detectors_on_constructed_heads():
    special = np.zeros(len(IDS), dtype=bool)
    special[0] = True
    frame = stats.detect_heads(_decoder_heads(), IDS, special=special, causal=True)
    assert list(frame.columns) == ["layer", "head", "previous_token", "duplicate_token", "induction", "sink"]
    ind, prev, dup, sink = (frame.iloc[k] for k in range(4))
    assert sink["sink"] == pytest.approx(1.0) and prev["sink"] == pytest.approx(1 / (len(IDS) - 1))
    assert ind["induction"] == pytest.approx(1.0)
    assert ind["duplicate_token"] == pytest.approx(0.0)
    assert prev["previous_token"] == pytest.approx(1.0)
    assert prev["induction"] == pytest.approx(0.0)
    assert dup["duplicate_token"] == pytest.approx(1.0)
    assert dup["induction"] == pytest.approx(0.0)
    assert sink["induction"] == 0 and sink["duplicate_token"] == 0
    assert sink["previous_token"] == pytest.approx(1 / (len(IDS) - 1))   # only query 1 -> BOS


def test_induction_on_ordinary_text_ids():
    # "a b c a b": query 3 ('a') -> target 1 ('b'); query 4 ('b') -> target 2 ('c')
    ids = np.array([10, 11, 12, 10, 11])
    head = np.zeros((5, 5))
    head[:, 0] = 1
    head[3] = [0.2, 0.6, 0.2, 0, 0]
    head[4] = [0.1, 0.1, 0.4, 0.4, 0]
    score = stats.induction_scores(stack([head]), ids)
    assert score[0, 0] == pytest.approx((0.6 + 0.4) / 2)
    dup = stats.duplicate_token_scores(stack([head]), ids)
    assert dup[0, 0] == pytest.approx((0.2 + 0.1) / 2)
    assert np.isnan(stats.induction_scores(stack([head]), [1, 2, 3, 4, 5])[0, 0])


def test_encoder_detectors_on_constructed_heads():
    t = 6
    special = [1, 0, 0, 0, 0, 1]                 # [CLS] w w w w [SEP]
    nxt = np.eye(t, k=1)
    nxt[-1, -1] = 1
    sep = np.zeros((t, t))
    sep[:, -1] = 1
    seq = token_seq(["[CLS]", "a", "b", "c", "d", "[SEP]"], special)
    block = Block("encoder", stack([nxt, sep, uniform(t)]), seq, seq, False)
    frame = stats.detect_heads(block)
    assert list(frame.columns) == ["layer", "head", "positional", "positional_offset", "special"]
    assert frame.loc[0, "positional"] == pytest.approx(1.0)
    assert frame.loc[0, "positional_offset"] == 1
    assert frame.loc[0, "special"] == pytest.approx(0.25)     # only query 4 -> [SEP]
    assert frame.loc[1, "special"] == pytest.approx(1.0)
    assert frame.loc[1, "positional"] == pytest.approx(0.25)  # query 4's top is its +1 neighbour
    assert frame.loc[2, "special"] == pytest.approx(2 / 6)


def test_detectors_read_block_ids():
    seq = token_seq(["<s>"] + ["x"] * (len(IDS) - 1), [1] + [0] * (len(IDS) - 1), IDS)
    block = Block("decoder", _decoder_heads(), seq, seq, True)
    frame = stats.detect_heads(block)
    assert frame["induction"].tolist() == pytest.approx([1, 0, 0, 0])


def test_word_tokens_and_repeated_random_text():
    wordpiece = ["[CLS]", "[unused1]", "##ing", "the", "cat", "dog", "runs", "a", "Cat", "42"]
    assert stats.word_tokens(wordpiece) == ["cat", "dog", "runs", "the"]
    bpe = ["Ġthe", "the", "Ġcat", "ing", "Ġdog", "<|endoftext|>", "Ġruns"]
    assert stats.word_tokens(bpe) == ["cat", "dog", "runs", "the"]
    text = stats.repeated_random_text({w: i for i, w in enumerate(wordpiece)}, length=3, seed=1)
    words = text.split()
    assert text.startswith(" ") and len(words) == 6 and words[:3] == words[3:]
    assert len(set(words[:3])) == 3
    assert text == stats.repeated_random_text(wordpiece, length=3, seed=1)
    # shortened to what the vocabulary and the model's limit allow
    assert len(stats.repeated_random_text(wordpiece, length=5).split()) == 8
    assert len(stats.repeated_random_text(wordpiece, length=5, max_tokens=10).split()) == 6
    with pytest.raises(ValueError, match="at least 2"):
        stats.repeated_random_text(wordpiece, max_tokens=7)
    pooled = stats.repeated_random_text(wordpiece, length=2, seed=0, pool=["Dog", "cat", "zebra"])
    assert sorted(pooled.split()[:2]) == ["cat", "dog"]


# ------------------------------------------------------------------ stats figures

def test_metric_grid_figure_axes_and_click_layer():
    from viz.figures import stats as sf
    grid = np.arange(6, dtype=float).reshape(2, 3)
    fig = sf.metric_grid_figure(grid, metric="entropy", selected=(1, 2))
    assert np.allclose(fig.data[0].z, grid)
    assert fig.layout.yaxis.autorange == "reversed"
    markers = fig.data[1]
    assert [tuple(c) for c in markers.customdata] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert fig.layout.shapes[0].x0 == 1.5 and fig.layout.shapes[0].y0 == 0.5
    event = {"selection": {"points": [{"customdata": [1, 2], "x": 2, "y": 1}]}}
    assert sf.selected_head(event) == (1, 2)
    assert sf.selected_head({"selection": {"points": []}}) is None
    # what Streamlit really reports for a click in Chromium
    real = {"selection": {"points": [{"curve_number": 1, "x": 7, "y": 3, "customdata": {"0": 3, "1": 7}}]}}
    assert sf.selected_head(real) == (3, 7)
    assert sf.selected_head({"selection": {"points": [{"x": 1, "y": 2, "z": 0.5}]}}) is None


def test_similarity_and_difference_figures():
    from viz.figures import stats as sf
    sim = stats.similarity_map(_two_cluster_pattern())
    near = stats.nearest_heads(sim, 0, 0, k=2)
    fig = sf.similarity_figure(sim.frame(), labels=pd.Series(["a"] * 6), selected=(0, 0), nearest=near)
    assert [t.name for t in fig.data] == ["layer 0", "layer 1", "near", "selected"]
    assert np.allclose(fig.data[0].x, sim.coords[:3, 0])
    assert sf.selected_head({"selection": {"points": [{"customdata": ["1", "2", "a"]}]}}) == (1, 2)
    diff = np.array([[0.5, -0.25], [0.0, 0.1]])
    dfig = sf.difference_figure(diff, ["a", "a"], ["a", "b"], causal=True)
    assert np.isnan(dfig.data[0].z[0, 1]) and dfig.data[0].z[0, 0] == 0.5
    assert dfig.data[0].zmin == -0.5 and dfig.data[0].zmax == 0.5
    assert list(dfig.layout.yaxis.tickvals) == [0, 1]


# ------------------------------------------------------------------ CLI

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "The keys, which Mary lost, were under the old sofa; weren't they?"


def run_cli(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _independent_metrics(attn, special, punct):
    """Loop-by-loop metrics from the definitions in the issue, for one head's (T, T) matrix."""
    t = attn.shape[0]
    rows = range(t)
    ent = np.mean([-sum(p * math.log(p) for p in attn[i] if p > 0) for i in rows])
    return {
        "entropy": ent,
        "special_share": np.mean([attn[i, special].sum() for i in rows]),
        "punct_share": np.mean([attn[i, punct].sum() for i in rows]),
        "self_share": np.mean([attn[i, i] for i in rows]),
        "prev_share": np.mean([attn[i, i - 1] for i in range(1, t)]),
        "next_share": np.mean([attn[i, i + 1] for i in range(t - 1)]),
        "mean_distance": np.mean([sum(attn[i, j] * abs(i - j) for j in range(t)) for i in rows]),
        "confidence": np.mean([attn[i].max() for i in rows]),
        "first_token_share": np.mean([attn[i, 0] for i in range(1, t)]),
    }


def test_cli_matches_independently_recomputed_attention(tmp_path):
    """The CLI's CSV against attention recomputed with plain transformers (eager) and loop metrics."""
    import string

    import torch
    from transformers import AutoModel, AutoTokenizer

    from viz.models import embedded_model_dir

    out = tmp_path / "m.csv"
    p = run_cli("stats", "--text", SENTENCE, "--out", str(out))
    assert p.returncode == 0, p.stderr
    got = pd.read_csv(out)
    assert list(got.columns[:2 + len(stats.METRICS)]) == ["layer", "head", *stats.METRICS]
    assert len(got) == 6 * 12

    path = embedded_model_dir()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    enc = tok(SENTENCE, return_tensors="pt", return_special_tokens_mask=True)
    with torch.no_grad():
        att = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    output_attentions=True).attentions
    special = enc["special_tokens_mask"][0].numpy().astype(bool)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
    punct = np.array([all(c in string.punctuation for c in t) for t in tokens]) & ~special
    assert punct.sum() >= 4                                  # , , ; ' ? in the sentence
    worst = 0.0
    for row in got.itertuples():
        a = att[row.layer][0, row.head].double().numpy()
        expected = _independent_metrics(a, special, punct)
        worst = max(worst, max(abs(getattr(row, m) - expected[m]) for m in stats.METRICS))
    assert worst <= 1e-4


def cli_main(*args):
    """The CLI in-process (same code path as `python -m viz`, without paying the torch import again)."""
    from viz.cli import main
    return main(list(args))


def test_cli_tiny_models_pair_kind_corpus_detectors(tmp_path, tiny_models, capsys):
    out = tmp_path / "pair.csv"
    p = run_cli("stats", "--text", "the cat sat", "--pair", "the dog ran", "--model", tiny_models["encoder"],
                "--out", str(out))
    assert p.returncode == 0, p.stderr
    pair = pd.read_csv(out)
    assert len(pair) == 2 * 4 and pair[["layer", "head"]].values.tolist()[:2] == [[0, 0], [0, 1]]
    assert (pair["special_share"] > 0).all()                 # [CLS] and two [SEP]s

    assert cli_main("stats", "--text", "the cat sat on the mat", "--model", tiny_models["decoder"],
                    "--detectors", "--out", str(out)) == 0
    dec = pd.read_csv(out)
    assert dec["next_share"].abs().max() < 1e-6              # causal: no weight on the next token
    assert {"previous_token", "duplicate_token", "induction"} <= set(dec.columns)

    assert cli_main("stats", "--text", "the cat sat", "--model", tiny_models["encoder-decoder"],
                    "--kind", "cross", "--out", str(out)) == 0
    assert len(pd.read_csv(out)) == 2 * 4

    corpus_file = tmp_path / "c.csv"
    corpus_file.write_text("id,sentence\n1,the cat sat\n2,the dog ran quickly\n3,hello world\n", encoding="utf-8")
    capsys.readouterr()
    assert cli_main("stats", "--corpus", str(corpus_file), "--column", "sentence", "--max-texts", "2",
                    "--model", tiny_models["encoder"], "--out", str(out)) == 0
    assert "only the first 2 are used" in capsys.readouterr().err
    mean = pd.read_csv(out)
    assert (mean["n_texts"] == 2).all()
    singles = []
    for k, text in enumerate(("the cat sat", "the dog ran quickly")):
        single = tmp_path / f"single{k}.csv"
        assert cli_main("stats", "--text", text, "--model", tiny_models["encoder"], "--out", str(single)) == 0
        singles.append(pd.read_csv(single))
    np.testing.assert_allclose(mean["entropy"], (singles[0]["entropy"] + singles[1]["entropy"]) / 2, atol=1e-9)


def test_cli_bad_input_in_a_real_process(tmp_path):
    p = run_cli("stats", "--text", "hi", "--model", "/no/such/model/dir", "--out", str(tmp_path / "x.csv"))
    assert p.returncode != 0 and "Traceback" not in p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "/no/such/model/dir" in lines[0], p.stderr
    assert not (tmp_path / "x.csv").exists()


@pytest.mark.parametrize("args,message", [
    (["--text", "   "], "the text is empty"),
    (["--corpus", "/no/such/file.txt"], "No corpus file"),
    (["--text", "hi", "--kind", "cross"], "encoder models have no cross attention"),
    (["--text", "hi", "--column", "x"], "--column goes with --corpus"),
    (["--text", "hi", "--out-of-place"], "unrecognized arguments"),
])
def test_cli_bad_input_one_line(tmp_path, capsys, args, message):
    out = tmp_path / "x.csv"
    try:
        code = cli_main("stats", *args, "--out", str(out))
    except SystemExit as exc:                 # argparse usage errors exit by themselves
        code = exc.code
    assert code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and message in err
    assert not out.exists()


def test_cli_bad_output_folder(tmp_path, capsys):
    assert cli_main("stats", "--text", "hi", "--out", str(tmp_path / "missing" / "x.csv")) != 0
    assert "does not exist" in capsys.readouterr().err
