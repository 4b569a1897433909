"""Per-family facts about Hugging Face models, as data: the one place to add a model-family quirk.

What lives here (pure Python, no torch, so analysis modules can read the token markers too):

* config attribute names: layer counts, head counts, width, key/value heads, trained positions;
* module names: cross-attention modules, the head-mixing output projection of an attention layer;
* tokenizer subword markers (WordPiece ``##``, byte-level BPE ``Ġ``, SentencePiece ``▁``);
* :data:`FAMILIES`, keyed by ``config.model_type``: inputs a family does not take, the RoBERTa
  position reserve, attention modules shared by several layers (ALBERT), and how the attention
  internals (q, k, v, scores) of the family are recorded, or why they cannot be.

A family missing from :data:`FAMILIES` gets :data:`DEFAULT`: its attention goes through
transformers' attention-function registry (most families since transformers 4.48), which
:mod:`viz.attention_fn` records, and every recorded layer is checked against the weights the
model returned, so an unknown quirk shows up as a clear notice, not as wrong numbers.
"""
from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------- config attribute names
# The first attribute present (and > 0) wins; families name the same fact differently.
LAYER_COUNT_ATTRS = ("num_hidden_layers", "encoder_layers", "num_layers", "n_layer", "n_layers")
DECODER_LAYER_COUNT_ATTRS = ("decoder_layers", "num_decoder_layers")
HEAD_COUNT_ATTRS = ("num_attention_heads", "encoder_attention_heads", "num_heads", "n_head", "n_heads")
WIDTH_ATTRS = ("hidden_size", "d_model", "n_embd", "dim")
KV_HEAD_COUNT_ATTRS = ("num_key_value_heads", "num_kv_heads")
# Trained positions: the model fails past these (GPT-2 with an IndexError, BERT with a shape error).
POSITION_LIMIT_ATTRS = ("max_position_embeddings", "n_positions", "max_seq_len")
# tokenizer.model_max_length is 1e30 ("no limit") for many checkpoints; beyond this it means nothing.
TOKENIZER_LIMIT_SANE = 1_000_000

# ---------------------------------------------------------------- module names
# Cross-attention modules, lower-cased, as named by BERT-as-decoder, BART/Marian, T5, others.
CROSS_ATTENTION_NAMES = ("crossattention", "encoder_attn", "encdecattention", "cross_attn", "cross_attention")
# The head-mixing output projection W_O on an attention module: Llama/Mistral/Gemma `o_proj`,
# BART/Marian/GPT-Neo/GPT-J `out_proj`, T5/MPNet `o`, GPT-2 `c_proj`, BLOOM/Falcon/Phi/ALBERT `dense`,
# DistilBERT `out_lin`.
OUTPUT_PROJECTION_NAMES = ("o_proj", "out_proj", "o", "c_proj", "dense", "out_lin")
# BERT, RoBERTa, ELECTRA, DeBERTa keep W_O beside the self-attention: parent.output.dense.
PARENT_OUTPUT_PROJECTION = ("output", "dense")
# The norm a decoder applies to the residual stream before its unembedding (the logit lens uses it),
# as attribute paths from the *ForCausalLM model: Llama/Mistral/Qwen/SmolLM/Gemma `model.norm`,
# GPT-2/GPT-J `transformer.ln_f`, Phi `model.final_layernorm`, GPT-NeoX/Pythia, OPT, Falcon/BLOOM,
# Mamba-like backbones.
FINAL_NORM_PATHS = ("model.norm", "transformer.ln_f", "model.final_layernorm", "gpt_neox.final_layer_norm",
                    "model.decoder.final_layer_norm", "transformer.norm_f", "backbone.norm_f")

# ---------------------------------------------------------------- tokenizer markers
CONTINUATION_MARKER = "##"            # WordPiece: this piece continues the previous word
SPACE_MARKERS = ("Ġ", "▁")            # byte-level BPE (GPT-2, RoBERTa, BART) / SentencePiece (T5, Marian)
BPE_CONTINUATION_SUFFIX = "@@"        # subword-nmt BPE (older Marian/FSMT vocabularies): word goes on
# Every marker that is not part of the text (newline piece and end-of-word of some BPEs included).
TOKEN_MARKERS = (CONTINUATION_MARKER, *SPACE_MARKERS, "Ċ", "</w>")

# ---------------------------------------------------------------- how internals are recorded
REGISTRY = "registry"      # attention goes through transformers' AttentionInterface (viz_eager)
# Families that compute attention in their own code: viz.attention_fn has one recipe each.
OWN_CODE_RECIPES = ("gpt_neo", "gptj", "bloom", "falcon", "mpnet", "deberta_v2")


@dataclass(frozen=True)
class Family:
    """What differs about one model family (``config.model_type``)."""

    drops_token_type_ids: bool = False   # the tokenizer returns them but the model has no segment embedding
    position_reserve: bool = False       # RoBERTa-like: positions start after pad_token_id
    shared_attention: bool = False       # one attention module serves several layers (ALBERT)
    internals: str = REGISTRY            # REGISTRY, one of OWN_CODE_RECIPES, or "" (cannot be recorded)
    internals_reason: str = ""           # why not, when internals == ""
    scaling: float | None = None         # q.k scaling of an own-code family, if not 1/sqrt(d_head)


DEFAULT = Family()
_ROBERTA_LIKE = Family(drops_token_type_ids=True, position_reserve=True)

FAMILIES: dict[str, Family] = {
    "roberta": _ROBERTA_LIKE,
    "xlm-roberta": _ROBERTA_LIKE,
    "xlm-roberta-xl": _ROBERTA_LIKE,
    "roberta-prelayernorm": _ROBERTA_LIKE,
    "camembert": _ROBERTA_LIKE,
    "data2vec-text": _ROBERTA_LIKE,
    "bertweet": _ROBERTA_LIKE,
    "longformer": _ROBERTA_LIKE,
    "ibert": _ROBERTA_LIKE,
    "markuplm": _ROBERTA_LIKE,
    "luke": _ROBERTA_LIKE,
    "mpnet": Family(drops_token_type_ids=True, position_reserve=True, internals="mpnet"),
    "gpt2": Family(drops_token_type_ids=True),
    "distilbert": Family(drops_token_type_ids=True),
    "bart": Family(drops_token_type_ids=True),
    "albert": Family(shared_attention=True),
    "deberta-v2": Family(internals="deberta_v2"),
    "gpt_neo": Family(internals="gpt_neo", scaling=1.0),   # GPT-Neo does not scale q.k
    "gptj": Family(internals="gptj"),
    "bloom": Family(internals="bloom"),
    "falcon": Family(internals="falcon"),
}


def family(model_type: str | None) -> Family:
    """The facts for ``config.model_type`` (:data:`DEFAULT` for families with no quirks listed)."""
    return FAMILIES.get(model_type or "", DEFAULT)


# ---------------------------------------------------------------- lookups on a config
def first_attr(config, names, default=0):
    """The first attribute of ``config`` among ``names`` that is a positive number, else ``default``."""
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return value
    return default


def position_limit(config) -> int | None:
    """Tokens the model has position embeddings for (after the RoBERTa reserve), or None if unbounded."""
    n = first_attr(config, POSITION_LIMIT_ATTRS, None)
    if n is None:
        return None
    if family(config.model_type).position_reserve:
        n -= (getattr(config, "pad_token_id", 1) or 1) + 1
    return int(n)


def kv_heads(config, n_heads: int) -> int:
    """Key/value heads per layer: fewer than the query heads under grouped- or multi-query attention."""
    if config.model_type == "falcon" and getattr(config, "multi_query", False) \
            and not getattr(config, "new_decoder_architecture", False):
        return 1      # classic Falcon multi-query: one key/value head whatever num_kv_heads says
    n_kv = first_attr(config, KV_HEAD_COUNT_ATTRS, None)
    if not isinstance(n_kv, int) or n_heads % n_kv:
        return n_heads
    return n_kv


def shared_layers(config, module_index: int) -> tuple[int, ...]:
    """The layers that attention module ``module_index`` (its position in the module tree) serves.

    ALBERT runs group ``int(layer / (n_layers / n_groups))`` at each layer, so group g serves a run
    of consecutive layers, called in order.  Other families: the module serves its own layer.
    """
    if not family(config.model_type).shared_attention:
        return (module_index,)
    n_layers = int(first_attr(config, LAYER_COUNT_ATTRS, 1))
    n_groups = int(getattr(config, "num_hidden_groups", 1) or 1)
    return tuple(layer for layer in range(n_layers) if int(layer / (n_layers / n_groups)) == module_index)


def internals_support(model_type: str | None) -> tuple[bool, str]:
    """(True, "") when this family's q, k, v and scores can be recorded, else (False, why not)."""
    fam = family(model_type)
    if fam.internals:
        return True, ""
    return False, fam.internals_reason or f"{model_type} models compute attention in their own code"


# ---------------------------------------------------------------- modules
def is_cross_attention(module_name: str) -> bool:
    """True for a cross-attention module path (decoder queries, encoder keys)."""
    lower = module_name.lower()
    return any(part in lower for part in CROSS_ATTENTION_NAMES)


@dataclass(frozen=True)
class OutputProjection:
    """The head-mixing output projection W_O of one attention layer.

    Its input is the heads' outputs concatenated on the last dim, ``n_heads * d_head`` wide, head h
    at ``[h * d_head, (h + 1) * d_head)``: zeroing that slice (a forward pre-hook on ``module``)
    removes head h's contribution.  ``weight_in_out`` is True for GPT-2's Conv1D, whose weight is
    stored (in, out); nn.Linear stores (out, in).
    """

    module: object            # nn.Linear or transformers' Conv1D
    in_features: int          # n_heads * d_head
    out_features: int         # d_model
    weight_in_out: bool

    def weight(self):
        """W_O as an (in_features, out_features) tensor (a view, not a copy)."""
        w = self.module.weight
        return w if self.weight_in_out else w.T


def output_projection(attention_module, parent=None) -> OutputProjection | None:
    """The output projection of an attention layer, or None if it has none we know.

    ``attention_module`` is the module that computes attention (the ones in ``LoadedModel.sites``);
    ``parent`` the module holding it, needed for BERT-like families whose W_O sits at
    ``parent.output.dense`` (defaults to the parent :func:`viz.attention_fn.link_parents` recorded).
    """
    candidates = [getattr(attention_module, name, None) for name in OUTPUT_PROJECTION_NAMES]
    parent = parent if parent is not None else attention_module.__dict__.get("_viz_parent")
    if parent is not None:
        holder = getattr(parent, PARENT_OUTPUT_PROJECTION[0], None)
        candidates.append(getattr(holder, PARENT_OUTPUT_PROJECTION[1], None))
    for proj in candidates:
        weight = getattr(proj, "weight", None)
        if weight is None or getattr(weight, "ndim", 0) != 2:
            continue
        if hasattr(proj, "nf"):                        # transformers Conv1D: weight (in, out)
            return OutputProjection(proj, int(weight.shape[0]), int(weight.shape[1]), True)
        if hasattr(proj, "in_features"):               # nn.Linear: weight (out, in)
            return OutputProjection(proj, int(proj.in_features), int(proj.out_features), False)
    return None
