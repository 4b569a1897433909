"""The one result object that flows from text to figure (numpy only, no torch).

A capture produces an :class:`AttentionResult`.  Everything downstream (views,
statistics, flow, efficient-attention lab, exports) reads it and never touches
tensors.  Attention arrays are post-softmax patterns shaped
``(n_layers, n_heads, query_pos, key_pos)`` with rows summing to 1.

Attention comes in *blocks*: an encoder-only model has one block ``"encoder"``,
a decoder-only model one block ``"decoder"`` (causal), and an encoder-decoder
model three: ``"encoder"``, ``"decoder"`` (causal, decoder tokens on both axes)
and ``"cross"`` (decoder tokens as queries, encoder tokens as keys).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ENCODER, DECODER, CROSS = "encoder", "decoder", "cross"
FAMILIES = ("encoder", "decoder", "encoder-decoder")


@dataclass(frozen=True)
class TokenSeq:
    """The tokens of one stream (the encoder's or the decoder's)."""

    tokens: tuple[str, ...]   # raw tokenizer tokens, e.g. "##ing", "Ġthe", "[CLS]"
    labels: tuple[str, ...]   # readable display labels, e.g. "ing", "the", "[CLS]"
    token_ids: np.ndarray     # (T,) int64 vocabulary ids
    special: np.ndarray       # (T,) bool, True for [CLS]/[SEP]/BOS/EOS/pad...
    word_ids: np.ndarray      # (T,) int64 word index per token, -1 for special tokens
    segment_ids: np.ndarray   # (T,) int64, 0 = first text, 1 = second text (pair)

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model that the UI shows and the analyses need."""

    name: str                 # what the user asked for (hub id, path or "embedded")
    family: str               # one of FAMILIES
    model_type: str           # config.model_type, e.g. "bert", "gpt2", "bart"
    n_layers: int             # per stack (encoder layers for encoder-decoder)
    n_heads: int
    d_model: int
    max_length: int           # tokens the model accepts (after special-token reserve)
    n_decoder_layers: int = 0  # encoder-decoder only
    # Key/value heads per layer: fewer than n_heads under grouped-query attention
    # (Llama, Qwen, SmolLM...); 0 when built by hand means "one per query head".
    n_kv_heads: int = 0

    def __post_init__(self):
        if not self.n_kv_heads:
            object.__setattr__(self, "n_kv_heads", self.n_heads)

    @property
    def kv_head(self) -> np.ndarray:
        """(n_heads,) int: the key/value head each query head reads."""
        return kv_heads(self.n_heads, self.n_kv_heads)


def kv_heads(n_heads: int, n_kv_heads: int | None = None) -> np.ndarray:
    """(n_heads,) int64: query head h reads key/value head h // (n_heads // n_kv_heads).

    transformers' eager attention repeats each KV head n_heads // n_kv_heads times
    (``repeat_kv``), so consecutive query heads share one; ``arange(n_heads)`` without GQA.
    """
    n_kv = n_kv_heads or n_heads
    if n_kv <= 0 or n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key/value heads evenly")
    return np.arange(n_heads, dtype=np.int64) // (n_heads // n_kv)


def has_gqa(kv_head: np.ndarray) -> bool:
    """True when some query heads share a key/value head."""
    kv_head = np.asarray(kv_head)
    return len(np.unique(kv_head)) < len(kv_head)


def head_label(head: int, kv_head: np.ndarray | None = None) -> str:
    """"head 4 · KV 1" under grouped-query attention, plain "head 4" otherwise (0-based)."""
    if kv_head is None or not has_gqa(kv_head):
        return f"head {int(head)}"
    return f"head {int(head)} · KV {int(np.asarray(kv_head)[int(head)])}"


# ---------------------------------------------------------------- long inputs: patterns recomputed per layer
# A full (n_layers, n_heads, T, T) float32 pattern costs 4.5 GB for the embedded LLM at 2,048 tokens.
# Long decoder results keep each layer's post-rotary queries and keys instead (190 MB there) and
# recompute a layer's exact pattern when it is indexed; statistics and thumbnails that need every
# layer are streamed during the capture into a PatternSummary.
MATERIALISE_LIMIT = 512 * 1024 * 1024   # bytes one indexing of a LazyPattern may return
LAYER_CACHE = 2                         # materialised layers kept per pattern (151 MB each at 2k, 9 heads)


class PatternTooLarge(ValueError):
    """Asked for more of a long result's attention at once than MATERIALISE_LIMIT allows."""


@dataclass(frozen=True)
class LayerQK:
    """What one layer's pattern is recomputed from: ``softmax(mask(softcap(scaling * q k^T)))``."""

    query: np.ndarray          # (n_heads, T_q, d_head) float32, after any rotary embedding
    key: np.ndarray            # (n_kv_heads, T_k, d_head) float32: under GQA only the KV heads are kept
    scaling: float             # the factor the model applied to q.k
    softcap: float | None = None   # Gemma-2: scores = softcap * tanh(scores / softcap)
    # (T_q, ceil(T_k / 8)) uint8, np.packbits of the allowed cells along keys; None: the block's
    # rule (causal: key_pos <= query_pos + T_k - T_q; otherwise every key).
    mask: np.ndarray | None = None

    def allowed(self, rows: np.ndarray, n_keys: int, *, causal: bool) -> np.ndarray | None:
        """(len(rows), T_k) bool for these query rows, or None when every key is allowed."""
        if self.mask is not None:
            return np.unpackbits(self.mask[rows], axis=-1, count=n_keys).astype(bool)
        if not causal:
            return None
        offset = n_keys - self.query.shape[1]
        return np.arange(n_keys)[None, :] <= (np.asarray(rows)[:, None] + offset)


def layer_pattern(layer: LayerQK, kv_head: np.ndarray, *, causal: bool, heads=None, rows=None) -> np.ndarray:
    """(len(heads), len(rows), T_k) float32: the exact post-softmax weights of one layer.

    The same float32 operations, in the same order, as transformers' eager attention
    (matmul, times scaling, softcap, mask, softmax); the capture checks the result against
    the weights the model returned.  Fully masked rows come back as zeros.
    """
    n_heads, n_q, _ = layer.query.shape
    heads = np.arange(n_heads) if heads is None else np.asarray(heads, dtype=np.int64).reshape(-1)
    rows = np.arange(n_q) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    q = layer.query[heads]
    if len(rows) != n_q:
        q = q[:, rows]
    k = layer.key[np.asarray(kv_head)[heads]]                          # (h, T_k, d_head)
    scores = np.matmul(q, k.transpose(0, 2, 1))                        # (h, r, T_k)
    scores *= np.float32(layer.scaling)
    if layer.softcap:
        np.tanh(scores / np.float32(layer.softcap), out=scores)
        scores *= np.float32(layer.softcap)
    allowed = layer.allowed(rows, k.shape[1], causal=causal)
    if allowed is not None:
        np.copyto(scores, -np.inf, where=~allowed[None])
    top = scores.max(axis=-1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    scores -= top
    np.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)
    np.divide(scores, total, out=scores, where=total > 0)
    return scores


@dataclass(frozen=True)
class PatternSummary:
    """Whole-block figures of a long result, computed layer by layer from the model's own weights
    during the capture (exact to float32 accumulation, ~1e-6): what overview pages read instead of
    materialising every layer."""

    metrics: dict              # stats.METRICS name -> (n_layers, n_heads) float64, token flags of the keys
    thumbs: np.ndarray         # (n_layers, n_heads, t_q, t_k) float32 block means (views.model_view.downsample)
    thumb: int                 # the size the thumbnails were made for (views.model_view.THUMB)
    layer_mean: np.ndarray | None = None   # (T_q, T_k) float32, mean over layers of the mean of heads


class LazyPattern:
    """(n_layers, n_heads, T_q, T_k) float32 attention that materialises only what is indexed.

    ``pattern[layer]`` and ``pattern[layer, head]`` return numpy arrays (a small LRU keeps the
    last :data:`LAYER_CACHE` full layers); ``pattern[:, :, rows]`` recomputes only those query
    rows of every layer.  ``np.asarray(pattern)`` works only when the whole array fits in
    :data:`MATERIALISE_LIMIT`; long inputs go through :attr:`summary` or a loop over layers.
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, shape: tuple[int, int, int, int], compute: Callable, *,
                 summary: PatternSummary | None = None, held: tuple = (), cache_layers: int = LAYER_CACHE):
        self.shape = tuple(int(n) for n in shape)
        self._compute = compute             # (layer, heads or None, rows or None) -> (h, r, T_k) float32
        self.summary = summary
        self._held = held                   # the arrays this pattern keeps (for its byte count)
        self._cache: OrderedDict = OrderedDict()
        self._cache_layers = cache_layers
        self._lock = threading.Lock()

    # numpy-like facts
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def full_nbytes(self) -> int:
        """Bytes the whole array would take if materialised."""
        return self.size * 4

    @property
    def nbytes(self) -> int:
        """Bytes this pattern holds (queries, keys, masks, summary), not the full array's."""
        from_summary = 0
        if self.summary is not None:
            from_summary = self.summary.thumbs.nbytes + sum(v.nbytes for v in self.summary.metrics.values())
            if self.summary.layer_mean is not None:
                from_summary += self.summary.layer_mean.nbytes
        return sum(a.nbytes for a in self._held) + from_summary

    def __repr__(self) -> str:
        return f"LazyPattern(shape={self.shape}, holds {self.nbytes / 1e6:.0f} MB of {self.full_nbytes / 1e6:.0f} MB)"

    def layer(self, layer: int) -> np.ndarray:
        """(n_heads, T_q, T_k) float32, read-only: one layer's exact pattern."""
        layer = int(layer)
        if not -self.shape[0] <= layer < self.shape[0]:
            raise IndexError(f"layer {layer} is out of range (0..{self.shape[0] - 1})")
        layer %= self.shape[0]
        with self._lock:
            hit = self._cache.get(layer)
            if hit is not None:
                self._cache.move_to_end(layer)
                return hit
        out = self._compute(layer, None, None)
        out.setflags(write=False)
        with self._lock:
            self._cache[layer] = out
            while len(self._cache) > self._cache_layers:
                self._cache.popitem(last=False)
        return out

    def _cached(self, layer: int):
        with self._lock:
            return self._cache.get(layer)

    def _part(self, layer: int, heads, rows, keys) -> np.ndarray:
        """One layer indexed by (heads, rows, keys), numpy semantics, computing as little as it can."""
        full = slice(None)
        cached = self._cached(layer)
        if cached is None and _is_full(heads) and _is_full(rows):
            cached = self.layer(layer)
        if cached is not None:
            return cached[heads, rows, keys]
        both_arrays = not _is_basic(heads) and not _is_basic(rows)
        if both_arrays:
            return self.layer(layer)[heads, rows, keys]
        head_ids = np.arange(self.shape[1])[heads]
        row_ids = np.arange(self.shape[2])[rows]
        out = self._compute(layer, np.atleast_1d(head_ids), np.atleast_1d(row_ids))  # (h, r, T_k)
        out = out[0 if np.ndim(head_ids) == 0 else full, 0 if np.ndim(row_ids) == 0 else full]
        return out[..., keys]

    def __getitem__(self, index):
        layers, heads, rows, keys = _four(index)
        if isinstance(layers, np.ndarray) and layers.ndim > 1:     # np.ix_: orthogonal selection
            layers = layers.reshape(-1)
            heads = heads.reshape(-1) if isinstance(heads, np.ndarray) else heads
        if _is_int(layers):
            layer = int(layers) % self.shape[0] if -self.shape[0] <= int(layers) < self.shape[0] else None
            if layer is None:
                raise IndexError(f"layer {int(layers)} is out of range (0..{self.shape[0] - 1})")
            return self._part(layer, heads, rows, keys)
        chosen = np.arange(self.shape[0])[layers]
        parts, total = [], 0
        for layer in chosen:
            part = self._part(int(layer), heads, rows, keys)
            total += part.nbytes
            if total > MATERIALISE_LIMIT:
                raise PatternTooLarge(self._too_large(len(chosen) * part.nbytes))
            parts.append(part)
        if not parts:
            return np.zeros((0, *self._part(0, heads, rows, keys).shape), np.float32)
        return np.stack(parts)

    def _too_large(self, nbytes: int) -> str:
        return (f"This input is long ({self.shape[2]:,} tokens): that much of its attention at once would take "
                f"{nbytes / 1e9:.1f} GB, so it is recomputed layer by layer instead")

    def __array__(self, dtype=None, copy=None):
        if self.full_nbytes > MATERIALISE_LIMIT:
            raise PatternTooLarge(self._too_large(self.full_nbytes))
        out = np.stack([self.layer(i) for i in range(self.shape[0])])
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype, **_):
        return np.asarray(self, dtype=dtype)

    def layers(self):
        """Each layer's (n_heads, T_q, T_k) pattern in turn: whole-block work in O(one layer) memory."""
        for i in range(self.shape[0]):
            yield self.layer(i)

    def map_layers(self, fn: Callable[[np.ndarray], np.ndarray], shape: tuple) -> LazyPattern:
        """A LazyPattern whose layer l is ``fn(self.layer(l))`` (word-level merging, hidden tokens...)."""
        def compute(layer, heads, rows):
            out = fn(self.layer(layer))
            if heads is not None:
                out = out[np.asarray(heads)]
            if rows is not None:
                out = out[:, np.asarray(rows)]
            return np.array(out, dtype=np.float32)
        return LazyPattern(shape, compute, held=self._held)


def qk_pattern(layers: tuple[LayerQK, ...], kv_head: np.ndarray, *, causal: bool,
               summary: PatternSummary | None = None) -> LazyPattern:
    """The LazyPattern of a block from its per-layer queries and keys."""
    kv_head = np.asarray(kv_head, dtype=np.int64)
    first = layers[0]
    shape = (len(layers), first.query.shape[0], first.query.shape[1], first.key.shape[1])
    held = tuple(a for layer in layers for a in (layer.query, layer.key, layer.mask) if a is not None)
    for a in held:
        a.setflags(write=False)

    def compute(layer, heads, rows):
        return layer_pattern(layers[layer], kv_head, causal=causal, heads=heads, rows=rows)
    pattern = LazyPattern(shape, compute, summary=summary, held=held)
    pattern.qk = layers
    return pattern


def is_lazy(pattern) -> bool:
    """True for a long result's per-layer pattern (not a numpy array)."""
    return isinstance(pattern, LazyPattern)


def _four(index) -> tuple:
    """A numpy index as exactly (layers, heads, rows, keys)."""
    index = index if isinstance(index, tuple) else (index,)
    if any(i is Ellipsis for i in index):
        at = next(n for n, i in enumerate(index) if i is Ellipsis)
        index = index[:at] + (slice(None),) * (4 - len(index) + 1) + index[at + 1:]
    if len(index) > 4:
        raise IndexError("too many indices for a (n_layers, n_heads, query_pos, key_pos) pattern")
    index = tuple(np.asarray(i) if isinstance(i, list) else i for i in index)
    return index + (slice(None),) * (4 - len(index))


def _is_int(i) -> bool:
    return isinstance(i, (int, np.integer)) or (isinstance(i, np.ndarray) and i.ndim == 0 and i.dtype.kind in "iu")


def _is_full(i) -> bool:
    return isinstance(i, slice) and i == slice(None)


def _is_basic(i) -> bool:
    return isinstance(i, slice) or _is_int(i)


@dataclass(frozen=True)
class Block:
    """One attention block: the pattern plus the tokens on each axis."""

    kind: str                 # ENCODER, DECODER or CROSS
    pattern: np.ndarray       # (n_layers, n_heads, query_pos, key_pos)
    queries: TokenSeq
    keys: TokenSeq
    causal: bool              # True when key_pos > query_pos is masked out
    kv_head: np.ndarray | None = None  # (n_heads,) int, the KV head each query head reads

    def __post_init__(self):
        if self.kv_head is None:
            object.__setattr__(self, "kv_head", np.arange(self.pattern.shape[1], dtype=np.int64))

    @property
    def n_layers(self) -> int:
        return self.pattern.shape[0]

    @property
    def n_heads(self) -> int:
        return self.pattern.shape[1]


@dataclass(frozen=True)
class LayerInternals:
    """What one attention layer computed, captured from the running model.

    ``pattern == softmax(where(mask, scores, -inf))`` row-wise, up to float error.
    """

    kind: str                 # ENCODER, DECODER or CROSS
    layer: int
    hidden: np.ndarray | None  # (T_q, d_model) hidden states the queries were projected from
    query: np.ndarray         # (n_heads, T_q, d_head), after any rotary embedding
    key: np.ndarray           # (n_heads, T_k, d_head)
    value: np.ndarray         # (n_heads, T_k, d_head)
    scores: np.ndarray        # (n_heads, T_q, T_k) pre-softmax: scaling * q.k (+ position bias, softcap), unmasked
    mask: np.ndarray          # (T_q, T_k) bool, True where attention is allowed
    scaling: float            # the factor applied to q.k, usually 1/sqrt(d_head)
    pattern: np.ndarray       # (n_heads, T_q, T_k) the weights the model returned
    head_output: np.ndarray   # (n_heads, T_q, d_head) sum_j pattern[h, i, j] * value[h, j]
    value_out: np.ndarray | None = None  # (n_heads, T_k, d_model) f(x_j) = v_j W_O^h (Kobayashi et al.)
    # Gemma-2's attention softcap: scores = softcap * tanh(scaling * q.k / softcap); None elsewhere.
    softcap: float | None = None


@dataclass(frozen=True)
class AttentionResult:
    """Attention of every layer and head for one input."""

    model: ModelInfo
    text: str
    pair: str | None = None
    target: str | None = None
    encoder: TokenSeq | None = None        # encoder-only and encoder-decoder
    decoder: TokenSeq | None = None        # decoder-only and encoder-decoder
    encoder_attentions: np.ndarray | None = None  # (L, H, T_enc, T_enc)
    decoder_attentions: np.ndarray | None = None  # (L, H, T_dec, T_dec), causal
    cross_attentions: np.ndarray | None = None    # (L, H, T_dec, T_enc)
    truncated: int = 0                     # tokens dropped to fit max_length
    generated: bool = False                # target produced by greedy decoding
    notice: str = ""                       # one line for the person about how this result was made
    # Optional per-layer internals (q, k, v, scores...), keyed by (kind, layer);
    # only filled when the capture was asked for them (math page, norm-based
    # attention, efficient-attention lab).
    internals: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def kinds(self) -> tuple[str, ...]:
        """The attention blocks this result holds, the main one first."""
        if self.family == "encoder":
            return (ENCODER,)
        if self.family == "decoder":
            return (DECODER,)
        return (ENCODER, DECODER, CROSS)

    def block(self, kind: str | None = None) -> Block:
        """The attention block of ``kind`` (default: the main block)."""
        kind = kind or self.kinds[0]
        if kind not in self.kinds:
            raise ValueError(f"{self.family} models have no {kind} attention "
                             f"(choose from {', '.join(self.kinds)})")
        kv = self.kv_head
        pattern = {ENCODER: self.encoder_attentions, DECODER: self.decoder_attentions}.get(kind, self.cross_attentions)
        if pattern is not None and len(kv) != pattern.shape[1]:
            kv = None   # hand-built results whose ModelInfo does not describe the arrays
        if kind == ENCODER:
            return Block(ENCODER, self.encoder_attentions, self.encoder, self.encoder, False, kv)
        if kind == DECODER:
            return Block(DECODER, self.decoder_attentions, self.decoder, self.decoder, True, kv)
        return Block(CROSS, self.cross_attentions, self.decoder, self.encoder, False, kv)

    @property
    def kv_head(self) -> np.ndarray:
        """(n_heads,) int: the key/value head each query head reads (arange without GQA)."""
        return self.model.kv_head

    @property
    def tokens(self) -> TokenSeq:
        """The main token stream (the encoder's, or the decoder's for decoder-only)."""
        return self.block().queries

    @property
    def attentions(self) -> np.ndarray:
        """The main block's pattern, (n_layers, n_heads, T, T)."""
        return self.block().pattern


@dataclass(frozen=True)
class GenerationResult:
    """A prompt, the tokens a decoder generated after it, and what it attended to and expected at each step.

    ``attention`` holds the whole finished sequence (prompt + generated) from one forward pass:
    under the causal mask its rows are the rows the model computed step by step with its KV cache.
    Step ``t`` (0-based) produced token ``n_prompt + t``; its query was the token before it,
    at ``query_pos(t) = n_prompt - 1 + t``, and ``top_ids[t]`` / ``top_probs[t]`` are the model's
    top-k next tokens there (softmax of the raw logits at temperature 1, whatever sampling chose).
    """

    attention: AttentionResult       # decoder block over prompt + generated, (L, H, T, T)
    n_prompt: int                    # prompt tokens (chat template included)
    step_ids: np.ndarray             # (n_steps,) int64, the generated token ids
    step_probs: np.ndarray           # (n_steps,) float32, p of the generated token at temperature 1
    top_ids: np.ndarray              # (n_steps, K) int64, most probable first
    top_probs: np.ndarray            # (n_steps, K) float32
    top_tokens: tuple[tuple[str, ...], ...]   # (n_steps, K) raw tokenizer tokens of top_ids
    top_labels: tuple[tuple[str, ...], ...]   # (n_steps, K) readable labels of top_ids
    forced: np.ndarray               # (n_steps,) bool, True where a branch forced the token
    template: np.ndarray             # (T,) bool, tokens the chat template added (also marked special)
    completion: str                  # the generated tokens decoded to text (special tokens skipped)
    chat: bool = False
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    max_new_tokens: int = 20
    stop: str = "length"             # "eos" (end-of-sequence token), "length" (max_new_tokens), "limit" (model's)
    truncated: int = 0               # prompt tokens dropped to fit the model's limit
    notice: str = ""                 # one line for the person (what was cut), empty when nothing was

    @property
    def n_steps(self) -> int:
        return len(self.step_ids)

    @property
    def tokens(self) -> TokenSeq:
        """Prompt and generated tokens, template included."""
        return self.attention.decoder

    @property
    def attentions(self) -> np.ndarray:
        """(n_layers, n_heads, T, T) over the whole sequence."""
        return self.attention.decoder_attentions

    @property
    def kv_head(self) -> np.ndarray:
        return self.attention.kv_head

    @property
    def prompt(self) -> str:
        return self.attention.text

    def query_pos(self, step: int) -> int:
        """The row whose output chose the token of ``step``: the token just before it."""
        if not 0 <= step < self.n_steps:
            raise IndexError(f"step {step} is out of range (0..{self.n_steps - 1})")
        return self.n_prompt - 1 + int(step)

    def step_attention(self, step: int) -> np.ndarray:
        """(n_layers, n_heads, n_prompt + step): the weights the query of ``step`` put on every earlier token."""
        row = self.query_pos(step)
        return self.attentions[:, :, row, : row + 1]

    def branch(self, step: int, token_id: int) -> dict[int, int]:
        """The ``forced`` argument of :func:`viz.generation.generate` that keeps steps before ``step``
        as they are and takes ``token_id`` at ``step``."""
        if not 0 <= step < self.n_steps:
            raise IndexError(f"step {step} is out of range (0..{self.n_steps - 1})")
        forced = {t: int(i) for t, i in enumerate(self.step_ids[:step])}
        forced[int(step)] = int(token_id)
        return forced


@dataclass(frozen=True)
class Predictions:
    """What a decoder expected next at every position of a text.

    Row ``i`` is the distribution the model gave after reading tokens ``0..i``, i.e. its
    prediction for token ``i + 1``; the last row has no actual next token.
    """

    model: ModelInfo
    text: str
    tokens: TokenSeq
    top_ids: np.ndarray              # (T, K) int64, most probable first
    top_probs: np.ndarray            # (T, K) float32, softmax of the logits
    top_tokens: tuple[tuple[str, ...], ...]   # (T, K) raw tokenizer tokens
    top_labels: tuple[tuple[str, ...], ...]   # (T, K) readable labels
    next_ids: np.ndarray             # (T,) int64, the actual next token id, -1 on the last row
    p_next: np.ndarray               # (T,) float32, its probability, nan on the last row
    rank_next: np.ndarray            # (T,) int64, its 1-based rank (1 = the model's top choice), 0 on the last row
    truncated: int = 0

    @property
    def surprisal(self) -> np.ndarray:
        """(T,) float32 bits: -log2 p_next (nan on the last row)."""
        with np.errstate(divide="ignore"):
            return (-np.log2(self.p_next)).astype(np.float32)


@dataclass(frozen=True)
class LogitLens:
    """The logit lens at one position: what the residual stream after each block would predict.

    Row ``layer`` applies the model's final norm and unembedding to the residual stream after
    block ``layer`` (0-based); the last row is the model's own output distribution.
    """

    model: ModelInfo
    text: str
    tokens: TokenSeq
    position: int                    # the query position read (0-based)
    top_ids: np.ndarray              # (n_layers, K) int64, most probable first
    top_probs: np.ndarray            # (n_layers, K) float32
    top_tokens: tuple[tuple[str, ...], ...]   # (n_layers, K)
    top_labels: tuple[tuple[str, ...], ...]   # (n_layers, K)
    next_id: int = -1                # the actual next token at position + 1, -1 at the last position
    next_probs: np.ndarray | None = None   # (n_layers,) float32, its probability per layer (nan without one)
    truncated: int = 0

    @property
    def n_layers(self) -> int:
        return int(self.top_ids.shape[0])
