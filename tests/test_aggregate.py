"""Word-level merging, special-token hiding and head/layer aggregation on hand-made arrays."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from viz.aggregate import (aggregate_heads, aggregate_layers, describe_transform,
                           drop_and_renormalise, merge_label, merge_words, transform_block,
                           word_groups)
from viz.result import CROSS, DECODER, ENCODER, Block, TokenSeq


def seq(tokens, labels, word_ids, special, segment_ids=None):
    n = len(tokens)
    return TokenSeq(tokens=tuple(tokens), labels=tuple(labels),
                    token_ids=np.arange(100, 100 + n, dtype=np.int64),
                    special=np.array(special, bool), word_ids=np.array(word_ids, np.int64),
                    segment_ids=np.zeros(n, np.int64) if segment_ids is None
                    else np.array(segment_ids, np.int64))


# [CLS] play ##ing [SEP]
PLAYING = seq(["[CLS]", "play", "##ing", "[SEP]"], ["[CLS]", "play", "ing", "[SEP]"],
              [-1, 0, 0, -1], [True, False, False, True])
PLAYING_PATTERN = np.array([[0.10, 0.20, 0.30, 0.40],
                            [0.50, 0.10, 0.10, 0.30],
                            [0.20, 0.20, 0.20, 0.40],
                            [0.25, 0.25, 0.25, 0.25]], np.float32)

# [CLS] the play ##ing [SEP]
THE_PLAYING = seq(["[CLS]", "the", "play", "##ing", "[SEP]"], ["[CLS]", "the", "play", "ing", "[SEP]"],
                  [-1, 0, 1, 1, -1], [True, False, False, False, True])
THE_PLAYING_PATTERN = np.array([[0.2, 0.2, 0.2, 0.2, 0.2],
                                [0.5, 0.1, 0.2, 0.2, 0.0],
                                [0.2, 0.4, 0.2, 0.0, 0.2],
                                [0.0, 0.3, 0.3, 0.4, 0.0],
                                [0.1, 0.1, 0.1, 0.1, 0.6]], np.float32)


def as_block(matrix, queries, keys=None, *, kind=ENCODER, causal=False, n_layers=1, n_heads=1):
    pattern = np.broadcast_to(matrix, (n_layers, n_heads) + matrix.shape).copy()
    return Block(kind, pattern, queries, queries if keys is None else keys, causal)


def test_word_groups_keep_special_tokens_alone():
    groups = word_groups(THE_PLAYING)
    assert groups.starts.tolist() == [0, 1, 2, 4]
    assert groups.counts.tolist() == [1, 1, 2, 1]


def test_word_groups_split_where_word_ids_restart_in_a_pair():
    # "a b" / "a b" with no separator between the texts: word ids restart at 0
    pair = seq(["a", "a", "b", "b"], ["a", "a", "b", "b"], [0, 0, 0, 0], [False] * 4,
               segment_ids=[0, 0, 1, 1])
    groups = word_groups(pair)
    assert groups.starts.tolist() == [0, 2]
    assert groups.counts.tolist() == [2, 2]
    # two adjacent special tokens with word id -1 are never merged
    specials = seq(["[SEP]", "[SEP]"], ["[SEP]", "[SEP]"], [-1, -1], [True, True])
    assert word_groups(specials).counts.tolist() == [1, 1]


def test_merge_words_sums_to_and_averages_from_by_hand():
    groups = word_groups(PLAYING)
    merged = merge_words(PLAYING_PATTERN, groups, groups)
    expected = np.array([[0.10, 0.50, 0.40],     # [CLS] -> play+##ing summed
                         [0.35, 0.30, 0.35],     # mean of the rows of play and ##ing
                         [0.25, 0.50, 0.25]])
    np.testing.assert_allclose(merged, expected, atol=1e-6)
    np.testing.assert_allclose(merged.sum(-1), 1.0, atol=1e-6)
    assert merged.dtype == np.float32


def test_transform_block_word_level_merges_tokens_and_labels():
    block = as_block(PLAYING_PATTERN, PLAYING, n_layers=2, n_heads=3)
    out = transform_block(block, word_level=True)
    assert out.pattern.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(out.pattern[1, 2], [[0.10, 0.50, 0.40], [0.35, 0.30, 0.35],
                                                  [0.25, 0.50, 0.25]], atol=1e-6)
    assert out.queries.labels == ("[CLS]", "playing", "[SEP]")
    assert out.queries.tokens == ("[CLS]", "play ##ing", "[SEP]")
    assert out.queries.token_ids.tolist() == [100, 101, 103]
    assert out.queries.special.tolist() == [True, False, True]
    assert out.queries.word_ids.tolist() == [-1, 0, -1]
    assert out.keys is out.queries
    # the input block is not modified
    assert block.pattern.shape == (2, 3, 4, 4)


def test_hide_special_drops_and_renormalises_by_hand():
    matrix = np.array([[0.1, 0.2, 0.3, 0.4],
                       [0.4, 0.15, 0.3, 0.15],
                       [0.2, 0.6, 0.2, 0.0],
                       [0.25, 0.25, 0.25, 0.25]])
    out = transform_block(as_block(matrix, PLAYING), hide_special=True)
    np.testing.assert_allclose(out.pattern[0, 0], [[1 / 3, 2 / 3], [0.75, 0.25]], atol=1e-6)
    assert out.queries.labels == ("play", "ing")
    assert not out.queries.special.any()


def test_hide_special_then_word_level_by_hand():
    out = transform_block(as_block(THE_PLAYING_PATTERN, THE_PLAYING), word_level=True,
                          hide_special=True)
    # each token's row is renormalised over the=0 play=1 ##ing=2, then play+##ing merged
    expected = np.array([[0.2, 0.8],
                         [(2 / 3 + 0.3) / 2, (1 / 3 + 0.7) / 2]])
    np.testing.assert_allclose(out.pattern[0, 0], expected, atol=1e-6)
    assert out.queries.labels == ("the", "playing")


def test_hidden_row_with_no_weight_left_stays_zero_not_nan():
    out = drop_and_renormalise(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([True, True]),
                               np.array([False, True]))
    np.testing.assert_array_equal(out, [[0.0], [1.0]])


def test_causal_block_stays_causal_at_word_level():
    gpt = seq(["Ġun", "believ", "able", "Ġcat", "."], ["un", "believ", "able", "cat", "."],
              [0, 0, 0, 1, 2], [False] * 5)
    rng = np.random.default_rng(0)
    raw = np.tril(rng.random((2, 2, 5, 5)) + 0.1)
    raw /= raw.sum(-1, keepdims=True)
    block = Block(DECODER, raw.astype(np.float32), gpt, gpt, True)
    out = transform_block(block, word_level=True)
    assert out.causal
    assert out.queries.labels == ("unbelievable", "cat", ".")
    assert out.pattern.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(np.triu(out.pattern[..., :, :], k=1), 0.0)
    np.testing.assert_allclose(out.pattern.sum(-1), 1.0, atol=1e-6)
    # word 0 attending to itself: mean over its 3 query tokens of the summed first 3 keys
    np.testing.assert_allclose(out.pattern[1, 0, 0, 0], raw[1, 0, :3, :3].sum(-1).mean(), atol=1e-6)


def test_cross_block_merges_queries_and_keys_independently():
    decoder = seq(["<s>", "▁Hal", "lo"], ["<s>", "Hal", "lo"], [-1, 0, 0], [True, False, False])
    encoder = THE_PLAYING
    rng = np.random.default_rng(1)
    raw = rng.random((1, 2, 3, 5))
    raw /= raw.sum(-1, keepdims=True)
    out = transform_block(Block(CROSS, raw, decoder, encoder, False), word_level=True,
                          hide_special=True)
    assert out.kind == CROSS
    assert out.queries.labels == ("Hallo",)
    assert out.keys.labels == ("the", "playing")
    # independent computation with loops
    for head in range(2):
        rows = []
        for q in (1, 2):
            kept = raw[0, head, q, 1:4] / raw[0, head, q, 1:4].sum()
            rows.append([kept[0], kept[1] + kept[2]])
        np.testing.assert_allclose(out.pattern[0, head, 0], np.mean(rows, axis=0), atol=1e-6)


def test_no_option_returns_the_block_unchanged():
    block = as_block(PLAYING_PATTERN, PLAYING)
    assert transform_block(block) is block
    assert describe_transform() == ""
    assert "renormalised" in describe_transform(hide_special=True)
    assert "summed" in describe_transform(word_level=True)


def test_merge_label_readable():
    assert merge_label(("play", "##ing"), ("play", "ing")) == "playing"
    assert merge_label(("Ġun", "believ", "able"), ("Ġun", "believ", "able")) == "unbelievable"
    assert merge_label(("▁Hal", "lo"), ("Hal", "lo")) == "Hallo"


def test_aggregate_heads_mean_and_max_by_hand():
    pattern = np.array([[[[1.0, 0.0], [0.5, 0.5]],
                         [[0.0, 1.0], [0.9, 0.1]]]])          # (1 layer, 2 heads, 2, 2)
    np.testing.assert_allclose(aggregate_heads(pattern), [[[0.5, 0.5], [0.7, 0.3]]])
    np.testing.assert_allclose(aggregate_heads(pattern, how="max"), [[[1.0, 1.0], [0.9, 0.5]]])
    np.testing.assert_allclose(aggregate_heads(pattern[0]), [[0.5, 0.5], [0.7, 0.3]])
    with pytest.raises(ValueError, match="unknown head aggregation"):
        aggregate_heads(pattern, how="median")


def test_aggregate_layers_by_hand():
    pattern = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[0.4, 0.6]]])   # (3 layers, 1, 2)
    np.testing.assert_allclose(aggregate_layers(pattern), [[1.4 / 3, 1.6 / 3]], atol=1e-6)
    np.testing.assert_allclose(aggregate_layers(pattern, how="max"), [[1.0, 1.0]])
    np.testing.assert_allclose(aggregate_layers(pattern, layers=(0, 2)), [[0.7, 0.3]], atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        aggregate_layers(pattern, layers=(3,))


@st.composite
def random_blocks(draw):
    """A random self-attention block: words of 1-3 tokens, some special tokens, rows summing to 1."""
    n_words = draw(st.integers(1, 4))
    word_ids, special = [], []
    if draw(st.booleans()):
        word_ids.append(-1), special.append(True)
    for word in range(n_words):
        for _ in range(draw(st.integers(1, 3))):
            word_ids.append(word), special.append(False)
    if draw(st.booleans()):
        word_ids.append(-1), special.append(True)
    n = len(word_ids)
    toks = [f"t{i}" for i in range(n)]
    raw = np.array(draw(st.lists(st.floats(0.01, 1.0), min_size=n * n, max_size=n * n))).reshape(n, n)
    return as_block(raw / raw.sum(-1, keepdims=True), seq(toks, toks, word_ids, special))


def loop_merge(matrix, word_ids):
    """Clark et al.'s word merge with explicit loops over the units."""
    units = []
    for pos, word in enumerate(word_ids):
        if units and word >= 0 and word_ids[units[-1][0]] == word:
            units[-1].append(pos)
        else:
            units.append([pos])
    return np.array([[np.mean([matrix[q, k_unit].sum() for q in q_unit]) for k_unit in units]
                     for q_unit in units])


@settings(max_examples=60, deadline=None)
@given(random_blocks(), st.booleans())
def test_transform_matches_loops_and_keeps_rows_normalised(block, hide):
    out = transform_block(block, word_level=True, hide_special=hide)
    matrix = block.pattern[0, 0].astype(np.float64)
    word_ids = block.queries.word_ids.tolist()
    if hide and not block.queries.special.all():
        keep = ~block.queries.special
        matrix = matrix[keep][:, keep]
        matrix = matrix / matrix.sum(-1, keepdims=True)
        word_ids = [w for w, k in zip(word_ids, keep) if k]
    np.testing.assert_allclose(out.pattern[0, 0], loop_merge(matrix, word_ids), atol=1e-5)
    np.testing.assert_allclose(out.pattern.sum(-1), 1.0, atol=1e-5)
    assert len(out.queries) == out.pattern.shape[-1] == len(out.queries.labels)
