"""File formats shared by the CLI and the app's download buttons: the npz layout, long-form CSV, file names.

* npz (:func:`result_arrays`, :func:`npz_bytes`): one stream for encoder or decoder models
  (``tokens``, ``attentions`` float32 ``(n_layers, n_heads, T, T)``, ``truncated``), three blocks for
  encoder-decoder models (``encoder_tokens``, ``decoder_tokens``, ``encoder_attentions``,
  ``decoder_attentions``, ``cross_attentions``, ``truncated``).  ``word_level`` replaces tokens and
  attentions by their word-level merge (:func:`viz.aggregate.transform_block`); ``rollout`` adds
  ``rollout`` float32 ``(n_layers, T, T)`` of the main self-attention stored beside it (and
  ``decoder_rollout`` for encoder-decoder models), after word merging when both are asked for, so it
  always matches the tokens in the same file.  Both carry ``kv_head`` int ``(n_heads,)``, the
  key/value head each query head reads (``arange(n_heads)`` without grouped-query attention).
* generation npz (:func:`generation_arrays`); predictions and logit-lens tables
  (:func:`predictions_table`, :func:`lens_table`).
* CSV (:func:`csv_scope`, :func:`attention_csv`): one row per (layer, head, query_pos, key_pos).
* :func:`safe_name`: the one helper that turns user text into a file name.

Pure numpy/pandas: no Streamlit, no torch.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pandas as pd

from viz.aggregate import transform_block
from viz.flow import rollout as attention_rollout
from viz.result import (
    CROSS,
    DECODER,
    ENCODER,
    AttentionResult,
    Block,
    GenerationResult,
    LogitLens,
    Predictions,
)

MAX_CSV_ROWS = 300_000      # one 512-token head (262k cells) still fits; ~12 MB of CSV


# ---------------------------------------------------------------- npz
def result_arrays(result: AttentionResult, *, word_level: bool = False,
                  rollout: bool = False) -> dict[str, np.ndarray]:
    """The npz contract (see the module docstring) as a dict of arrays for ``np.savez``."""
    truncated = np.array(result.truncated, dtype=np.int64)
    kv_head = np.asarray(result.kv_head, dtype=np.int64)   # (n_heads,), arange without GQA
    if result.family == "encoder-decoder":
        arrays = {
            "encoder_tokens": np.array(result.encoder.tokens, dtype=str),
            "decoder_tokens": np.array(result.decoder.tokens, dtype=str),
            "encoder_attentions": result.encoder_attentions.astype(np.float32),
            "decoder_attentions": result.decoder_attentions.astype(np.float32),
            "cross_attentions": result.cross_attentions.astype(np.float32),
            "truncated": truncated,
            "kv_head": kv_head,
        }
        if word_level:
            for kind in (ENCODER, DECODER, CROSS):
                block = transform_block(result.block(kind), word_level=True)
                arrays[f"{kind}_attentions"] = block.pattern.astype(np.float32)
                if kind != CROSS:
                    arrays[f"{kind}_tokens"] = np.array(block.queries.labels, dtype=str)
        if rollout:
            arrays["rollout"] = attention_rollout(arrays["encoder_attentions"])
            arrays["decoder_rollout"] = attention_rollout(arrays["decoder_attentions"])
        return arrays
    arrays = {
        "tokens": np.array(result.tokens.tokens, dtype=str),
        "attentions": result.attentions.astype(np.float32),
        "truncated": truncated,
        "kv_head": kv_head,
    }
    if word_level:
        block = transform_block(result.block(), word_level=True)
        arrays["tokens"] = np.array(block.queries.labels, dtype=str)
        arrays["attentions"] = block.pattern.astype(np.float32)
    if rollout:
        arrays["rollout"] = attention_rollout(arrays["attentions"])
    return arrays


def npz_bytes(result: AttentionResult) -> bytes:
    """The CLI's capture npz (:func:`result_arrays`) as bytes, for a download button."""
    buffer = io.BytesIO()
    np.savez(buffer, **result_arrays(result))
    return buffer.getvalue()


def generation_arrays(result: GenerationResult) -> dict[str, np.ndarray]:
    """The `generate` npz: the whole sequence's tokens and attention, and each step's choice and top-k.

    ``tokens`` (prompt and generated, template included, the tokenizer's own strings), ``token_ids``,
    ``n_prompt``, ``attentions`` float32 (n_layers, n_heads, T, T), ``step_ids`` (n_steps,),
    ``step_probs`` float32 (n_steps,), ``top_ids`` (n_steps, K), ``top_probs`` float32 (n_steps, K)
    (softmax of the raw logits at temperature 1), ``forced`` bool (n_steps,), ``special`` and
    ``template`` bool (T,), ``kv_head`` (n_heads,), ``truncated``.
    """
    return {
        "tokens": np.array(result.tokens.tokens, dtype=str),
        "token_ids": np.asarray(result.tokens.token_ids, dtype=np.int64),
        "n_prompt": np.array(result.n_prompt, dtype=np.int64),
        "attentions": result.attentions.astype(np.float32),
        "step_ids": np.asarray(result.step_ids, dtype=np.int64),
        "step_probs": np.asarray(result.step_probs, dtype=np.float32),
        "top_ids": np.asarray(result.top_ids, dtype=np.int64),
        "top_probs": np.asarray(result.top_probs, dtype=np.float32),
        "forced": np.asarray(result.forced, dtype=bool),
        "special": np.asarray(result.tokens.special, dtype=bool),
        "template": np.asarray(result.template, dtype=bool),
        "kv_head": np.asarray(result.kv_head, dtype=np.int64),
        "truncated": np.array(result.truncated, dtype=np.int64),
    }


# ---------------------------------------------------------------- predictions and the logit lens
def _top_columns(top_tokens, top_probs: np.ndarray, top_ids: np.ndarray) -> dict:
    k = top_probs.shape[1]
    columns = {f"top{j + 1}": [row[j] for row in top_tokens] for j in range(k)}
    columns.update({f"p{j + 1}": top_probs[:, j] for j in range(k)})
    columns.update({f"id{j + 1}": top_ids[:, j] for j in range(k)})
    return columns


def predictions_table(pred: Predictions) -> pd.DataFrame:
    """One row per position: ``position``, ``token``, ``next_token`` (empty on the last row), ``p_next``,
    ``rank_next`` (1-based; empty on the last row), ``top1..topK``, ``p1..pK``, then ``surprisal``
    (bits), ``token_id``, ``next_token_id`` and ``id1..idK``.  Tokens are the tokenizer's own strings."""
    tokens = list(pred.tokens.tokens)
    n = len(tokens)
    last = np.arange(n) == n - 1
    frame = pd.DataFrame({
        "position": np.arange(n),
        "token": tokens,
        "next_token": tokens[1:] + [""],
        "p_next": pred.p_next,
        "rank_next": pd.Series(pred.rank_next, dtype="Int64").mask(last),
    })
    tops = _top_columns(pred.top_tokens, pred.top_probs, pred.top_ids)
    k = pred.top_probs.shape[1]
    for j in range(k):
        frame[f"top{j + 1}"] = tops[f"top{j + 1}"]
    for j in range(k):
        frame[f"p{j + 1}"] = tops[f"p{j + 1}"]
    frame["surprisal"] = pred.surprisal
    frame["token_id"] = pred.tokens.token_ids
    frame["next_token_id"] = pd.Series(pred.next_ids, dtype="Int64").mask(last)
    for j in range(k):
        frame[f"id{j + 1}"] = tops[f"id{j + 1}"]
    return frame


def lens_table(lens: LogitLens) -> pd.DataFrame:
    """One row per layer (``layer`` 0-based, the residual stream after that block): ``top1..topK``,
    ``p1..pK``, then ``position``, ``p_next`` (the actual next token's probability, empty at the last
    position) and ``id1..idK``."""
    k = lens.top_probs.shape[1]
    frame = pd.DataFrame({"layer": np.arange(lens.n_layers)})
    tops = _top_columns(lens.top_tokens, lens.top_probs, lens.top_ids)
    for j in range(k):
        frame[f"top{j + 1}"] = tops[f"top{j + 1}"]
    for j in range(k):
        frame[f"p{j + 1}"] = tops[f"p{j + 1}"]
    frame["position"] = lens.position
    frame["p_next"] = lens.next_probs
    for j in range(k):
        frame[f"id{j + 1}"] = tops[f"id{j + 1}"]
    return frame


# ---------------------------------------------------------------- CSV
@dataclass(frozen=True)
class CsvScope:
    """Which layers and heads go into a CSV, and a sentence saying so."""
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    description: str

    def n_rows(self, block: Block) -> int:
        return len(self.layers) * len(self.heads) * block.pattern.shape[2] * block.pattern.shape[3]


def csv_scope(block: Block, *, layer: int | None = None, head: int | None = None,
              max_rows: int = MAX_CSV_ROWS) -> CsvScope:
    """The widest slice of the block that fits in ``max_rows``: all layers, one layer, or one head."""
    n_layers, n_heads, t_q, t_k = block.pattern.shape
    layer = 0 if layer is None or not 0 <= layer < n_layers else layer
    cells = t_q * t_k
    if n_layers * n_heads * cells <= max_rows:
        return CsvScope(tuple(range(n_layers)), tuple(range(n_heads)), "every layer and head")
    if n_heads * cells <= max_rows:
        return CsvScope((layer,), tuple(range(n_heads)), f"layer {layer}, every head (all layers would be too big)")
    head = 0 if head is None or not 0 <= head < n_heads else head
    return CsvScope((layer,), (head,), f"layer {layer}, head {head} (more would be too big)")


def attention_csv(block: Block, scope: CsvScope) -> bytes:
    """Long-form CSV: layer, head, query_pos, key_pos, query_token, key_token, weight."""
    sub = block.pattern[np.ix_(scope.layers, scope.heads)]              # (l, h, T_q, T_k)
    li, hi, qi, ki = (a.ravel() for a in np.indices(sub.shape))
    q_tokens = np.asarray(block.queries.tokens, dtype=object)
    k_tokens = np.asarray(block.keys.tokens, dtype=object)
    frame = pd.DataFrame({
        "layer": np.asarray(scope.layers)[li], "head": np.asarray(scope.heads)[hi], "query_pos": qi,
        "key_pos": ki, "query_token": q_tokens[qi], "key_token": k_tokens[ki], "weight": sub.ravel()})
    return frame.to_csv(index=False, float_format="%.6g").encode("utf-8")


# ---------------------------------------------------------------- file names
def safe_name(text: str, *, default: str = "attention") -> str:
    """A file name made from user text: letters, digits, '-' and '_' kept, the rest '_', at most 80 chars."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80] or default
