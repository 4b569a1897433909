"""Attention sinks on hand-made matrices: the first-token share, the sink detector, hiding the first token."""
from __future__ import annotations

import numpy as np
import pytest

from viz import aggregate, stats
from viz.result import Block, TokenSeq


def seq(n: int, special=()) -> TokenSeq:
    flags = np.zeros(n, bool)
    flags[list(special)] = True
    return TokenSeq(tokens=tuple(f"t{i}" for i in range(n)), labels=tuple(f"t{i}" for i in range(n)),
                    token_ids=np.arange(n, dtype=np.int64), special=flags,
                    word_ids=np.where(flags, -1, np.arange(n)), segment_ids=np.zeros(n, dtype=np.int64))


def causal_rows(rng, n: int) -> np.ndarray:
    a = np.tril(rng.random((n, n)) + 0.01)
    return a / a.sum(-1, keepdims=True)


def test_first_token_share_is_the_mean_over_queries_after_the_first():
    rng = np.random.default_rng(0)
    heads = [causal_rows(rng, 6) for _ in range(3)]
    sink = np.zeros((6, 6))
    sink[:, 0] = 0.9
    sink[np.arange(6), np.arange(6)] += 0.1
    sink[0, 0] = 1.0
    uniform = np.tril(np.ones((6, 6)))
    uniform /= uniform.sum(-1, keepdims=True)
    pattern = np.stack([np.stack(heads[:2]), np.stack([sink, uniform])])           # (2 layers, 2 heads, 6, 6)
    share = stats.first_token_share(pattern)
    for layer in range(2):
        for head in range(2):
            a = pattern[layer, head]
            assert share[layer, head] == pytest.approx(sum(a[i, 0] for i in range(1, 6)) / 5)
    assert share[1, 0] == pytest.approx(0.9)
    assert share[1, 1] == pytest.approx(np.mean([1 / (i + 1) for i in range(1, 6)]))   # chance level
    assert np.isnan(stats.first_token_share(np.ones((1, 1, 1, 1)))).all()               # no query after the first

    frame = stats.head_metrics(pattern)
    assert "first_token_share" in stats.METRICS and "first_token_share" in stats.METRIC_EXPLANATIONS
    np.testing.assert_allclose(stats.metric_grid(frame, "first_token_share"), share)


def test_sink_detector_flags_heads_at_the_documented_threshold():
    n = 8
    pattern = np.zeros((1, 4, n, n))
    for head, weight in enumerate([0.95, stats.SINK_THRESHOLD, 0.49, 0.0]):
        a = np.zeros((n, n))
        a[:, 0] = weight
        a[np.arange(n), np.arange(n)] += 1 - weight
        a[0] = 0
        a[0, 0] = 1
        pattern[0, head] = a
    assert stats.sink_heads(pattern).tolist() == [[True, True, False, False]]
    assert stats.sink_heads(pattern, threshold=0.9).tolist() == [[True, False, False, False]]
    block = Block("decoder", pattern, seq(n), seq(n), True)
    detected = stats.detect_heads(block)
    assert "sink" in stats.DETECTORS and "sink" in stats.DETECTOR_EXPLANATIONS
    assert detected["sink"].tolist() == pytest.approx([0.95, stats.SINK_THRESHOLD, 0.49, 0.0])
    encoder = Block("encoder", np.full((1, 1, 3, 3), 1 / 3), seq(3), seq(3), False)
    assert "sink" not in stats.detect_heads(encoder).columns   # encoders have the special-token score


def test_hide_first_token_renormalises_the_rest():
    rng = np.random.default_rng(1)
    n = 5
    pattern = np.stack([np.stack([causal_rows(rng, n) for _ in range(2)])])      # (1, 2, 5, 5)
    tokens = seq(n)
    block = Block("decoder", pattern, tokens, tokens, True, kv_head=np.array([0, 0]))
    hidden = aggregate.transform_block(block, hide_first=True)
    assert hidden.pattern.shape == (1, 2, n - 1, n - 1)
    assert hidden.queries.tokens == tokens.tokens[1:] == hidden.keys.tokens
    for head in range(2):
        for i in range(1, n):
            rest = pattern[0, head, i, 1:]
            np.testing.assert_allclose(hidden.pattern[0, head, i - 1], rest / rest.sum(), rtol=1e-6)
    np.testing.assert_allclose(hidden.pattern.sum(-1), 1.0, atol=1e-6)
    assert hidden.kv_head.tolist() == [0, 0] and hidden.causal
    assert "First token hidden" in aggregate.describe_transform(hide_first=True)
    # Cross attention (two streams): only the first key goes; every query stays.
    queries, keys = seq(3), seq(4)
    cross = Block("cross", np.full((1, 1, 3, 4), 0.25), queries, keys, False)
    out = aggregate.transform_block(cross, hide_first=True)
    assert out.pattern.shape == (1, 1, 3, 3) and np.allclose(out.pattern, 1 / 3)
    # With special tokens hidden too, both go and the rows still sum to 1.
    with_bos = seq(n, special=[0, n - 1])
    both = aggregate.transform_block(Block("decoder", pattern, with_bos, with_bos, True),
                                     hide_first=True, hide_special=True)
    assert both.queries.tokens == with_bos.tokens[1:-1]
    np.testing.assert_allclose(both.pattern.sum(-1), 1.0, atol=1e-6)
