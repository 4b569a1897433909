"""Next-token predictions and the logit lens for decoder models (torch tier).

* :func:`predictions`: for every position of a text, the model's top-k next tokens with their
  probabilities, and the probability and 1-based rank of the token that actually came next.
* :func:`logit_lens` (nostalgebraist 2020): for one position, what the residual stream after each
  block would predict if it were the last: the model's final norm, then its unembedding.  The
  last block's row is the model's own output distribution; transformers' last ``hidden_states``
  entry already has the final norm applied, so that row is taken from the model's logits and
  the norm is applied to the other entries only.

Both tokenize exactly as :func:`viz.capture.capture` does (same truncation, same tokens), so a
prediction lines up with the attention of the same text.  Results are numpy dataclasses
(:class:`viz.result.Predictions`, :class:`viz.result.LogitLens`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch

from viz import families
from viz.capture import InputError, _encode, _labels, _token_seq, clean_text, run_slot
from viz.models import EMBEDDED_LLM, LoadedModel, ModelError, load_model
from viz.result import LogitLens, Predictions, TokenSeq

DEFAULT_TOP_K = 10
MAX_TOP_K = 100


def _loaded(model) -> LoadedModel:
    loaded = model if isinstance(model, LoadedModel) else load_model(model or EMBEDDED_LLM)
    if loaded.info.family != "decoder":
        raise InputError(f"Next-token predictions need a decoder model (GPT-2, Llama, SmolLM...); "
                         f"this one is an {loaded.info.family} model")
    if loaded.model.get_output_embeddings() is None:
        raise InputError("This model was loaded without a language-model head, so it has no next-token "
                         "probabilities")
    return loaded


def _check_k(top_k: int) -> int:
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise InputError(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
    return int(top_k)


def _tokenize(loaded: LoadedModel, text: str) -> tuple[dict, TokenSeq, int]:
    text = clean_text(text)
    enc, dropped = _encode(loaded, text, None)
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    seq = _token_seq(loaded.tokenizer, enc)
    if not (~seq.special).any():
        raise InputError("The text has no tokens this model can read (only invisible characters or "
                         "special tokens): type a sentence")
    return inputs, seq, dropped


def final_norm(model):
    """The module a decoder applies to the residual stream before its unembedding."""
    for path in families.FINAL_NORM_PATHS:
        module = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, torch.nn.Module):
            return module
    raise ModelError(f"The logit lens does not know where {type(model).__name__} keeps its final norm")


def _top(probs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    top = torch.topk(probs, min(k, probs.shape[-1]), dim=-1)
    return top.indices.numpy().astype(np.int64), top.values.numpy().astype(np.float32)


def _labels_of(loaded: LoadedModel, top_ids: np.ndarray) -> tuple[tuple, tuple]:
    """Raw tokens and readable labels of a (rows, K) id array, each distinct id converted once."""
    tok = loaded.tokenizer
    unique = sorted({int(i) for i in top_ids.ravel()})
    if not unique:
        return (), ()
    special_ids = set(tok.all_special_ids)
    with loaded.tokenizer_lock:
        raw = tok.convert_ids_to_tokens(unique)
        labels = _labels(tok, raw, np.array([i in special_ids for i in unique], dtype=bool))
    by_id = {i: (r, lab) for i, r, lab in zip(unique, raw, labels)}
    return (tuple(tuple(by_id[int(i)][0] for i in row) for row in top_ids),
            tuple(tuple(by_id[int(i)][1] for i in row) for row in top_ids))


def predictions(text: str, model: str | LoadedModel | None = None, *, top_k: int = DEFAULT_TOP_K,
                on_wait: Callable[[int], None] | None = None,
                on_start: Callable[[], None] | None = None) -> Predictions:
    """Per position: the top-k next tokens, and how probable (and how highly ranked) the actual next one was.

    ``model`` defaults to the embedded LLM.  One forward pass; probabilities are the softmax of
    the logits (temperature 1).  The (T, vocab) logits are made :data:`CHUNK_ROWS` positions at a time
    from the final hidden states (:func:`_logit_chunks`), never all at once: 400 MB of logits and as
    much again of probabilities for the embedded LLM at 2,048 tokens.
    """
    loaded = _loaded(model)
    k = _check_k(top_k)
    inputs, seq, dropped = _tokenize(loaded, text)
    n = len(seq)
    ids = torch.as_tensor(seq.token_ids)
    next_ids = np.full(n, -1, dtype=np.int64)
    p_next = np.full(n, np.nan, dtype=np.float32)
    rank_next = np.zeros(n, dtype=np.int64)
    next_ids[:-1] = seq.token_ids[1:]
    top_ids, top_probs = [], []
    with run_slot(on_wait=on_wait, on_start=on_start), torch.inference_mode():
        for start, logits in _logit_chunks(loaded, inputs):               # (rows, vocab) float32
            probs = torch.softmax(logits, dim=-1)
            chunk_ids, chunk_probs = _top(probs, k)
            top_ids.append(chunk_ids)
            top_probs.append(chunk_probs)
            stop = min(start + len(logits), n - 1)                         # rows with an actual next token
            if stop > start:
                rows = torch.arange(stop - start)
                actual = ids[start + 1: stop + 1]
                p_next[start:stop] = probs[rows, actual].numpy()
                # Rank on the logits, not the probabilities: softmax can round two different logits to one float.
                rank_next[start:stop] = ((logits[: stop - start] > logits[rows, actual].unsqueeze(1)).sum(dim=1)
                                         + 1).numpy()
    top_ids, top_probs = np.concatenate(top_ids), np.concatenate(top_probs)
    top_tokens, top_labels = _labels_of(loaded, top_ids)
    return Predictions(model=loaded.info, text=clean_text(text), tokens=seq, top_ids=top_ids, top_probs=top_probs,
                       top_tokens=top_tokens, top_labels=top_labels, next_ids=next_ids, p_next=p_next,
                       rank_next=rank_next, truncated=dropped)


CHUNK_ROWS = 256    # positions whose logits are held at once: 50 MB for a 49,152-token vocabulary


def _logit_chunks(loaded: LoadedModel, inputs: dict, *, rows: int | None = None):
    """Yield (first position, (rows, vocab) float32 logits) over the whole text, a few rows at a time.

    One forward pass asks for the final hidden states and only the last position's logits; the output
    embeddings are then applied to ``rows`` positions at a time.  Models whose logits are more than the
    output embeddings of the last hidden state (a final softcap, a logit scale) are caught by comparing
    the last row with the model's own, and then get their logits the plain way, all at once.
    Call it inside ``run_slot`` and ``torch.inference_mode``.
    """
    rows = rows or CHUNK_ROWS
    model = loaded.model
    unembed = model.get_output_embeddings()
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        out = model(**inputs, output_hidden_states=True, logits_to_keep=1)
        hidden = out.hidden_states[-1][0] if out.hidden_states else None   # (T, d_model), final norm applied
        own_last = out.logits[0, -1].float()                               # (vocab,)
        del out                                                            # the other layers' hidden states
        if hidden is not None:
            last = unembed(hidden[-1:]).float()[0]
            if torch.allclose(last, own_last, rtol=1e-4, atol=1e-4 * max(1.0, float(own_last.abs().max()))):
                for start in range(0, hidden.shape[0], rows):
                    yield start, unembed(hidden[start: start + rows]).float()
                return
    yield 0, model(**inputs).logits[0].float()                              # (T, vocab)


def logit_lens(text: str, model: str | LoadedModel | None = None, *, position: int | None = None,
               top_k: int = DEFAULT_TOP_K, on_wait: Callable[[int], None] | None = None,
               on_start: Callable[[], None] | None = None) -> LogitLens:
    """The top-k tokens the residual stream after each block would give at ``position`` (default: the last).

    Negative positions count from the end, as in Python.  ``model`` defaults to the embedded LLM.
    """
    loaded = _loaded(model)
    k = _check_k(top_k)
    inputs, seq, dropped = _tokenize(loaded, text)
    n = len(seq)
    pos = n - 1 if position is None else int(position)
    if pos < 0:
        pos += n
    if not 0 <= pos < n:
        raise InputError(f"position {position} is out of range: the text has {n} tokens (0..{n - 1})")
    norm = final_norm(loaded.model)
    unembed = loaded.model.get_output_embeddings()
    if unembed is None:
        raise ModelError(f"{type(loaded.model).__name__} has no unembedding (output embeddings) for the logit lens")
    # Only that position's logits from the model: all T rows would be (T, vocab), 400 MB at 2,048 tokens.
    keep = {"logits_to_keep": torch.tensor([pos])} \
        if "logits_to_keep" in inspect.signature(loaded.model.forward).parameters else {}
    with run_slot(on_wait=on_wait, on_start=on_start), torch.inference_mode():
        out = loaded.model(**inputs, output_hidden_states=True, **keep)
        hidden = out.hidden_states                                  # L + 1 entries of (1, T, d_model)
        n_layers = len(hidden) - 1
        # Entries 1..L-1: raw residual stream after blocks 0..L-2; the last entry is already normed,
        # and the model's own logits are its output distribution.
        stream = torch.stack([h[0, pos] for h in hidden[1:-1]]) if n_layers > 1 else None
        rows = [] if stream is None else [unembed(norm(stream)).float()]
        rows.append(out.logits[0, -1 if keep else pos].float().unsqueeze(0))
        logits = torch.cat(rows)                                    # (n_layers, vocab)
    probs = torch.softmax(logits, dim=-1)
    top_ids, top_probs = _top(probs, k)
    next_id = int(seq.token_ids[pos + 1]) if pos + 1 < n else -1
    next_probs = probs[:, next_id].numpy().astype(np.float32) if next_id >= 0 \
        else np.full(n_layers, np.nan, dtype=np.float32)
    top_tokens, top_labels = _labels_of(loaded, top_ids)
    return LogitLens(model=loaded.info, text=clean_text(text), tokens=seq, position=pos, top_ids=top_ids,
                     top_probs=top_probs, top_tokens=top_tokens, top_labels=top_labels, next_id=next_id,
                     next_probs=next_probs, truncated=dropped)
