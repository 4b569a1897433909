"""Shared batches (viz.batching) against lone runs: what each request gets back is what it gets alone.

Requests are submitted from threads at once while the test holds the forward-pass slot, so they
really wait together: the first ones start a batch and the rest join it while it runs (their caches
merged into the running one).  Each result is compared with viz.generation.generate / viz.capture.capture
run alone: tokens identical (greedy and seeded sampling), attention and probabilities within 1e-4
(generation) and 1e-5 (capture).  Tiny random models: Llama with grouped-query attention, GPT-2, BERT.
"""
from __future__ import annotations

import contextlib
import functools
import threading
import time

import numpy as np
import pytest
import torch

from viz import batching, generation
from viz.capture import InputError, capture, run_slot
from viz.models import load_model

PROMPTS = ["the cat sat on the mat", "a dog", "hello world",
           "the quick brown fox jumps over the lazy dog because it was too tired",
           "the keys to the cabinet are on the table", "red blue", "it was",
           "the animal didn t cross the street because it was too wide"]
# A mix of what students ask for: greedy and sampled (own seeds, temperatures, nuclei), chat or
# not, a branch, and different lengths.
SETTINGS = [dict(), dict(sample=True, seed=3, temperature=1.3), dict(sample=True, seed=7, top_p=0.8),
            dict(chat=True), dict(max_new_tokens=1), dict(sample=True, seed=11, temperature=0.7, top_p=0.5),
            dict(forced={2: 5}), dict(chat=True, sample=True, seed=5, max_new_tokens=12)]


@pytest.fixture(scope="module")
def llama(tiny_models):
    return load_model(tiny_models["llama"])


@pytest.fixture(scope="module")
def gpt2(tiny_models):
    return load_model(tiny_models["decoder"])


@pytest.fixture(scope="module")
def bert(tiny_models):
    return load_model(tiny_models["encoder"])


def fresh_engine(loaded, **caps) -> batching.Engine:
    """A new engine for ``loaded`` (its stats start at zero), used by batching.generate/capture."""
    engine = batching.Engine(loaded, **caps)
    loaded.__dict__["_batch_engine"] = engine
    return engine


def together(engine, calls: list, *, hold: bool = True) -> list:
    """Run ``calls`` in threads at once; each returns its value or the exception it raised.

    With ``hold`` the forward-pass slot is held until every call has been submitted, so the worker's
    first unit waits and the later requests queue up behind it (and then join its batch).
    """
    out: list = [None] * len(calls)
    start = threading.Barrier(len(calls) + 1)

    def run(i):
        start.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    with run_slot() if hold else contextlib.nullcontext():
        start.wait()
        deadline = time.monotonic() + 30
        while hold and engine.stats["submitted"] < len(calls) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    return out


class Progress:
    """An on_token callback that records what it got and in which thread."""

    def __init__(self):
        self.steps, self.ids, self.threads = [], [], set()

    def __call__(self, token):
        self.steps.append(token.step)
        self.ids.append(token.token_id)
        self.threads.add(threading.get_ident())


def same_generation(alone, shared, *, atol=1e-4):
    assert shared.step_ids.tolist() == alone.step_ids.tolist()
    assert shared.tokens.token_ids.tolist() == alone.tokens.token_ids.tolist()
    assert shared.completion == alone.completion and shared.stop == alone.stop
    assert shared.forced.tolist() == alone.forced.tolist() and shared.n_prompt == alone.n_prompt
    np.testing.assert_allclose(shared.step_probs, alone.step_probs, atol=atol)
    np.testing.assert_allclose(shared.top_probs, alone.top_probs, atol=atol)
    # The same alternatives, wherever their probabilities are not within float error of each other.
    apart = np.abs(np.diff(alone.top_probs, axis=1)) > 1e-5
    first = np.cumprod(np.concatenate([np.ones((len(apart), 1), bool), apart], axis=1), axis=1).astype(bool)
    assert (shared.top_ids[first] == alone.top_ids[first]).all()
    assert shared.attentions.shape == alone.attentions.shape
    worst = float(np.abs(shared.attentions - alone.attentions).max())
    assert worst <= atol, worst
    return worst


def lone_generations(loaded, prompts, settings, new=8):
    return [generation.generate(p, loaded, **{"max_new_tokens": new, **s}) for p, s in zip(prompts, settings)]


def shared_calls(loaded, prompts, settings, progress, new=8):
    return [functools.partial(batching.generate, p, loaded, on_token=progress[i], **{"max_new_tokens": new, **s})
            for i, (p, s) in enumerate(zip(prompts, settings))]


# ---------------------------------------------------------------- generation
@pytest.mark.parametrize("name, final_pass", [("llama", False), ("llama", True), ("gpt2", False)])
def test_generations_together_match_lone_runs(name, final_pass, request):
    """Attention from the batch's own prefill and steps (default), or from a shared final pass."""
    loaded = request.getfixturevalue(name)
    chat_ok = generation.supports_chat(loaded)
    settings = [s if chat_ok else {k: v for k, v in s.items() if k != "chat"} for s in SETTINGS]
    alone = lone_generations(loaded, PROMPTS, settings)
    engine = fresh_engine(loaded, final_pass=final_pass)
    progress = [Progress() for _ in PROMPTS]
    shared = together(engine, shared_calls(loaded, PROMPTS, settings, progress))
    for i, (a, b) in enumerate(zip(alone, shared)):
        assert not isinstance(b, Exception), b
        same_generation(a, b)
        # Progress ("12 of 20"): every step once, in order, this request's own tokens, in its own thread.
        assert progress[i].steps == list(range(a.n_steps)) and progress[i].ids == a.step_ids.tolist()
        assert len(progress[i].threads) == 1
    assert len(set().union(*(p.threads for p in progress))) == len(PROMPTS)
    # It really was batched: rows decoded together, later ones joined a running batch, and (final pass)
    # finished sequences shared their pass.
    assert engine.stats["decode_rows"] >= 4 and engine.stats["joined_running"] >= 1
    assert engine.stats["pass_rows"] >= 2 if final_pass else engine.stats["passes"] == 0


@pytest.mark.parametrize("final_pass", [False, True])
def test_a_lone_request_in_the_engine_is_bit_identical(llama, final_pass):
    """One request alone in the batcher gives the model exactly the tensors generate() does (with a final
    pass, its attention too; without, its rows come from the cached steps: float error only)."""
    alone = generation.generate(PROMPTS[3], llama, max_new_tokens=10, sample=True, seed=9)
    fresh_engine(llama, final_pass=final_pass)
    shared = batching.generate(PROMPTS[3], llama, max_new_tokens=10, sample=True, seed=9)
    worst = same_generation(alone, shared, atol=1e-5)
    assert worst == 0.0 if final_pass else worst <= 1e-5
    np.testing.assert_array_equal(shared.top_probs, alone.top_probs)
    np.testing.assert_array_equal(shared.step_probs, alone.step_probs)


def test_near_ties_run_again_alone(llama, monkeypatch):
    """A choice that padding could flip is not trusted: the request is replayed alone, exactly, and its
    progress goes on without announcing a step twice."""
    alone = lone_generations(llama, PROMPTS[:5], SETTINGS[:5])
    engine = fresh_engine(llama)
    monkeypatch.setattr(batching, "LOGIT_TOLERANCE", 1e9)        # every batched choice is a "near tie"
    progress = [Progress() for _ in range(5)]
    shared = together(engine, shared_calls(llama, PROMPTS[:5], SETTINGS[:5], progress))
    for a, b, p in zip(alone, shared, progress):
        same_generation(a, b)
        assert p.steps == list(range(a.n_steps)) and p.ids == a.step_ids.tolist()
    assert engine.stats["replays"] == 5


def test_a_replay_goes_back_into_the_batch(llama, monkeypatch):
    """A near tie at step 2 of two requests (one greedy, one sampled): each is replayed alone up to that
    choice, then decodes on in the shared batch beside the two others; all four are still lone runs."""
    alone = lone_generations(llama, PROMPTS[:4], SETTINGS[:4])
    engine = fresh_engine(llama)
    choose, certain = batching.Engine._choose, batching.certain
    current = {}

    def spy(self, row, logits):
        current["row"] = row
        return choose(self, row, logits)

    def tied(*args, **kwargs):        # requests 0 and 1 tie at step 2 the first time they get there
        row = current["row"]
        return certain(*args, **kwargs) and not (row.job.text in PROMPTS[:2] and row.replays == 0
                                                 and len(row.ids) == 2)
    monkeypatch.setattr(batching.Engine, "_choose", spy)
    monkeypatch.setattr(batching, "certain", tied)
    progress = [Progress() for _ in range(4)]
    shared = together(engine, shared_calls(llama, PROMPTS[:4], SETTINGS[:4], progress))
    for a, b, p in zip(alone, shared, progress):
        assert not isinstance(b, Exception), b
        same_generation(a, b)
        assert p.steps == list(range(a.n_steps)) and p.ids == a.step_ids.tolist()
    assert all(a.n_steps == 8 for a in alone)
    assert engine.stats["replays"] == 2 and engine.stats["rejoined"] == 2
    assert engine.stats["decode_rows"] == 4
    # After rejoining, the replayed rows decoded in shared steps of more than one row.
    solo_steps = sum(kind == "solo step" for _, kind, *_ in engine.trace)
    assert solo_steps < 2 * 7


def test_a_failing_request_fails_alone(tiny_models):
    """A forced token outside the vocabulary, a prompt that makes the model raise, an empty prompt and a
    callback that raises (a Streamlit rerun) each fail their own request; the others are exact."""
    loaded = load_model(tiny_models["llama"])           # its own instance: its forward is patched below
    good = PROMPTS[:4]
    alone = lone_generations(loaded, good, SETTINGS[:4])
    # A token of the bad prompt that no good request ever feeds the model.
    used = {int(i) for a in alone for i in a.tokens.token_ids}
    poison = next(i for i in loaded.tokenizer("the katze is big")["input_ids"] if i not in used)
    forward = loaded.model.forward

    @functools.wraps(forward)
    def fragile(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and bool((ids == poison).any()):
            raise RuntimeError("this prompt breaks the model")
        return forward(*args, **kwargs)
    loaded.model.forward = fragile

    def stop(token):
        if token.step == 2:
            raise KeyboardInterrupt("rerun")       # Streamlit's rerun is not an Exception either

    engine = fresh_engine(loaded)
    progress = [Progress() for _ in good]
    calls = shared_calls(loaded, good, SETTINGS[:4], progress) + [
        functools.partial(batching.generate, "the cat", loaded, max_new_tokens=8, forced={1: 10 ** 6}),
        functools.partial(batching.generate, "the katze is big", loaded, max_new_tokens=8),
        functools.partial(batching.generate, "   ", loaded, max_new_tokens=8),
        functools.partial(_catching, functools.partial(batching.generate, "the dog ran", loaded, max_new_tokens=8,
                                                       on_token=stop)),
    ]
    out = together(engine, calls)
    for a, b in zip(alone, out):
        assert not isinstance(b, BaseException), b
        same_generation(a, b)
    assert isinstance(out[4], InputError) and "vocabulary" in str(out[4])
    assert isinstance(out[5], RuntimeError) and "breaks the model" in str(out[5])
    assert isinstance(out[6], InputError) and "empty" in str(out[6])
    assert isinstance(out[7], KeyboardInterrupt)
    _wait_idle(engine)


def _catching(call):
    try:
        return call()
    except KeyboardInterrupt as exc:
        return exc


def test_caps_are_respected(llama):
    prompts, settings = PROMPTS * 2, SETTINGS * 2
    alone = lone_generations(llama, prompts, settings)
    widest = max(a.n_prompt + a.max_new_tokens for a in alone)          # prompt + new tokens of the longest
    engine = fresh_engine(llama, max_size=3, max_tokens=2 * widest, final_pass=True)
    waited = []
    calls = [functools.partial(batching.generate, p, llama, on_wait=waited.append, **{"max_new_tokens": 8, **s})
             for p, s in zip(prompts, settings)]
    out = together(engine, calls)
    for a, b in zip(alone, out):
        same_generation(a, b)
    assert 2 <= engine.stats["decode_rows"] <= 3
    assert engine.stats["tokens_in_flight"] <= 2 * widest
    assert engine.stats["pass_rows"] <= 3
    assert all(rows <= 3 for _, kind, rows, *_ in engine.trace)
    assert waited, "a request kept out by the caps is told it waits"


def test_engine_lets_go_when_idle(llama):
    engine = fresh_engine(llama)
    together(engine, shared_calls(llama, PROMPTS[:3], SETTINGS[:3], [None] * 3))
    _wait_idle(engine)
    assert engine._shared.cache is None and not engine._shared.rows and not engine._solos
    assert not engine._waiting and not engine._passes


def _wait_idle(engine):
    deadline = time.monotonic() + 10
    while engine._worker is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine._worker is None


# ---------------------------------------------------------------- single captures
def test_captures_together_match_lone_captures(bert, llama):
    texts = ["the cat sat on the mat", "a dog", "the quick brown fox jumps over the lazy dog because it was tired",
             "hello world", "the keys to the cabinet are on the table"]
    cases = ([(bert, t, None) for t in texts] + [(bert, t, "the dog ran") for t in texts[:3]]
             + [(llama, t, None) for t in texts])
    alone = [capture(t, pair=pair, model=m) for m, t, pair in cases]
    engines = {id(m): fresh_engine(m) for m in (bert, llama)}
    started = [[] for _ in cases]
    calls = [functools.partial(batching.capture, t, pair=pair, model=m, on_start=functools.partial(
        lambda i: started[i].append(threading.get_ident()), i)) for i, (m, t, pair) in enumerate(cases)]
    # Hold the slot until both engines have every request of theirs.
    out: list = [None] * len(calls)

    def run(i):
        out[i] = calls[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    with run_slot():
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while sum(e.stats["submitted"] for e in engines.values()) < len(calls) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.05)
    for t in threads:
        t.join(60)
    worst = 0.0
    for a, b in zip(alone, out):
        assert b.tokens.token_ids.tolist() == a.tokens.token_ids.tolist() and b.pair == a.pair
        assert b.attentions.shape == a.attentions.shape
        worst = max(worst, float(np.abs(b.attentions - a.attentions).max()))
    assert worst <= 1e-5, worst
    assert all(len(s) == 1 for s in started)
    assert all(e.stats["pass_rows"] >= 2 for e in engines.values())


def test_a_failing_capture_fails_alone(tiny_models):
    """A text that makes the model raise breaks its shared pass: every text of that pass runs again alone,
    so only the bad one fails."""
    loaded = load_model(tiny_models["encoder"])        # its own instance: its forward is patched below
    texts = ["the cat sat on the mat", "a dog", "hello world", "the keys to the cabinet are on the table"]
    alone = [capture(t, model=loaded) for t in texts]
    used = {int(i) for a in alone for i in a.tokens.token_ids}
    poison = next(i for i in loaded.tokenizer("der hund ist klein")["input_ids"] if i not in used)
    forward = loaded.model.forward

    @functools.wraps(forward)
    def fragile(*args, **kwargs):
        if bool((kwargs["input_ids"] == poison).any()):
            raise RuntimeError("this text breaks the model")
        return forward(*args, **kwargs)
    loaded.model.forward = fragile
    engine = fresh_engine(loaded)
    # Two bad texts: whichever request the worker takes first (alone), a bad one shares a later pass.
    bad = ["der hund ist klein", "klein ist der hund"]
    calls = [functools.partial(batching.capture, t, model=loaded) for t in [*texts, *bad]]
    out = together(engine, calls)
    for a, b in zip(alone, out):
        assert not isinstance(b, Exception), b
        np.testing.assert_allclose(b.attentions, a.attentions, atol=1e-5)
    assert all(isinstance(o, RuntimeError) for o in out[len(texts):])
    assert engine.stats["pass_rows"] >= 2
    assert sum(engine.stats["alone"].values()) >= 2     # the broken shared pass's texts ran again alone


def test_capture_with_internals_runs_alone(llama):
    alone = capture("the cat sat", model=llama, internals=True)
    engine = fresh_engine(llama)
    shared = batching.capture("the cat sat", model=llama, internals=True)
    assert engine.stats["submitted"] == 0
    assert set(shared.internals) == set(alone.internals)
    np.testing.assert_array_equal(shared.attentions, alone.attentions)


# ---------------------------------------------------------------- the tie check itself
def _choice(logits, *, sample, temperature, top_p, state):
    if not sample:
        return int(torch.argmax(logits))
    g = torch.Generator()
    g.set_state(state)
    return generation._sample(logits, temperature, top_p, g)


@pytest.mark.parametrize("sample", [False, True])
def test_a_certain_choice_survives_every_perturbation(sample):
    """Whenever certain() trusts a choice, logits moved by up to the tolerance (random and worst-case
    directions) give the same choice; exact ties are never trusted; clear choices mostly are."""
    tol = 1e-3
    trusted = 0
    rng = torch.Generator().manual_seed(0)
    for trial in range(120):
        logits = torch.randn(400, generator=rng) * (0.5, 2.0, 6.0)[trial % 3]
        if trial % 6 == 0:                               # near ties at the top
            logits[1] = logits.max() + (0.0, 4e-4, 3e-3)[trial % 4 % 3]
            logits[2] = logits[1] - 1e-4
        temperature, top_p = (1.0, 0.7, 1.5)[trial % 3], (1.0, 0.9, 0.5, 0.97)[trial % 4]
        state = torch.Generator().manual_seed(trial).get_state()
        token = _choice(logits, sample=sample, temperature=temperature, top_p=top_p, state=state)
        if not batching.certain(logits, token, sample=sample, temperature=temperature, top_p=top_p,
                                generator_state=state, tolerance=tol):
            continue
        trusted += 1
        rival = torch.full_like(logits, tol)
        rival[token] = -tol                              # everything else up, the choice down
        moves = [rival, -rival, *((torch.rand(400, generator=rng) * 2 - 1) * tol for _ in range(8)),
                 *(torch.sign(torch.randn(400, generator=rng)) * tol for _ in range(8))]
        for move in moves:
            assert _choice(logits + move, sample=sample, temperature=temperature, top_p=top_p,
                           state=state) == token
    assert trusted >= 80
    tie = torch.zeros(50)
    assert not batching.certain(tie, 0, sample=False)
    tie[[3, 7]] = 2.0
    assert not batching.certain(tie, 3, sample=False, tolerance=tol)
