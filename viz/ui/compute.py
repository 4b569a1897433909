"""Every cache of the app, and the one route to the current result and to one layer's internals.

Models are shared by all sessions through st.cache_resource; results through a
byte-bounded LRU (viz.cache.ByteLRU: results are frozen, so sessions share one object
instead of st.cache_data's pickled copies). Pages ask :func:`current_result` for the
sidebar's input and :func:`layer_internals` for one layer's q/k/v/scores: the latter
records only that layer, stops the forward pass there and keeps only that layer
(a few MB), not a second full result. Analyses that pages would otherwise redo on every
rerun (head metrics, similarity map, flow, efficient-attention patterns) are memoised here
too, keyed by the input, never by a session.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from viz import corpus, efficient, flow, models, stats
from viz.cache import ByteLRU
from viz.result import AttentionResult, Block, LayerInternals
from viz.settings import SETTINGS
from viz.ui import state

log = logging.getLogger("viz")

_RESULTS = ByteLRU(SETTINGS.cache_mb * 1024 * 1024)
# One layer's internals at 512 tokens of a 12-head model are ~35 MB; a tenth of the budget holds several.
_INTERNALS = ByteLRU(max(32, SETTINGS.cache_mb // 10) * 1024 * 1024)


# ---------------------------------------------------------------- models
@st.cache_resource(max_entries=3, show_spinner=False)
def _load_model(name: str) -> models.LoadedModel:
    # cap=None: the family's default cap (2,048 on decoders, 512 otherwise; VIZ_MAX_TOKENS sets both).
    return models.load_model(None if name == models.EMBEDDED else name)


def loaded_model(name: str | None = None) -> models.LoadedModel | None:
    """The shared model, or None after showing a one-line error."""
    name = state.allowed_model(name if name is not None else state.get("model", models.EMBEDDED))
    try:
        with st.spinner(f"Loading {models.display_name(name)}…"):
            return _load_model(name)
    except models.ModelError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - never a traceback for a student
        log.exception("model load failed")
        st.error(f"Could not load {name}: {type(exc).__name__}")
    return None


# ---------------------------------------------------------------- results
def _input_key(loaded, text, pair, target) -> tuple:
    return (loaded.path, text, pair or "", target or "")


def _run_capture(loaded, text, pair, target, on_wait=None, on_start=None) -> AttentionResult:
    from viz.batching import capture   # viz.capture.capture, its forward pass shared with others waiting
    return capture(text, pair=pair or None, target=target or None, model=loaded, on_wait=on_wait,
                   on_start=on_start)


@contextlib.contextmanager
def _model_run_messages():
    """A still "waiting" message while another session holds the forward-pass slot, a spinner only
    for this session's own run: 30 tabs spinning while they wait cost their browsers CPU for nothing."""
    waiting = st.empty()
    with contextlib.ExitStack() as running:
        def on_wait(ahead: int) -> None:
            waiting.info(f"Waiting for a free slot ({ahead} {'student' if ahead == 1 else 'students'} "
                         f"ahead)…", icon="⏳")

        def on_start() -> None:
            waiting.empty()
            running.enter_context(st.spinner("Running the model…"))
        try:
            yield on_wait, on_start
        finally:
            waiting.empty()


def _shown_errors(run: Callable):
    """Run ``run()``; a person's mistake becomes a warning, anything else a one-line error."""
    from viz.capture import InputError
    try:
        return run()
    except (InputError, models.ModelError) as exc:
        st.warning(str(exc))
    except Exception as exc:  # noqa: BLE001
        log.exception("capture failed")
        st.error(f"The model could not process this text ({type(exc).__name__}). Try a shorter or plainer text.")
    return None


def result_for(text: str, *, pair: str = "", target: str = "", model: str | None = None) -> AttentionResult | None:
    """Capture for any input (cached, shared by every session), or None after showing a clear message."""
    loaded = loaded_model(model)
    if loaded is None:
        return None
    key = _input_key(loaded, text, pair, target)
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached

    def run():
        with _model_run_messages() as (on_wait, on_start):
            return _RESULTS.get_or_compute(
                key, lambda: _run_capture(loaded, text, pair, target, on_wait=on_wait, on_start=on_start))
    return _shown_errors(run)


def _current_input() -> dict:
    return dict(text=state.get("text", state.DEFAULT_TEXT), pair=state.get("pair", ""),
                target=state.get("target", ""), model=state.get("model", models.EMBEDDED))


def current_result(*, warn: bool = True) -> AttentionResult | None:
    """The result for the sidebar's current input (shared cache); None after showing why.

    In generation mode (``gen=1``) it is the attention over the prompt and what the model
    generated, so every page can show a generation.
    """
    if state.flag("gen"):
        generated = generation(state.generation_settings())
        if generated is not None:
            return generated.attention
    heads, mode = state.ablation()
    result = ablated_result(heads, mode) if heads else result_for(**_current_input())
    if warn and result is not None and result.truncated:
        st.warning(f"Your text was truncated: {result.truncated} tokens were dropped to fit this model's "
                   f"limit of {result.model.max_length} tokens.", icon=":material/content_cut:")
    return result


def _recall(loaded, text, pair, target) -> AttentionResult:
    return _RESULTS.get_or_compute(_input_key(loaded, text, pair, target),
                                   lambda: _run_capture(loaded, text, pair, target))


def result_later() -> Callable[[], AttentionResult] | None:
    """The current input's result, fetched again when called: for download buttons' data.

    Streamlit keeps a session's deferred download functions until the session is dropped
    (30 s after its tab closed). A function closing over the result would keep every such
    session's result alive (75 MB at 512 tokens) past VIZ_CACHE_MB; this one holds only the
    input and the shared model, and finds the result in the cache (or captures it again)
    when the button is pressed. Call it during the script run, use what it returns any time.
    """
    inputs = _current_input()
    loaded = loaded_model(inputs.pop("model"))
    if loaded is None:
        return None
    return functools.partial(_recall, loaded, inputs["text"], inputs["pair"], inputs["target"])


def layer_internals(kind: str, layer: int) -> LayerInternals | None:
    """q, k, v, scores... of one layer for the current input; None after saying why.

    Only that layer is recorded and the forward pass stops right after it, so picking a
    layer costs at most one partial forward pass and that layer's arrays.
    """
    from viz.capture import InternalsUnavailable, capture_layer
    inputs = _current_input()
    loaded = loaded_model(inputs["model"])
    if loaded is None:
        return None
    if state.flag("gen"):   # the pages show the generated sequence: record its layer
        return _generated_internals(loaded, kind, int(layer))
    heads, mode = state.ablation()   # with heads knocked out, the internals of that run
    key = (*_input_key(loaded, inputs["text"], inputs["pair"], inputs["target"]), kind, int(layer), heads, mode)

    def record(on_wait, on_start):
        from viz.ablation import ablated
        with ablated(loaded, heads, mode=mode) if heads else contextlib.nullcontext():
            return capture_layer(inputs["text"], pair=inputs["pair"] or None, target=inputs["target"] or None,
                                 model=loaded, site=(kind, int(layer)), on_wait=on_wait, on_start=on_start)

    def run():
        with _model_run_messages() as (on_wait, on_start):
            return _INTERNALS.get_or_compute(key, lambda: record(on_wait, on_start))
    try:
        return _shown_errors(run)
    except InternalsUnavailable as exc:
        st.info(str(exc))
        return None


def _generated_internals(loaded, kind: str, layer: int) -> LayerInternals | None:
    """One layer's internals over the generated sequence: the same tokens forced, that layer recorded."""
    from viz.capture import InternalsUnavailable
    from viz.generation import generate
    settings = state.generation_settings()
    generated = generation(settings, show_progress=False)
    if generated is None:
        return None
    key = ("gen_internals", loaded.path, state.current_text(), settings, kind, layer)
    forced = {step: int(token) for step, token in enumerate(generated.step_ids)}

    def run():
        return generate(state.current_text(), loaded, max_new_tokens=settings.new, chat=settings.chat,
                        forced=forced, internals=[(kind, layer)]).attention.internals[(kind, layer)]
    try:
        return _shown_errors(lambda: _INTERNALS.get_or_compute(key, run))
    except InternalsUnavailable as exc:
        st.info(str(exc))
        return None


# ---------------------------------------------------------------- analyses memoised by input
def _block_key(result: AttentionResult, block: Block) -> tuple:
    return (result.model.name, result.text, result.pair, result.target, block.kind, block.pattern.shape,
            tuple(block.queries.tokens))


_ANALYSES = ByteLRU(64 * 1024 * 1024)


def _memo(name: str, key: tuple, build: Callable):
    return _ANALYSES.get_or_compute((name, *key), build)


def head_metrics(result: AttentionResult, block: Block):
    """Per-head metrics of a (possibly transformed) block; shared by every session showing it."""
    flags = state.view_key()

    def measure():
        if getattr(block.pattern, "summary", True) is None:   # a long result under the view options
            # every layer recomputed and transformed would take minutes: estimated from sampled rows
            words, hide, first = flags
            return stats.estimated_head_metrics(result.block(block.kind), word_level=words, hide_special=hide,
                                                hide_first=first)
        return stats.head_metrics(block)
    return _memo("metrics", (*_block_key(result, block), flags), measure)


SIMILARITY_ROWS = 96   # beyond this many query tokens the distances are estimated from a sample of rows


def similarity_map(result: AttentionResult, kind: str):
    block = result.block(kind)
    return _memo("similarity", _block_key(result, block),
                 lambda: stats.similarity_map(block, seed=0, max_rows=SIMILARITY_ROWS))


def distances_from(result: AttentionResult, kind: str, layer: int, head: int) -> np.ndarray:
    """One head's mean Jensen-Shannon distance to every head over SIMILARITY_ROWS query rows (long results:
    the similarity map is drawn from thumbnails, the nearest-heads table from these)."""
    block = result.block(kind)
    return _memo("distances_from", (*_block_key(result, block), int(layer), int(head)),
                 lambda: stats.distances_from(block, layer, head, max_rows=SIMILARITY_ROWS))


def efficient_head(key: tuple, layer: int, head: int, config, internals) -> list:
    return _memo("eff_head", (*key, layer, head, config),
                 lambda: efficient.approximate_head(efficient.HeadInput.from_internals(internals, head),
                                                    config=config))


def efficient_layer(key: tuple, layer: int, config, internals):
    return _memo("eff_layer", (*key, layer, config), lambda: efficient.layer_metrics(internals, config=config))


def efficient_summary(key: tuple, config, causal: bool, pattern: np.ndarray):
    # a long result is estimated from SUMMARY_ROWS query rows of each layer (the page says so)
    return _memo("eff_summary", (*key, config), lambda: efficient.head_summary(
        pattern, config=config, causal=causal, max_rows=efficient.SUMMARY_ROWS))


@st.cache_resource(show_spinner=False)
def attention_cost_benchmark():
    """Full vs windowed attention timed once per server (at most 3 s)."""
    from viz import costbench   # torch: only imported when the measurement is shown
    return costbench.run()


def flow_of(result: AttentionResult, kind: str) -> Callable:
    """``flow(head_mean, layer)`` for the flow page, memoised by the (small) head mean it is given."""
    import hashlib

    def run(head_mean: np.ndarray, layer: int) -> flow.FlowResult:
        digest = hashlib.blake2b(np.ascontiguousarray(head_mean).tobytes(), digest_size=16).hexdigest()
        return _memo("flow", (result.model.name, kind, head_mean.shape, digest, layer),
                     lambda: flow.attention_flow(head_mean, layer=layer))
    return run


@dataclass(frozen=True)
class DetectorScores:
    scores: object            # pandas DataFrame: layer, head, one column per detector
    probe: str | None         # the repeated random sequence decoders were run on


def detector_scores(result: AttentionResult, kind: str, block: Block) -> DetectorScores | None:
    """Head detectors: on ``block`` for encoders; for decoders on a random word sequence shown twice
    (Olsson et al. 2022), since previous-token and induction heads show best there. None after why."""
    if not block.causal:
        return DetectorScores(stats.detect_heads(block), None)
    loaded = loaded_model(state.get("model"))
    if loaded is None:
        return None
    try:
        probe = stats.repeated_random_text(loaded.tokenizer.get_vocab(), seed=0, pool=corpus.word_pool(),
                                           max_tokens=loaded.info.max_length)
    except ValueError as exc:
        st.warning(str(exc))
        return None
    if result.family == "encoder-decoder":
        probe_result = result_for(result.text, target=probe, model=state.get("model"))
    else:
        probe_result = result_for(probe, model=state.get("model"))
    if probe_result is None:
        return None
    return DetectorScores(stats.detect_heads(probe_result.block(kind)), probe)


@dataclass
class CorpusRun:
    """One session's corpus run: kept in its session state between reruns, so Stop can end it and Analyse
    go on from where it stopped (``job`` holds the running per-head sums and which texts are done)."""

    key: tuple
    texts: tuple
    job: corpus.CorpusJob = field(default_factory=corpus.CorpusJob)
    stopped: bool = False

    @property
    def done(self) -> int:
        return self.job.n_done

    @property
    def acc(self) -> corpus.MetricAccumulator:
        return self.job.acc


def run_corpus(run: CorpusRun, kind: str, *, progress: Callable[[str, float], None]) -> None:
    """The run's remaining texts through the current model in padded batches (viz.batch), streaming the
    per-head sums into ``run.job``; ``progress(line, fraction)`` after every batch."""
    from viz import batch
    loaded = loaded_model(state.get("model"))
    if loaded is None:
        return
    batch.corpus_stats(run.texts, model=loaded, kind=kind, job=run.job, should_stop=lambda: run.stopped,
                       progress=lambda p: progress(p.line(), p.fraction))


# ---------------------------------------------------------------- language models
def _decoder(model: str | None) -> models.LoadedModel | None:
    loaded = loaded_model(model)
    if loaded is not None and loaded.info.family != "decoder":
        st.info(f"{models.display_name(loaded.info.name)} is an {loaded.info.family} model: this needs a "
                f"decoder (a language model). Pick the embedded LLM in the sidebar.", icon=":material/info:")
        return None
    return loaded


def generation(settings: state.GenerationSettings, *, show_progress: bool = True):
    """The GenerationResult of the current prompt with ``settings`` (shared cache); None after why.

    While the model generates, the tokens appear on the page as they come ("generating, 12 of 20").
    """
    from viz.batching import generate   # viz.generation.generate, decoding in one batch with other sessions
    inputs = _current_input()
    loaded = _decoder(inputs["model"])
    if loaded is None:
        return None
    key = ("generate", loaded.path, inputs["text"], settings)
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached
    shown = st.empty() if show_progress else None
    words: list[str] = []

    def on_token(token) -> None:
        words.append(token.label if not token.label.isspace() else token.token)
        if shown is not None:
            shown.info(f"Generating, {token.step + 1} of {settings.new}: {' '.join(words)}", icon="✍️")

    def run():
        with _model_run_messages() as (on_wait, on_start):
            return _RESULTS.get_or_compute(key, lambda: generate(
                inputs["text"], loaded, max_new_tokens=settings.new, chat=settings.chat, sample=settings.sample,
                temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                forced=settings.forced or None, on_token=on_token, on_wait=on_wait, on_start=on_start))
    try:
        return _shown_errors(run)
    finally:
        if shown is not None:
            shown.empty()


def predictions(text: str, model: str | None):
    """Next-token predictions at every position of ``text`` (shared cache); None after why."""
    from viz.lm import predictions as predict
    loaded = _decoder(model)
    if loaded is None:
        return None
    return _shown_errors(lambda: _RESULTS.get_or_compute(("predictions", loaded.path, text),
                                                         lambda: predict(text, loaded)))


def logit_lens(text: str, model: str | None, position: int):
    """The logit lens at ``position`` of ``text`` (shared cache); None after why."""
    from viz.lm import logit_lens as lens
    loaded = _decoder(model)
    if loaded is None:
        return None
    return _shown_errors(lambda: _RESULTS.get_or_compute(("lens", loaded.path, text, int(position)),
                                                         lambda: lens(text, loaded, position=int(position))))



# ---------------------------------------------------------------- ablation
def ablated_result(heads, mode: str) -> AttentionResult | None:
    """The current input captured with ``heads`` knocked out (every view can show it)."""
    from viz.ablation import ablated_capture
    inputs = _current_input()
    loaded = loaded_model(inputs["model"])
    if loaded is None:
        return None
    key = ("ablated", *_input_key(loaded, inputs["text"], inputs["pair"], inputs["target"]), tuple(heads), mode)
    return _shown_errors(lambda: _RESULTS.get_or_compute(key, lambda: ablated_capture(
        inputs["text"], heads, model=loaded, mode=mode, pair=inputs["pair"] or None,
        target=inputs["target"] or None)))


def ablation_effect(heads, mode: str):
    """What knocking ``heads`` out does to the output for the current text (decoder or encoder effect)."""
    from viz.ablation import effect
    inputs = _current_input()
    loaded = loaded_model(inputs["model"])
    if loaded is None:
        return None
    key = ("effect", loaded.path, inputs["text"], tuple(heads), mode)
    return _shown_errors(lambda: _RESULTS.get_or_compute(key, lambda: effect(inputs["text"], heads, model=loaded,
                                                                             mode=mode)))


def masked_effect(heads, mode: str):
    """The masked-LM top-k before/after for the current text (its first mask token), or None."""
    from viz.ablation import has_masked_lm, masked_top_k
    inputs = _current_input()
    loaded = loaded_model(inputs["model"])
    if loaded is None or loaded.info.family != "encoder" or not has_masked_lm(loaded):
        return None
    key = ("masked", loaded.path, inputs["text"], tuple(heads), mode)
    return _shown_errors(lambda: _RESULTS.get_or_compute(key, lambda: masked_top_k(inputs["text"], heads,
                                                                                   model=loaded, mode=mode)))


def continuation(heads, mode: str, new: int = 20):
    """Greedy continuations of the current text before and after the ablation (decoders)."""
    from viz.ablation import continuation as continue_text
    inputs = _current_input()
    loaded = _decoder(inputs["model"])
    if loaded is None:
        return None
    key = ("continuation", loaded.path, inputs["text"], tuple(heads), mode, new)
    with st.spinner("Generating with and without those heads…"):
        return _shown_errors(lambda: _RESULTS.get_or_compute(key, lambda: continue_text(
            inputs["text"], heads, model=loaded, mode=mode, max_new_tokens=new)))


def head_importance(method: str, mode: str = "zero"):
    """Importance of every head for the current text, with a progress bar (shared cache)."""
    from viz.ablation import head_importance as importance
    inputs = _current_input()
    loaded = loaded_model(inputs["model"])
    if loaded is None:
        return None
    key = ("importance", loaded.path, inputs["text"], method, mode)
    cached = _RESULTS.get(key)
    if cached is not None:
        return cached
    bar = st.progress(0.0, text="Scoring every head…")

    def on_progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Scoring every head… {done} of {total}")
    try:
        return _shown_errors(lambda: _RESULTS.get_or_compute(key, lambda: importance(
            inputs["text"], method=method, model=loaded, mode=mode, on_progress=on_progress)))
    finally:
        bar.empty()
