"""What a head ablation did, as frozen numpy data: effects, head importance, tables, head specs.

:mod:`viz.ablation` (torch tier) runs the model with heads knocked out and fills these
dataclasses; pages, figures, the CLI and the download buttons read them without torch.

* :class:`DecoderEffect`: per position, p(actual next token) before/after, KL(before || after) of the
  next-token distribution, and the top-k before/after at every position (:meth:`DecoderEffect.top_k`).
* :class:`EncoderEffect`: cosine between the sentence embeddings (mean-pooled last hidden states)
  before/after, and per-token cosine of the last hidden states.
* :class:`MaskedTopK`: a masked-LM head's top-k for one masked token before/after.
* :class:`HeadImportance`: one number per (layer, head), larger = the model needs the head more.
* :func:`parse_heads` (``"L:H,L:H"``), :func:`spearman`, :func:`effect_table`, :func:`importance_table`.

Pure numpy/scipy/pandas: no torch, no Streamlit.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from viz.result import TokenSeq

MODES = ("zero", "mean")
METHODS = ("gradient", "ablation")
Head = tuple[int, int]   # (layer, head), 0-based

_HEAD_SPEC = re.compile(r"^\s*(-?\d+)\s*:\s*(-?\d+)\s*$")


class HeadSpecError(ValueError):
    """A head list a person typed cannot be read; the message is one line."""


def parse_heads(spec: str, *, n_layers: int | None = None, n_heads: int | None = None) -> tuple[Head, ...]:
    """``"3:4, 0:1"`` -> ``((0, 1), (3, 4))``: sorted, duplicates dropped, checked against the model's size."""
    if spec is None or not str(spec).strip():
        raise HeadSpecError("no heads given: write LAYER:HEAD[,LAYER:HEAD...], e.g. 3:4,5:0")
    heads = []
    for part in str(spec).split(","):
        m = _HEAD_SPEC.match(part)
        if m is None:
            raise HeadSpecError(f"cannot read head '{part.strip()}': write LAYER:HEAD, e.g. 3:4")
        heads.append((int(m.group(1)), int(m.group(2))))
    return check_heads(heads, n_layers=n_layers, n_heads=n_heads)


def check_heads(heads: Iterable[Head], *, n_layers: int | None = None,
                n_heads: int | None = None) -> tuple[Head, ...]:
    """Sorted unique (layer, head) pairs, each within ``0..n_layers-1`` and ``0..n_heads-1``."""
    out = set()
    for item in heads:
        try:
            layer, head = (int(v) for v in item)
        except (TypeError, ValueError):
            raise HeadSpecError(f"a head is a (layer, head) pair of integers, not {item!r}") from None
        if layer < 0 or (n_layers is not None and layer >= n_layers):
            raise HeadSpecError(f"layer {layer} is out of range: this model has layers 0..{(n_layers or 1) - 1}")
        if head < 0 or (n_heads is not None and head >= n_heads):
            raise HeadSpecError(f"head {head} is out of range: this model has heads 0..{(n_heads or 1) - 1}")
        out.add((layer, head))
    return tuple(sorted(out))


def format_heads(heads: Iterable[Head]) -> str:
    """The inverse of :func:`parse_heads`: ``"0:1,3:4"``."""
    return ",".join(f"{layer}:{head}" for layer, head in heads)


@dataclass(frozen=True)
class TopK:
    """The k most likely tokens at one position, without (before) and with (after) the ablation."""

    position: int
    before_ids: np.ndarray          # (k,) int64, most likely first
    before_probs: np.ndarray        # (k,) float64
    before_labels: tuple[str, ...]
    before_probs_after: np.ndarray  # (k,) the same tokens' probability with the ablation
    after_ids: np.ndarray           # (k,) int64, most likely first under the ablation
    after_probs: np.ndarray         # (k,)
    after_labels: tuple[str, ...]
    after_probs_before: np.ndarray  # (k,) those tokens' probability without the ablation

    @property
    def changed(self) -> bool:
        """True when the most likely token is not the same."""
        return int(self.before_ids[0]) != int(self.after_ids[0])


@dataclass(frozen=True)
class DecoderEffect:
    """A decoder's next-token predictions over a text, with and without the heads.

    Position ``p`` predicts token ``p + 1``; the last position predicts past the text, so it has a
    KL and a top-k but no actual next token (``next_ids[-1] == -1``, probabilities NaN).
    """

    tokens: TokenSeq
    heads: tuple[Head, ...]
    mode: str
    next_ids: np.ndarray            # (T,) int64 actual next token, -1 at the last position
    p_next_before: np.ndarray       # (T,) float64, NaN at the last position
    p_next_after: np.ndarray        # (T,) float64
    kl: np.ndarray                  # (T,) float64 KL(before || after) in nats, >= 0
    top_ids_before: np.ndarray      # (T, k) int64
    top_probs_before: np.ndarray    # (T, k) float64
    top_before_after: np.ndarray    # (T, k) p_after of top_ids_before
    top_ids_after: np.ndarray       # (T, k) int64
    top_probs_after: np.ndarray     # (T, k)
    top_after_before: np.ndarray    # (T, k) p_before of top_ids_after
    top_labels_before: tuple[tuple[str, ...], ...]   # (T, k)
    top_labels_after: tuple[tuple[str, ...], ...]    # (T, k)
    truncated: int = 0

    @property
    def mean_kl(self) -> float:
        return float(self.kl.mean())

    def top_k(self, position: int) -> TopK:
        p = int(position)
        if not -len(self.kl) <= p < len(self.kl):
            raise IndexError(f"position {p} is out of range (0..{len(self.kl) - 1})")
        p %= len(self.kl)
        return TopK(position=p, before_ids=self.top_ids_before[p], before_probs=self.top_probs_before[p],
                    before_labels=self.top_labels_before[p], before_probs_after=self.top_before_after[p],
                    after_ids=self.top_ids_after[p], after_probs=self.top_probs_after[p],
                    after_labels=self.top_labels_after[p], after_probs_before=self.top_after_before[p])


@dataclass(frozen=True)
class EncoderEffect:
    """How far an encoder's output moves when the heads are knocked out (1 = not at all)."""

    tokens: TokenSeq
    heads: tuple[Head, ...]
    mode: str
    sentence_cosine: float          # cosine of the mean-pooled last hidden states before/after
    token_cosine: np.ndarray        # (T,) float64 cosine of each token's last hidden state before/after
    truncated: int = 0


@dataclass(frozen=True)
class MaskedTopK:
    """A masked-LM head's guesses for one masked token, with and without the heads."""

    tokens: TokenSeq                # the input as the model read it, the mask token included
    heads: tuple[Head, ...]
    mode: str
    top: TopK
    truncated: int = 0


@dataclass(frozen=True)
class HeadImportance:
    """Importance of every head for one text; larger means the model needs the head more.

    ``gradient``: |dL/dg_h| for a gate g_h = 1 on each head's output (Michel et al. 2019), one
    backward pass.  ``ablation``: the actual effect of removing each head alone.
    ``objective`` says in words what L or the effect is for this model.
    """

    method: str
    importance: np.ndarray          # (n_layers, n_heads) float64
    objective: str
    tokens: TokenSeq
    mode: str = "zero"              # ablation method: how each head was removed
    seconds: float = 0.0
    truncated: int = 0

    @property
    def n_layers(self) -> int:
        return self.importance.shape[0]

    @property
    def n_heads(self) -> int:
        return self.importance.shape[1]

    def ranking(self) -> tuple[Head, ...]:
        """Every (layer, head), the most important first (ties: lower layer, then head, first)."""
        flat = self.importance.ravel()
        order = np.lexsort((np.arange(flat.size), -flat))
        return tuple((int(i // self.n_heads), int(i % self.n_heads)) for i in order)


def spearman(a: np.ndarray | HeadImportance, b: np.ndarray | HeadImportance) -> float:
    """Spearman rank correlation between two importance grids (ties get average ranks).

    NaN when either grid is constant (no ranking to compare).
    """
    from scipy.stats import rankdata

    x = np.asarray(a.importance if isinstance(a, HeadImportance) else a, dtype=np.float64).ravel()
    y = np.asarray(b.importance if isinstance(b, HeadImportance) else b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"importance grids differ in size: {x.size} and {y.size} heads")
    rx, ry = rankdata(x) - (x.size + 1) / 2, rankdata(y) - (y.size + 1) / 2
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def effect_table(effect: DecoderEffect | EncoderEffect) -> pd.DataFrame:
    """The CSV of ``python -m viz ablate``.

    Decoders: one row per position with ``position, token, next_token, p_next_before, p_next_after,
    kl`` (plus ``token_id``, ``next_token_id``); the last position has no next token (empty, NaN).
    Tokens are the tokenizer's own strings.
    Encoders: a first row ``position = -1`` holding the sentence embedding's cosine, then one row
    per position: ``position, token, cosine``.
    """
    tokens = list(effect.tokens.tokens)
    if isinstance(effect, DecoderEffect):
        next_tokens = tokens[1:] + [""]
        return pd.DataFrame({
            "position": np.arange(len(tokens), dtype=np.int64), "token": tokens, "next_token": next_tokens,
            "p_next_before": effect.p_next_before, "p_next_after": effect.p_next_after, "kl": effect.kl,
            "token_id": effect.tokens.token_ids,
            "next_token_id": pd.Series(effect.next_ids, dtype="Int64").mask(effect.next_ids < 0)})
    return pd.DataFrame({
        "position": np.arange(-1, len(tokens), dtype=np.int64), "token": ["<sentence>"] + tokens,
        "cosine": np.concatenate([[effect.sentence_cosine], effect.token_cosine])})


def importance_table(result: HeadImportance) -> pd.DataFrame:
    """The CSV of ``python -m viz importance``: ``layer, head, importance`` (plus ``rank``, 1 = most important)."""
    n_layers, n_heads = result.importance.shape
    layer, head = np.divmod(np.arange(n_layers * n_heads), n_heads)
    rank = np.empty(n_layers * n_heads, dtype=np.int64)
    for r, (lay, hd) in enumerate(result.ranking(), start=1):
        rank[lay * n_heads + hd] = r
    return pd.DataFrame({"layer": layer.astype(np.int64), "head": head.astype(np.int64),
                         "importance": result.importance.ravel(), "rank": rank})
