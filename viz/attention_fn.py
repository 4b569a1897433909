"""Our attention implementation: the model family's own eager attention, plus recording.

transformers 5.x dispatches every attention layer through
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]``.  We register one
function under :data:`NAME` that calls the family's own ``eager_attention_forward``
(so T5's position bias, GPT-2's dtype handling etc. stay exactly as written) and,
*only when the calling thread has opened* :func:`recording`, copies q, k, v,
the mask and the pattern out.  The model is shared by every session: the
recorder lives in a ContextVar, so one session's recording is invisible to
another's forward pass, and nothing is left behind when the ``with`` ends.
"""
from __future__ import annotations

import contextlib
import contextvars
import re
import sys

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

NAME = "viz_eager"

_RECORDER: contextvars.ContextVar = contextvars.ContextVar("viz_recorder", default=None)
_CROSS_NAMES = ("crossattention", "encoder_attn", "encdecattention", "cross_attn", "cross_attention")


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

    Cross attention is named crossattention / encoder_attn / EncDecAttention in
    the families we know; the layer is the first integer in the module path.
    """
    sites = {}
    for name, module in model.named_modules():
        if not _is_attention_module(module):
            continue
        lower = name.lower()
        numbers = re.findall(r"\.(\d+)\.", f".{name}.")
        if not numbers:
            continue
        layer = int(numbers[0])
        if any(part in lower for part in _CROSS_NAMES):
            kind = "cross"
        elif family == "encoder":
            kind = "encoder"
        elif family == "decoder":
            kind = "decoder"
        else:
            kind = "encoder" if "encoder" in lower.split(".")[0] or lower.startswith("model.encoder") \
                or ".encoder." in f".{lower}" else "decoder"
        sites[id(module)] = (kind, layer)
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

    def _site(self, module):
        site = self.sites.get(id(module))
        if site is None or (self.wanted is not None and site not in self.wanted):
            return None
        return site

    def record(self, module, query, key, value, attention_mask, scaling, weights, kwargs):
        site = self._site(module)
        if site is None or site in self.records:
            return  # generation runs the decoder many times; keep the first full pass
        n_heads = query.shape[1]
        if scaling is None:
            scaling = query.size(-1) ** -0.5
        k, v = _repeat_kv(key, n_heads), _repeat_kv(value, n_heads)
        q32, k32, v32 = query[0].float(), k[0].float(), v[0].float()
        scores = torch.matmul(q32, k32.transpose(1, 2)) * float(scaling)
        bias = kwargs.get("position_bias")
        if bias is not None:
            scores = scores + bias[0, :, -q32.shape[1]:, : k32.shape[1]].float()
        t_q, t_k = q32.shape[1], k32.shape[1]
        if attention_mask is not None and attention_mask.dim() == 4:
            m = attention_mask[0, 0, -t_q:, :t_k]
            allowed = (m == 0) if m.dtype != torch.bool else m
            allowed = allowed.cpu().numpy().astype(bool)
        else:
            allowed = np.ones((t_q, t_k), dtype=bool)
        pattern = weights[0].float()
        self.records[site] = dict(
            query=q32.cpu().numpy(), key=k32.cpu().numpy(), value=v32.cpu().numpy(),
            scores=scores.cpu().numpy(), mask=np.broadcast_to(allowed, (t_q, t_k)).copy(),
            scaling=float(scaling), pattern=pattern.cpu().numpy(),
            head_output=torch.matmul(pattern, v32).cpu().numpy(),
            value_out=_value_out(module, v32),
        )


def _output_projection(module):
    """The head-mixing output projection W_O as a (n_heads*d_head, d_model) tensor, or None."""
    from transformers.pytorch_utils import Conv1D
    candidates = [getattr(module, n, None) for n in ("o_proj", "out_proj", "o", "c_proj", "dense")]
    parent_output = getattr(getattr(module, "_viz_parent", None), "output", None)
    if parent_output is not None:
        candidates.append(getattr(parent_output, "dense", None))
    for proj in candidates:
        if isinstance(proj, Conv1D):
            return proj.weight            # Conv1D stores (in, out)
        if isinstance(proj, nn.Linear):
            return proj.weight.T          # Linear stores (out, in)
    return None


def _value_out(module, v32: torch.Tensor):
    """f(x_j) = v_j W_O^h for each head (Kobayashi et al. 2020), or None if W_O is not found."""
    w_o = _output_projection(module)
    if w_o is None:
        return None
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
        site = recorder._site(module)
        if site is None or site in recorder.hidden:
            return
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if isinstance(hidden, torch.Tensor):
            recorder.hidden[site] = hidden[0].float().cpu().numpy()

    for module in model.modules():
        if id(module) in sites:
            module.register_forward_pre_hook(hook, with_kwargs=True)


@contextlib.contextmanager
def recording(sites: dict, wanted=None):
    """Record internals of the wanted (kind, layer) sites for forward passes in this context."""
    recorder = Recorder(sites, wanted)
    token = _RECORDER.set(recorder)
    try:
        yield recorder
    finally:
        _RECORDER.reset(token)
