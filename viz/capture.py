"""Capture: text in, one frozen :class:`AttentionResult` out.

Owns tokenization (pairs, targets, truncation at the model's limit, readable
labels, word and segment ids), the forward pass with attention weights, greedy
decoding when an encoder-decoder model is given no target, and the optional
recording of per-layer internals.  This and :mod:`viz.models` are the only
modules that touch torch.
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable

import numpy as np
import torch

from viz import attention_fn, families
from viz.models import LoadedModel, ModelError, load_model
from viz.result import AttentionResult, LayerInternals, PatternSummary, TokenSeq, qk_pattern
from viz.settings import SETTINGS

THUMB = 64                   # model-view thumbnail size streamed for long inputs (viz.views.model_view.THUMB)
MAX_NEW_TOKENS = 40          # greedy decoding bound when no target is given
MAX_INPUT_CHARS = SETTINGS.max_chars

# Several sessions pressing Run at once would each use every core and thrash;
# at most VIZ_CONCURRENT_RUNS forward passes run together, the rest wait.
_RUNS = threading.BoundedSemaphore(SETTINGS.concurrent_runs)
_QUEUE_LOCK = threading.Lock()
_QUEUE = {"running": 0, "waiting": 0}   # for the "N students ahead" message only
if SETTINGS.torch_threads:
    torch.set_num_threads(SETTINGS.torch_threads)


class BusyError(ModelError):
    """No free slot for a forward pass within VIZ_RUN_WAIT_S seconds."""


@contextlib.contextmanager
def run_slot(*, on_wait: Callable[[int], None] | None = None, on_start: Callable[[], None] | None = None,
             timeout: float | None = None):
    """Hold one of the VIZ_CONCURRENT_RUNS forward-pass slots.

    When none is free, ``on_wait(n_ahead)`` is called once before blocking, so a
    page can say "waiting for a free slot" instead of a silent spinner; ``on_start()``
    is called once the slot is held, when the model is about to run.
    """
    timeout = SETTINGS.run_wait_s if timeout is None else timeout
    if not _RUNS.acquire(blocking=False):
        with _QUEUE_LOCK:
            ahead = _QUEUE["running"] + _QUEUE["waiting"]
            _QUEUE["waiting"] += 1
        try:
            if on_wait is not None:
                on_wait(max(1, ahead))
            got = _RUNS.acquire(timeout=timeout)
        finally:
            with _QUEUE_LOCK:
                _QUEUE["waiting"] -= 1
        if not got:
            raise BusyError(f"The server is busy ({ahead} runs ahead of yours); press Run again in a minute")
    with _QUEUE_LOCK:
        _QUEUE["running"] += 1
    try:
        if on_start is not None:
            on_start()
        yield
    finally:
        with _QUEUE_LOCK:
            _QUEUE["running"] -= 1
        _RUNS.release()


class InputError(ValueError):
    """The text cannot be captured; the message is one line a person understands."""


def clean_text(text: str | None, *, what: str = "text") -> str:
    """Drop characters no tokenizer should see (NUL, lone surrogates) and refuse empty input."""
    if text is None:
        raise InputError(f"The {what} is empty")
    if not isinstance(text, str):
        text = str(text)
    # Lone surrogates cannot be encoded by the Rust tokenizers; NUL and other C0
    # controls (except tab/newline) only confuse them.
    text = text.encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 32)
    if not text.strip():
        raise InputError(f"The {what} is empty: type a sentence")
    if len(text) > MAX_INPUT_CHARS:
        text = text[:MAX_INPUT_CHARS]
    return text


def _labels(tokenizer, tokens: list[str], special: np.ndarray) -> tuple[str, ...]:
    """Readable token labels: 'Ġthe' -> 'the', '▁the' -> 'the', whitespace made visible."""
    out = []
    for tok, is_special in zip(tokens, special):
        if is_special:
            out.append(tok)
            continue
        try:
            s = tokenizer.convert_tokens_to_string([tok])
        except Exception:  # noqa: BLE001 - some tokenizers cannot decode a lone piece
            s = tok
        s = s.strip(" ")
        if tok.startswith(families.CONTINUATION_MARKER):
            s = tok  # keep BERT's continuation marker: it tells the reader the word was split
        if not s.strip():
            s = s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") or tok
        out.append(s)
    return tuple(out)


def _word_ids(encoding, tokens: list[str], special: np.ndarray) -> np.ndarray:
    """Word index per token, unique across a sentence pair; -1 for special tokens."""
    n = len(tokens)
    try:
        raw = encoding.word_ids(0)
        seq = encoding.sequence_ids(0)
    except (ValueError, AttributeError):  # slow tokenizer: guess from the subword markers
        raw, seq, word = [], [], -1
        for tok, sp in zip(tokens, special):
            if sp:
                raw.append(None)
            else:
                if word < 0 or not tok.startswith(families.CONTINUATION_MARKER) \
                        or tok.startswith(families.SPACE_MARKERS):
                    word += 1
                raw.append(word)
            seq.append(0)
    out = np.full(n, -1, dtype=np.int64)
    offset, last_seq, top = 0, 0, -1
    for i, (w, s) in enumerate(zip(raw, seq)):
        if w is None or special[i]:
            continue
        if s is not None and s != last_seq:
            offset, last_seq = top + 1, s
        out[i] = w + offset
        top = max(top, out[i])
    return out


def _segments(encoding, n: int) -> np.ndarray:
    """0 for the first text (and its [CLS]/[SEP]), 1 for the pair's tokens and final [SEP]."""
    seg = np.zeros(n, dtype=np.int64)
    if "token_type_ids" in encoding:
        tt = np.asarray(encoding["token_type_ids"][0])
        if tt.any():
            return tt.astype(np.int64)
    try:
        seq = encoding.sequence_ids(0)
    except (ValueError, AttributeError):
        return seg
    current = 0
    for i, s in enumerate(seq):
        if s is not None:
            current = s
        seg[i] = current
    return seg


def _token_seq(tokenizer, encoding) -> TokenSeq:
    ids = [int(i) for i in encoding["input_ids"][0]]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special_ids = set(tokenizer.all_special_ids)
    if "special_tokens_mask" in encoding:
        special = np.asarray(encoding["special_tokens_mask"][0], dtype=bool)
    else:
        special = np.array([i in special_ids for i in ids], dtype=bool)
    special |= np.array([i in special_ids for i in ids], dtype=bool)
    return TokenSeq(tokens=tuple(tokens), labels=_labels(tokenizer, tokens, special),
                    token_ids=np.asarray(ids, dtype=np.int64), special=special,
                    word_ids=_word_ids(encoding, tokens, special), segment_ids=_segments(encoding, len(ids)))


def _target_seq(tokenizer, ids: list[int]) -> TokenSeq:
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special_ids = set(tokenizer.all_special_ids)
    special = np.array([i in special_ids for i in ids], dtype=bool)
    word, word_ids = -1, []
    for tok, sp in zip(tokens, special):
        if sp:
            word_ids.append(-1)
            continue
        if word < 0 or tok.startswith(families.SPACE_MARKERS) or not (
                tok.startswith(families.CONTINUATION_MARKER) or tok.endswith(families.BPE_CONTINUATION_SUFFIX)):
            word += 1
        word_ids.append(word)
    return TokenSeq(tokens=tuple(tokens), labels=_labels(tokenizer, tokens, special),
                    token_ids=np.asarray(ids, dtype=np.int64), special=special,
                    word_ids=np.asarray(word_ids, dtype=np.int64), segment_ids=np.zeros(len(ids), dtype=np.int64))


def _encode(loaded: LoadedModel, text: str, pair: str | None, *, limit: int | None = None) -> tuple[object, int]:
    """Tokenize with truncation at the model's limit (or ``limit``); return (encoding, tokens dropped)."""
    tok, limit = loaded.tokenizer, limit or loaded.info.max_length
    with loaded.tokenizer_lock:
        full = tok(text, pair, truncation=False, add_special_tokens=True)["input_ids"]
        dropped = max(0, len(full) - limit)
        enc = tok(text, pair, truncation="longest_first" if dropped else False, max_length=limit,
                  return_tensors="pt", return_special_tokens_mask=True,
                  return_token_type_ids=pair is not None and loaded.info.family == "encoder")
    return enc, dropped


def _stack(attentions, what: str, n_expected: int) -> np.ndarray:
    """Tuple of (1, H, Tq, Tk) tensors -> float32 (n_layers, H, Tq, Tk), asserting they came back."""
    if not attentions or any(a is None for a in attentions):
        raise ModelError(f"The model returned no {what} attention weights (its attention implementation "
                         f"does not expose them)")
    arr = torch.stack([a[0] for a in attentions]).float().cpu().numpy()
    if n_expected and arr.shape[0] != n_expected:
        raise ModelError(f"Expected {n_expected} layers of {what} attention, got {arr.shape[0]}")
    return arr


def _expected_sites(info) -> set[tuple[str, int]]:
    """Every (kind, layer) a full recording of this model holds."""
    if info.family == "encoder-decoder":
        return {("encoder", i) for i in range(info.n_layers)} | {
            (kind, i) for kind in ("decoder", "cross") for i in range(info.n_decoder_layers)}
    kind = "encoder" if info.family == "encoder" else "decoder"
    return {(kind, i) for i in range(info.n_layers)}


def _internals(recorder, loaded: LoadedModel) -> dict:
    """The recorded layers as LayerInternals, or InternalsUnavailable saying why some are not there.

    Never a silently empty or partial answer: a layer whose recorded scores do not give back the
    model's weights, or a wanted layer the forward pass did not record, is a clear error.
    """
    what = f"this {loaded.info.model_type} model"
    if recorder.problems:
        (kind, layer), problem = sorted(recorder.problems.items())[0]
        raise InternalsUnavailable(f"The q, k, v and scores of {what} cannot be shown faithfully ({kind} layer "
                                   f"{layer}: {problem}); only its attention weights can.")
    expected = set(recorder.wanted) if recorder.wanted is not None else _expected_sites(loaded.info)
    missing = sorted(expected - set(recorder.records))
    if missing and not recorder.records and not set(missing) - _expected_sites(loaded.info):
        # Nothing at all came through: the family computes attention in code we do not see.
        loaded.internals_reason = (f"{loaded.info.model_type} models compute attention in their own code, "
                                   f"so their q, k, v and scores cannot be recorded; only the attention "
                                   f"weights can be shown")
        loaded.recording_supported = False
        raise InternalsUnavailable(loaded.internals_reason)
    if missing:
        kind, layer = missing[0]
        raise InternalsUnavailable(f"No {kind} layer {layer} was recorded for {what}.")
    out = {}
    for (kind, layer), rec in recorder.records.items():
        out[(kind, layer)] = LayerInternals(kind=kind, layer=layer, hidden=recorder.hidden.get((kind, layer)),
                                            **rec)
    return out


def capture(text: str, *, pair: str | None = None, target: str | None = None,
            model: str | LoadedModel | None = None,
            internals: bool | Iterable[tuple[str, int]] = False,
            max_new_tokens: int = MAX_NEW_TOKENS,
            on_wait: Callable[[int], None] | None = None,
            on_start: Callable[[], None] | None = None,
            forward: Callable | None = None) -> AttentionResult:
    """Run ``text`` through ``model`` (default: the embedded model) and capture every layer's attention.

    ``pair``: a second sentence (encoders; BERT-style segment ids).  ``target``:
    the decoder's text for encoder-decoder models (greedy output when omitted).
    ``internals``: True, or the (kind, layer) sites whose q/k/v/scores to record.
    ``on_wait``: called with the number of runs ahead when the forward pass must wait for a slot;
    ``on_start``: called when the forward pass gets its slot.
    ``forward(loaded, model_inputs, on_wait=, on_start=)``: runs the plain forward pass in place of the
    model (it holds a slot itself) and returns what the model would (``.attentions``); :mod:`viz.batching`
    passes one that shares the pass with other waiting texts.  Unused for internals, one-layer runs and
    encoder-decoder models.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    info = loaded.info
    text = clean_text(text)
    pair = clean_text(pair, what="second sentence") if pair not in (None, "") and pair.strip() else None
    target = clean_text(target, what="target") if target not in (None, "") and target.strip() else None
    if pair is not None and info.family != "encoder":
        pair = None  # pairs are an encoder (BERT-style) notion; decoders just read one text
    wanted = None if internals is True else (set(internals) if internals else None)
    if internals and not loaded.recording_supported:
        raise InternalsUnavailable(loaded.internals_reason or UNRECORDABLE)
    do_record = bool(internals)

    enc, dropped = _encode(loaded, text, pair)
    model_inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if "token_type_ids" in model_inputs and families.family(info.model_type).drops_token_type_ids:
        model_inputs.pop("token_type_ids")
    source = _token_seq(loaded.tokenizer, enc)
    unk = getattr(loaded.tokenizer, "unk_token_id", None)
    if not ((~source.special) | (source.token_ids == unk)).any():
        # Only zero-width/format characters (or special-token text): a decoder would get an
        # empty input and fail deep in torch; an encoder would show [CLS] looking at [SEP].
        raise InputError("The text has no tokens this model can read (only invisible characters or "
                         "special tokens): type a sentence")

    notice = ""
    if info.family == "decoder" and not do_record and \
            pattern_bytes(info, len(source)) > SETTINGS.full_pattern_mb * _MB:
        if compact_supported(loaded):
            result = _capture_compact(loaded, model_inputs, source, text, dropped, on_wait, on_start)
            if result is not None:
                return result
        why = loaded.internals_reason or getattr(loaded, "compact_problem", "") or UNRECORDABLE
        longest = longest_full(info)
        if len(source) > longest:
            enc, dropped = _encode(loaded, text, pair, limit=longest)
            model_inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            source = _token_seq(loaded.tokenizer, enc)
            notice = (f"{why.rstrip('.')}. So this model's attention is kept whole, which fits "
                      f"{longest:,} tokens here: the text was cut to that ({dropped:,} tokens dropped).")

    shared = forward if forward is not None and not do_record and info.family != "encoder-decoder" \
        and not attention_fn.stopping() else None
    with (_null() if shared else run_slot(on_wait=on_wait, on_start=on_start)), torch.inference_mode():
        if info.family != "encoder-decoder":
            # One layer for the math page (stop_after): the recorder gets that layer's weights from our
            # attention function; asking the model for its weights too would stack every earlier
            # layer's (T, T) maps, gigabytes at 2,048 tokens.
            one_layer = attention_fn.stopping() and compact_supported(loaded)
            with attention_fn.recording(loaded.sites, wanted) if do_record else _null() as recorder:
                out = shared(loaded, model_inputs, on_wait=on_wait, on_start=on_start) if shared else \
                    loaded.model(**model_inputs, output_attentions=not one_layer, **_last_logits_only(loaded))
            pattern = _stack(getattr(out, "attentions", None), "self", info.n_layers)
            key = "encoder_attentions" if info.family == "encoder" else "decoder_attentions"
            seq_key = "encoder" if info.family == "encoder" else "decoder"
            return AttentionResult(model=info, text=text, pair=pair, truncated=dropped, notice=notice,
                                   **{key: pattern, seq_key: source},
                                   internals=_internals(recorder, loaded) if recorder else {})
        dec_ids, generated, dec_dropped = _decoder_ids(loaded, model_inputs, target, max_new_tokens)
        with attention_fn.recording(loaded.sites, wanted) if do_record else _null() as recorder:
            out = loaded.model(**model_inputs, decoder_input_ids=torch.tensor([dec_ids]), output_attentions=True)
    return AttentionResult(
        model=info, text=text, target=target if target else None, truncated=dropped + dec_dropped,
        generated=generated, encoder=source, decoder=_target_seq(loaded.tokenizer, dec_ids),
        encoder_attentions=_stack(getattr(out, "encoder_attentions", None), "encoder", info.n_layers),
        decoder_attentions=_stack(getattr(out, "decoder_attentions", None), "decoder", info.n_decoder_layers),
        cross_attentions=_stack(getattr(out, "cross_attentions", None), "cross", info.n_decoder_layers),
        internals=_internals(recorder, loaded) if recorder else {})


_MB = 1024 * 1024


def pattern_bytes(info, n_tokens: int) -> int:
    """Bytes of a decoder's full (n_layers, n_heads, T, T) float32 attention."""
    return info.n_layers * info.n_heads * n_tokens * n_tokens * 4


def longest_full(info) -> int:
    """The most tokens whose full attention fits VIZ_FULL_FALLBACK_MB (models without a compact capture)."""
    return max(2, int((SETTINGS.full_fallback_mb * _MB / (4 * info.n_layers * info.n_heads)) ** 0.5))


def compact_supported(loaded: LoadedModel) -> bool:
    """Long inputs can keep q and k instead of the pattern: a decoder whose attention goes through
    our registered function (own-code families return weights only with output_attentions)."""
    return (loaded.info.family == "decoder" and loaded.recording_supported
            and families.family(loaded.info.model_type).internals == families.REGISTRY
            and not getattr(loaded, "compact_problem", ""))


class _StreamedSummary:
    """Whole-block figures of a long causal result, added one layer at a time from the model's weights.

    The metrics follow :func:`viz.stats.metric_values` (same definitions); the thumbnails follow
    :func:`viz.views.model_view.downsample` (block means over near-equal bins).  To stay a small
    fraction of the forward pass, one batched product ``p @ [k | special | punct | key_pos]`` gives
    the shares, the mean distance and (with the row maximum) the entropy: for softmax weights
    ``log p_ij = s_ij - lse_i``, so ``H_i = lse_i - scaling * q_i . (p k)_i`` with
    ``lse_i = s_ij* - log p_ij*`` at the row's largest weight; no logarithm of every weight.
    """

    def __init__(self, n_layers: int, n_heads: int, keys: TokenSeq, kv_head, *, thumb: int = THUMB):
        from viz.stats import METRICS, punctuation_flags
        n = len(keys)
        key_pos = torch.arange(n, dtype=torch.float32)
        self.extras = torch.stack([torch.as_tensor(np.asarray(keys.special, dtype=np.float32)),
                                   torch.as_tensor(punctuation_flags(keys).astype(np.float32)), key_pos], -1)
        self.query_pos = key_pos
        self.kv_head = torch.as_tensor(np.asarray(kv_head))
        self.metrics = {name: np.full((n_layers, n_heads), np.nan) for name in METRICS}
        k = min(n, thumb)
        self.thumb = thumb
        starts = np.floor(np.arange(k) * n / k).astype(np.int64)
        self.bin_of = torch.as_tensor(np.searchsorted(starts, np.arange(n), side="right") - 1)
        sizes = torch.as_tensor(np.diff(np.append(starts, n)), dtype=torch.float32)
        self.counts = sizes[:, None] * sizes[None, :]
        self.thumbs = np.zeros((n_layers, n_heads, k, k), np.float32)
        self.layer_sum = torch.zeros((n, n), dtype=torch.float32)
        self.n_layers, self.n_heads = n_layers, n_heads

    def add(self, site, p: torch.Tensor, query: torch.Tensor, key: torch.Tensor, scaling: float,
            softcap: float | None) -> None:
        """``p``: (n_heads, T_q, T_k) float32 weights; ``query`` (n_heads, T_q, d), ``key`` (n_kv, T_k, d)."""
        layer, m = site[1], self.metrics
        n_heads, t_q, t_k = p.shape
        d = query.shape[-1]
        keys = key.float()[self.kv_head]                                          # (H, T_k, d)
        # (H, T_q, d + 3); the right side padded to a multiple of 16 columns, which the matrix product
        # runs ~15% faster on than d + 3 (measured at 2,048 tokens); the padding columns are never read.
        right = [keys, self.extras.expand(n_heads, -1, -1)]
        if (d + 3) % 16:
            right.append(keys.new_zeros(n_heads, t_k, 16 - (d + 3) % 16))
        right = torch.cat(right, -1)
        product = torch.empty(n_heads, t_q, right.shape[-1])
        top, arg = torch.empty(n_heads, t_q), torch.empty(n_heads, t_q, dtype=torch.long)   # (H, T_q)
        # Causal weights are 0 above the diagonal: a block of query rows reads only the keys up to its
        # last row, which skips ~44% of the product, the row maxima and the layer sum (8 blocks).
        for a, b in _row_blocks(t_q, t_k):
            block = p[:, a:b, :b] if t_q == t_k else p[:, a:b]
            torch.matmul(block, right[:, :block.shape[-1]], out=product[:, a:b])
            top[:, a:b], arg[:, a:b] = block.max(-1)
            self.layer_sum[a:b, :block.shape[-1]] += block.sum(0)

        def mean(x):
            return x.mean(-1).double().numpy()
        m["confidence"][layer] = mean(top)
        m["special_share"][layer] = mean(product[..., d])
        m["punct_share"][layer] = mean(product[..., d + 1])
        # causal rows sum to 1 over key_pos <= query_pos: sum_j p_ij |i - j| = i - sum_j p_ij j
        m["mean_distance"][layer] = mean(self.query_pos[:t_q] - product[..., d + 2])
        if softcap:
            m["entropy"][layer] = mean(torch.special.entr(p).sum(-1))
        else:
            q = query.float()
            best_key = keys.gather(1, arg[..., None].expand(-1, -1, d))           # (H, T_q, d)
            lse = scaling * (q * best_key).sum(-1) - torch.log(top)
            m["entropy"][layer] = mean(lse - scaling * (q * product[..., :d]).sum(-1))
        m["self_share"][layer] = mean(torch.diagonal(p, 0, -2, -1))
        if t_q > 1:
            m["prev_share"][layer] = mean(torch.diagonal(p, -1, -2, -1))
            m["next_share"][layer] = mean(torch.diagonal(p, 1, -2, -1))
            m["first_token_share"][layer] = mean(p[:, 1:, 0])
        k = len(self.counts)
        if t_q == len(self.bin_of) and t_q % k == 0:     # equal bins: a reshape, twice as fast as index_add
            rows = p.reshape(n_heads, k, t_q // k, t_k).sum(2)
        else:
            rows = torch.zeros((n_heads, k, t_k)).index_add_(1, self.bin_of, p)
        self.thumbs[layer] = (torch.zeros((n_heads, k, k)).index_add_(2, self.bin_of, rows) / self.counts).numpy()

    def done(self) -> PatternSummary:
        return PatternSummary(metrics=self.metrics, thumbs=self.thumbs, thumb=self.thumb,
                              layer_mean=(self.layer_sum / (self.n_layers * self.n_heads)).numpy())


def _row_blocks(t_q: int, t_k: int, n: int = 8) -> list[tuple[int, int]]:
    """[a, b) spans of query rows for :class:`_StreamedSummary` (one span unless the block is square)."""
    if t_q != t_k or t_q < 2 * n:
        return [(0, t_q)]
    step = -(-t_q // n)
    return [(a, min(t_q, a + step)) for a in range(0, t_q, step)]


def _capture_compact(loaded: LoadedModel, model_inputs: dict, source: TokenSeq, text: str, dropped: int,
                     on_wait, on_start) -> AttentionResult | None:
    """A long decoder input: per layer q and k (the pattern recomputed when shown) plus a streamed
    summary, never the (n_layers, n_heads, T, T) stack.  None when the model's scores cannot be
    recomputed from q and k (the reason is kept on ``loaded.compact_problem``)."""
    with run_slot(on_wait=on_wait, on_start=on_start), torch.inference_mode():
        pattern = compact_pass(loaded, model_inputs, source)
    if pattern is None:
        return None
    return AttentionResult(model=loaded.info, text=text, truncated=dropped, decoder=source,
                           decoder_attentions=pattern, notice=long_notice(len(source)))


def long_notice(n_tokens: int) -> str:
    """What a person is told about a result that keeps queries and keys instead of the pattern."""
    return (f"A long input ({n_tokens:,} tokens): each layer's attention is recomputed exactly from the "
            f"model's queries and keys when it is shown.")


def keeps_qk(loaded: LoadedModel, n_tokens: int) -> bool:
    """True when a decoder input of ``n_tokens`` is captured the long way (queries and keys, a LazyPattern)
    rather than as one (n_layers, n_heads, T, T) array: above VIZ_FULL_PATTERN_MB, on a model that allows it."""
    return (loaded.info.family == "decoder" and pattern_bytes(loaded.info, n_tokens) > SETTINGS.full_pattern_mb * _MB
            and compact_supported(loaded))


def compact_pass(loaded: LoadedModel, model_inputs: dict, source: TokenSeq):
    """The forward pass of a long decoder input, recording per layer q and k and a streamed summary:
    a LazyPattern, or None when the model's scores cannot be recomputed from q and k (the reason is kept
    on ``loaded.compact_problem``).  Call it inside a held ``run_slot`` and ``torch.inference_mode``
    (:func:`viz.generation` runs it in the slot its decoding already holds)."""
    info = loaded.info
    summary = _StreamedSummary(info.n_layers, info.n_heads, source, info.kv_head)
    with attention_fn.compact_recording(loaded.sites, causal=True, kv_head=info.kv_head,
                                        summarize=summary.add) as recorder:
        loaded.model(**model_inputs, **_last_logits_only(loaded))
    expected = {("decoder", i) for i in range(info.n_layers)}
    if recorder.problems or set(recorder.records) != expected:
        if recorder.problems:
            (kind, layer), problem = sorted(recorder.problems.items())[0]
            loaded.compact_problem = f"Its scores cannot be recomputed from q and k ({kind} layer {layer}: {problem})"
        else:
            loaded.compact_problem = "Not every layer's q and k could be recorded"
        return None
    layers = tuple(recorder.records[("decoder", i)] for i in range(info.n_layers))
    pattern = qk_pattern(layers, info.kv_head, causal=True, summary=summary.done())
    pattern.max_error = recorder.max_error
    return pattern


def _last_logits_only(loaded: LoadedModel) -> dict:
    """Decoders load with their LM head; a capture needs none of its (T, vocab) logits, so ask for one row."""
    import inspect
    if loaded.info.family == "decoder" and "logits_to_keep" in inspect.signature(loaded.model.forward).parameters:
        return {"logits_to_keep": 1}
    return {}


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _decoder_ids(loaded: LoadedModel, model_inputs: dict, target: str | None,
                 max_new_tokens: int) -> tuple[list[int], bool, int]:
    """Decoder input ids: [start] + the target's tokens, or the model's own greedy output."""
    config = loaded.model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = getattr(getattr(loaded.model, "generation_config", None), "decoder_start_token_id", None)
    if start is None:
        start = config.pad_token_id if config.pad_token_id is not None else 0
    limit = loaded.info.max_length
    if target is not None:
        with loaded.tokenizer_lock:
            ids = loaded.tokenizer(text_target=target, truncation=False)["input_ids"]
        ids = [int(start)] + [int(i) for i in ids]
        dropped = max(0, len(ids) - limit)
        return ids[:limit], False, dropped
    out = loaded.model.generate(**model_inputs, max_new_tokens=max(1, min(max_new_tokens, limit - 1)),
                                do_sample=False, num_beams=1)
    return [int(i) for i in out[0]], True, 0


def run_bare_forward(loaded: LoadedModel, text: str) -> None:
    """A forward pass without asking for attention: the baseline for benchmarks."""
    enc, _ = _encode(loaded, text, None)
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        if loaded.info.family == "encoder-decoder":
            loaded.model(**inputs, decoder_input_ids=inputs["input_ids"][:, :1])
        else:
            loaded.model(**inputs, **_last_logits_only(loaded))


class InternalsUnavailable(ModelError):
    """This model's attention internals (q, k, v, scores) cannot be recorded; the message says why."""


UNRECORDABLE = "This model's attention internals cannot be recorded (only its weights)."


def capture_layer(text: str, *, site: tuple[str, int], pair: str | None = None, target: str | None = None,
                  model: str | LoadedModel | None = None, on_wait: Callable[[int], None] | None = None,
                  on_start: Callable[[], None] | None = None) -> LayerInternals:
    """The internals of one layer (``site`` = (kind, layer)) for ``text``, without a full capture.

    Only that layer is recorded and the forward pass stops right after it, so the later layers
    are not run and no attention of the other layers is kept (the pages that need one layer's
    q/k/v/scores already hold the full result from :func:`capture`).
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if not loaded.recording_supported:
        raise InternalsUnavailable(loaded.internals_reason or UNRECORDABLE)
    try:
        with attention_fn.stop_after(tuple(site)):
            result = capture(text, pair=pair, target=target, model=loaded, internals=[tuple(site)],
                             on_wait=on_wait, on_start=on_start)
    except attention_fn.SiteRecorded as done:
        return _internals(done.recorder, loaded)[tuple(site)]
    if tuple(site) not in result.internals:   # the pass ended without reaching that layer
        raise InternalsUnavailable(f"No {site[0]} layer {site[1]} was recorded for this model.")
    return result.internals[tuple(site)]
