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
A choice closer than that to a tie is not trusted: the request leaves the batch and runs again alone, with
exactly a lone run's tensors, which gives the lone result by construction.  Once that replay has made the
untrusted choice it goes back into the shared batch (its cache, a lone run's, merged in as a newcomer's
is; its later choices checked again), so a near tie costs a lone run up to that step, not a whole one
decoding beside the batch; a request that ties a second time stays alone to the end.  When a batched
forward pass fails its requests run alone (:func:`viz.generation.generate`'s own path), so one bad
request fails only itself.

Long prompts (whose attention is above VIZ_FULL_PATTERN_MB) never join a batch: a batch collects every
layer's (T, T) weights of its prefill, so they decode alone, where the final pass keeps queries and keys.

Isolation: each request has a private event queue read by its own thread, which calls its own
``on_token``/``on_wait``/``on_start`` (Streamlit calls must come from the session's thread) and gets
only its own result; a callback that raises (a rerun) cancels that request alone.
"""
from __future__ import annotations

import functools
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
# Measured on SmolLM2-135M-Instruct (benchmarks/batching.py: 30 padded rows x 64 steps, every logit of
# every step): at most 1.0e-4, so this leaves a factor of 10.  A choice within twice this of a tie is
# replayed alone instead (about 1 request in 10 to 30 in a class, most of them sampled ones).
LOGIT_TOLERANCE = 1e-3
_MB = 1024 * 1024
SOLO_CATCH_UP = 4        # one-row replay steps per shared step while a replay redoes steps already shown


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
    if cap.pattern_bytes(job.loaded.info, len(job.built.ids) + job.max_new_tokens) > \
            cap.SETTINGS.full_pattern_mb * _MB:
        # A batch collects every layer's (T, T) weights of its prefill (and a lone final pass keeps only
        # queries and keys, viz.capture.compact_pass): a long prompt decodes alone rather than cost
        # L x H x T^2 float32 (4.5 GB for the embedded LLM at 2,048 tokens).
        with engine._cond:
            engine.stats["alone"]["long prompt"] += 1
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
    """One generation being decoded (the worker's own state; its ticket is the way out)."""

    job: gen._Job
    ticket: _Ticket
    generator: torch.Generator | None
    tokens: int                      # prompt + new tokens: its share of VIZ_BATCH_MAX_TOKENS
    solo: bool = False               # replayed alone, exactly as a lone run: no tie check needed
    announced: int = 0               # steps its requester has already been told (a replay skips them)
    replays: int = 0                 # times this request was started again alone (1: it may rejoin the batch)
    told_to_wait: bool = False
    ids: list = field(default_factory=list)
    probs: list = field(default_factory=list)
    forced: list = field(default_factory=list)
    tops: list = field(default_factory=list)
    top_probs: list = field(default_factory=list)
    stop: str = "length"
    k: int = 0
    closing: bool = False            # finished: fed its last token once more, for that token's attention row
    prompt_attention: np.ndarray | None = None   # (L, H, n_prompt, n_prompt), from the prefill
    step_attention: list = field(default_factory=list)   # (L, H, n_prompt + k + 1) for generated token k

    @classmethod
    def new(cls, job: gen._Job, ticket: _Ticket, *, solo: bool = False, announced: int = 0,
            replays: int = 0) -> _Row:
        # Each request draws from its own generator, seeded as a lone run seeds it.
        generator = torch.Generator().manual_seed(job.seed) if job.sample else None
        return cls(job=job, ticket=ticket, generator=generator, tokens=len(job.built.ids) + job.max_new_tokens,
                   solo=solo, announced=announced, replays=replays)

    @property
    def may_rejoin(self) -> bool:
        """A first replay that has made, alone, the choice it was replayed for: its tokens so far and its
        cache are a lone run's, so it can decode on in the shared batch (its later choices checked again)."""
        return self.solo and self.replays == 1 and len(self.ids) > self.announced and not self.closing

    @property
    def n_prompt(self) -> int:
        return len(self.job.built.ids)

    def attention(self) -> np.ndarray:
        """(L, H, T, T) over prompt + generated tokens: the rows a full pass over the sequence gives, as the
        batch computed them (row i only reads keys up to i, so the cache makes the same rows)."""
        if self.prompt_attention is None or len(self.step_attention) != len(self.ids):
            raise cap.ModelError("The model returned no self attention weights (its attention implementation "
                                 "does not expose them)")
        n_layers, n_heads, n, _ = self.prompt_attention.shape
        total = n + len(self.ids)
        pattern = np.zeros((n_layers, n_heads, total, total), dtype=np.float32)
        pattern[:, :, :n, :n] = self.prompt_attention
        for k, row in enumerate(self.step_attention):
            pattern[:, :, n + k, : n + k + 1] = row
        return pattern

    def steps(self) -> gen._Steps:
        return gen._Steps(ids=list(self.ids), probs=list(self.probs), forced=list(self.forced),
                          top_ids=np.stack(self.tops) if self.tops else np.zeros((0, self.k), dtype=np.int64),
                          top_probs=(np.stack(self.top_probs) if self.top_probs
                                     else np.zeros((0, self.k), dtype=np.float32)),
                          stop=self.stop)


@dataclass(eq=False)
class _Group:
    """Rows decoding together: row b of the key/value cache is ``rows[b]``.

    One shared group takes every newcomer; a solo group holds one replayed row, run with exactly the
    tensors a lone run gives the model (no padding, no mask), so its choices are a lone run's."""

    solo: bool = False
    rows: list = field(default_factory=list)
    cache: object = None
    mask: torch.Tensor | None = None           # (B, C) int64: 1 = a real token in that cache column

    def merge(self, cache, mask: torch.Tensor) -> None:
        """Add a prefilled cache's rows: the narrower side is padded on the left (masked columns)."""
        if self.cache is None:
            self.cache, self.mask = cache, mask
            return
        width_a, width_b = self.mask.shape[1], mask.shape[1]
        width = max(width_a, width_b)
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_pad_cols(mine.keys, width - width_a), _pad_cols(theirs.keys, width - width_b)])
            mine.values = torch.cat([_pad_cols(mine.values, width - width_a),
                                     _pad_cols(theirs.values, width - width_b)])
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (width - width_a, 0)),
                               torch.nn.functional.pad(mask, (width - width_b, 0))])

    def keep(self, keep: list[int]) -> None:
        """Only these rows stay; cache columns that are padding for every remaining row go too."""
        if not keep:
            self.rows, self.cache, self.mask = [], None, None
            return
        if len(keep) < len(self.rows):
            index = torch.tensor(keep)
            self.cache.batch_select_indices(index)
            self.mask = self.mask[index]
            self.rows = [self.rows[b] for b in keep]
        unused = int((self.mask.shape[1] - self.mask.sum(dim=1)).min())    # leading padding of every row
        if unused:
            for layer in self.cache.layers:
                layer.keys = layer.keys[:, :, unused:]
                layer.values = layer.values[:, :, unused:]
            self.mask = self.mask[:, unused:]


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


def buckets(lengths: Sequence[int], *, slack: float = 0.25, pass_cost: int = 64) -> list[list[int]]:
    """Positions into ``lengths`` grouped by length, so padding adds at most ``slack`` to a group's tokens
    (plus ``pass_cost``: what one more forward pass costs anyway, in tokens).

    A padded forward pass costs about rows x longest; one prompt of 46 tokens among prompts of 16 would
    nearly triple the work of the others, while a few short texts are cheaper padded into one pass."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is not None:
            total = sum(lengths[j] for j in group) + lengths[i]
            if (len(group) + 1) * lengths[i] <= (1 + slack) * total + pass_cost:
                group.append(i)
                continue
        groups.append([i])
    return groups


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
    """One model's shared batches: the waiting requests, the decoding groups and the worker thread."""

    def __init__(self, loaded: LoadedModel, *, max_size: int | None = None, max_tokens: int | None = None,
                 attention_mb: int | None = None, final_pass: bool | None = None):
        import inspect
        self.loaded = loaded
        # How a finished generation gets its attention: from the prefill and steps that made it (default),
        # or from one more padded pass over the whole sequence (VIZ_BATCH_FINAL_PASS=1), as a lone run does.
        self.final_pass = SETTINGS.batch_final_pass if final_pass is None else final_pass
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
        # Worker-only state.
        self._shared = _Group()
        self._solos: list[_Group] = []
        self._replays: list[_Row] = []
        self._joining: list[_Row] = []             # admitted, being prefilled
        # What happened, for tests and benchmarks: the largest batches, seconds per kind of work,
        # and how many requests ran alone and why.
        self.stats = {"submitted": 0, "decode_rows": 0, "tokens_in_flight": 0, "pass_rows": 0, "alone": Counter(),
                      "replays": 0, "rejoined": 0, "steps": 0, "passes": 0, "prefills": 0, "joined_running": 0,
                      "prefill_s": 0.0, "step_s": 0.0, "pass_s": 0.0}
        # The last units of work: (start time, kind, rows, tokens per row, model seconds, total seconds).
        self.trace: deque = deque(maxlen=4000)

    @property
    def _decoding(self) -> list[_Row]:
        return self._joining + self._shared.rows + [row for group in self._solos for row in group.rows]

    # ------------------------------------------------------------ submitting (requesters' threads)
    def submit_generation(self, job: gen._Job) -> _Ticket:
        ticket = _Ticket(self)
        row = _Row.new(job, ticket)
        with self._cond:
            self.stats["submitted"] += 1
            self._waiting.append(row)
            self._start_locked()
        return ticket

    def submit_pass(self, model_inputs: dict) -> _Ticket:
        ticket = _Ticket(self)
        item = _Pass(inputs=dict(model_inputs), ticket=ticket)
        with self._cond:
            self.stats["submitted"] += 1
            if len(self._passes) >= self.max_size:
                ticket.put("wait", 1 + len(self._passes) // self.max_size)
            self._passes.append(item)
            self._start_locked()
        return ticket

    def ensure_worker(self) -> None:
        with self._cond:
            if self._waiting or self._passes or self._decoding or self._replays:
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
                    if not joining and not passes and not self._decoding and not self._replays:
                        self._worker = None
                        return
                    self._joining = list(joining)
                replays, self._replays = self._replays, []
                for row in replays:
                    self._prefill(_Group(solo=True), [row])
                for bucket in buckets([row.n_prompt for row in joining]):
                    for rows in self._within_attention([joining[i] for i in bucket]):
                        self._prefill(self._shared, rows)
                        with self._cond:
                            self._joining = [row for row in self._joining if row not in rows]
                if passes:
                    self._run_passes(passes)
                if self._shared.rows:
                    self._step(self._shared)
                for group in self._solos:
                    # A replay first redoes steps its student has already seen: a few of its cheap
                    # one-row steps per shared step, so it does not trail the batch by that much;
                    # past the choice it was replayed for, it goes back into the batch.
                    for _ in range(SOLO_CATCH_UP if group.rows and len(group.rows[0].ids) < group.rows[0].announced
                                   else 1):
                        if group.rows and not self._rejoined(group):
                            self._step(group)
                    self._rejoined(group)
                self._solos = [group for group in self._solos if group.rows]
        except BaseException as exc:   # a bug here must not leave requesters waiting: each runs alone
            log.exception("batching worker failed")
            with self._cond:
                items = self._decoding + self._replays + list(self._waiting) + list(self._passes)
                self._shared, self._solos, self._replays, self._joining = _Group(), [], [], []
                self._waiting.clear()
                self._passes.clear()
                self._worker = None
            for ticket in {id(item.ticket): item.ticket for item in items}.values():
                self.stats["alone"][f"worker failed: {type(exc).__name__}"] += 1
                ticket.put("alone")

    def _rejoined(self, group: _Group) -> bool:
        """A solo group's replayed row goes back into the shared batch if it may (and the batch is running:
        alone it would be a shared group of one, with checks a solo row does not need).  Its lone cache is
        merged in (left padded) as a newcomer's prefilled cache is; between units of work every row's last
        token is yet to be fed, so both sides are at the same point of a step."""
        if not (group.rows and group.rows[0].may_rejoin and self._shared.rows):
            return False
        row = group.rows[0]
        row.solo = False
        self._shared.merge(group.cache, group.mask)
        self._shared.rows.append(row)
        group.rows, group.cache, group.mask = [], None, None
        self.stats["rejoined"] += 1
        return True

    def _admit_locked(self) -> list[_Row]:
        """Waiting generations that fit the caps, first come first served (the first fits an empty batch)."""
        joining: list[_Row] = []
        busy = self._decoding + self._replays
        n_rows, in_flight = len(busy), sum(r.tokens for r in busy)
        while self._waiting:
            row = self._waiting[0]
            if row.ticket.cancelled:
                self._waiting.popleft()
                continue
            n = n_rows + len(joining)
            if n and (n + 1 > self.max_size or in_flight + row.tokens > self.max_tokens):
                break
            joining.append(self._waiting.popleft())
            in_flight += row.tokens
        for ahead, row in enumerate(self._waiting, start=1):
            if not row.told_to_wait:      # kept out by the caps: say so once ("N students ahead")
                row.told_to_wait = True
                row.ticket.put("wait", ahead)
        return joining

    def _take_passes_locked(self) -> list[_Pass]:
        """The oldest waiting pass and the others that can share its forward pass, within the caps."""
        taken: list[_Pass] = []
        kept: deque[_Pass] = deque()
        while self._passes:
            item = self._passes.popleft()
            if item.ticket.cancelled:
                continue
            if taken and not (item.key == taken[0].key and len(taken) + 1 <= self.max_size
                              and sum(p.n for p in taken) + item.n <= self.max_tokens):
                kept.append(item)
                continue
            taken.append(item)
        self._passes = kept
        return taken

    def _within_attention(self, items: list) -> list[list]:
        """``items`` (sorted by length) cut into runs whose attention, all layers at once with a copy,
        stays within VIZ_BATCH_ATTENTION_MB (one item always goes, however long)."""
        info = self.loaded.info
        per_cell = info.n_layers * info.n_heads * 4 * 2
        runs: list[list] = []
        for item in items:
            n = item.n_prompt if isinstance(item, _Row) else item.n
            if runs and (len(runs[-1]) + 1) * per_cell * n * n <= self.attention_mb * _MB:
                runs[-1].append(item)
            else:
                runs.append([item])
        return runs

    # ------------------------------------------------------------ generation: prefill and merge
    def _prefill(self, group: _Group, rows: list[_Row]) -> None:
        """Prefill ``rows`` together (left padding), merge their cache into ``group``, make their first choice."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
        model = self.loaded.model
        for row in rows:
            if not row.solo:
                row.ticket.put("start")
        ids, mask = _left_pad([list(row.job.built.ids) for row in rows], _pad_id(self.loaded))
        cache = DynamicCache(config=model.config)
        kwargs = dict(input_ids=ids, past_key_values=cache, use_cache=True,
                      position_ids=(mask.cumsum(-1) - 1).clamp(min=0), **gen._logits_kwargs(self.loaded))
        if not bool(mask.all()):
            kwargs["attention_mask"] = mask
        if not self.final_pass:
            kwargs["output_attentions"] = True
        began = time.perf_counter()
        try:
            with cap.run_slot(), torch.inference_mode():
                out = model(**kwargs)
                logits = out.logits[:, -1]                                       # (G, vocab)
                if not self.final_pass and _has(out.attentions):
                    attention = torch.stack(out.attentions)                     # (L, G, H, P, P)
                    width = ids.shape[1]
                    for g, row in enumerate(rows):      # each row's own block: the padding is on the left
                        n = row.n_prompt
                        row.prompt_attention = attention[:, g, :, width - n:, width - n:].float().numpy().copy()
        except Exception as exc:  # noqa: BLE001 - one bad prompt must not fail the others: each runs alone
            log.warning("batched prefill failed (%s): %d requests run alone", exc, len(rows))
            for row in rows:
                self._alone(row, f"prefill failed: {type(exc).__name__}")
            return
        finally:
            model_s = time.perf_counter() - began
            self.stats["prefill_s"] += model_s
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer) is not DynamicLayer for layer in layers):
            self.decodes = False         # a cache we do not know how to merge: this model runs alone from now on
            for row in rows:
                self._alone(row, "cache type")
            return
        self.stats["prefills"] += 1
        start = len(group.rows)
        self.stats["joined_running"] += bool(start)
        group.merge(cache, mask)
        group.rows.extend(rows)
        if group.solo and group not in self._solos:
            self._solos.append(group)
        self._after_choices(group, [(start + g, row, logits[g]) for g, row in enumerate(rows)])
        self.trace.append((began, "prefill", len(rows), ids.shape[1], model_s, time.perf_counter() - began))

    # ------------------------------------------------------------ generation: one decoding step
    def _step(self, group: _Group) -> None:
        if any(row.ticket.cancelled for row in group.rows):
            group.keep([b for b, row in enumerate(group.rows) if not row.ticket.cancelled])
            if not group.rows:
                return
        rows = group.rows
        last = torch.tensor([[row.ids[-1]] for row in rows])
        positions = torch.tensor([[row.n_prompt + len(row.ids) - 1] for row in rows])
        mask = torch.cat([group.mask, torch.ones((len(rows), 1), dtype=group.mask.dtype)], dim=1)
        kwargs = dict(input_ids=last, past_key_values=group.cache, use_cache=True, position_ids=positions,
                      **gen._logits_kwargs(self.loaded))
        if not bool(mask.all()):
            kwargs["attention_mask"] = mask
        if not self.final_pass:
            kwargs["output_attentions"] = True
        began = time.perf_counter()
        try:
            with cap.run_slot(), torch.inference_mode():
                out = self.loaded.model(**kwargs)
                logits = out.logits[:, -1]
                if not self.final_pass and _has(out.attentions):
                    attention = torch.stack(out.attentions)                     # (L, B, H, 1, C)
                    width = mask.shape[1]
                    for b, row in enumerate(rows):      # its real keys: the last n_prompt + len(ids) columns
                        k = row.n_prompt + len(row.ids)
                        row.step_attention.append(attention[:, b, :, 0, width - k:].float().numpy().copy())
        except Exception as exc:  # noqa: BLE001 - each row runs alone, so only a bad one fails
            log.warning("batched decoding step failed (%s): %d requests run alone", exc, len(rows))
            for row in rows:
                self._alone(row, f"step failed: {type(exc).__name__}")
            group.keep([])
            return
        finally:
            model_s = time.perf_counter() - began
            self.stats["step_s"] += model_s
        group.mask = mask
        self.stats["steps"] += 1
        closing = {b for b, row in enumerate(rows) if row.closing}
        for b in closing:
            self._finish(rows[b])
        self._after_choices(group, [(b, row, logits[b]) for b, row in enumerate(rows) if b not in closing],
                            leaving=closing)
        self.trace.append((began, "solo step" if group.solo else "step", len(rows), mask.shape[1], model_s,
                           time.perf_counter() - began))

    def _after_choices(self, group: _Group, choices, *, leaving: set | None = None) -> None:
        """Each row's choice from its logits; rows that finished, failed or must be replayed leave."""
        rows = self._shared.rows + [row for solo in self._solos for row in solo.rows]
        self.stats["decode_rows"] = max(self.stats["decode_rows"], len(rows))
        self.stats["tokens_in_flight"] = max(self.stats["tokens_in_flight"], sum(r.tokens for r in rows))
        leaving = set(leaving or ())
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
            if outcome == "replay":
                # A near tie: start this request again on its own, as a lone run (no step is announced twice).
                # The first time, it goes back to the batch once it has made that choice alone; a request
                # that ties again stays alone to the end (at most twice a lone run's passes).
                self.stats["replays"] += not row.replays          # requests replayed, not replays
                self._replays.append(_Row.new(row.job, row.ticket, solo=True, announced=len(row.ids),
                                              replays=row.replays + 1))
                leaving.add(b)
            elif outcome == "done" and not self.final_pass:
                row.closing = True      # one more step feeds its last token: that token's attention row
            elif outcome == "done":
                full = torch.tensor([list(row.job.built.ids) + row.ids])
                with self._cond:
                    self._passes.append(_Pass(inputs={"input_ids": full}, ticket=row.ticket, row=row))
                leaving.add(b)
        if leaving:
            group.keep([b for b in range(len(group.rows)) if b not in leaving])

    def _choose(self, row: _Row, logits: torch.Tensor) -> str:
        """The choice :func:`viz.generation._decode` makes alone, with the same events in the same order."""
        job = row.job
        logits = logits.to(dtype=torch.float32)                       # (vocab,) raw logits
        vocab = logits.shape[-1]
        row.k = min(job.top_k, vocab)
        step = len(row.ids)
        p = torch.softmax(logits, dim=-1)                             # temperature 1, for display
        top = torch.topk(p, row.k)
        state = row.generator.get_state() if job.sample else None
        drawn = gen._sample(logits, job.temperature, job.top_p, row.generator) if job.sample \
            else int(torch.argmax(logits))
        if not row.solo and step not in job.branch and not certain(
                logits, drawn, sample=job.sample, temperature=job.temperature, top_p=job.top_p,
                generator_state=state):
            return "replay"
        token = job.branch.get(step, drawn)
        if not 0 <= token < vocab:
            raise cap.InputError(f"Token id {token} is not in this model's vocabulary (0..{vocab - 1})")
        row.ids.append(token)
        row.probs.append(float(p[token]))
        row.forced.append(step in job.branch)
        row.tops.append(top.indices.numpy().astype(np.int64))
        row.top_probs.append(top.values.numpy().astype(np.float32))
        if step >= row.announced:
            row.ticket.put("token", gen._announce(self.loaded, step, token, row.probs[-1], row.forced[-1]))
        if token in job.eos:
            row.stop = "eos"
            return "done"
        return "done" if len(row.ids) >= job.max_new_tokens else "next"

    def _finish(self, row: _Row) -> None:
        try:
            pattern = row.attention()
        except cap.ModelError as exc:
            row.ticket.put("error", exc)
            return
        row.ticket.put("done", (row.steps(), pattern))

    def _alone(self, row: _Row, why: str) -> None:
        self.stats["alone"][why] += 1
        row.ticket.put("alone")

    # ------------------------------------------------------------ single passes
    def _run_passes(self, items: list[_Pass]) -> None:
        """Right-padded forward passes over ``items`` (grouped by length); each gets its own rows and columns."""
        for item in items:
            if item.row is None:
                item.ticket.put("start")
        for bucket in buckets([item.n for item in items]):
            for batch in self._within_attention([items[i] for i in bucket]):
                self._pass_batch(batch)

    def _pass_batch(self, items: list[_Pass]) -> None:
        self.stats["passes"] += 1
        self.stats["pass_rows"] = max(self.stats["pass_rows"], len(items))
        began = time.perf_counter()
        try:
            attentions = self._padded_pass([item.inputs for item in items])
        except Exception as exc:  # noqa: BLE001 - each runs alone (in its own thread), so only a bad one fails
            log.warning("batched pass of %d failed (%s): each runs alone", len(items), exc)
            for item in items:
                self.stats["alone"][f"pass failed: {type(exc).__name__}"] += 1
                item.ticket.put("alone")
            return
        finally:
            model_s = time.perf_counter() - began
            self.stats["pass_s"] += model_s
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
        self.trace.append((began, "pass", len(items), max(item.n for item in items), model_s,
                           time.perf_counter() - began))

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
                if key == "attention_mask":
                    continue
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
            generator_state: torch.Tensor | None = None, tolerance: float | None = None) -> bool:
    """True when ``token`` is the choice for every logits vector within ``tolerance`` of ``logits``.

    Greedy: the top logit leads the next by more than twice the tolerance.  Sampled (the draw of
    :func:`viz.generation._sample` from a generator in ``generator_state``): torch.multinomial's one-sample
    draw is argmax_i p_i / q_i with q_i ~ Exp(1) from the generator (:func:`_draw_is_understood` checks
    this once against torch itself); with those q, ``token`` must lead log p_i - log q_i by more than the
    scores can move over every token that may be in the top-p nucleus, and must itself surely be in it.
    Any doubt is False: the request then runs again alone.
    """
    tolerance = LOGIT_TOLERANCE if tolerance is None else tolerance
    logits = logits.to(dtype=torch.float32)
    if not sample:
        best = torch.topk(logits, 2).values
        return bool(best[0] - best[1] > 2 * tolerance)
    if not _draw_is_understood():
        return False
    move = tolerance / temperature                       # the most any score (logit / T) can move
    replay = torch.Generator()
    replay.set_state(generator_state)
    q = torch.empty_like(logits).exponential_(1, generator=replay)
    scores = logits / temperature
    value = scores - torch.log(q)                        # log(p_i / q_i) + the same constant for every i
    rivals = torch.ones_like(scores, dtype=torch.bool)
    if top_p < 1.0:
        floor, kept = _nucleus_bounds(scores, token, top_p, move)
        if not kept:
            return False
        rivals = scores >= floor
    rivals[token] = False
    if not bool(rivals.any()):
        return True
    lead = value[token] - torch.where(rivals, value, -math.inf).max()
    # 2 * move: each score moves by at most ``move``; 1e-4 covers float32 rounding of scores, log q and p / q.
    return bool(lead > 2 * move + 1e-4)


def _nucleus_bounds(scores: torch.Tensor, token: int, top_p: float, move: float) -> tuple[float, bool]:
    """(floor, surely kept) of the top-p cut for every score vector within ``move`` of ``scores``.

    ``floor``: tokens scoring below it are surely cut.  ``surely kept``: ``token`` survives the cut.
    The cut removes a token when the tokens sorted at or below it hold at most 1 - top_p; within
    ``move`` each probability changes by a factor within exp(+-2 move) and tokens within 2 move of a
    score may sort on either side of it; the draw's float32 softmax and cumulative sum round by a few
    float32 ulps (torch accumulates the sum in double: :func:`_sums_are_accurate`), else by up to vocab x eps.
    """
    threshold = 1.0 - top_p
    rounding = 1e-5 if _sums_are_accurate() else scores.numel() * 6e-8
    ordered, order = torch.sort(scores)
    p = torch.softmax(scores.double(), dim=-1)
    cumulative = torch.cumsum(p[order], dim=0)                         # cumulative[j]: mass of the j + 1 lowest
    # Surely cut: even the most mass that can sort at or below it is within the threshold.
    n_cut = int(torch.searchsorted(cumulative, (threshold - rounding) * math.exp(-2 * move), right=True))
    floor = float(ordered[n_cut]) - 2 * move if n_cut < len(ordered) else math.inf
    # Surely kept: even the least mass that must sort at or below it is above the threshold ...
    below = int(torch.searchsorted(ordered, scores[token] - 2 * move))         # tokens surely lower
    mass = (float(cumulative[below - 1]) if below else 0.0) + float(p[token])
    kept = math.exp(-2 * move) * mass - rounding > threshold
    # ... or it is surely the most likely token, which the cut always keeps.
    others = torch.cat([scores[:token], scores[token + 1:]])
    kept = kept or bool(scores[token] - 2 * move > others.max())
    return floor, kept


@functools.cache
def _sums_are_accurate() -> bool:
    """torch.cumsum of float32 on this CPU accumulates in double: one float32 rounding per value, not one
    per addition (49,152 equal terms summed in float32 one by one would be off by ~1e-4)."""
    x = torch.full((49152,), 1e-5)
    return float((torch.cumsum(x, 0).double() - torch.cumsum(x.double(), 0)).abs().max()) < 1e-6


@functools.cache
def _draw_is_understood() -> bool:
    """torch.multinomial(p, 1) is argmax(p / q), q ~ Exp(1) drawn first from the same generator (the
    one-sample path of torch's CPU kernel), checked here once per process against torch itself."""
    for seed in range(8):
        p = torch.softmax(torch.randn(997, generator=torch.Generator().manual_seed(seed)) * 3, dim=-1)
        a, b = torch.Generator().manual_seed(seed + 100), torch.Generator().manual_seed(seed + 100)
        drawn = int(torch.multinomial(p, 1, generator=a))
        rebuilt = int(torch.argmax(p / torch.empty_like(p).exponential_(1, generator=b)))
        if drawn != rebuilt or not torch.equal(a.get_state(), b.get_state()):
            log.warning("torch.multinomial no longer draws as viz.batching assumes: sampled requests run alone")
            return False
    return True


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


def _has(attentions) -> bool:
    return bool(attentions) and all(a is not None for a in attentions)


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
