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


@dataclass(frozen=True)
class Block:
    """One attention block: the pattern plus the tokens on each axis."""

    kind: str                 # ENCODER, DECODER or CROSS
    pattern: np.ndarray       # (n_layers, n_heads, query_pos, key_pos)
    queries: TokenSeq
    keys: TokenSeq
    causal: bool              # True when key_pos > query_pos is masked out

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
    scores: np.ndarray        # (n_heads, T_q, T_k) pre-softmax: scaling * q.k (+ position bias), unmasked
    mask: np.ndarray          # (T_q, T_k) bool, True where attention is allowed
    scaling: float            # the factor applied to q.k, usually 1/sqrt(d_head)
    pattern: np.ndarray       # (n_heads, T_q, T_k) the weights the model returned
    head_output: np.ndarray   # (n_heads, T_q, d_head) sum_j pattern[h, i, j] * value[h, j]
    value_out: np.ndarray | None = None  # (n_heads, T_k, d_model) f(x_j) = v_j W_O^h (Kobayashi et al.)


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
        if kind == ENCODER:
            return Block(ENCODER, self.encoder_attentions, self.encoder, self.encoder, False)
        if kind == DECODER:
            return Block(DECODER, self.decoder_attentions, self.decoder, self.decoder, True)
        return Block(CROSS, self.cross_attentions, self.decoder, self.encoder, False)

    @property
    def tokens(self) -> TokenSeq:
        """The main token stream (the encoder's, or the decoder's for decoder-only)."""
        return self.block().queries

    @property
    def attentions(self) -> np.ndarray:
        """The main block's pattern, (n_layers, n_heads, T, T)."""
        return self.block().pattern
