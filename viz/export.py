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
* CSV (:func:`csv_scope`, :func:`attention_csv`): one row per (layer, head, query_pos, key_pos), optionally
  for a region of query rows x key columns only.
* Long results (issue 16) hold a :class:`~viz.result.LazyPattern` that recomputes each layer exactly and
  refuses to become one (n_layers, n_heads, T, T) array: :func:`save_npz` writes such an array into the
  file one layer at a time (the same ``.npy`` member ``np.load`` reads back whole), and the app's download
  (:func:`npz_scope`) holds the shown layer of such a result, saying so, with ``layers`` naming it.
* :func:`safe_name`: the one helper that turns user text into a file name.

Pure numpy/pandas: no Streamlit, no torch.
"""
from __future__ import annotations

import io
import zipfile
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
    PatternTooLarge,
    Predictions,
    is_lazy,
)

MAX_CSV_ROWS = 300_000      # one 512-token head (262k cells) still fits; ~12 MB of CSV
CSV_CHUNK_ROWS = 262_144    # rows turned into text at a time: a 2,048-token head's 4M rows never sit in one frame
CSV_ROW_BYTES = 40          # about one CSV row with short tokens, for the size a button states


def _float32(pattern):
    """A pattern as float32, a long result's LazyPattern left as it is (written layer by layer)."""
    return pattern if is_lazy(pattern) else np.asarray(pattern).astype(np.float32)


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
            "encoder_attentions": _float32(result.encoder_attentions),
            "decoder_attentions": _float32(result.decoder_attentions),
            "cross_attentions": _float32(result.cross_attentions),
            "truncated": truncated,
            "kv_head": kv_head,
        }
        if word_level:
            for kind in (ENCODER, DECODER, CROSS):
                block = transform_block(result.block(kind), word_level=True)
                arrays[f"{kind}_attentions"] = _float32(block.pattern)
                if kind != CROSS:
                    arrays[f"{kind}_tokens"] = np.array(block.queries.labels, dtype=str)
        if rollout:
            arrays["rollout"] = attention_rollout(arrays["encoder_attentions"])
            arrays["decoder_rollout"] = attention_rollout(arrays["decoder_attentions"])
        return arrays
    arrays = {
        "tokens": np.array(result.tokens.tokens, dtype=str),
        "attentions": _float32(result.attentions),
        "truncated": truncated,
        "kv_head": kv_head,
    }
    if word_level:
        block = transform_block(result.block(), word_level=True)
        arrays["tokens"] = np.array(block.queries.labels, dtype=str)
        arrays["attentions"] = _float32(block.pattern)
    if rollout:
        arrays["rollout"] = attention_rollout(arrays["attentions"])
    return arrays


def save_npz(file, arrays: dict) -> None:
    """``np.savez(file, **arrays)``, except that a LazyPattern is written one layer at a time.

    Each array is the zip member ``<name>.npy`` (uncompressed, zip64 like np.savez), so ``np.load``
    reads the same names, shapes and float32 values; memory stays at one layer (151 MB for the
    embedded LLM at 2,048 tokens) whatever the file's size (4.5 GB there).
    """
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, value in arrays.items():
            with archive.open(f"{name}.npy", mode="w", force_zip64=True) as member:
                if not is_lazy(value):
                    np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)
                    continue
                header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                          "shape": tuple(value.shape)}
                np.lib.format.write_array_header_1_0(member, header)
                for layer in value.layers():                       # (n_heads, T_q, T_k), exact
                    member.write(np.ascontiguousarray(layer, dtype="<f4").data)


@dataclass(frozen=True)
class NpzScope:
    """What an NPZ download holds, and a sentence saying so."""
    layer: int | None        # None: every layer (the CLI's layout); else only that layer of the long blocks
    nbytes: int              # about the file's size
    description: str


def _attention_keys(result: AttentionResult) -> dict[str, np.ndarray]:
    if result.family == "encoder-decoder":
        return {f"{kind}_attentions": result.block(kind).pattern for kind in (ENCODER, DECODER, CROSS)}
    return {"attentions": result.attentions}


def npz_scope(result: AttentionResult, *, layer: int | None = None) -> NpzScope:
    """Every layer, unless the result is long (a LazyPattern): then ``layer`` (default 0), every head."""
    patterns = _attention_keys(result)
    full = sum(int(np.prod(p.shape)) * 4 for p in patterns.values())
    if not any(is_lazy(p) for p in patterns.values()):
        return NpzScope(None, full, f"every layer and head, {full / 1e6:,.1f} MB")
    n_layers = max(p.shape[0] for p in patterns.values())
    layer = 0 if layer is None or not 0 <= int(layer) < n_layers else int(layer)
    part = sum(int(np.prod(p.shape[1:])) * 4 if is_lazy(p) else int(np.prod(p.shape)) * 4
               for p in patterns.values())
    _, n_heads, t_q, t_k = next(p.shape for p in patterns.values() if is_lazy(p))
    return NpzScope(layer, part, f"layer {layer} only, every head ({n_heads} × {t_q:,} × {t_k:,} float32, "
                                 f"{part / 1e6:,.0f} MB, exact); every layer would be {full / 1e9:,.1f} GB: "
                                 f"`python -m viz capture` writes them all, layer by layer")


def npz_bytes(result: AttentionResult, scope: NpzScope | None = None) -> bytes:
    """The CLI's capture npz (:func:`result_arrays`) as bytes, for a download button.

    With a one-layer ``scope`` (:func:`npz_scope` of a long result) each long block's array is that
    layer only, shaped (1, n_heads, T_q, T_k), and ``layers`` (int64, (1,)) names it. A long result
    without a scope is refused (its every layer would be gigabytes in memory): write it with
    :func:`save_npz` to a file instead."""
    if scope is None and npz_scope(result).layer is not None:
        raise PatternTooLarge("This result is long: pass npz_scope(result, layer=...) for one layer, or write "
                              "every layer to a file with save_npz(path, result_arrays(result))")
    arrays = result_arrays(result)
    if scope is not None and scope.layer is not None:
        for name, value in arrays.items():
            if is_lazy(value):
                arrays[name] = value[scope.layer][None]   # the cached layer itself, not a copy
        arrays["layers"] = np.array([scope.layer], dtype=np.int64)
    buffer = io.BytesIO()
    save_npz(buffer, arrays)
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
        "attentions": _float32(result.attentions),
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
    """Which layers, heads, query rows and key columns go into a CSV, and a sentence saying so."""
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    description: str
    rows: tuple[int, int] | None = None    # [start, stop) of query_pos; None: every row
    keys: tuple[int, int] | None = None    # [start, stop) of key_pos; None: every key

    def _span(self, span, n: int) -> range:
        return range(n) if span is None else range(*span)

    def n_rows(self, block: Block) -> int:
        return (len(self.layers) * len(self.heads) * len(self._span(self.rows, block.pattern.shape[2]))
                * len(self._span(self.keys, block.pattern.shape[3])))

    def nbytes(self, block: Block) -> int:
        """About the CSV's size."""
        return self.n_rows(block) * CSV_ROW_BYTES


def csv_scope(block: Block, *, layer: int | None = None, head: int | None = None,
              max_rows: int = MAX_CSV_ROWS, rows: tuple[int, int] | None = None,
              keys: tuple[int, int] | None = None) -> CsvScope:
    """The widest slice of the block that fits in ``max_rows``: all layers, one layer, or one head.

    ``rows`` / ``keys`` ([start, stop) positions, e.g. the heatmap's zoomed region) limit the cells;
    a region smaller than the whole matrix always means one layer and head: the ones shown.
    """
    n_layers, n_heads, t_q, t_k = block.pattern.shape
    layer = 0 if layer is None or not 0 <= layer < n_layers else layer
    rows = None if rows is None or tuple(rows) == (0, t_q) else (max(0, rows[0]), min(t_q, rows[1]))
    keys = None if keys is None or tuple(keys) == (0, t_k) else (max(0, keys[0]), min(t_k, keys[1]))
    if rows is not None or keys is not None:
        r, k = rows or (0, t_q), keys or (0, t_k)
        where = f"query rows {r[0]}–{r[1] - 1} × keys {k[0]}–{k[1] - 1} (the heatmap's region)"
        if head is None:
            return CsvScope((layer,), tuple(range(n_heads)), f"layer {layer}, every head, {where}", rows, keys)
        return CsvScope((layer,), (head,), f"layer {layer}, head {head}, {where}", rows, keys)
    cells = t_q * t_k
    if n_layers * n_heads * cells <= max_rows:
        return CsvScope(tuple(range(n_layers)), tuple(range(n_heads)), "every layer and head")
    if n_heads * cells <= max_rows:
        return CsvScope((layer,), tuple(range(n_heads)), f"layer {layer}, every head (all layers would be too big)")
    head = 0 if head is None or not 0 <= head < n_heads else head
    return CsvScope((layer,), (head,), f"layer {layer}, head {head} (more would be too big)")


def attention_csv(block: Block, scope: CsvScope) -> bytes:
    """Long-form CSV: layer, head, query_pos, key_pos, query_token, key_token, weight.

    Written a few hundred thousand rows at a time, so a long result's 4M-row head never becomes one
    DataFrame; each layer is read once (a long result recomputes it exactly)."""
    n_q, n_k = block.pattern.shape[2:]
    rows, keys = scope._span(scope.rows, n_q), scope._span(scope.keys, n_k)
    q_tokens = np.asarray(block.queries.tokens, dtype=object)
    k_tokens = np.asarray(block.keys.tokens, dtype=object)
    key_pos = np.arange(keys.start, keys.stop)
    per_chunk = max(1, CSV_CHUNK_ROWS // max(1, len(keys)))
    out = io.StringIO()
    header = True
    for layer in scope.layers:
        heads = block.pattern[layer][list(scope.heads)]                 # (h, T_q, T_k)
        for h, head in enumerate(scope.heads):
            for start in range(rows.start, rows.stop, per_chunk):
                query_pos = np.arange(start, min(rows.stop, start + per_chunk))
                sub = heads[h, query_pos[0]:query_pos[-1] + 1, keys.start:keys.stop]   # (r, k)
                qi = np.repeat(query_pos, len(key_pos))
                ki = np.tile(key_pos, len(query_pos))
                frame = pd.DataFrame({
                    "layer": np.full(qi.shape, layer), "head": np.full(qi.shape, head), "query_pos": qi,
                    "key_pos": ki, "query_token": q_tokens[qi], "key_token": k_tokens[ki], "weight": sub.ravel()})
                frame.to_csv(out, index=False, header=header, float_format="%.6g")
                header = False
    return out.getvalue().encode("utf-8")


# ---------------------------------------------------------------- file names
def safe_name(text: str, *, default: str = "attention") -> str:
    """A file name made from user text: letters, digits, '-' and '_' kept, the rest '_', at most 80 chars."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80] or default
