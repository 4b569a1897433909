"""Aggregation of captured attention: word level, special-token filtering, heads and layers.

Owns the transformations every view can apply to a :class:`~viz.result.Block`
before drawing it (pure numpy, no torch, no streamlit):

* word level (Clark et al. 2019, "What Does BERT Look At?"): the subword tokens
  of one word become one unit; attention *to* a split word is the **sum** over
  its tokens, attention *from* it is the **mean** over its tokens.  Rows still
  sum to 1.  Special tokens ([CLS], [SEP], BOS/EOS, ...) stay their own unit.
* hide special tokens: drop them from both axes and renormalise every row over
  the remaining keys (so the picture answers "among the ordinary tokens, where
  does this token look?").  Views must say so: :func:`describe_transform`.
* aggregate heads (mean, max) and layers (mean, max).

:func:`transform_block` is the entry point the pages call (through ``viz.ui``).
Matrix helpers (:func:`merge_words`, :func:`drop_and_renormalise`) accept any array
whose last two axes are ``(query_pos, key_pos)``, so the same merging applies
to rollout, flow or norm-based matrices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from viz import families
from viz.result import Block, TokenSeq

HEAD_AGGREGATIONS = ("mean", "max")
LAYER_AGGREGATIONS = ("mean", "max")

# Markers tokenizers put on subwords (viz.families): WordPiece continuation, byte-level
# BPE space (GPT-2/RoBERTa/BART), SentencePiece space (T5, Marian).
_CONTINUATION = families.CONTINUATION_MARKER
_SPACE_MARKERS = families.SPACE_MARKERS


@dataclass(frozen=True)
class Groups:
    """A partition of one token axis into contiguous units (words or special tokens)."""

    starts: np.ndarray   # (W,) int64 first token position of each unit
    counts: np.ndarray   # (W,) int64 number of tokens in each unit

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def is_identity(self) -> bool:
        return bool(np.all(self.counts == 1))


def word_groups(seq: TokenSeq) -> Groups:
    """Group the tokens of ``seq`` into words using ``seq.word_ids``.

    Consecutive tokens with the same word id (and the same segment, because
    word ids restart in the second text of a pair) form one word.  Tokens with
    word id -1 or flagged special are each their own unit.
    """
    n = len(seq)
    word_ids = np.asarray(seq.word_ids, dtype=np.int64).reshape(n)
    segments = np.asarray(seq.segment_ids, dtype=np.int64).reshape(n)
    special = np.asarray(seq.special, dtype=bool).reshape(n)
    if n == 0:
        return Groups(np.zeros(0, np.int64), np.zeros(0, np.int64))
    own_unit = special | (word_ids < 0)
    continues = np.zeros(n, dtype=bool)
    continues[1:] = ((word_ids[1:] == word_ids[:-1]) & (segments[1:] == segments[:-1])
                     & ~own_unit[1:] & ~own_unit[:-1])
    starts = np.flatnonzero(~continues).astype(np.int64)
    counts = np.diff(np.append(starts, n)).astype(np.int64)
    return Groups(starts, counts)


def _sum_groups(array: np.ndarray, groups: Groups, axis: int) -> np.ndarray:
    if groups.is_identity:
        return array
    return np.add.reduceat(array, groups.starts, axis=axis)


def _sum_groups_gathered(array: np.ndarray, groups: Groups, axis: int) -> np.ndarray:
    """:func:`_sum_groups` as a gather of each group's first token plus one gather per further token, in
    the same order: most words are one token, and np.add.reduceat along the keys of a 2,048-token layer
    takes seconds."""
    if groups.is_identity:
        return array
    array = np.moveaxis(array, axis, -1)
    out = array[..., groups.starts]
    for extra in range(1, int(groups.counts.max())):
        longer = np.flatnonzero(groups.counts > extra)
        out[..., longer] += array[..., groups.starts[longer] + extra]
    return np.moveaxis(out, -1, axis)


def merge_words(matrix: np.ndarray, query_groups: Groups, key_groups: Groups, *,
                precision=np.float64) -> np.ndarray:
    """Word-level attention: sum over the key tokens of a word, mean over its query tokens.

    ``matrix`` is ``(..., query_pos, key_pos)``; returns ``(..., n_query_words,
    n_key_words)`` in float32 (accumulated in ``precision``: float32 for a long result's layers,
    where a word's few tokens add up within ~1e-7 and a float64 copy of a layer costs 300 MB).
    """
    matrix = np.asarray(matrix)
    if matrix.shape[-2] != int(query_groups.counts.sum()) or \
            matrix.shape[-1] != int(key_groups.counts.sum()):
        raise ValueError(f"matrix of shape {matrix.shape} does not match "
                         f"{int(query_groups.counts.sum())} query and "
                         f"{int(key_groups.counts.sum())} key tokens")
    out = matrix.astype(precision, copy=False)
    total = _sum_groups if precision is np.float64 else _sum_groups_gathered
    out = total(out, key_groups, axis=-1)
    if not query_groups.is_identity:
        out = total(out, query_groups, axis=-2) / query_groups.counts[:, None].astype(precision)
    return out.astype(np.float32)


def _kept(keep: np.ndarray):
    """A boolean keep-mask as a slice when it keeps one contiguous run (hide the first token), else itself:
    slicing a long layer is a view, a boolean index a copy."""
    keep = np.asarray(keep, bool)
    idx = np.flatnonzero(keep)
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return keep


def drop_and_renormalise(matrix: np.ndarray, query_keep: np.ndarray,
                         key_keep: np.ndarray, *, precision=np.float64) -> np.ndarray:
    """Drop the rows/columns not kept and renormalise each row to sum to 1.

    ``matrix`` is ``(..., query_pos, key_pos)``.  A row whose kept weights sum
    to 0 (all its attention went to hidden tokens) stays all zero rather than
    becoming NaN.  ``precision``: see :func:`merge_words`.
    """
    if precision is not np.float64:
        out = np.asarray(matrix)[..., _kept(query_keep), :][..., _kept(key_keep)].astype(precision)
        totals = out.sum(axis=-1, keepdims=True)
        np.divide(out, totals, out=out, where=totals > 0)
        empty = ~(totals[..., 0] > 0)
        if empty.any():
            out[empty] = 0.0
        return out.astype(np.float32, copy=False)
    matrix = np.asarray(matrix, dtype=np.float64)
    out = matrix[..., np.asarray(query_keep, bool), :][..., np.asarray(key_keep, bool)]
    totals = out.sum(axis=-1, keepdims=True)
    out = np.divide(out, totals, out=np.zeros_like(out), where=totals > 0)
    return out.astype(np.float32)


def merge_label(tokens: tuple[str, ...], labels: tuple[str, ...]) -> str:
    """A readable label for a word made of several tokens: "play" + "##ing" -> "playing"."""
    parts = []
    for token, label in zip(tokens, labels):
        text = label if label else token
        if text.startswith(_CONTINUATION) and len(text) > len(_CONTINUATION):
            text = text[len(_CONTINUATION):]
        for marker in _SPACE_MARKERS:
            text = text.replace(marker, " ")
        parts.append(text)
    merged = "".join(parts).strip()
    return merged or "".join(labels) or "".join(tokens)


def merge_seq(seq: TokenSeq, groups: Groups) -> TokenSeq:
    """The word-level TokenSeq: one entry per group.

    ``tokens`` joins the raw tokens with a space (so the split stays visible in
    exports), ``labels`` is the readable word, ``token_ids`` is the id of the
    first token of the word.
    """
    if groups.is_identity:
        return seq
    tokens, labels = [], []
    for start, count in zip(groups.starts.tolist(), groups.counts.tolist()):
        toks = tuple(seq.tokens[start:start + count])
        labs = tuple(seq.labels[start:start + count])
        tokens.append(toks[0] if count == 1 else " ".join(toks))
        labels.append(labs[0] if count == 1 else merge_label(toks, labs))
    starts = groups.starts
    special = np.logical_or.reduceat(np.asarray(seq.special, bool), starts) if len(starts) else \
        np.zeros(0, bool)
    return TokenSeq(
        tokens=tuple(tokens),
        labels=tuple(labels),
        token_ids=np.asarray(seq.token_ids, np.int64)[starts],
        special=special,
        word_ids=np.asarray(seq.word_ids, np.int64)[starts],
        segment_ids=np.asarray(seq.segment_ids, np.int64)[starts],
    )


def filter_seq(seq: TokenSeq, keep: np.ndarray) -> TokenSeq:
    """The TokenSeq restricted to the positions where ``keep`` is True."""
    keep = np.asarray(keep, bool)
    idx = np.flatnonzero(keep)
    return TokenSeq(
        tokens=tuple(seq.tokens[i] for i in idx),
        labels=tuple(seq.labels[i] for i in idx),
        token_ids=np.asarray(seq.token_ids, np.int64)[idx],
        special=np.asarray(seq.special, bool)[idx],
        word_ids=np.asarray(seq.word_ids, np.int64)[idx],
        segment_ids=np.asarray(seq.segment_ids, np.int64)[idx],
    )


def transform_matrix(matrix: np.ndarray, queries: TokenSeq, keys: TokenSeq, *,
                     word_level: bool = False, hide_special: bool = False, hide_first: bool = False,
                     precision=np.float64) -> tuple[np.ndarray, TokenSeq, TokenSeq]:
    """Apply the word-level / hide-special / hide-first transformation to any ``(..., query_pos, key_pos)`` array.

    Returns the new matrix (float32) and the new query and key TokenSeqs.  Used
    by :func:`transform_block` and by pages that derive other matrices (rollout,
    norm-based) from the same tokens.  Special tokens are hidden first and each
    token's row renormalised, then words are merged, so a word's row is the
    mean of its tokens' renormalised rows and still sums to 1.  A stream made
    only of special tokens is kept whole (there would be nothing left to show).  ``hide_first``
    drops the first key token (an attention sink, Xiao et al. 2023) the same way, and the first
    query of a self-attention stream with it.
    """
    matrix = np.asarray(matrix)
    same_stream = keys is queries
    if hide_special or hide_first:
        query_keep, key_keep = keep_masks(queries, keys, hide_special=hide_special, hide_first=hide_first)
        matrix = drop_and_renormalise(matrix, query_keep, key_keep, precision=precision)
        queries = filter_seq(queries, query_keep)
        keys = queries if same_stream else filter_seq(keys, key_keep)
    if word_level:
        query_groups = word_groups(queries)
        key_groups = query_groups if same_stream else word_groups(keys)
        matrix = merge_words(matrix, query_groups, key_groups, precision=precision)
        queries = merge_seq(queries, query_groups)
        keys = queries if same_stream else merge_seq(keys, key_groups)
    return np.asarray(matrix, np.float32), queries, keys


def keep_masks(queries, keys, *, hide_special: bool, hide_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """(query_keep, key_keep) bool masks of the tokens that stay; a stream with nothing left is kept whole
    (there would be nothing to show)."""
    query_keep, key_keep = np.ones(len(queries), bool), np.ones(len(keys), bool)
    if hide_special:
        query_keep &= ~np.asarray(queries.special, bool)
        key_keep &= ~np.asarray(keys.special, bool)
    if hide_first and len(keys):
        key_keep[0] = False
        if keys is queries:
            query_keep[0] = False
    query_keep = query_keep if query_keep.any() else np.ones_like(query_keep)
    key_keep = key_keep if key_keep.any() else np.ones_like(key_keep)
    return query_keep, key_keep


def transform_block(block: Block, *, word_level: bool = False, hide_special: bool = False,
                    hide_first: bool = False) -> Block:
    """A new Block with subwords merged into words and/or special tokens hidden.

    Works for self-attention blocks (queries and keys are the same stream),
    causal blocks (a merged causal block stays causal: a token only sees tokens
    of its own or earlier words) and cross blocks (queries and keys merged
    independently).  See :func:`transform_matrix` for the order of operations.
    """
    if not (word_level or hide_special or hide_first):
        return block
    options = dict(word_level=word_level, hide_special=hide_special, hide_first=hide_first)
    if not isinstance(block.pattern, np.ndarray) and hasattr(block.pattern, "map_layers"):
        # A long result (viz.result.LazyPattern): transform each layer when it is materialised.
        # float32 throughout: a float64 copy of one 2,048-token layer is 300 MB (rows agree to ~1e-7)
        options["precision"] = np.float32
        _, queries, keys = transform_matrix(np.zeros((1, 1, len(block.queries), len(block.keys)), np.float32),
                                            block.queries, block.keys, **options)

        def one_layer(layer: np.ndarray) -> np.ndarray:
            return transform_matrix(layer, block.queries, block.keys, **options)[0]
        pattern = block.pattern.map_layers(one_layer, (block.n_layers, block.n_heads, len(queries), len(keys)))
        return Block(block.kind, pattern, queries, keys, block.causal, kv_head=block.kv_head)
    pattern, queries, keys = transform_matrix(block.pattern, block.queries, block.keys, **options)
    return Block(block.kind, pattern, queries, keys, block.causal, kv_head=block.kv_head)


def sampled_rows(block: Block, max_rows: int, *, word_level: bool = False, hide_special: bool = False,
                 hide_first: bool = False):
    """Rows of the transformed ``block`` (see :func:`transform_block`) at ``max_rows`` evenly spaced query units,
    computed from only the raw rows they need (a long result recomputes just those).

    Returns ``(units, queries, keys, rows_of)``: the chosen unit positions (R,), the transformed token
    sequences, and ``rows_of(layer) -> (n_heads, R, n_key_units)`` float32, each row exactly that row of the
    transformed block (hide and renormalise, then merge words: the same order as :func:`transform_matrix`).
    """
    queries, keys = block.queries, block.keys
    same_stream = keys is queries
    q_idx, k_idx = np.arange(len(queries)), np.arange(len(keys))
    if hide_special or hide_first:
        query_keep, key_keep = keep_masks(queries, keys, hide_special=hide_special, hide_first=hide_first)
        q_idx, k_idx = np.flatnonzero(query_keep), np.flatnonzero(key_keep)
        queries = filter_seq(queries, query_keep)
        keys = queries if same_stream else filter_seq(keys, key_keep)
    q_groups = word_groups(queries) if word_level else Groups(np.arange(len(queries)), np.ones(len(queries), np.int64))
    k_groups = (q_groups if same_stream else word_groups(keys)) if word_level else \
        Groups(np.arange(len(keys)), np.ones(len(keys), np.int64))
    if word_level:
        queries = merge_seq(queries, q_groups)
        keys = queries if same_stream else merge_seq(keys, k_groups)
    n_units = len(q_groups)
    units = np.unique(np.linspace(0, n_units - 1, min(max_rows, n_units)).round().astype(np.int64))
    token_of = [q_idx[q_groups.starts[u]:q_groups.starts[u] + q_groups.counts[u]] for u in units]
    tokens = np.concatenate(token_of)                          # raw query rows needed, unit by unit
    counts = np.array([len(t) for t in token_of], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    counts = counts.astype(np.float32)
    key_cut = _kept(np.isin(np.arange(len(block.keys)), k_idx))

    def rows_of(layer: int) -> np.ndarray:
        # (H, n_tok, K): a LazyPattern recomputes only these rows
        raw = np.array(block.pattern[layer, :, tokens] if hasattr(block.pattern, "summary")
                       else np.asarray(block.pattern[layer])[:, tokens], dtype=np.float32)[..., key_cut]
        totals = raw.sum(axis=-1, keepdims=True)
        np.divide(raw, totals, out=raw, where=totals > 0)
        raw[np.broadcast_to(totals <= 0, raw.shape)] = 0.0
        merged = _sum_groups_gathered(raw, k_groups, axis=-1)                      # (H, n_tok, K')
        if len(tokens) == len(units):
            return merged
        return np.add.reduceat(merged, starts, axis=1) / counts[None, :, None]  # a word's row: its tokens' mean
    return units, queries, keys, rows_of


def layers_mean(pattern, *, head: int | None = None, how: str = "mean") -> np.ndarray:
    """(T_q, T_k) float32: the mean over layers of one head, or of the heads combined by ``how``.

    A long result's LazyPattern is streamed one layer at a time (the mean of heads comes from the
    summary its capture streamed), so no (n_layers, n_heads, T, T) array is built.
    """
    summary = getattr(pattern, "summary", None)
    if head is None and how == "mean" and summary is not None and summary.layer_mean is not None:
        return summary.layer_mean
    if isinstance(pattern, np.ndarray):
        per_layer = aggregate_heads(pattern, how=how) if head is None else pattern[:, head]   # (L, T_q, T_k)
        return per_layer.mean(axis=0)
    total = None
    for layer in range(len(pattern)):
        one = aggregate_heads(pattern[layer], how=how) if head is None else pattern[layer, head]
        total = one.astype(np.float64) if total is None else total + one
    return (total / len(pattern)).astype(np.float32)


def describe_transform(*, word_level: bool = False, hide_special: bool = False, hide_first: bool = False) -> str:
    """One sentence for the page saying what was done to the attention shown ('' if nothing)."""
    parts = []
    if word_level:
        parts.append("Word level: subword tokens merged into words (attention *to* a word is "
                     "summed over its tokens, attention *from* it is averaged; Clark et al. 2019).")
    if hide_special:
        parts.append("Special tokens hidden: their rows and columns were removed and every row "
                     "renormalised to sum to 1, so these are **not** the model's raw weights.")
    if hide_first:
        parts.append("First token hidden: many heads park their weight on it whatever it is (an attention "
                     "sink); its column was removed and every row renormalised over the other tokens.")
    return " ".join(parts)


def aggregate_heads(pattern: np.ndarray, *, how: str = "mean") -> np.ndarray:
    """Combine the heads of ``(..., n_heads, query_pos, key_pos)`` into ``(..., query_pos, key_pos)``.

    ``mean`` keeps rows summing to 1; ``max`` shows the strongest head per cell
    and its rows do not sum to 1.
    """
    pattern = np.asarray(pattern)
    if pattern.ndim < 3:
        raise ValueError(f"expected (..., n_heads, query_pos, key_pos), got shape {pattern.shape}")
    if how == "mean":
        return pattern.mean(axis=-3, dtype=np.float64).astype(np.float32)
    if how == "max":
        return pattern.max(axis=-3).astype(np.float32)
    raise ValueError(f"unknown head aggregation {how!r} (choose from {', '.join(HEAD_AGGREGATIONS)})")


def aggregate_layers(pattern: np.ndarray, *, how: str = "mean",
                     layers: tuple[int, ...] | None = None) -> np.ndarray:
    """Combine the layers (axis 0) of ``(n_layers, ...)``, optionally only ``layers``."""
    pattern = np.asarray(pattern)
    if layers is not None:
        layers = tuple(int(layer) for layer in layers)
        if not layers:
            raise ValueError("no layers selected")
        bad = [layer for layer in layers if not -pattern.shape[0] <= layer < pattern.shape[0]]
        if bad:
            raise ValueError(f"layer {bad[0]} out of range (the model has {pattern.shape[0]} layers)")
        pattern = pattern[list(layers)]
    if how == "mean":
        return pattern.mean(axis=0, dtype=np.float64).astype(np.float32)
    if how == "max":
        return pattern.max(axis=0).astype(np.float32)
    raise ValueError(f"unknown layer aggregation {how!r} (choose from {', '.join(LAYER_AGGREGATIONS)})")


def hide_first_key(rows: np.ndarray) -> np.ndarray:
    """Attention rows ``(..., key_pos)`` without the first key (an attention sink), renormalised.

    The first column becomes NaN (drawn blank) and the others are divided by their sum, so each row
    shows how the weight *not* parked on the first token is spread. Rows with nothing left stay 0.
    """
    rows = np.array(rows, dtype=np.float64)
    rest = rows[..., 1:]
    total = rest.sum(axis=-1, keepdims=True)
    rows[..., 1:] = np.divide(rest, total, out=np.zeros_like(rest), where=total > 0)
    rows[..., 0] = np.nan
    return rows.astype(np.float32)
