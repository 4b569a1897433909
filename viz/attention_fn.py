"""Our attention implementation: the model family's own eager attention, plus recording.

transformers 5.x dispatches every attention layer through
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``.  We register one
function under :data:`NAME` that calls the family's own ``eager_attention_forward``
(so T5's position bias, GPT-2's dtype handling etc. stay exactly as written) and,
*only when the calling thread has opened* :func:`recording`, copies q, k, v,
the mask and the pattern out.  The model is shared by every session: the
recorder lives in a ContextVar, so one session's recording is invisible to
another's forward pass, and nothing is left behind when the ``with`` ends.

Families that compute attention in their own code (GPT-Neo, GPT-J, BLOOM, Falcon,
MPNet, DeBERTa-v2: see :mod:`viz.families`) never call the registry; for them
:func:`prepare` installs a recipe at load (a wrapper of GPT-Neo's/GPT-J's ``_attn``,
or a forward hook that re-derives q, k and the position bias with the module's own
projections), equally inert outside :func:`recording`.  Every recorded layer is
checked: ``softmax(where(mask, scores, -inf))`` must give back the weights the model
returned, or the layer goes to ``Recorder.problems`` instead of being shown wrong.
"""
from __future__ import annotations

import contextlib
import contextvars
import inspect
import re
import sys

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from viz import families

NAME = "viz_eager"

_RECORDER: contextvars.ContextVar = contextvars.ContextVar("viz_recorder", default=None)
# A site whose recording ends the forward pass (see stop_after): per context, like the recorder.
_STOP_AFTER: contextvars.ContextVar = contextvars.ContextVar("viz_stop_after", default=None)


class SiteRecorded(Exception):
    """Raised inside the forward pass once the site asked for by :func:`stop_after` is recorded:
    the later layers are not needed, so they are not run. Carries the recorder."""

    def __init__(self, recorder):
        super().__init__("site recorded")
        self.recorder = recorder


@contextlib.contextmanager
def stop_after(site: tuple[str, int]):
    """End forward passes in this context as soon as ``site`` (kind, layer) has been recorded."""
    token = _STOP_AFTER.set(site)
    try:
        yield
    finally:
        _STOP_AFTER.reset(token)


def stopping() -> bool:
    """True inside :func:`stop_after`: the forward pass ends at one recorded site."""
    return _STOP_AFTER.get() is not None


def _generic_eager(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Fallback for families whose modeling file has no eager_attention_forward."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    key, value = _repeat_kv(key, query.shape[1]), _repeat_kv(value, query.shape[1])
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask[..., : key.shape[-2]]
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    out = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return out, weights


def _repeat_kv(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Grouped-query attention: repeat key/value heads to match the query heads."""
    if x.shape[1] == n_heads:
        return x
    return x.repeat_interleave(n_heads // x.shape[1], dim=1)


def _family_eager(module):
    fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    return fn or _generic_eager


def viz_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    out, weights = _family_eager(module)(module, query, key, value, attention_mask,
                                         scaling=scaling, dropout=dropout, **kwargs)
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.record(module, query, key, value, attention_mask, scaling, weights, kwargs)
    return out, weights


AttentionInterface.register(NAME, viz_attention)
AttentionMaskInterface.register(NAME, eager_mask)


def attention_sites(model, family: str) -> dict:
    """Map id(attention module) -> (kind, layer) from module names.

    Cross attention is named as in :data:`viz.families.CROSS_ATTENTION_NAMES`; the layer is
    the first integer in the module path.  A module that serves several layers (ALBERT)
    maps to its first layer and carries them all, in call order, in ``_viz_layers``.
    """
    sites = {}
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name, module in model.named_modules():
        if not _is_attention_module(module):
            continue
        lower = name.lower()
        numbers = re.findall(r"\.(\d+)\.", f".{name}.")
        if not numbers:
            continue
        layer = int(numbers[0])
        if families.is_cross_attention(lower):
            kind = "cross"
        elif family == "encoder":
            kind = "encoder"
        elif family == "decoder":
            kind = "decoder"
        else:
            kind = "encoder" if "encoder" in lower.split(".")[0] or lower.startswith("model.encoder") \
                or ".encoder." in f".{lower}" else "decoder"
        layers = families.shared_layers(text_config, layer) if text_config is not None else (layer,)
        if len(layers) > 1:
            # Through __dict__, like _viz_parent: plain data on the module, read by Recorder.enter.
            module.__dict__["_viz_layers"] = tuple((kind, shared) for shared in layers)
        sites[id(module)] = (kind, layers[0] if layers else layer)
    return sites


def _is_attention_module(module) -> bool:
    """Modules that call the attention interface: the family's *Attention classes."""
    cls = type(module).__name__.lower()
    if not cls.endswith("attention") or cls.endswith(("blockattention", "layerattention")):
        return False
    # BERT wraps BertSelfAttention in BertAttention; keep the inner one (it has the projections).
    return not any(_is_attention_child(c) for c in module.children())


def _is_attention_child(module) -> bool:
    return type(module).__name__.lower().endswith("attention")


class Recorder:
    """Collects numpy copies of what each wanted attention layer computed."""

    def __init__(self, sites: dict, wanted=None):
        self.sites = sites
        self.wanted = None if wanted is None else set(wanted)
        self.records: dict = {}   # (kind, layer) -> dict of arrays
        self.hidden: dict = {}    # (kind, layer) -> (T_q, d_model)
        # (kind, layer) -> why the recorded numbers did not give back the model's weights
        self.problems: dict = {}
        self._calls: dict = {}    # id(shared module) -> calls so far in this context
        self._current: dict = {}  # id(shared module) -> the (kind, layer) of its running call

    def enter(self, module):
        """Called once as each attention call starts (forward pre-hook): the wanted site, or None.

        A module shared by several layers (ALBERT) runs once per layer, in layer order: its
        n-th call is its n-th layer (modulo, so a second forward pass starts over).
        """
        layers = module.__dict__.get("_viz_layers")
        if layers:
            n = self._calls.get(id(module), 0)
            self._calls[id(module)] = n + 1
            self._current[id(module)] = layers[n % len(layers)]
        return self._site(module)

    def _site(self, module):
        site = self._current.get(id(module)) or self.sites.get(id(module))
        if site is None or (self.wanted is not None and site not in self.wanted):
            return None
        return site

    def record(self, module, query, key, value, attention_mask, scaling, weights, kwargs):
        """Copy one attention call out: q, k, v (B, H or H_kv, T, d_head), the mask the model
        added (additive or bool, 4-D), and ``kwargs``' ``position_bias`` and ``softcap``."""
        site = self._site(module)
        if site is None or site in self.records or site in self.problems:
            return  # generation runs the decoder many times; keep the first full pass
        n_heads = query.shape[1]
        if scaling is None:
            scaling = query.size(-1) ** -0.5
        k, v = _repeat_kv(key, n_heads), _repeat_kv(value, n_heads)
        q32, k32, v32 = query[0].float(), k[0].float(), v[0].float()
        t_q, t_k = q32.shape[1], k32.shape[1]
        scores = torch.matmul(q32, k32.transpose(1, 2)) * float(scaling)
        bias = kwargs.get("position_bias")
        if bias is not None:
            scores = scores + bias[0, :, -t_q:, :t_k].float()
        softcap = kwargs.get("softcap")
        if softcap:   # Gemma-2: logits squashed into (-cap, cap) before the mask
            scores = torch.tanh(scores / softcap) * softcap
        allowed = torch.ones((t_q, t_k), dtype=torch.bool, device=scores.device)
        if attention_mask is not None and attention_mask.dim() == 4:
            m = attention_mask[0, :, -t_q:, :t_k]           # (1 or n_heads, T_q, T_k)
            if m.dtype == torch.bool:
                allowed = m.all(dim=0)
            else:
                # Masked keys carry dtype-min (or -inf); anything finite left in an additive
                # mask is a bias the model adds (Falcon puts ALiBi there, per head), so it
                # belongs to the scores.
                m = m.float()
                keep = m > torch.finfo(torch.float32).min / 2
                scores = scores + torch.where(keep, m, torch.zeros_like(m))
                allowed = keep.all(dim=0)
        allowed = torch.broadcast_to(allowed, (t_q, t_k))
        pattern = weights[0].float()
        problem = _check(scores, allowed, pattern, weights.dtype)
        if problem:
            self.problems[site] = problem
            if _STOP_AFTER.get() == site:
                raise SiteRecorded(self)
            return
        self.records[site] = dict(
            query=q32.cpu().numpy(), key=k32.cpu().numpy(), value=v32.cpu().numpy(),
            scores=scores.cpu().numpy(), mask=allowed.cpu().numpy().copy(),
            scaling=float(scaling), pattern=pattern.cpu().numpy(),
            head_output=torch.matmul(pattern, v32).cpu().numpy(),
            value_out=_value_out(module, v32),
            softcap=float(softcap) if softcap else None,
        )
        if _STOP_AFTER.get() == site:
            raise SiteRecorded(self)


class CompactRecorder(Recorder):
    """Long inputs: keep per layer only what its pattern is recomputed from, never the pattern.

    Records the post-rotary queries, the KV heads' keys (GQA: not repeated) and the mask when it
    is not the block's causal rule, as :class:`viz.result.LayerQK`; checks on CHECK_ROWS query rows
    that :func:`viz.result.layer_pattern` gives back the model's weights (the same code that
    recomputes a layer later); and hands the weights to ``summarize(site, weights)`` (torch,
    (n_heads, T_q, T_k), then the layer's query, key, scaling and softcap) for streamed statistics
    before they are dropped.  Scores the recompute
    cannot reproduce (a position bias, a bias folded into the mask) go to ``problems``.
    """

    def __init__(self, sites: dict, *, causal: bool, kv_head, summarize=None):
        super().__init__(sites, None)
        self.causal = causal
        self.kv_head = kv_head
        self.summarize = summarize
        self.max_error = 0.0    # largest |recomputed - model| seen by the checks

    def enter(self, module):
        super().enter(module)   # keeps a shared module's layer count (ALBERT)
        return None             # and no copy of each layer's hidden states: long inputs do not need them

    def record(self, module, query, key, value, attention_mask, scaling, weights, kwargs):
        from viz.result import LayerQK, layer_pattern
        site = self._site(module)
        if site is None or site in self.records or site in self.problems:
            return
        if kwargs.get("position_bias") is not None:
            self.problems[site] = "a position bias is added to the scores"
            return
        if scaling is None:
            scaling = query.size(-1) ** -0.5
        t_q, t_k = query.shape[2], key.shape[2]
        allowed = torch.ones((t_q, t_k), dtype=torch.bool)
        if attention_mask is not None and attention_mask.dim() == 4:
            m = attention_mask[0, :, -t_q:, :t_k]
            if m.dtype == torch.bool:
                allowed = m.all(dim=0)
            else:
                m = m.float()
                keep = m > torch.finfo(torch.float32).min / 2
                if bool((m.masked_fill(~keep, 0.0) != 0).any()):
                    self.problems[site] = "the mask carries a bias (ALiBi)"
                    return
                allowed = keep.all(dim=0)
        allowed = torch.broadcast_to(allowed.cpu(), (t_q, t_k))
        rule = torch.ones((t_q, t_k), dtype=torch.bool)
        if self.causal:
            rule = torch.arange(t_k)[None, :] <= torch.arange(t_q)[:, None] + (t_k - t_q)
        mask = None if torch.equal(allowed, rule) else np.packbits(allowed.numpy(), axis=-1)
        softcap = kwargs.get("softcap")
        layer = LayerQK(query=query[0].float().cpu().numpy().copy(), key=key[0].float().cpu().numpy().copy(),
                        scaling=float(scaling), softcap=float(softcap) if softcap else None, mask=mask)
        pattern = weights[0]
        rows = np.unique(np.linspace(0, t_q - 1, min(t_q, CHECK_ROWS)).round().astype(np.int64))
        ours = layer_pattern(layer, self.kv_head, causal=self.causal, rows=rows)
        error = float(np.abs(ours - pattern[:, torch.from_numpy(rows)].float().cpu().numpy()).max())
        self.max_error = max(self.max_error, error)
        if not error <= CHECK_TOLERANCE.get(weights.dtype, CHECK_TOLERANCE_HALF):
            self.problems[site] = f"the recomputed weights differ from the model's by {error:.2g}"
            return
        if self.summarize is not None:
            self.summarize(site, pattern.float(), query[0], key[0], float(scaling), layer.softcap)
        self.records[site] = layer


@contextlib.contextmanager
def compact_recording(sites: dict, *, causal: bool, kv_head, summarize=None):
    """Like :func:`recording`, with a :class:`CompactRecorder` (long inputs)."""
    recorder = CompactRecorder(sites, causal=causal, kv_head=kv_head, summarize=summarize)
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)


# How far softmax(where(mask, scores, -inf)) may be from the model's own weights: float32
# models agree to ~1e-7; half precision rounds the weights themselves to ~1e-3.
CHECK_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-6}
CHECK_TOLERANCE_HALF = 2e-2


CHECK_ROWS = 128   # query rows checked per layer on long inputs, evenly spaced (all rows below this)


def _check(scores: torch.Tensor, allowed: torch.Tensor, pattern: torch.Tensor, dtype) -> str:
    """"" when softmax(where(allowed, scores, -inf)) gives back the returned pattern, else what differs.

    It runs on every recorded layer, so long inputs are checked on CHECK_ROWS evenly spaced query
    rows (first and last included): a family quirk the recorder misses (a softcap, a bias, a
    window) shows on most rows, and the check stays a few ms per layer at 512 tokens.
    """
    if scores.shape != pattern.shape:
        return f"scores {tuple(scores.shape)} do not match the weights {tuple(pattern.shape)}"
    if not pattern.numel():
        return ""
    if scores.shape[-2] > CHECK_ROWS:
        rows = torch.linspace(0, scores.shape[-2] - 1, CHECK_ROWS).round().long().unique()
        scores, allowed, pattern = scores[:, rows], allowed[rows], pattern[:, rows]
    ours = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)  # all-masked rows: 0
    error = float((ours - pattern).abs().max())
    if not error <= CHECK_TOLERANCE.get(dtype, CHECK_TOLERANCE_HALF):
        return f"softmax(scores + mask) differs from the model's weights by {error:.2g}"
    return ""


def _value_out(module, v32: torch.Tensor):
    """f(x_j) = v_j W_O^h for each head (Kobayashi et al. 2020), or None if W_O is not found."""
    projection = families.output_projection(module)
    if projection is None:
        return None
    w_o = projection.weight()                              # (n_heads * d_head, d_model)
    n_heads, _, d_head = v32.shape
    if w_o.shape[0] != n_heads * d_head:
        return None
    w = w_o.float().reshape(n_heads, d_head, -1)          # (H, d_head, d_model)
    return torch.einsum("hjd,hdm->hjm", v32, w).cpu().numpy()


def link_parents(model) -> None:
    """Give attention modules a reference to their parent (BERT keeps W_O in the sibling 'output')."""
    for _, parent in model.named_modules():
        for child in parent.children():
            if _is_attention_module(child):
                # Through __dict__: setattr would register the parent as a submodule (a cycle).
                child.__dict__["_viz_parent"] = parent


def hidden_hooks(model, sites: dict):
    """Forward pre-hooks that copy each attention layer's input, only while recording.

    Registered once at load; they do nothing unless the *calling* context has a
    recorder, so they are safe on a model shared by many sessions.
    """
    def hook(module, args, kwargs):
        recorder = _RECORDER.get()
        if recorder is None:
            return
        site = recorder.enter(module)
        if site is None or site in recorder.hidden:
            return
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if isinstance(hidden, torch.Tensor):
            recorder.hidden[site] = hidden[0].float().cpu().numpy()

    for module in model.modules():
        if id(module) in sites:
            module.register_forward_pre_hook(hook, with_kwargs=True)


# ---------------------------------------------------------------- families with their own attention code
# Each recipe turns one call of a family's attention module into the arguments of
# Recorder.record: (query, key, value, mask, scaling, weights, {"position_bias": ...}).
# Recipes read what the module itself computes with (its projections, its buffers), so
# the self-check in Recorder.record is what keeps them honest when a family changes.
def _causal_window(module, query, key, attention_mask):
    """GPT-Neo's own causal (and, on local layers, sliding-window) mask, folded into one additive mask."""
    q_len, k_len = query.size(-2), key.size(-2)
    allowed = module.bias[:, :, k_len - q_len:k_len, :k_len]
    mask = torch.zeros(allowed.shape, dtype=torch.float32, device=query.device)
    mask = mask.masked_fill(~allowed, torch.finfo(torch.float32).min)
    return mask if attention_mask is None else mask + attention_mask.float()


def _wrap_attn_method(module, recipe: str, scaling: float | None) -> None:
    """GPT-Neo and GPT-J compute attention in ``module._attn(query, key, value, attention_mask)``,
    after their rotary embedding: wrap it on this instance, so q and k arrive as the model uses them."""
    original = module._attn

    def _attn(query, key, value, attention_mask=None):
        out, weights = original(query, key, value, attention_mask)
        recorder = _RECORDER.get()
        if recorder is not None:
            if recipe == "gpt_neo":
                mask, factor = _causal_window(module, query, key, attention_mask), scaling
            else:   # gptj: q.k / sqrt(d_head), the causal mask arrives in attention_mask
                mask, factor = attention_mask, 1.0 / float(module.scale_attn)
            recorder.record(module, query, key, value, mask, factor, weights, {})
        return out, weights

    module.__dict__["_attn"] = _attn   # an instance attribute, not a submodule


def _heads(x, n_heads: int):
    """(B * H, T, d) or (B, T, H * d) -> (B, H, T, d)."""
    if x.dim() == 3 and x.shape[0] % n_heads == 0 and x.shape[0] != 1:
        return x.reshape(-1, n_heads, x.shape[-2], x.shape[-1])
    return x.reshape(x.shape[0], x.shape[1], n_heads, -1).transpose(1, 2)


def _bloom(module, a, weights):
    q, k, v = module._reshape(module.query_key_value(a["hidden_states"]))     # (B, H, T, d) each
    bias = a["alibi"].reshape(q.shape[0], module.num_heads, 1, -1)             # ALiBi: per-head slope * key_pos
    return q, k, v, a.get("attention_mask"), module.inv_norm_factor, {"position_bias": bias}


def _falcon(module, a, weights):
    fused = module.query_key_value(a["hidden_states"])
    q, k, v = module._split_heads(fused)                                       # (B, T, H or H_kv, d)
    batch, t_q = q.shape[0], q.shape[1]
    n_kv = module.num_heads if module.new_decoder_architecture else module.num_kv_heads
    q = q.transpose(1, 2).reshape(batch, module.num_heads, t_q, module.head_dim)
    k = k.transpose(1, 2).reshape(batch, n_kv, t_q, module.head_dim)
    v = v.transpose(1, 2).reshape(batch, n_kv, t_q, module.head_dim)
    alibi = a.get("alibi")
    if alibi is None:
        cos, sin = a["position_embeddings"]
        q, k = sys.modules[type(module).__module__].apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v, a.get("attention_mask"), 1.0 / module.head_dim ** 0.5, {}
    # Falcon with ALiBi scales the bias too: (q.k + alibi) * inv_norm_factor.
    bias = alibi.reshape(batch, module.num_heads, 1, -1) * module.inv_norm_factor
    return q, k, v, a.get("attention_mask"), module.inv_norm_factor, {"position_bias": bias}


def _mpnet(module, a, weights):
    hidden = a["hidden_states"]
    n = module.num_attention_heads
    q, k, v = (_heads(proj(hidden), n) for proj in (module.q, module.k, module.v))
    return q, k, v, a.get("attention_mask"), 1.0 / module.attention_head_size ** 0.5, \
        {"position_bias": a.get("position_bias")}


def _deberta_v2(module, a, weights):
    hidden = a["hidden_states"]
    queries = a.get("query_states")
    n = module.num_attention_heads
    q = module.transpose_for_scores(module.query_proj(hidden if queries is None else queries), n)   # (B*H, T, d)
    k = module.transpose_for_scores(module.key_proj(hidden), n)
    v = module.transpose_for_scores(module.value_proj(hidden), n)
    scale_factor = 1 + ("c2p" in module.pos_att_type) + ("p2c" in module.pos_att_type)
    scaling = 1.0 / float((q.size(-1) * scale_factor) ** 0.5)
    extra = {}
    if module.relative_attention:   # disentangled content-position terms, from DeBERTa's own method
        rel = module.disentangled_attention_bias(q, k, a.get("relative_pos"), module.pos_dropout(a["rel_embeddings"]),
                                                 scale_factor)
        if rel is not None:
            extra["position_bias"] = _heads(rel, n)
    mask = a.get("attention_mask")
    return _heads(q, n), _heads(k, n), _heads(v, n), None if mask is None else mask.bool(), scaling, extra


def _arguments(module, args, kwargs) -> dict:
    """The module's forward arguments by name, whether the caller passed them by position or keyword."""
    signature = inspect.signature(type(module).forward)
    bound = signature.bind(module, *args, **kwargs)
    named = dict(bound.arguments)
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            named.update(named.pop(name, {}))
    return named


_HOOK_RECIPES = {"bloom": _bloom, "falcon": _falcon, "mpnet": _mpnet, "deberta_v2": _deberta_v2}


def _recipe_hook(recipe):
    def hook(module, args, kwargs, output):
        recorder = _RECORDER.get()
        site = None if recorder is None else recorder._site(module)
        if site is None or site in recorder.records or site in recorder.problems:
            return   # not recording, not wanted, or a later generation step of a recorded layer
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if not isinstance(weights, torch.Tensor):
            return   # the model was not asked for its weights: nothing to check against
        arguments = _arguments(module, args, kwargs)
        with torch.no_grad():
            q, k, v, mask, scaling, extra = recipe(module, arguments, weights)
        recorder.record(module, q, k, v, mask, scaling, weights, extra)
    return hook


def prepare(model, family: str) -> dict:
    """Make a freshly loaded model recordable; return its sites (see :func:`attention_sites`).

    Links parents (BERT keeps W_O beside the attention), installs the input pre-hooks and,
    for families with their own attention code, their recipe.  Everything installed is
    inert unless the calling context is inside :func:`recording`.
    """
    sites = attention_sites(model, family)
    link_parents(model)
    hidden_hooks(model, sites)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    fam = families.family(model_type)
    recipe = fam.internals
    for module in model.modules():
        if id(module) not in sites:
            continue
        if recipe in ("gpt_neo", "gptj") and hasattr(module, "_attn"):
            _wrap_attn_method(module, recipe, fam.scaling)
        elif recipe in _HOOK_RECIPES:
            module.register_forward_hook(_recipe_hook(_HOOK_RECIPES[recipe]), with_kwargs=True)
    return sites


def internals_support(model, *, registry_loaded: bool) -> tuple[bool, str]:
    """(True, "") when this model's q, k, v and scores can be recorded, else (False, why not).

    ``registry_loaded``: the model accepted our attention implementation (:data:`NAME`).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    fam = families.family(model_type)
    if fam.internals in families.OWN_CODE_RECIPES:
        return True, ""
    supported, reason = families.internals_support(model_type)
    if not supported:
        return False, reason
    if not registry_loaded:
        return False, (f"{model_type} models do not accept a custom attention function, so only their "
                       f"attention weights can be shown, not the q, k, v and scores behind them")
    return True, ""


@contextlib.contextmanager
def recording(sites: dict, wanted=None):
    """Record internals of the wanted (kind, layer) sites for forward passes in this context."""
    recorder = Recorder(sites, wanted)
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)
