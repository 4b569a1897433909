"""Shared batches for a class that uses one model at once: continuous batching of generation, and one
padded forward pass for the single captures that wait together.  Torch tier.

Owns, per loaded model, one worker thread (started when work arrives, gone when there is none) that
runs the model for every waiting request, holding a :func:`viz.capture.run_slot` for each unit of work
(a prefill, a decoding step, a padded pass), so other runs of the process still take turns with it:

- generation: a request that arrives while others decode joins them at the next step.  Its prompt is
  prefilled (with the others that arrived in the same step: left padding, position ids that skip it)
  into a key/value cache of its own, which is then merged into the running batch's ``DynamicCache``
  (the shorter side padded on the left, masked).  Every step feeds each row its last token at its own
  position; each row keeps its own sampling settings and its own ``torch.Generator`` (so its draws are
  the ones a lone run makes), its own progress events and its own stop; a finished row leaves (the cache
  drops its row and any padding no row needs any more) and its final pass over the whole sequence joins
  the padded-pass queue below.
- single passes (:func:`capture`, the final pass of a generation): what waits when the worker is free
  runs as one right-padded forward pass (causal rows never see the padding after them; encoders mask
  it), and each text gets its own rows and columns back.

Why merging caches rather than re-running prompts together: a request's prefill only needs its own
tokens, the running rows keep their caches untouched, and left padding keeps every row's next token in
the same column.  Keys are cached after their rotary or absolute position is applied, so a column's
place in the padded cache does not matter; only plain ``DynamicLayer`` caches are merged (sliding-window
and other caches run alone).

Exactness.  A padded batch is not bit-identical to a lone run (other matmul shapes round differently):
attention and probabilities agree to float error (tests/test_batching.py), but a token is a discrete
choice.  Every choice made in a batch is therefore checked: greedy needs its top logit ahead of the next
by more than twice :data:`LOGIT_TOLERANCE`; a sampled token (``torch.multinomial``'s one-sample draw,
argmax of p_i / q_i with q_i ~ Exp(1) from the request's generator, rebuilt here from the generator's
state) must stay the argmax, and inside the top-p nucleus, for every logits vector within the tolerance.
A choice closer than that to a tie is not trusted: the request leaves the batch and runs alone
(:func:`viz.generation.generate`'s own path), which gives the lone result by construction.  The same
happens when a batched forward pass fails: its requests run alone, so one bad request fails only itself.

Isolation: each request has a private event queue read by its own thread, which calls its own
``on_token``/``on_wait``/``on_start`` (Streamlit calls must come from the session's thread) and gets
only its own result; a callback that raises (a rerun) cancels that request alone.
"""
from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from viz import capture as cap
from viz import generation as gen
from viz.models import LoadedModel, load_model
from viz.result import AttentionResult, GenerationResult
from viz.settings import SETTINGS

log = logging.getLogger("viz")

# The largest difference between a batched and a lone run's logits a choice is trusted to survive.
# Measured on SmolLM2-135M-Instruct (30 padded rows, 64 steps, tests and benchmarks/batching.py): at most
# ~3e-5; the tiny test models ~1e-6.  A choice within twice this of a tie runs alone instead.
LOGIT_TOLERANCE = 1e-3
_MB = 1024 * 1024


# ---------------------------------------------------------------- public entry points
def generate(prompt: str, model: str | LoadedModel | None = None, *,
             max_new_tokens: int = gen.DEFAULT_NEW_TOKENS, chat: bool = False, sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, top_k: int = gen.DEFAULT_TOP_K,
             forced: Mapping[int, int] | Sequence[int] | None = None,
             on_token: Callable[[gen.GeneratedToken], None] | None = None,
             internals: bool | Iterable[tuple[str, int]] = False,
             on_wait: Callable[[int], None] | None = None,
             on_start: Callable[[], None] | None = None) -> GenerationResult:
    """:func:`viz.generation.generate`, sharing decoding steps and the final pass with concurrent requests.

    Same arguments, same result as a lone run (tokens identical; attention and probabilities to float
    error).  Runs alone when VIZ_BATCHING=0, when internals are asked for, or when the model's cache
    or signature cannot be batched.
    """
    job = gen._prepare(prompt, model, max_new_tokens=max_new_tokens, chat=chat, sample=sample,
                       temperature=temperature, top_p=top_p, seed=seed, top_k=top_k, forced=forced,
                       internals=internals)
    engine = engine_for(job.loaded)
    if not SETTINGS.batching or internals or not engine.decodes:
        return gen._run_alone(job, on_token=on_token, on_wait=on_wait, on_start=on_start)
    ticket = engine.submit_generation(job)
    announced = 0
    try:
        for kind, value in ticket.follow(on_wait=on_wait, on_start=on_start):
            if kind == "token":
                announced += 1
                if on_token is not None:
                    on_token(value)
            elif kind == "done":
                steps, pattern = value                                        # pattern: (L, H, T, T)
                return gen._result(job, steps, pattern, None)
            elif kind == "alone":
                break
    except BaseException:
        ticket.cancelled = True     # a callback raised (a rerun) or the wait timed out: leave the batch
        raise
    return gen._run_alone(job, on_token=_after(announced, on_token))


def capture(text: str, *, pair: str | None = None, target: str | None = None,
            model: str | LoadedModel | None = None,
            internals: bool | Iterable[tuple[str, int]] = False,
            max_new_tokens: int = cap.MAX_NEW_TOKENS,
            on_wait: Callable[[int], None] | None = None,
            on_start: Callable[[], None] | None = None) -> AttentionResult:
    """:func:`viz.capture.capture`, its forward pass shared with the other captures waiting at that moment.

    Same arguments and result (to float error, 1e-6); internals, one-layer runs and encoder-decoder
    models run alone, as does everything when VIZ_BATCHING=0.
    """
    return cap.capture(text, pair=pair, target=target, model=model, internals=internals,
                       max_new_tokens=max_new_tokens, on_wait=on_wait, on_start=on_start,
                       forward=shared_forward if SETTINGS.batching else None)


def shared_forward(loaded: LoadedModel, model_inputs: dict, *, on_wait: Callable[[int], None] | None = None,
                   on_start: Callable[[], None] | None = None):
    """The model's output (``.attentions``: a tuple of (1, H, T, T)) for one text, from a shared padded pass."""
    ticket = engine_for(loaded).submit_pass(model_inputs)
    try:
        for kind, value in ticket.follow(on_wait=on_wait, on_start=on_start):
            if kind == "done":
                return SimpleNamespace(attentions=value)
            if kind == "alone":
                break
    except BaseException:
        ticket.cancelled = True
        raise
    with cap.run_slot():
        return loaded.model(**model_inputs, output_attentions=True, **cap._last_logits_only(loaded))


def _after(announced: int, on_token):
    """on_token for a lone re-run: the steps the batch already announced are not announced twice."""
    if on_token is None:
        return None

    def forward(token: gen.GeneratedToken) -> None:
        if token.step >= announced:
            on_token(token)
    return forward


# ---------------------------------------------------------------- one request's private channel
class _Ticket:
    """Events for one request, read only by the thread that submitted it."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.cancelled = False

    def put(self, kind: str, value=None) -> None:
        self.events.put((kind, value))

    def follow(self, *, on_wait=None, on_start=None):
        """Yield ("token", t), then ("done", v) or ("alone", None); call on_wait/on_start here; raise errors.

        Waits at most VIZ_RUN_WAIT_S to be started (then BusyError, as a full queue gives).  The caller
        sets ``cancelled`` when it stops following (a callback's rerun): the worker then drops it.
        """
        deadline = time.monotonic() + SETTINGS.run_wait_s
        started = False
        while True:
            try:
                kind, value = self.events.get(timeout=0.5)
            except queue.Empty:
                if not started and time.monotonic() > deadline:
                    raise cap.BusyError("The server is busy; press Run again in a minute") from None
                self.engine.ensure_worker()   # a worker that died is replaced, never waited on forever
                continue
            if kind == "wait":
                if on_wait is not None and not started:
                    on_wait(value)
            elif kind == "start":
                if on_start is not None and not started:
                    on_start()
                started = True
            elif kind == "error":
                raise value
            else:
                yield kind, value
                if kind in ("done", "alone"):
                    return


# ---------------------------------------------------------------- work items
@dataclass(eq=False)
class _Row:
    """One generation in the decoding batch (the worker's own state; its ticket is the way out)."""

    job: gen._Job
    ticket: _Ticket
    generator: torch.Generator | None
    tokens: int                      # prompt + new tokens: its share of VIZ_BATCH_MAX_TOKENS
    ids: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    forced: list = field(default_factory=list)
    tops: list = field(default_factory=list)
    top_probs: list = field(default_factory=list)
    stop: str = "length"
    k: int = 0

    @property
    def n_prompt(self) -> int:
        return len(self.job.built.ids)

    def steps(self) -> gen._Steps:
        return gen._Steps(ids=list(self.ids), probs=list(self.probs), forced=list(self.forced),
                          top_ids=np.stack(self.tops) if self.tops else np.zeros((0, self.k), dtype=np.int64),
                          top_probs=(np.stack(self.top_probs) if self.top_probs
                                     else np.zeros((0, self.k), dtype=np.float32)),
                          stop=self.stop)


@dataclass(eq=False)
class _Pass:
    """One sequence waiting for a forward pass with attention: a capture, or a finished generation."""

    inputs: dict                     # model inputs, each (1, T)
    ticket: _Ticket
    row: _Row | None = None          # set for a generation's final pass

    @property
    def n(self) -> int:
        return int(self.inputs["input_ids"].shape[1])

    @property
    def key(self) -> tuple:
        # Texts batch together when they give the model the same inputs (token type ids or not).
        return tuple(sorted(k for k in self.inputs if k != "attention_mask"))


# ---------------------------------------------------------------- the engine
_ENGINES_LOCK = threading.Lock()


def engine_for(loaded: LoadedModel) -> Engine:
    """The model's engine (one per loaded model, kept on it, so it goes when the model goes)."""
    engine = loaded.__dict__.get("_batch_engine")
    if engine is None:
        with _ENGINES_LOCK:
            engine = loaded.__dict__.get("_batch_engine")
            if engine is None:
                engine = Engine(loaded)
                loaded.__dict__["_batch_engine"] = engine
    return engine


class Engine:
    """One model's shared batches: the waiting requests, the decoding batch and the worker thread."""

    def __init__(self, loaded: LoadedModel, *, max_size: int | None = None, max_tokens: int | None = None,
                 attention_mb: int | None = None):
        import inspect
        self.loaded = loaded
        self.max_size = max_size or SETTINGS.batch_max_size
        self.max_tokens = max_tokens or SETTINGS.batch_max_tokens
        self.attention_mb = attention_mb or SETTINGS.batch_attention_mb
        params = inspect.signature(loaded.model.forward).parameters
        # Left padding needs position ids (rows start at different columns) and an attention mask.
        self.decodes = (loaded.info.family == "decoder" and "position_ids" in params
                        and "attention_mask" in params)
        self._cond = threading.Condition()
        self._waiting: deque[_Row] = deque()
        self._passes: deque[_Pass] = deque()
        self._worker: threading.Thread | None = None
        # Worker-only state: the decoding batch (row b of the cache is _rows[b]).
        self._rows: list[_Row] = []
        self._cache = None
        self._mask: torch.Tensor | None = None       # (B, C) 1 = a real token in that cache column
        # What happened, for tests and benchmarks: largest batches, and who ran alone and why.
        self.stats = {"decode_rows": 0, "tokens_in_flight": 0, "pass_rows": 0, "alone": Counter(), "steps": 0,
                      "passes": 0, "prefills": 0}

    # ------------------------------------------------------------ submitting (requesters' threads)
    def submit_generation(self, job: gen._Job) -> _Ticket:
        ticket = _Ticket(self)
        generator = torch.Generator().manual_seed(job.seed) if job.sample else None
        row = _Row(job=job, ticket=ticket, generator=generator, tokens=len(job.built.ids) + job.max_new_tokens)
        with self._cond:
            ahead = len(self._waiting)
            in_flight = sum(r.tokens for r in self._rows) + sum(r.tokens for r in self._waiting)
            if self._rows and (len(self._rows) + ahead + 1 > self.max_size
                               or in_flight + row.tokens > self.max_tokens):
                ticket.put("wait", max(1, ahead + 1))
            self._waiting.append(row)
            self._start_locked()
        return ticket

    def submit_pass(self, model_inputs: dict) -> _Ticket:
        ticket = _Ticket(self)
        item = _Pass(inputs={k: v for k, v in model_inputs.items()}, ticket=ticket)
        with self._cond:
            if len(self._passes) >= self.max_size:
                ticket.put("wait", 1 + len(self._passes) // self.max_size)
            self._passes.append(item)
            self._start_locked()
        return ticket

    def ensure_worker(self) -> None:
        with self._cond:
            if self._waiting or self._passes or self._rows:
                self._start_locked()

    def _start_locked(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._serve, name="viz-batching", daemon=True)
            self._worker.start()

    # ------------------------------------------------------------ the worker
    def _serve(self) -> None:
        try:
            while True:
                with self._cond:
                    joining = self._admit_locked()
                    passes = self._take_passes_locked()
                    if not joining and not passes and not self._rows:
                        self._worker = None
                        return
                if joining:
                    self._join(joining)
                if passes:
                    self._run_passes(passes)
                if self._rows:
                    self._step()
        except BaseException as exc:   # a bug here must not leave requesters waiting: each runs alone
            log.exception("batching worker failed")
            with self._cond:
                rows = list(self._rows) + list(self._waiting)
                passes = list(self._passes)
                self._rows, self._cache, self._mask = [], None, None
                self._waiting.clear()
                self._passes.clear()
                self._worker = None
            for item in rows + passes:
                self.stats["alone"][f"worker failed: {type(exc).__name__}"] += 1
                item.ticket.put("alone")

    def _admit_locked(self) -> list[_Row]:
        """Waiting generations that fit the caps (the first always fits an empty batch)."""
        joining: list[_Row] = []
        n_rows = len(self._rows)
        in_flight = sum(r.tokens for r in self._rows)
        while self._waiting:
            row = self._waiting[0]
            if row.ticket.cancelled:
                self._waiting.popleft()
                continue
            busy = n_rows + len(joining)
            if busy and (busy + 1 > self.max_size or in_flight + row.tokens > self.max_tokens):
                break
            joining.append(self._waiting.popleft())
            in_flight += row.tokens
        return joining

    def _take_passes_locked(self) -> list[_Pass]:
        """The oldest waiting pass and the others that can share its forward pass, within the caps."""
        taken: list[_Pass] = []
        kept: deque[_Pass] = deque()
        info = self.loaded.info
        per_token2 = info.n_layers * info.n_heads * 4 * 2     # attention bytes per T^2, with a copy
        while self._passes:
            item = self._passes.popleft()
            if item.ticket.cancelled:
                continue
            if taken:
                longest = max(item.n, max(p.n for p in taken))
                fits = (item.key == taken[0].key and len(taken) + 1 <= self.max_size
                        and sum(p.n for p in taken) + item.n <= self.max_tokens
                        and (len(taken) + 1) * per_token2 * longest ** 2 <= self.attention_mb * _MB)
                if not fits:
                    kept.append(item)
                    continue
            taken.append(item)
        self._passes = kept
        return taken

    # ------------------------------------------------------------ generation: prefill and merge
    def _join(self, rows: list[_Row]) -> None:
        """Prefill the joining rows together, merge their cache into the batch, make their first choice."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
        model = self.loaded.model
        for row in rows:
            row.ticket.put("start")
        prompts = [list(row.job.built.ids) for row in rows]
        ids, mask = _left_pad(prompts, _pad_id(self.loaded))
        cache = DynamicCache(config=model.config)
        kwargs = dict(input_ids=ids, past_key_values=cache, use_cache=True,
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0), **gen._logits_kwargs(self.loaded))
        if not bool(mask.all()):
            kwargs["attention_mask"] = mask
        try:
            with cap.run_slot(), torch.inference_mode():
                out = model(**kwargs)
            logits = out.logits[:, -1]                                           # (G, vocab)
        except Exception as exc:  # noqa: BLE001 - one bad prompt must not fail the others: each runs alone
            log.warning("batched prefill failed (%s): %d requests run alone", exc, len(rows))
            for row in rows:
                self._alone(row, f"prefill failed: {type(exc).__name__}")
            return
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            self.decodes = False         # a cache we do not know how to merge: this model runs alone from now on
            for row in rows:
                self._alone(row, "cache type")
            return
        self.stats["prefills"] += 1
        start = len(self._rows)
        self._merge(cache, mask)
        self._rows.extend(rows)
        self._after_choices([(start + g, row, logits[g]) for g, row in enumerate(rows)])

    def _merge(self, cache, mask: torch.Tensor) -> None:
        if self._cache is None:
            self._cache, self._mask = cache, mask
            return
        width_a, width_b = self._mask.shape[1], mask.shape[1]
        width = max(width_a, width_b)
        for mine, theirs in zip(self._cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_cols(mine.keys, width - width_a), _pad_cols(theirs.keys, width - width_b)])
            mine.values = torch.cat([_pad_cols(mine.values, width - width_a),
                                     _pad_cols(theirs.values, width - width_b)])
        self._mask = torch.cat([torch.nn.functional.pad(self._mask, (width - width_a, 0)),
                                torch.nn.functional.pad(mask, (width - width_b, 0))])

    # ------------------------------------------------------------ generation: one decoding step
    def _step(self) -> None:
        if any(row.ticket.cancelled for row in self._rows):
            self._keep([b for b, row in enumerate(self._rows) if not row.ticket.cancelled])
            if not self._rows:
                return
        rows = self._rows
        model = self.loaded.model
        last = torch.tensor([[row.ids[-1]] for row in rows])
        positions = torch.tensor([[row.n_prompt + len(row.ids) - 1] for row in rows])
        mask = torch.cat([self._mask, torch.ones((len(rows), 1), dtype=self._mask.dtype)], dim=1)
        kwargs = dict(input_ids=last, past_key_values=self._cache, use_cache=True, position_ids=positions,
                      **gen._logits_kwargs(self.loaded))
        if not bool(mask.all()):
            kwargs["attention_mask"] = mask
        try:
            with cap.run_slot(), torch.inference_mode():
                out = model(**kwargs)
            logits = out.logits[:, -1]
        except Exception as exc:  # noqa: BLE001 - each row runs alone, so only a bad one fails
            log.warning("batched decoding step failed (%s): %d requests run alone", exc, len(rows))
            for row in rows:
                self._alone(row, f"step failed: {type(exc).__name__}")
            self._rows, self._cache, self._mask = [], None, None
            return
        self._mask = mask
        self.stats["steps"] += 1
        self._after_choices([(b, row, logits[b]) for b, row in enumerate(rows)])

    def _after_choices(self, choices) -> None:
        """Each row's choice from its logits; rows that finished, failed or must run alone leave."""
        self.stats["decode_rows"] = max(self.stats["decode_rows"], len(self._rows))
        self.stats["tokens_in_flight"] = max(self.stats["tokens_in_flight"], sum(r.tokens for r in self._rows))
        leaving = set()
        for b, row, logits in choices:
            try:
                outcome = self._choose(row, logits)
            except cap.InputError as exc:      # e.g. a forced token outside the vocabulary: this row only
                row.ticket.put("error", exc)
                leaving.add(b)
                continue
            except Exception as exc:  # noqa: BLE001
                log.warning("choice failed (%s): the request runs alone", exc)
                self._alone(row, f"choice failed: {type(exc).__name__}")
                leaving.add(b)
                continue
            if outcome == "alone":
                self._alone(row, "near tie")
                leaving.add(b)
            elif outcome == "done":
                full = torch.tensor([list(row.job.built.ids) + row.ids])
                with self._cond:
                    self._passes.append(_Pass(inputs={"input_ids": full}, ticket=row.ticket, row=row))
                leaving.add(b)
        if leaving:
            self._keep([b for b in range(len(self._rows)) if b not in leaving])

    def _choose(self, row: _Row, logits: torch.Tensor) -> str:
        """The same choice, in the same order of events, as :func:`viz.generation._decode` makes alone."""
        job = row.job
        logits = logits.to(dtype=torch.float32)                       # (vocab,) raw logits
        vocab = logits.shape[-1]
        row.k = min(job.top_k, vocab)
        step = len(row.ids)
        p = torch.softmax(logits, dim=-1)
        top = torch.topk(p, row.k)
        state = row.generator.get_state() if job.sample else None
        drawn = gen._sample(logits, job.temperature, job.top_p, row.generator) if job.sample \
            else int(torch.argmax(logits))
        if step not in job.branch and not certain(logits, drawn, sample=job.sample, temperature=job.temperature,
                                                  top_p=job.top_p, generator_state=state):
            return "alone"
        token = job.branch.get(step, drawn)
        if not 0 <= token < vocab:
            raise cap.InputError(f"Token id {token} is not in this model's vocabulary (0..{vocab - 1})")
        row.ids.append(token)
        row.probs.append(float(p[token]))
        row.forced.append(step in job.branch)
        row.tops.append(top.indices.numpy().astype(np.int64))
        row.top_probs.append(top.values.numpy().astype(np.float32))
        row.ticket.put("token", gen._announce(self.loaded, step, token, row.probs[-1], row.forced[-1]))
        if token in job.eos:
            row.stop = "eos"
            return "done"
        return "done" if len(row.ids) >= job.max_new_tokens else "next"

    def _keep(self, keep: list[int]) -> None:
        """Only these rows stay in the batch; cache columns that are padding for every row go too."""
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        if len(keep) < len(self._rows):
            index = torch.tensor(keep)
            self._cache.batch_select_indices(index)
            self._mask = self._mask[index]
            self._rows = [self._rows[b] for b in keep]
        unused = int((self._mask.shape[1] - self._mask.sum(dim=1)).min())   # leading padding of every row
        if unused:
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, unused:]
                layer.values = layer.values[:, :, unused:]
            self._mask = self._mask[:, unused:]

    def _alone(self, row: _Row, why: str) -> None:
        self.stats["alone"][why] += 1
        row.ticket.put("alone")

    # ------------------------------------------------------------ single passes
    def _run_passes(self, items: list[_Pass]) -> None:
        """One right-padded forward pass over ``items``; each gets its own (1, H, n, n) rows and columns."""
        for item in items:
            if item.row is None:
                item.ticket.put("start")
        self.stats["passes"] += 1
        self.stats["pass_rows"] = max(self.stats["pass_rows"], len(items))
        try:
            attentions = self._padded_pass([item.inputs for item in items])
        except Exception as exc:  # noqa: BLE001 - each runs alone (in its own thread), so only a bad one fails
            log.warning("batched pass of %d failed (%s): each runs alone", len(items), exc)
            for item in items:
                self.stats["alone"][f"pass failed: {type(exc).__name__}"] += 1
                item.ticket.put("alone")
            return
        for b, item in enumerate(items):
            n = item.n
            mine = tuple(a[b:b + 1, :, :n, :n].clone() for a in attentions) if attentions else attentions
            if item.row is None:
                item.ticket.put("done", mine)
                continue
            try:
                pattern = cap._stack(mine, "self", self.loaded.info.n_layers)     # (L, H, T, T)
            except cap.ModelError as exc:
                item.ticket.put("error", exc)
                continue
            item.ticket.put("done", (item.row.steps(), pattern))

    def _padded_pass(self, inputs: list[dict]):
        model = self.loaded.model
        extra = cap._last_logits_only(self.loaded)
        if len(inputs) == 1:
            batch = inputs[0]     # alone: exactly the inputs a lone run gives the model
        else:
            lengths = [int(x["input_ids"].shape[1]) for x in inputs]
            longest = max(lengths)
            batch = {}
            for key in inputs[0]:
                fill = _pad_id(self.loaded) if key == "input_ids" else 0
                tensor = torch.full((len(inputs), longest), fill, dtype=inputs[0][key].dtype)
                for b, x in enumerate(inputs):
                    tensor[b, :lengths[b]] = x[key][0]
                batch[key] = tensor
            mask = torch.zeros((len(inputs), longest), dtype=torch.long)
            for b, n in enumerate(lengths):
                mask[b, :n] = 1
            batch["attention_mask"] = mask
        with cap.run_slot(), torch.inference_mode():
            out = model(**batch, output_attentions=True, **extra)
        return getattr(out, "attentions", None)


# ---------------------------------------------------------------- the exactness check
def certain(logits: torch.Tensor, token: int, *, sample: bool, temperature: float = 1.0, top_p: float = 1.0,
            generator_state: torch.Tensor | None = None, tolerance: float = LOGIT_TOLERANCE) -> bool:
    """True when ``token`` is the choice for every logits vector within ``tolerance`` of ``logits``.

    Greedy: the top logit leads the next by more than twice the tolerance.  Sampled (the draw of
    :func:`viz.generation._sample` from a generator in ``generator_state``): torch.multinomial's one-sample
    draw is argmax_i p_i / q_i with q_i ~ Exp(1) taken from the generator; with those q, ``token`` must
    stay the argmax of log p_i - log q_i against every token that may be in the nucleus, by more than
    the scores can move, and must itself be in the nucleus whatever the logits within the tolerance.
    Any doubt (including the rebuilt draw not matching) is False: the request then runs alone.
    """
    logits = logits.to(dtype=torch.float32)
    if not sample:
        best = torch.topk(logits.double(), 2).values
        return bool(best[0] - best[1] > 2 * tolerance)
    move = tolerance / temperature                       # the most any score (logit / T) can move
    replay = torch.Generator()
    replay.set_state(generator_state)
    q = torch.empty_like(logits).exponential_(1, generator=replay)
    kept_scores = gen._nucleus(logits / temperature, top_p)
    if int(torch.argmax(torch.softmax(kept_scores, dim=-1) / q)) != token:
        return False                                     # not the draw torch made: trust nothing
    scores = logits.double() / temperature
    value = scores - torch.log(q.double())               # log(p_i / q_i) + the same constant for every i
    if top_p < 1.0:
        removed_surely, kept_surely = _nucleus_bounds(scores, top_p, move)
        if not kept_surely[token]:
            return False
        rivals = ~removed_surely
    else:
        rivals = torch.ones_like(scores, dtype=torch.bool)
    rivals[token] = False
    if not bool(rivals.any()):
        return True
    # 2 * move: each score moves by at most ``move``; 1e-5 covers float32 rounding of p / q in the draw.
    return bool(value[token] - value[rivals].max() > 2 * move + 1e-5)


def _nucleus_bounds(scores: torch.Tensor, top_p: float, move: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(surely removed, surely kept) by the top-p cut for every score vector within ``move`` of ``scores``.

    A token is removed when the probability of the tokens sorted at or below it is at most 1 - top_p.
    Within ``move`` each probability changes by a factor within exp(+-2 move), and tokens within 2 move of
    its score may sort on either side of it; the float32 cumulative sum rounds by up to vocab x eps.
    """
    threshold = 1.0 - top_p
    p = torch.softmax(scores, dim=-1)
    ordered, order = torch.sort(scores)
    cumulative = torch.cumsum(p[order], dim=0)
    below = torch.cat([cumulative.new_zeros(1), cumulative])          # below[j]: mass of the j lowest
    rounding = scores.numel() * 6e-8
    low = math.exp(-2 * move) * (below[torch.searchsorted(ordered, scores - 2 * move)] + p) - rounding
    high = math.exp(2 * move) * below[torch.searchsorted(ordered, scores + 2 * move, right=True)] + rounding
    top = int(torch.argmax(scores))
    removed = high <= threshold
    kept = low > threshold
    removed[top] = False          # the most likely token is always kept
    return removed, kept


# ---------------------------------------------------------------- tensors
def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (batch, longest) int64, padded on the left."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, longest - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[b, longest - len(row):] = 1
    return ids, mask


def _pad_cols(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, T, D) -> (B, H, n + T, D), zeros on the left (masked columns)."""
    return torch.nn.functional.pad(x, (0, 0, n, 0)) if n else x


def _pad_id(loaded: LoadedModel) -> int:
    # The id under the mask never reaches a real token; any valid id does.
    for value in (getattr(loaded.tokenizer, "pad_token_id", None), getattr(loaded.model.config, "pad_token_id", None),
                  getattr(loaded.tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


__all__ = ["Engine", "LOGIT_TOLERANCE", "capture", "certain", "engine_for", "generate", "shared_forward",
           "load_model"]
