"""Knocking heads out: ablation, its effect on the output, and the importance of every head.  Torch tier.

transformers 5 has no ``head_mask``, so a head is removed at the input of its layer's output
projection W_O (Llama ``o_proj``, GPT-2 ``c_proj``, BERT ``attention.output.dense``, BART
``out_proj``, T5 ``o``): that input is the heads' outputs side by side, ``(batch, T, n_heads * d_head)``,
before W_O mixes them, so editing head h's slice removes exactly what h contributes.  ``zero``
replaces the slice by 0; ``mean`` by that head's mean output over the positions of the same input
(for a decoder that mean includes later positions, as mean-ablation studies take it).
With a bias in W_O, zeroing every head of a layer leaves the bias plus the residual path.

Isolation: the model is shared by every session (thread).  Each output projection gets one forward
pre-hook, registered once per model; it reads the *calling context's* plan from a ContextVar and does
nothing without one.  :func:`ablated` sets the plan for its ``with`` block only and always resets it,
so no ablation outlives the call, another session's forward passes never see it, and the model's
weights are never touched.

Batched ablation (:func:`ablated_rows`): row r of a batch gets its own set of heads removed.  The
input can be one row: at the first ablated layer the hook expands it to all rows, so the layers
before it run once for the whole batch instead of once per row (their output is the same for every
row).  :func:`ablation_importance` goes further (fan-out): the text enters as one clean row, and as
it enters each layer a second pre-hook, on the module holding the attention (decoder layer, BERT's
``BertAttention``), appends one copy of the clean row per head, each with that head removed.  Every
row then runs only the layers from its own on: all heads of the embedded LLM in a few passes.

Gates (:func:`gated`): each head's slice multiplied by g_h; with ``g = 1`` requiring grad, one
backward pass gives dL/dg_h for every head (Michel et al. 2019).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from viz import families
from viz.ablation_result import (
    METHODS,
    MODES,
    DecoderEffect,
    EncoderEffect,
    Head,
    HeadImportance,
    HeadSpecError,
    MaskedTopK,
    TopK,
    check_heads,
)
from viz.capture import InputError, _encode, _token_seq, capture, clean_text, run_slot
from viz.models import _LOAD_LOCK, EMBEDDED_LLM, LoadedModel, load_model
from viz.result import AttentionResult, GenerationResult

DEFAULT_TOP_K = 10


class AblationError(InputError):
    """The ablation cannot be done as asked; the message is one line a person understands."""


# ---------------------------------------------------------------- where the heads meet W_O
@dataclass(frozen=True)
class Site:
    """One attention layer's output projection, where its heads' outputs are side by side."""

    kind: str      # "encoder", "decoder" or "cross"
    layer: int
    n_heads: int   # query heads (under grouped-query attention: more than the key/value heads)
    d_head: int


def output_projection(attention: nn.Module) -> nn.Module | None:
    """The W_O module of one attention module (the modules in ``LoadedModel.sites``), via :mod:`viz.families`."""
    found = families.output_projection(attention)
    return None if found is None else found.module


def _heads_of(attention: nn.Module, width: int, fallback: int) -> int:
    for name in ("head_dim", "attention_head_size", "key_value_proj_dim", "dim_per_head"):
        d = getattr(attention, name, None)
        if isinstance(d, int) and d > 0 and width % d == 0:
            return width // d
    for name in ("num_heads", "n_heads", "num_attention_heads", "n_head"):
        n = getattr(attention, name, None)
        if isinstance(n, int) and n > 0 and width % n == 0:
            return n
    return fallback


def output_projections(loaded: LoadedModel) -> dict[tuple[str, int], tuple[nn.Module, Site]]:
    """(kind, layer) -> (W_O module, Site) for every attention layer of the model."""
    found = {}
    for module in loaded.model.modules():
        where = loaded.sites.get(id(module))
        if where is None:
            continue
        proj = families.output_projection(module)
        if proj is None:
            continue
        n_heads = _heads_of(module, proj.in_features, loaded.info.n_heads)
        found[where] = (proj.module, Site(kind=where[0], layer=where[1], n_heads=n_heads,
                                          d_head=proj.in_features // n_heads))
    return found


_INSTALL_LOCK = threading.Lock()


def install(loaded: LoadedModel) -> dict[tuple[str, int], Site]:
    """Register the (inert) pre-hooks on every output projection, once per model; return the sites.

    Safe to call from any thread at any time: a hook does nothing unless its caller opened a plan.
    """
    model = loaded.model
    sites = model.__dict__.get("_viz_ablation_sites")
    if sites is not None:
        return sites
    with _INSTALL_LOCK:
        sites = model.__dict__.get("_viz_ablation_sites")
        if sites is not None:
            return sites
        if families.family(loaded.info.model_type).shared_attention:
            # One attention module serves every layer (ALBERT): a hook cannot tell the layers apart.
            raise AblationError(f"{loaded.info.model_type} models share one attention module across layers, "
                                f"so a head of one layer cannot be knocked out alone")
        projections = output_projections(loaded)
        if not projections:
            raise AblationError(f"Cannot find the attention output projections of this "
                                f"{loaded.info.model_type} model, so its heads cannot be knocked out")
        for proj, site in projections.values():
            proj.register_forward_pre_hook(functools.partial(_hook, id(model), site))
        sites = {key: site for key, (_, site) in projections.items()}
        for module in model.modules():
            key, parent = loaded.sites.get(id(module)), module.__dict__.get("_viz_parent")
            # The module holding the attention takes the residual stream in (Llama/GPT-2 decoder
            # layer, BERT's BertAttention, T5's layer): rows can be added there.  Cross attention
            # shares its holder with self attention in some families: never fan out there.
            if key in sites and key[0] != "cross" and parent is not None:
                parent.register_forward_pre_hook(functools.partial(_fanout_hook, id(model), key), with_kwargs=True)
        # Through __dict__: an attribute set on an nn.Module would be taken for a submodule or buffer.
        model.__dict__["_viz_ablation_sites"] = sites
        return sites


# ---------------------------------------------------------------- the per-context plan
class _Plan:
    """What the hooks do for forward passes in one context: heads to remove per row, or gates.

    ``masks[(kind, layer)]``: (rows, n_heads) bool, True where that row removes that head.
    ``gates[(kind, layer)]``: (n_heads,) tensor multiplying each head's slice.
    ``freeze_means``: mean mode during generation with a KV cache, where a step's input is one
    token: the mean of each head over the first (prompt) pass is kept and reused for later steps.
    ``fanout[(kind, layer)]``: copies of row 0 appended to the batch as it enters that layer.
    """

    def __init__(self, model_id: int, *, masks: dict | None = None, mode: str = "zero",
                 gates: dict | None = None, rows: int = 1, freeze_means: bool = False,
                 fanout: dict | None = None):
        self.model_id = model_id
        self.fanout = fanout or {}
        self.masks = masks or {}
        self.mode = mode
        self.gates = gates or {}
        self.rows = rows
        self.freeze_means = freeze_means
        self.means: dict = {}

    def apply(self, site: Site, x: torch.Tensor) -> torch.Tensor | None:
        key = (site.kind, site.layer)
        mask, gate = self.masks.get(key), self.gates.get(key)
        if mask is None and gate is None:
            return None
        batch, t = x.shape[0], x.shape[1]
        x4 = x.reshape(batch, t, site.n_heads, site.d_head)
        if gate is not None:
            x4 = x4 * gate.to(x4.dtype).view(-1, 1, site.n_heads, 1)   # (H,) or per row (R, H)
        if mask is not None:
            rows = mask.shape[0]
            if batch == 1 and rows > 1:
                # Rows share everything up to here: fan out now, not at the embeddings.
                x4 = x4.expand(rows, t, site.n_heads, site.d_head)
            elif batch != rows and rows != 1:
                raise RuntimeError(f"ablation plan has {rows} rows, the batch {batch}")
            if self.mode == "zero":
                fill = torch.zeros((), dtype=x4.dtype, device=x4.device)
            elif self.freeze_means and key in self.means:
                fill = self.means[key]
            else:
                fill = x4.mean(dim=1, keepdim=True)           # (B, 1, H, d_head) over positions
                if self.freeze_means:
                    self.means[key] = fill
            x4 = torch.where(mask.view(rows, 1, site.n_heads, 1), fill, x4)
        return x4.reshape(x4.shape[0], t, site.n_heads * site.d_head)


_PLAN: contextvars.ContextVar[_Plan | None] = contextvars.ContextVar("viz_ablation_plan", default=None)


def _hook(model_id: int, site: Site, module, args):
    plan = _PLAN.get()
    if plan is None or plan.model_id != model_id or not args:
        return None
    new = plan.apply(site, args[0])
    return None if new is None else (new, *args[1:])


def _fanout_hook(model_id: int, key: tuple[str, int], module, args, kwargs):
    plan = _PLAN.get()
    if plan is None or plan.model_id != model_id or not plan.fanout.get(key):
        return None
    n = plan.fanout[key]
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"cannot find the hidden states entering {type(module).__name__}")
    grown = torch.cat([hidden, hidden[:1].expand(n, *hidden.shape[1:])])
    if args:
        return (grown, *args[1:]), kwargs
    return args, dict(kwargs, hidden_states=grown)


@contextlib.contextmanager
def _active(plan: _Plan) -> Iterator[_Plan]:
    token = _PLAN.set(plan)
    try:
        yield plan
    finally:
        _PLAN.reset(token)


def _main_kind(loaded: LoadedModel, kind: str | None) -> str:
    if kind is not None:
        return kind
    return "decoder" if loaded.info.family == "decoder" else "encoder"


def _layer_sites(loaded: LoadedModel, kind: str | None) -> tuple[str, list[Site]]:
    sites = install(loaded)
    kind = _main_kind(loaded, kind)
    chosen = sorted((s for s in sites.values() if s.kind == kind), key=lambda s: s.layer)
    if not chosen:
        raise AblationError(f"This model has no {kind} attention layers to knock heads out of")
    return kind, chosen


def _checked(loaded: LoadedModel, heads: Iterable[Head], kind: str | None) -> tuple[str, tuple[Head, ...], dict]:
    kind, layers = _layer_sites(loaded, kind)
    by_layer = {s.layer: s for s in layers}
    try:
        heads = check_heads(heads, n_layers=max(by_layer) + 1, n_heads=max(s.n_heads for s in layers))
    except HeadSpecError as exc:
        raise AblationError(str(exc)) from None
    for layer, head in heads:
        if layer not in by_layer or head >= by_layer[layer].n_heads:
            raise AblationError(f"layer {layer} has no head {head}")
    return kind, heads, by_layer


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise AblationError(f"unknown ablation mode '{mode}': choose {' or '.join(MODES)}")
    return mode


@contextlib.contextmanager
def ablated(loaded: LoadedModel, heads: Iterable[Head], *, mode: str = "zero", kind: str | None = None,
            freeze_means: bool = False) -> Iterator[tuple[Head, ...]]:
    """Forward passes of ``loaded.model`` inside the block run with ``heads`` knocked out, in this context only.

    ``heads``: (layer, head) pairs of the ``kind`` block (default: the model's main block).  ``mode``:
    ``"zero"`` or ``"mean"`` (each head's mean output over the positions of the same input).
    ``freeze_means``: in mean mode keep the first pass's means (generation with a KV cache).
    Yields the checked, sorted heads.  A plan opened inside another replaces it for its block.
    """
    with ablated_rows(loaded, [heads], mode=mode, kind=kind, freeze_means=freeze_means) as rows:
        yield rows[0]


@contextlib.contextmanager
def ablated_rows(loaded: LoadedModel, rows: Sequence[Iterable[Head]], *, mode: str = "zero",
                 kind: str | None = None, freeze_means: bool = False) -> Iterator[list[tuple[Head, ...]]]:
    """Row r of each batch inside the block runs with ``rows[r]`` knocked out.

    The batch may have ``len(rows)`` rows, or one: it is then fanned out at the first layer any
    row ablates (the earlier layers are computed once for all rows).
    """
    _check_mode(mode)
    if not rows:
        raise AblationError("no rows to ablate")
    checked, masks = [], {}
    for r, heads in enumerate(rows):
        kind_, one, by_layer = _checked(loaded, heads, kind)
        checked.append(one)
        for layer, head in one:
            site = by_layer[layer]
            mask = masks.get((kind_, layer))
            if mask is None:
                mask = masks[(kind_, layer)] = torch.zeros(len(rows), site.n_heads, dtype=torch.bool)
            mask[r, head] = True
    plan = _Plan(id(loaded.model), masks=masks, mode=mode, rows=len(rows), freeze_means=freeze_means)
    with _active(plan):
        yield checked


@contextlib.contextmanager
def gated(loaded: LoadedModel, gates: torch.Tensor, *, kind: str | None = None) -> Iterator[torch.Tensor]:
    """Each head's output multiplied by ``gates[layer, head]`` for forward passes inside the block.

    ``gates``: (n_layers, n_heads), or (rows, n_layers, n_heads) for one gate set per batch row;
    make it require grad for dL/dg.
    """
    kind, layers = _layer_sites(loaded, kind)
    shape = (len(layers), max(s.n_heads for s in layers))
    if tuple(gates.shape[-2:]) != shape or gates.dim() not in (2, 3):
        raise AblationError(f"gates must be {shape} or (rows, *{shape}), got {tuple(gates.shape)}")
    plan = _Plan(id(loaded.model), gates={(kind, s.layer): gates[..., i, : s.n_heads] for i, s in enumerate(layers)})
    with _active(plan):
        yield gates


def active() -> bool:
    """True when the calling context has an ablation or gates open (for tests and assertions)."""
    return _PLAN.get() is not None


# ---------------------------------------------------------------- running the model
@dataclass(frozen=True)
class _Input:
    loaded: LoadedModel
    text: str
    inputs: dict           # input_ids, attention_mask (and token_type_ids for pairs), batch 1
    tokens: object         # TokenSeq
    truncated: int


def _loaded(model: str | LoadedModel | None, default: str | None = None) -> LoadedModel:
    return model if isinstance(model, LoadedModel) else load_model(model if model is not None else default)


def _prepare(loaded: LoadedModel, text: str, *, limit: int | None = None) -> _Input:
    """Tokenize as :func:`viz.capture.capture` does, so positions match the ablated capture
    (``limit``: at most that many tokens, the first ones)."""
    text = clean_text(text)
    enc, dropped = _encode(loaded, text, None, limit=min(limit, loaded.info.max_length) if limit else None)
    inputs = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    with loaded.tokenizer_lock:
        tokens = _token_seq(loaded.tokenizer, enc)
    if len(tokens) < 1:
        raise InputError("The text has no tokens this model can read: type a sentence")
    return _Input(loaded, text, inputs, tokens, dropped)


def _repeat(inputs: dict, rows: int) -> dict:
    return {k: v.expand(rows, *v.shape[1:]) for k, v in inputs.items()} if rows > 1 else inputs


def _logits(loaded: LoadedModel, inputs: dict) -> torch.Tensor:
    """(batch, T, vocab) next-token logits of a decoder."""
    out = loaded.model(**inputs, use_cache=False)
    logits = getattr(out, "logits", None)
    if logits is None:
        # A base model without its LM head: the unembedding is the input embedding when tied.
        if not getattr(loaded.model.config, "tie_word_embeddings", True):
            raise AblationError("This decoder was loaded without its language-model head")
        logits = out.last_hidden_state @ loaded.model.get_input_embeddings().weight.T
    return logits if logits.dtype == torch.float64 else logits.float()


def _hidden(loaded: LoadedModel, inputs: dict) -> torch.Tensor:
    """(batch, T, d_model) last hidden states of an encoder."""
    hidden = loaded.model(**inputs).last_hidden_state
    return hidden if hidden.dtype == torch.float64 else hidden.float()


def _sentence(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling over the real tokens (sentence-transformers' pooling for all-MiniLM-L6-v2)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)            # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


def _need(loaded: LoadedModel, family: str) -> None:
    if loaded.info.family != family:
        raise AblationError(f"This needs an {family} model; '{loaded.info.name}' is an {loaded.info.family} model")


def _labels_of(loaded: LoadedModel, ids: np.ndarray) -> tuple[tuple[str, ...], ...]:
    """Readable labels for an (n, k) array of token ids."""
    tok = loaded.tokenizer
    with loaded.tokenizer_lock:
        cache: dict[int, str] = {}
        out = []
        for row in np.atleast_2d(ids):
            labels = []
            for i in row:
                i = int(i)
                if i not in cache:
                    piece = tok.convert_ids_to_tokens(i)
                    try:
                        text = tok.convert_tokens_to_string([piece]) if piece is not None else ""
                    except Exception:  # noqa: BLE001 - some tokenizers cannot decode a lone piece
                        text = piece or ""
                    cache[i] = text if text.strip() else (repr(text) if text else str(piece))
                labels.append(cache[i])
            out.append(tuple(labels))
    return tuple(out)


def _check_k(k: int, vocab: int) -> int:
    if not 1 <= int(k) <= 100:
        raise AblationError(f"top-k must be between 1 and 100 (got {k})")
    return min(int(k), vocab)


# ---------------------------------------------------------------- effects
def decoder_effect(text: str, heads: Iterable[Head], *, model: str | LoadedModel | None = None,
                   mode: str = "zero", k: int = DEFAULT_TOP_K) -> DecoderEffect:
    """Next-token predictions over ``text`` with and without ``heads`` (default model: the embedded LLM)."""
    loaded = _loaded(model, EMBEDDED_LLM)
    _need(loaded, "decoder")
    _check_mode(mode)
    prepared = _prepare(loaded, text)
    with run_slot(), torch.inference_mode():
        before = _logits(loaded, prepared.inputs)[0]
        with ablated(loaded, heads, mode=mode) as checked:
            after = _logits(loaded, prepared.inputs)[0]
    k = _check_k(k, before.shape[-1])
    ids = prepared.inputs["input_ids"][0]
    stats = _compare(before, after, ids, k)
    return DecoderEffect(
        tokens=prepared.tokens, heads=checked, mode=mode, next_ids=stats["next_ids"],
        p_next_before=stats["p_next_before"], p_next_after=stats["p_next_after"], kl=stats["kl"],
        top_ids_before=stats["top_ids_before"], top_probs_before=stats["top_probs_before"],
        top_before_after=stats["top_before_after"], top_ids_after=stats["top_ids_after"],
        top_probs_after=stats["top_probs_after"], top_after_before=stats["top_after_before"],
        top_labels_before=_labels_of(loaded, stats["top_ids_before"]),
        top_labels_after=_labels_of(loaded, stats["top_ids_after"]), truncated=prepared.truncated)


_CHUNK = 64   # positions per float64 slice: (64, vocab) keeps a 512-token run to tens of MB


def _compare(before: torch.Tensor, after: torch.Tensor, ids: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """Per position: KL(before || after), p(actual next token), top-k both ways, from (T, V) logits."""
    n = len(ids)
    next_ids = torch.full((n,), -1, dtype=torch.long)
    next_ids[:-1] = ids[1:]
    parts: dict[str, list] = {}
    for lo in range(0, n, _CHUNK):
        hi = min(n, lo + _CHUNK)
        lp_b = torch.log_softmax(before[lo:hi].double(), -1)
        lp_a = torch.log_softmax(after[lo:hi].double(), -1)
        p_b, p_a = lp_b.exp(), lp_a.exp()
        nxt = next_ids[lo:hi].clamp(min=0)[:, None]
        has_next = next_ids[lo:hi] >= 0
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        top_b, top_a = torch.topk(p_b, k, dim=-1), torch.topk(p_a, k, dim=-1)
        for key, value in (
                ("kl", (p_b * (lp_b - lp_a)).sum(-1).clamp(min=0)),
                ("p_next_before", torch.where(has_next, p_b.gather(1, nxt)[:, 0], nan)),
                ("p_next_after", torch.where(has_next, p_a.gather(1, nxt)[:, 0], nan)),
                ("top_ids_before", top_b.indices), ("top_probs_before", top_b.values),
                ("top_before_after", p_a.gather(1, top_b.indices)),
                ("top_ids_after", top_a.indices), ("top_probs_after", top_a.values),
                ("top_after_before", p_b.gather(1, top_a.indices))):
            parts.setdefault(key, []).append(value)
    out = {key: torch.cat(values).numpy() for key, values in parts.items()}
    out["next_ids"] = next_ids.numpy()
    return out


def encoder_effect(text: str, heads: Iterable[Head], *, model: str | LoadedModel | None = None,
                   mode: str = "zero") -> EncoderEffect:
    """How far the sentence embedding and each token's last hidden state move without ``heads``."""
    loaded = _loaded(model)
    _need(loaded, "encoder")
    _check_mode(mode)
    prepared = _prepare(loaded, text)
    with run_slot(), torch.inference_mode():
        before = _hidden(loaded, prepared.inputs)
        with ablated(loaded, heads, mode=mode) as checked:
            after = _hidden(loaded, prepared.inputs)
    mask = prepared.inputs["attention_mask"]
    sentence = torch.nn.functional.cosine_similarity(_sentence(before, mask).double(),
                                                     _sentence(after, mask).double(), dim=-1)
    tokens = torch.nn.functional.cosine_similarity(before[0].double(), after[0].double(), dim=-1)
    return EncoderEffect(tokens=prepared.tokens, heads=checked, mode=mode, sentence_cosine=float(sentence[0]),
                         token_cosine=tokens.numpy(), truncated=prepared.truncated)


def effect(text: str, heads: Iterable[Head], *, model: str | LoadedModel | None = None, mode: str = "zero",
           k: int = DEFAULT_TOP_K) -> DecoderEffect | EncoderEffect:
    """:func:`decoder_effect` or :func:`encoder_effect`, whichever the model is."""
    loaded = _loaded(model, EMBEDDED_LLM)
    if loaded.info.family == "decoder":
        return decoder_effect(text, heads, model=loaded, mode=mode, k=k)
    if loaded.info.family == "encoder":
        return encoder_effect(text, heads, model=loaded, mode=mode)
    raise AblationError("Effects of an ablation are measured for encoder or decoder models, "
                        "not encoder-decoder ones (their ablated capture works)")


def ablated_capture(text: str, heads: Iterable[Head], *, model: str | LoadedModel | None = None,
                    mode: str = "zero", kind: str | None = None, **capture_kwargs) -> AttentionResult:
    """:func:`viz.capture.capture` of ``text`` with ``heads`` knocked out: every view can show it.

    Later layers' attention changes when an earlier head is gone; the ablated heads' own patterns
    stay (W_O's input is edited after the attention weights are computed).
    """
    loaded = _loaded(model)
    with ablated(loaded, heads, mode=mode, kind=kind):
        return capture(text, model=loaded, **capture_kwargs)


@dataclass(frozen=True)
class Continuation:
    """Greedy continuations of one prompt without (before) and with (after) the ablation."""

    heads: tuple[Head, ...]
    mode: str
    before: GenerationResult
    after: GenerationResult

    @property
    def changed(self) -> bool:
        return not np.array_equal(self.before.step_ids, self.after.step_ids)


def continuation(prompt: str, heads: Iterable[Head], *, model: str | LoadedModel | None = None,
                 mode: str = "zero", max_new_tokens: int = 20, chat: bool = False,
                 k: int = DEFAULT_TOP_K) -> Continuation:
    """Greedy continuation of ``prompt`` before and after knocking ``heads`` out.

    Decoding uses a KV cache (:func:`viz.generation.generate`).  In mean mode each head's mean is
    taken over the prompt's positions and kept for the generated tokens (a cached step sees one
    token, whose "mean" would be itself).
    """
    from viz.generation import generate
    loaded = _loaded(model, EMBEDDED_LLM)
    _need(loaded, "decoder")
    _check_mode(mode)
    before = generate(prompt, loaded, max_new_tokens=max_new_tokens, chat=chat, top_k=k)
    with ablated(loaded, heads, mode=mode, freeze_means=True) as checked:
        after = generate(prompt, loaded, max_new_tokens=max_new_tokens, chat=chat, top_k=k)
    return Continuation(heads=checked, mode=mode, before=before, after=after)


# ---------------------------------------------------------------- masked-LM head
def masked_lm(loaded: LoadedModel) -> nn.Module | None:
    """The model with its masked-LM head, sharing the loaded encoder (and its hooks); None without a head.

    Loaded once per model from the same checkpoint; the head's weights must be in it (a head
    transformers would initialise at random is no head).
    """
    model = loaded.model
    if "_viz_masked_lm" in model.__dict__:
        return model.__dict__["_viz_masked_lm"]
    with _INSTALL_LOCK:
        if "_viz_masked_lm" not in model.__dict__:
            model.__dict__["_viz_masked_lm"] = _load_masked_lm(loaded)
    return model.__dict__["_viz_masked_lm"]


def _load_masked_lm(loaded: LoadedModel) -> nn.Module | None:
    if loaded.info.family != "encoder":
        return None
    from transformers import AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        # Loads run one at a time (see viz.models._LOAD_LOCK: transformers patches torch while building).
        with _LOAD_LOCK:
            mlm, info = AutoModelForMaskedLM.from_pretrained(loaded.path, trust_remote_code=False,
                                                             local_files_only=True, output_loading_info=True)
    except Exception:  # noqa: BLE001 - no masked-LM class or files for this model: no head
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = mlm.base_model_prefix
    missing = [key for key in info.get("missing_keys", ()) if not key.startswith(prefix + ".")]
    base = getattr(mlm, prefix, None)
    if missing or base is None or type(base) is not type(loaded.model):
        return None
    # The head reads the shared encoder, so the ablation hooks apply and no weights are doubled.
    setattr(mlm, prefix, loaded.model)
    return mlm.eval()


def has_masked_lm(model: str | LoadedModel | None = None) -> bool:
    """True when the encoder's checkpoint has a masked-LM head (then :func:`masked_top_k` works)."""
    return masked_lm(_loaded(model)) is not None


def masked_top_k(text: str, heads: Iterable[Head], *, model: str | LoadedModel | None = None, mode: str = "zero",
                 k: int = DEFAULT_TOP_K, position: int | None = None) -> MaskedTopK:
    """The masked-LM head's top-k for the first mask token in ``text`` (or the token at ``position``,
    replaced by the mask token), before and after knocking ``heads`` out."""
    loaded = _loaded(model)
    _need(loaded, "encoder")
    _check_mode(mode)
    mlm = masked_lm(loaded)
    if mlm is None:
        raise AblationError(f"'{loaded.info.name}' has no masked-LM head (its checkpoint has no MLM weights)")
    mask_id = loaded.tokenizer.mask_token_id
    if mask_id is None:
        raise AblationError("This model's tokenizer has no mask token")
    prepared = _prepare(loaded, text)
    ids = prepared.inputs["input_ids"].clone()
    if position is None:
        where = (ids[0] == mask_id).nonzero().flatten()
        if len(where) == 0:
            raise AblationError(f"Put the mask token {loaded.tokenizer.mask_token} in the text, or pick a position")
        position = int(where[0])
    if not 0 <= int(position) < ids.shape[1]:
        raise AblationError(f"position {position} is out of range (0..{ids.shape[1] - 1})")
    position = int(position)
    ids[0, position] = mask_id
    inputs = dict(prepared.inputs, input_ids=ids)
    with run_slot(), torch.inference_mode():
        before = mlm(**inputs).logits[0, position].double()
        with ablated(loaded, heads, mode=mode) as checked:
            after = mlm(**inputs).logits[0, position].double()
    p_b, p_a = torch.softmax(before, -1), torch.softmax(after, -1)
    k = _check_k(k, p_b.shape[-1])
    top_b, top_a = torch.topk(p_b, k), torch.topk(p_a, k)
    labels_b, labels_a = _labels_of(loaded, top_b.indices.numpy()[None])[0], \
        _labels_of(loaded, top_a.indices.numpy()[None])[0]
    with loaded.tokenizer_lock:
        tokens = _token_seq(loaded.tokenizer, {"input_ids": ids})
    top = TopK(position=position, before_ids=top_b.indices.numpy(), before_probs=top_b.values.numpy(),
               before_labels=labels_b, before_probs_after=p_a[top_b.indices].numpy(),
               after_ids=top_a.indices.numpy(), after_probs=top_a.values.numpy(), after_labels=labels_a,
               after_probs_before=p_b[top_a.indices].numpy())
    return MaskedTopK(tokens=tokens, heads=checked, mode=mode, top=top, truncated=prepared.truncated)


# ---------------------------------------------------------------- head importance
DEFAULT_PROBES = 32
# Every head's importance at once needs every layer's activations: the gradient keeps them for the
# backward pass (with the (n_heads, T, T) weights of each layer: ~10 GB at 2,048 tokens on the embedded
# LLM), the ablation runs each layer for each head.  Longer texts are scored on their first tokens
# (``truncated`` says how many were left out); under a causal mask those positions are exactly what they
# are in the whole text.
IMPORTANCE_MAX_TOKENS = 512
GRADIENT_OBJECTIVES = {
    "decoder": "|dL/dg| for L = mean over positions of the next-token cross-entropy of the text",
    "mlm": "|dL/dg| for L = mean over the text's tokens (special tokens excluded) of the masked-LM head's "
           "cross-entropy of each token, read from the unmasked input",
    "encoder": "second-order estimate of 1 - cosine of the sentence embedding when the head is removed: "
               "1/2 |d(e/|e|)/dg| squared, its part orthogonal to e, from random probes in one batched "
               "backward pass (the cosine's first derivative is 0 at g = 1)",
}
ABLATION_OBJECTIVES = {
    "decoder": "mean over positions of KL(before || after) of the next-token distribution",
    "encoder": "1 - cosine of the sentence embedding (mean-pooled last hidden states) before/after",
}


def _gradient_grid(loaded: LoadedModel, prepared: _Input, shape: tuple[int, int], probes: int) -> tuple[torch.Tensor, str]:
    """The (n_layers, n_heads) gradient importance and the words for its objective."""
    inputs = prepared.inputs
    if loaded.info.family == "decoder" or masked_lm(loaded) is not None:
        gates = torch.ones(shape, dtype=_dtype(loaded), requires_grad=True)
        with gated(loaded, gates):
            if loaded.info.family == "decoder":
                logits, ids = _logits(loaded, inputs)[0], inputs["input_ids"][0]
                if len(ids) < 2:
                    raise AblationError("The gradient importance of a decoder needs at least 2 tokens")
                loss, objective = torch.nn.functional.cross_entropy(logits[:-1], ids[1:]), "decoder"
            else:
                keep = torch.from_numpy(~np.asarray(prepared.tokens.special, dtype=bool))
                keep = keep if keep.any() else torch.ones_like(keep)
                logits, ids = masked_lm(loaded)(**inputs).logits[0], inputs["input_ids"][0]
                loss, objective = torch.nn.functional.cross_entropy(logits[keep], ids[keep]), "mlm"
            (grad,) = torch.autograd.grad(loss, gates)
        return grad.abs(), GRADIENT_OBJECTIVES[objective]
    return _embedding_taylor(loaded, inputs, shape, probes), GRADIENT_OBJECTIVES["encoder"]


def _embedding_taylor(loaded: LoadedModel, inputs: dict, shape: tuple[int, int], probes: int) -> torch.Tensor:
    """1/2 |P J_h|^2 / |e|^2 for every head h, J_h = de/dg_h, P the projection orthogonal to e.

    1 - cos(e, e + d) = |P d|^2 / (2 |e|^2) to second order, so with d = -J_h this estimates the
    ablation importance.  For unit probes r_i spanning the orthogonal complement, sum_i (r_i . J_h)^2
    = |P J_h|^2: each row of one batch gets its own gates and its own probe, and one backward pass
    gives every (probe, head) derivative.  With ``probes >= d_model - 1`` the probes are an
    orthonormal basis (exact); fewer are random Gaussian (an unbiased estimate, seed 0).
    """
    d_model = loaded.info.d_model
    exact = probes >= d_model - 1
    rows = d_model - 1 if exact else max(1, int(probes))
    gates = torch.ones((rows, *shape), dtype=_dtype(loaded), requires_grad=True)
    with gated(loaded, gates):
        hidden = _hidden(loaded, _repeat(inputs, rows))
        emb = _sentence(hidden, _repeat(inputs, rows)["attention_mask"])                # (rows, D)
        e0 = emb[0].detach()
        u = e0 / e0.norm()
        if exact:
            basis = torch.linalg.qr(torch.cat([u[:, None], torch.eye(d_model, dtype=u.dtype)], 1))[0]
            r = basis[:, 1:].T                                                          # (D-1, D) orthonormal, _|_ u
            weight = 1.0
        else:
            z = torch.randn(rows, d_model, generator=torch.Generator().manual_seed(0), dtype=u.dtype)
            r = z - (z @ u)[:, None] * u[None]
            weight = 1.0 / rows          # E[(z P J)^2] = |P J|^2 for standard normal z
        loss = (r * emb).sum() / e0.norm()
        (grad,) = torch.autograd.grad(loss, gates)                                       # (rows, L, H)
    return 0.5 * weight * (grad ** 2).sum(0)


def _dtype(loaded: LoadedModel) -> torch.dtype:
    dtype = next(loaded.model.parameters()).dtype
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _supported(loaded: LoadedModel) -> None:
    if loaded.info.family not in ("encoder", "decoder"):
        raise AblationError("Head importance is computed for encoder or decoder models, not encoder-decoder ones")


def gradient_importance(text: str, *, model: str | LoadedModel | None = None,
                        probes: int = DEFAULT_PROBES) -> HeadImportance:
    """Gradient importance of every head from one backward pass (Michel et al. 2019).

    Each head's output is multiplied by a gate g_h = 1.  Decoders: |dL/dg_h| for L = mean over
    positions of the next-token cross-entropy.  Encoders with a masked-LM head: the same with the
    MLM cross-entropy of the text's tokens.  Other encoders (sentence embedders such as
    all-MiniLM-L6-v2): the cosine of the sentence embedding to itself is maximal at g = 1, so its first
    derivative says nothing; we report the second-order term, an estimate of 1 - cosine when the head is
    removed (see :func:`_embedding_taylor`; ``probes`` random directions, exact from ``d_model - 1``).
    """
    loaded = _loaded(model, EMBEDDED_LLM)
    _supported(loaded)
    prepared = _prepare(loaded, text, limit=IMPORTANCE_MAX_TOKENS)
    _, layers = _layer_sites(loaded, None)
    start = time.perf_counter()
    # Not inference mode: a graph is needed.  torch.autograd.grad asks for the gates only, so the
    # weights' gradients are neither computed nor stored on the shared model.
    with run_slot(), torch.inference_mode(False), torch.enable_grad():
        grid, objective = _gradient_grid(loaded, prepared, (len(layers), max(s.n_heads for s in layers)), probes)
    return HeadImportance(method="gradient", importance=grid.detach().double().numpy(), objective=objective,
                          tokens=prepared.tokens, seconds=time.perf_counter() - start,
                          truncated=prepared.truncated)


def ablation_passes(layers: Sequence[Site], rows_per_pass: int) -> list[list[Head]]:
    """Every (layer, head) once, in layer order, cut into passes of at most ``rows_per_pass`` heads."""
    heads = [(s.layer, h) for s in layers for h in range(s.n_heads)]
    size = max(1, int(rows_per_pass))
    return [heads[i:i + size] for i in range(0, len(heads), size)]


def fanout_passes(layers: Sequence[Site], rows_per_pass: int) -> list[list[Site]]:
    """Consecutive layers grouped so a pass adds at most ``rows_per_pass`` rows (at least one layer)."""
    passes, current, rows = [], [], 0
    for site in layers:
        if current and rows + site.n_heads > rows_per_pass:
            passes.append(current)
            current, rows = [], 0
        current.append(site)
        rows += site.n_heads
    if current:
        passes.append(current)
    return passes


def _fanout_plan(loaded: LoadedModel, kind: str, layers: Sequence[Site], mode: str) -> tuple[_Plan, list[Head]]:
    """One pass over ``layers``: row 0 stays clean; entering each layer, one copy of row 0 per head
    joins the batch and has that head removed.  Layers before the first run on one row only, and a
    row goes through the layers after its own, never the ones before (they are row 0's)."""
    masks, fanout, order, rows = {}, {}, [], 1
    for site in layers:
        key = (kind, site.layer)
        fanout[key] = site.n_heads
        rows += site.n_heads
        mask = torch.zeros(rows, site.n_heads, dtype=torch.bool)
        mask[torch.arange(rows - site.n_heads, rows), torch.arange(site.n_heads)] = True
        masks[key] = mask
        order += [(site.layer, h) for h in range(site.n_heads)]
    return _Plan(id(loaded.model), masks=masks, mode=mode, rows=rows, fanout=fanout), order


# Memory per pass: ~256 MB of activations, and ~128 MB of logits at a time.
_PASS_BYTES, _LOGIT_BYTES, _MAX_ROWS = 2 ** 28, 2 ** 27, 72


def _auto_rows(loaded: LoadedModel, n_tokens: int, n_heads: int) -> int:
    """Rows per fan-out pass: as many as fit the activation budget, at least one layer's heads."""
    config = loaded.model.config
    d_model = loaded.info.d_model or 512
    d_ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
    per_row = 4 * n_tokens * (2 * n_heads * n_tokens + 4 * d_model + 3 * int(d_ff))
    return max(n_heads, min(_MAX_ROWS, _PASS_BYTES // max(1, per_row)))


def _head_split(loaded: LoadedModel, inputs: dict):
    """(body, unembedding) of a decoder whose logits are unembedding(body(x).last_hidden_state), else None.

    Batched ablation computes the logits a few rows at a time (all rows' logits at once can be
    gigabytes).  Checked once per model against the full forward pass; a family that post-processes
    its logits (soft-capping, scaling) fails the check and gets whole forward passes instead.
    """
    model = loaded.model
    if "_viz_head_split" not in model.__dict__:
        body, head = getattr(model, "base_model", None), model.get_output_embeddings()
        split = None
        if body is not None and body is not model and head is not None:
            full = model(**inputs, use_cache=False).logits.float()
            parts = head(body(**inputs, use_cache=False).last_hidden_state).float()
            if parts.shape == full.shape and torch.allclose(parts, full, rtol=1e-5, atol=1e-5):
                split = (body, head)
        model.__dict__["_viz_head_split"] = split
    return model.__dict__["_viz_head_split"]


class _Scorer:
    """The effect of each batch row's ablation: mean KL over positions (decoders), 1 - cosine (encoders)."""

    def __init__(self, loaded: LoadedModel, inputs: dict):
        self.loaded, self.mask = loaded, inputs["attention_mask"]
        self.decoder = loaded.info.family == "decoder"
        if self.decoder:
            self.split = _head_split(loaded, inputs)
            logp = torch.log_softmax(self._one_row(inputs)[0], -1)                   # (T, V)
            self.p = logp.exp()
            self.neg_entropy = (self.p * logp).sum(-1)                                # (T,)
        else:
            self.reference = _sentence(_hidden(loaded, inputs), self.mask).double()   # (1, D)

    def _one_row(self, inputs: dict) -> torch.Tensor:
        """(1, T, V) logits of one row, through the same path the batched rows take."""
        if self.split is None:
            return _logits(self.loaded, inputs)
        body, head = self.split
        return head(body(**inputs, use_cache=False).last_hidden_state).float()

    def __call__(self, inputs: dict) -> torch.Tensor:
        """(batch,) effects of the rows a forward pass of ``inputs`` gives under the open plan."""
        if not self.decoder:
            emb = _sentence(_hidden(self.loaded, inputs), self.mask).double()          # (B, D)
            return 1 - torch.nn.functional.cosine_similarity(emb, self.reference, dim=-1)
        if self.split is None:
            return self._kl(_logits(self.loaded, inputs))
        body, head = self.split
        hidden = body(**inputs, use_cache=False).last_hidden_state                    # (B, T, D)
        n_tokens, vocab = hidden.shape[1], self.p.shape[-1]
        chunk = max(1, _LOGIT_BYTES // (4 * n_tokens * vocab))
        return torch.cat([self._kl(head(hidden[i:i + chunk]).float()) for i in range(0, hidden.shape[0], chunk)])

    def _kl(self, logits: torch.Tensor) -> torch.Tensor:
        """Mean over positions of KL(p || softmax(logits)) per row, from (R, T, V) logits.

        KL = sum p log p - sum p z + logsumexp(z): no second (R, T, V) array; the cross term is one
        batched matrix product, the log-sum-exp is done in place.
        """
        cross = torch.bmm(logits.transpose(0, 1), self.p.unsqueeze(-1))[..., 0].T    # (R, T)
        top = logits.amax(-1, keepdim=True)
        lse = logits.sub_(top).exp_().sum(-1).log_() + top[..., 0]                    # (R, T)
        return (self.neg_entropy - cross + lse).clamp(min=0).mean(-1)


def ablation_importance(text: str, *, model: str | LoadedModel | None = None, mode: str = "zero",
                        rows_per_pass: int | None = None, fanout: bool = True,
                        on_progress: Callable[[int, int], None] | None = None) -> HeadImportance:
    """The effect of removing each head alone, for every head.

    Decoders: mean over positions of KL(before || after) of the next-token distribution; encoders:
    1 - cosine of the sentence embedding.  Many ablations share one forward pass, one per batch row:
    with ``fanout`` (default) the text enters as one row and, at each layer, one copy per head joins
    the batch with that head removed, so no row recomputes the layers before its own; passes take
    whole layers, up to ``rows_per_pass`` rows (default: what fits ~256 MB).  ``fanout=False`` repeats
    the input, one row per head, from the embeddings on.  ``rows_per_pass=1``: one forward pass per
    head, the baseline.  ``on_progress(done, total)`` (heads) is called after every pass.
    """
    loaded = _loaded(model, EMBEDDED_LLM)
    _supported(loaded)
    _check_mode(mode)
    prepared = _prepare(loaded, text, limit=IMPORTANCE_MAX_TOKENS)
    kind, layers = _layer_sites(loaded, None)
    n_layers, n_heads = len(layers), max(s.n_heads for s in layers)
    layer_index = {s.layer: i for i, s in enumerate(layers)}
    inputs = prepared.inputs
    rows = int(rows_per_pass) if rows_per_pass else _auto_rows(loaded, inputs["input_ids"].shape[1], n_heads)
    importance = np.zeros((n_layers, n_heads), dtype=np.float64)
    total, done = sum(s.n_heads for s in layers), 0
    start = time.perf_counter()

    def record(heads: Sequence[Head], effects: torch.Tensor) -> None:
        nonlocal done
        for (layer, head), value in zip(heads, effects.tolist()):
            importance[layer_index[layer], head] = value
        done += len(heads)
        if on_progress is not None:
            on_progress(done, total)

    with run_slot(), torch.inference_mode():
        score = _Scorer(loaded, inputs)
        if rows > 1 and fanout:
            for group in fanout_passes(layers, rows):
                plan, heads = _fanout_plan(loaded, kind, group, mode)
                with _active(plan):
                    record(heads, score(inputs)[1:])
        else:
            for heads in ablation_passes(layers, rows):
                with ablated_rows(loaded, [[head] for head in heads], mode=mode):
                    record(heads, score(_repeat(inputs, len(heads))))
    return HeadImportance(method="ablation", importance=importance,
                          objective=ABLATION_OBJECTIVES["decoder" if loaded.info.family == "decoder" else "encoder"],
                          tokens=prepared.tokens, mode=mode, seconds=time.perf_counter() - start,
                          truncated=prepared.truncated)


def head_importance(text: str, *, method: str = "gradient", model: str | LoadedModel | None = None,
                    mode: str = "zero", on_progress: Callable[[int, int], None] | None = None,
                    rows_per_pass: int | None = None) -> HeadImportance:
    """Importance of every head by ``method`` (``"gradient"`` or ``"ablation"``)."""
    if method == "gradient":
        result = gradient_importance(text, model=model)
        if on_progress is not None:
            on_progress(result.importance.size, result.importance.size)
        return result
    if method == "ablation":
        return ablation_importance(text, model=model, mode=mode, on_progress=on_progress,
                                   rows_per_pass=rows_per_pass)
    raise AblationError(f"unknown importance method '{method}': choose {' or '.join(METHODS)}")


__all__ = ["AblationError", "Continuation", "Site", "ablated", "ablated_capture", "ablated_rows",
           "ablation_importance", "ablation_passes", "active", "continuation", "decoder_effect", "effect",
           "encoder_effect", "gated", "gradient_importance", "has_masked_lm", "head_importance", "install",
           "masked_lm", "masked_top_k", "output_projection", "output_projections"]
