"""Generation step by step: a decoder continues a prompt, and we keep what it attended to and expected.

Owns the decoding loop (greedy, or sampled with temperature and top-p from a seeded generator of
its own), the chat template (one user message plus the generation prompt; every token the template
added is marked special), cutting the prompt so the new tokens fit the model's limit, branching
(forcing a token at a step), streaming tokens to a callback, and the one forward pass over the
finished sequence whose attention becomes the result.  Torch tier.

Why one forward pass at the end: under the causal mask, row ``i`` of a full pass over the finished
sequence is exactly what the model computed for token ``i`` while generating with its KV cache (the
cache only saves recomputing the earlier rows).  So the loop asks for logits only, fast, and the
attention of every step comes from one pass that also feeds every other page.  A long finished sequence
(above VIZ_FULL_PATTERN_MB) keeps, from that pass, each layer's queries and keys instead of its weights
(:func:`viz.capture.compact_pass`, a LazyPattern), so prompts run up to the model's limit in bounded memory.

Greedy decoding takes the argmax of the raw logits, with the same inputs transformers'
``generate()`` gives the model (prefill, then one token at a time with a ``DynamicCache``, position
ids, ``logits_to_keep=1``), so it picks the same tokens; the generation config's extra logits
processors (repetition penalty and the like) are not applied.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from viz import attention_fn, families
from viz.capture import (
    UNRECORDABLE,
    InputError,
    InternalsUnavailable,
    _internals,
    _labels,
    _stack,
    clean_text,
    compact_pass,
    compact_supported,
    keeps_qk,
    long_notice,
    longest_full,
    run_slot,
)
from viz.models import EMBEDDED_LLM, LoadedModel, ModelError, load_model, token_limit
from viz.result import AttentionResult, GenerationResult, TokenSeq, is_lazy

MAX_NEW_TOKENS = 64
DEFAULT_NEW_TOKENS = 20
DEFAULT_TOP_K = 10
MAX_TOP_K = 100
_PLACEHOLDER = "\x00VIZ-USER-MESSAGE\x00"   # never in a cleaned prompt (clean_text drops NUL)


@dataclass(frozen=True)
class GeneratedToken:
    """One new token, as handed to the ``on_token`` callback while generation runs."""

    step: int
    token_id: int
    token: str       # raw tokenizer token, e.g. "ĠParis"
    label: str       # readable, e.g. "Paris"
    prob: float      # its probability at temperature 1
    forced: bool     # a branch put it there


@dataclass(frozen=True)
class Prompt:
    """The prompt's token ids and what each one is (built by :func:`prompt_ids`)."""

    ids: tuple[int, ...]
    special: np.ndarray      # (T,) bool: special ids, tokenizer-added tokens and template tokens
    template: np.ndarray     # (T,) bool: tokens the chat template added
    truncated: int           # user-text tokens dropped to fit
    notice: str


def supports_chat(loaded: LoadedModel) -> bool:
    """True when the model's tokenizer has a chat template."""
    return bool(getattr(loaded.tokenizer, "chat_template", None))


def prompt_ids(loaded: LoadedModel, text: str, *, chat: bool = False, room: int = 0) -> Prompt:
    """Tokenize ``text`` (as one chat user message with the generation prompt when ``chat``).

    ``room``: new tokens that must still fit within the model's limit; when the prompt is too
    long, its first user-text tokens are dropped (the template's and tokenizer's own tokens
    stay), since a continuation follows the end of what was typed.
    """
    tok = loaded.tokenizer
    with loaded.tokenizer_lock:
        if chat:
            ids, content = _chat_ids(tok, text)
        else:
            enc = tok(text, add_special_tokens=True, return_special_tokens_mask=True)
            ids = [int(i) for i in enc["input_ids"]]
            content = ~np.asarray(enc.get("special_tokens_mask", [0] * len(ids)), dtype=bool)
    special_ids = set(tok.all_special_ids)
    is_special_id = np.array([i in special_ids for i in ids], dtype=bool)
    content &= ~is_special_id
    template = ~content if chat else np.zeros(len(ids), dtype=bool)
    special = ~content | is_special_id

    # A long finished sequence keeps each layer's queries and keys (viz.capture.compact_pass), so the
    # prompt only has to fit the model's limit (and the app's VIZ_MAX_TOKENS cap, both in max_length).
    # A model whose q and k cannot be recorded keeps every layer's weights whole, which must fit
    # VIZ_FULL_FALLBACK_MB (about 840 tokens for the embedded LLM): its prompts are cut there.
    whole = not compact_supported(loaded)
    limit = min(loaded.info.max_length, longest_full(loaded.info)) if whole else loaded.info.max_length
    if limit < loaded.info.max_length:
        cap = f"{limit} tokens, the most whose attention this model can keep whole (its queries and keys cannot be recorded)"
    elif token_limit(loaded.model.config, loaded.tokenizer, cap=1 << 30) > limit:
        cap = f"the app's limit of {limit} tokens (VIZ_MAX_TOKENS)"
    else:
        cap = f"the model's limit of {limit} tokens"
    budget = limit - room
    dropped, notice = 0, ""
    if len(ids) > budget:
        dropped = len(ids) - budget
        where = np.flatnonzero(content)
        if dropped >= len(where):
            raise InputError(f"No room for the prompt: {room} new tokens and the "
                             f"{len(ids) - len(where)} tokens of the template already fill the model's limit "
                             f"of {limit} tokens; ask for fewer new tokens")
        keep = np.ones(len(ids), dtype=bool)
        keep[where[:dropped]] = False
        ids = [i for i, k in zip(ids, keep) if k]
        special, template = special[keep], template[keep]
        notice = (f"The prompt was cut: its first {dropped} tokens were dropped so that {room} new tokens fit "
                  f"{cap}")
    if not (~special).any():
        raise InputError("The prompt has no tokens this model can read (only invisible characters or "
                         "special tokens): type a sentence")
    return Prompt(ids=tuple(ids), special=special, template=template, truncated=dropped, notice=notice)


def _chat_ids(tok, text: str) -> tuple[list[int], np.ndarray]:
    """Chat-template token ids and a mask of the tokens that carry the user's text.

    The template is rendered around a placeholder to find where the message sits; the rendered
    string is tokenized with offsets (as ``apply_chat_template`` tokenizes it: no special tokens
    added), and a token is the user's when its characters overlap the message.
    """
    def render(content: str) -> str:
        return tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                       add_generation_prompt=True)
    try:
        framed = render(_PLACEHOLDER)
        rendered = render(text)
    except Exception as exc:  # noqa: BLE001 - a template that fails is the model's problem, said in one line
        raise InputError(f"The model's chat template failed: {str(exc).splitlines()[0][:200]}") from None
    reference = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True,
                                        add_generation_prompt=True)
    if isinstance(reference, Mapping) or hasattr(reference, "keys"):
        reference = reference["input_ids"]
    reference = [int(i) for i in reference]
    start = framed.find(_PLACEHOLDER)
    prefix, suffix = framed[:start], framed[start + len(_PLACEHOLDER):]
    content = np.zeros(len(reference), dtype=bool)
    if start < 0 or rendered != prefix + text + suffix:
        return reference, content   # the template changes the message: mark only special ids
    try:
        enc = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError, TypeError):   # slow tokenizers have no offsets
        return reference, content
    if [int(i) for i in enc["input_ids"]] != reference:
        return reference, content
    lo, hi = len(prefix), len(prefix) + len(text)
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        content[i] = b > a and a < hi and b > lo
    return reference, content


def generate(prompt: str, model: str | LoadedModel | None = None, *,
             max_new_tokens: int = DEFAULT_NEW_TOKENS, chat: bool = False, sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, top_k: int = DEFAULT_TOP_K,
             forced: Mapping[int, int] | Sequence[int] | None = None,
             on_token: Callable[[GeneratedToken], None] | None = None,
             internals: bool | Iterable[tuple[str, int]] = False,
             on_wait: Callable[[int], None] | None = None,
             on_start: Callable[[], None] | None = None) -> GenerationResult:
    """Generate up to ``max_new_tokens`` (1..64) after ``prompt`` with a decoder (default: the embedded LLM).

    ``sample``: draw from softmax(logits / temperature), restricted to the smallest set of tokens
    whose probability reaches ``top_p``, with a generator seeded by ``seed`` (the same seed gives
    the same tokens); otherwise greedy.  ``top_k``: how many alternatives to keep per step.
    ``forced``: a branch, ``{step: token_id}`` or a prefix of generated ids; those steps take the
    given token (sampling still draws, so later steps see the same random numbers).  Generation
    stops after an end-of-sequence token.  ``on_token(GeneratedToken)`` is called after every step.
    ``internals``: record q/k/v/scores in the final pass, as :func:`viz.capture.capture` does.
    """
    job = _prepare(prompt, model, max_new_tokens=max_new_tokens, chat=chat, sample=sample,
                   temperature=temperature, top_p=top_p, seed=seed, top_k=top_k, forced=forced, internals=internals)
    return _run_alone(job, on_token=on_token, on_wait=on_wait, on_start=on_start)


def _run_alone(job: _Job, *, on_token=None, on_wait=None, on_start=None) -> GenerationResult:
    """Decode and capture one checked request on its own (holding one forward-pass slot throughout)."""
    with run_slot(on_wait=on_wait, on_start=on_start), torch.inference_mode():
        steps = _decode(job.loaded, list(job.built.ids), max_new_tokens=job.max_new_tokens, sample=job.sample,
                        temperature=job.temperature, top_p=job.top_p, seed=job.seed, top_k=job.top_k,
                        branch=job.branch, eos=job.eos, on_token=on_token)
        pattern, recorder = _final_pass(job, list(job.built.ids) + steps.ids)
    return _result(job, steps, pattern, recorder)


@dataclass(frozen=True)
class _Job:
    """A checked generation request: what the decoding loop, the final pass and the result need.

    :func:`generate` runs it alone; :mod:`viz.batching` runs the same three stages for many requests
    in shared batches (``_prepare``, the decoding, ``_final_pass`` / ``_result``), so both give the same result.
    """

    loaded: LoadedModel
    text: str
    built: Prompt
    eos: set
    branch: dict
    max_new_tokens: int
    chat: bool
    sample: bool
    temperature: float
    top_p: float
    seed: int
    top_k: int
    wanted: set | None
    do_record: bool


def _prepare(prompt: str, model, *, max_new_tokens: int, chat: bool, sample: bool, temperature: float,
             top_p: float, seed: int, top_k: int, forced, internals) -> _Job:
    """Every check and the tokenization of :func:`generate`, before any forward pass."""
    loaded = model if isinstance(model, LoadedModel) else load_model(model or EMBEDDED_LLM)
    info = loaded.info
    if info.family != "decoder":
        raise InputError(f"Generation needs a decoder model (GPT-2, Llama, SmolLM...); "
                         f"this one is an {info.family} model")
    if loaded.model.get_output_embeddings() is None:
        raise InputError("This model was loaded without a language-model head, so it has no next-token "
                         "probabilities to generate from")
    if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        raise InputError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS} (got {max_new_tokens})")
    if sample and not temperature > 0:
        raise InputError(f"temperature must be above 0 (got {temperature})")
    if sample and not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1] (got {top_p})")
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise InputError(f"top_k must be between 1 and {MAX_TOP_K} (got {top_k})")
    if chat and not supports_chat(loaded):
        raise InputError("This model has no chat template: turn chat off")
    max_new_tokens, top_k = int(max_new_tokens), int(top_k)
    text = clean_text(prompt, what="prompt")
    branch = _forced_map(forced, max_new_tokens)
    wanted = None if internals is True else (set(internals) if internals else None)
    if internals and not loaded.recording_supported:   # as capture(): never an empty dict without a word
        raise InternalsUnavailable(getattr(loaded, "internals_reason", "") or UNRECORDABLE)
    do_record = bool(internals)

    built = prompt_ids(loaded, text, chat=chat, room=max_new_tokens)
    if do_record and wanted is None and keeps_qk(loaded, len(built.ids) + max_new_tokens):
        # Every layer's scores, weights and head outputs at once is several times the L x H x T^2 a long
        # sequence must not cost; the math page asks for one layer, which a long sequence can give.
        raise InternalsUnavailable(f"This prompt is long ({len(built.ids):,} tokens): the q, k, v and scores "
                                   f"of every layer at once would not fit; ask for some layers "
                                   f"(internals=[('decoder', layer)])")
    return _Job(loaded=loaded, text=text, built=built, eos=_eos_ids(loaded), branch=branch,
                max_new_tokens=max_new_tokens, chat=bool(chat), sample=bool(sample), temperature=float(temperature),
                top_p=float(top_p), seed=int(seed), top_k=top_k, wanted=wanted, do_record=do_record)


def _final_pass(job: _Job, full: list[int]):
    """One forward pass over the finished sequence: its attention and the recorder (or None).

    The attention is (L, H, T, T); a long sequence (:func:`viz.capture.keeps_qk`) gets a LazyPattern
    that keeps each layer's queries and keys, as a long capture does, so no pass asks the model for every
    layer's (T, T) weights.  Call it inside ``run_slot`` and ``torch.inference_mode``."""
    loaded = job.loaded
    input_ids = torch.tensor([full])
    if keeps_qk(loaded, len(full)):
        pattern = compact_pass(loaded, {"input_ids": input_ids}, _finished_seq(job, full))
        if pattern is not None:
            return pattern, (_record_long(job, input_ids) if job.do_record else None)
        # The recording failed its check (loaded.compact_problem says why; the next prompt is cut to fit).
        if len(full) > longest_full(loaded.info):     # more than VIZ_FULL_FALLBACK_MB kept whole
            raise ModelError(f"{loaded.compact_problem}, so this model's attention over {len(full):,} tokens "
                             f"cannot be kept; press Generate again: the prompt will be cut to fit")
    with attention_fn.recording(loaded.sites, job.wanted) if job.do_record else _null() as recorder:
        out = loaded.model(input_ids=input_ids, output_attentions=True, **_logits_kwargs(loaded))
    return _stack(getattr(out, "attentions", None), "self", loaded.info.n_layers), recorder   # (L, H, T, T)


def _record_long(job: _Job, input_ids: torch.Tensor):
    """The wanted layers' internals over a long sequence: a second pass that records them and stops after
    the last one (no (T, T) weights of the other layers are kept)."""
    loaded = job.loaded
    last = max(job.wanted, key=lambda site: site[1])
    try:
        with attention_fn.stop_after(last), attention_fn.recording(loaded.sites, job.wanted) as recorder:
            loaded.model(input_ids=input_ids, **_logits_kwargs(loaded))
    except attention_fn.SiteRecorded as done:
        recorder = done.recorder
    return recorder


def _finished_seq(job: _Job, full: list[int]) -> TokenSeq:
    """The tokens of prompt + generated ids, special where the prompt's or the tokenizer's are."""
    loaded, n_prompt = job.loaded, len(job.built.ids)
    special = np.concatenate([job.built.special, _special_mask(loaded, full[n_prompt:])])
    with loaded.tokenizer_lock:
        return _sequence(loaded.tokenizer, full, special)


def _result(job: _Job, steps: _Steps, pattern: np.ndarray, recorder) -> GenerationResult:
    """The frozen result of a finished generation (``pattern``: the final pass's (L, H, T, T) attention)."""
    loaded, info, built, text = job.loaded, job.loaded.info, job.built, job.text
    chat, sample, temperature, top_p, seed = job.chat, job.sample, job.temperature, job.top_p, job.seed
    max_new_tokens, top_k = job.max_new_tokens, job.top_k
    full = list(built.ids) + steps.ids
    n_prompt = len(built.ids)
    seq = _finished_seq(job, full)
    with loaded.tokenizer_lock:
        top_tokens, top_labels = _top_labels(loaded.tokenizer, steps.top_ids)
        completion = loaded.tokenizer.decode(steps.ids, skip_special_tokens=True)
    attention = AttentionResult(model=info, text=text, decoder=seq, decoder_attentions=pattern,
                                truncated=built.truncated, generated=True,
                                notice=long_notice(len(full)) if is_lazy(pattern) else "",
                                internals=_internals(recorder, loaded) if recorder else {})
    k = steps.top_ids.shape[1] if steps.ids else min(top_k, _vocab_size(loaded))
    return GenerationResult(
        attention=attention, n_prompt=n_prompt,
        step_ids=np.asarray(steps.ids, dtype=np.int64),
        step_probs=np.asarray(steps.probs, dtype=np.float32),
        top_ids=steps.top_ids.reshape(-1, k), top_probs=steps.top_probs.reshape(-1, k),
        top_tokens=top_tokens, top_labels=top_labels,
        forced=np.asarray(steps.forced, dtype=bool),
        template=np.concatenate([built.template, np.zeros(len(steps.ids), dtype=bool)]),
        completion=completion, chat=bool(chat), sample=bool(sample), temperature=float(temperature),
        top_p=float(top_p), seed=int(seed), max_new_tokens=max_new_tokens, stop=steps.stop,
        truncated=built.truncated, notice=built.notice)


@dataclass
class _Steps:
    ids: list
    probs: list
    forced: list
    top_ids: np.ndarray
    top_probs: np.ndarray
    stop: str


def _decode(loaded: LoadedModel, ids: list[int], *, max_new_tokens: int, sample: bool, temperature: float,
            top_p: float, seed: int, top_k: int, branch: dict[int, int], eos: set[int],
            on_token: Callable[[GeneratedToken], None] | None) -> _Steps:
    """The decoding loop: prefill, then one token at a time with a KV cache, logits only."""
    from transformers import DynamicCache

    model = loaded.model
    accepts_positions = "position_ids" in inspect.signature(model.forward).parameters
    extra = _logits_kwargs(loaded)
    cache = DynamicCache(config=model.config)
    generator = torch.Generator().manual_seed(seed) if sample else None

    def forward(new_ids: list[int], start: int):
        kwargs = dict(extra)
        if accepts_positions:
            kwargs["position_ids"] = torch.arange(start, start + len(new_ids)).unsqueeze(0)
        return model(input_ids=torch.tensor([new_ids]), past_key_values=cache, use_cache=True, **kwargs)

    out = forward(ids, 0)
    vocab = out.logits.shape[-1]
    k = min(top_k, vocab)
    chosen, probs, forced, tops, top_p_rows, stop = [], [], [], [], [], "length"
    for step in range(max_new_tokens):
        logits = out.logits[0, -1].to(dtype=torch.float32)          # (vocab,) raw logits
        p = torch.softmax(logits, dim=-1)                           # temperature 1, for display
        top = torch.topk(p, k)
        drawn = _sample(logits, temperature, top_p, generator) if sample else int(torch.argmax(logits))
        token = branch.get(step, drawn)
        if not 0 <= token < vocab:
            raise InputError(f"Token id {token} is not in this model's vocabulary (0..{vocab - 1})")
        chosen.append(token)
        probs.append(float(p[token]))
        forced.append(step in branch)
        tops.append(top.indices.numpy().astype(np.int64))
        top_p_rows.append(top.values.numpy().astype(np.float32))
        if on_token is not None:
            on_token(_announce(loaded, step, token, probs[-1], forced[-1]))
        if token in eos:
            stop = "eos"
            break
        if step + 1 < max_new_tokens:
            out = forward([token], len(ids) + step)
    return _Steps(ids=chosen, probs=probs, forced=forced,
                  top_ids=np.stack(tops) if tops else np.zeros((0, k), dtype=np.int64),
                  top_probs=np.stack(top_p_rows) if top_p_rows else np.zeros((0, k), dtype=np.float32),
                  stop=stop)


def _sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One draw from softmax(logits / temperature) within the top-p nucleus."""
    return int(torch.multinomial(torch.softmax(_nucleus(logits / temperature, top_p), dim=-1), 1,
                                 generator=generator))


def _nucleus(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """``scores`` with the tokens outside the top-p nucleus set to -inf (shared with viz.batching's checks)."""
    if top_p < 1.0:
        # As transformers' TopPLogitsWarper: drop the least likely tokens whose total stays
        # within 1 - top_p, always keeping the most likely one.
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[-1] = False
        scores = scores.clone()
        scores[order[remove]] = -float("inf")
    return scores


def _logits_kwargs(loaded: LoadedModel) -> dict:
    """logits_to_keep=1 where the model supports it: only the last row's logits are needed (generate does the same)."""
    if "logits_to_keep" in inspect.signature(loaded.model.forward).parameters:
        return {"logits_to_keep": 1}
    return {}


def _forced_map(forced, max_new_tokens: int) -> dict[int, int]:
    if forced is None:
        return {}
    if isinstance(forced, Mapping):
        items = [(int(step), int(token)) for step, token in forced.items()]
    elif isinstance(forced, (str, bytes)):
        raise InputError("forced must be {step: token_id} or a list of token ids")
    else:
        items = [(step, int(token)) for step, token in enumerate(forced)]
    for step, _ in items:
        if not 0 <= step < max_new_tokens:
            raise InputError(f"The branch is at step {step}, outside the {max_new_tokens} new tokens asked for")
    return dict(items)


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(loaded.model, "generation_config", None), loaded.model.config):
        value = getattr(source, "eos_token_id", None)
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        break
    if not ids and getattr(loaded.tokenizer, "eos_token_id", None) is not None:
        ids.add(int(loaded.tokenizer.eos_token_id))
    return ids


def _vocab_size(loaded: LoadedModel) -> int:
    return int(getattr(loaded.model.config, "vocab_size", None) or len(loaded.tokenizer))


def _special_mask(loaded: LoadedModel, ids: list[int]) -> np.ndarray:
    special_ids = set(loaded.tokenizer.all_special_ids)
    return np.array([i in special_ids for i in ids], dtype=bool)


def _announce(loaded: LoadedModel, step: int, token_id: int, prob: float, forced: bool) -> GeneratedToken:
    with loaded.tokenizer_lock:
        token = loaded.tokenizer.convert_ids_to_tokens([token_id])[0]
        special = bool(_special_mask(loaded, [token_id])[0])
        label = _labels(loaded.tokenizer, [token], np.array([special]))[0]
    return GeneratedToken(step=step, token_id=int(token_id), token=str(token), label=label, prob=prob, forced=forced)


def word_ids(tokens: Sequence[str], special: np.ndarray) -> np.ndarray:
    """Word index per token from subword markers; -1 for special tokens.

    A token starts a word after a special token, on a space marker (Ġ, ▁, a leading space or
    newline), or when it or the token before is not a letter or digit; WordPiece's ## continues.
    """
    out = np.full(len(tokens), -1, dtype=np.int64)
    word, prev = -1, None
    for i, (tok, sp) in enumerate(zip(tokens, special)):
        if sp:
            prev = None
            continue
        starts = (prev is None or tok.startswith((*families.SPACE_MARKERS, "Ċ", " ", "\n"))
                  or not tok[:1].isalnum() or not prev[-1:].isalnum())
        if tok.startswith(families.CONTINUATION_MARKER) and prev is not None:
            starts = False
        if starts or word < 0:
            word += 1
        out[i] = word
        prev = tok
    return out


def _sequence(tokenizer, ids: list[int], special: np.ndarray) -> TokenSeq:
    tokens = tokenizer.convert_ids_to_tokens(ids)
    # Template text ("system", "Ġare", "Ċ") is marked special but still reads as text;
    # only real special tokens (<|im_start|>) keep their raw form as a label.
    special_ids = set(tokenizer.all_special_ids)
    raw = np.array([i in special_ids for i in ids], dtype=bool)
    return TokenSeq(tokens=tuple(tokens), labels=_labels(tokenizer, tokens, raw),
                    token_ids=np.asarray(ids, dtype=np.int64), special=special,
                    word_ids=word_ids(tokens, special), segment_ids=np.zeros(len(ids), dtype=np.int64))


def _top_labels(tokenizer, top_ids: np.ndarray) -> tuple[tuple, tuple]:
    """Raw tokens and readable labels of every alternative, each distinct id converted once."""
    unique = sorted({int(i) for i in top_ids.ravel()})
    special_ids = set(tokenizer.all_special_ids)
    raw = tokenizer.convert_ids_to_tokens(unique) if unique else []
    labels = _labels(tokenizer, raw, np.array([i in special_ids for i in unique], dtype=bool)) if unique else ()
    by_id = {i: (r, lab) for i, r, lab in zip(unique, raw, labels)}
    tokens = tuple(tuple(by_id[int(i)][0] for i in row) for row in top_ids)
    readable = tuple(tuple(by_id[int(i)][1] for i in row) for row in top_ids)
    return tokens, readable


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False

