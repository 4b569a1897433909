"""Classroom load test: N students open the app at once, each with their own sentence.

Starts a Streamlit server on 127.0.0.1 (server mode, embedded model), warms it
with one visit, then opens N sessions at the same moment, with two kinds of client:

- ws: browser-less clients speaking Streamlit's websocket protocol (as its frontend
  does); time = connect until the script run that delivers the view (the heatmap's
  figure, checked for that student's word) has finished: the server's own cost;
- student: one Chromium tab (a fresh context: a first visit) opened at the same
  moment as N-1 ws sessions; time = navigation until the view is drawn: what one
  student sees on their own machine while the class presses Run (5 bursts, a sample each);
- browser: N tabs of one headless Debian Chromium (one context whose cache was
  warmed by one visit, or --separate-contexts); time = navigation until the script
  has finished and the view is drawn.  The browser shares this machine's cores.

The same bursts run against benchmarks/trivial_app.py, Streamlit's own floor on
this machine.  The server's RSS is sampled throughout, and each session records
whether it showed "Waiting for a free slot".  A soak then runs M sequential fresh
sessions (a new ~80-token sentence each, a small VIZ_CACHE_MB so the result cache
fills and evicts) and reports RSS over time: it must stay flat over the second half.

Two more sections (viz.batching, off unless asked for):
- --gen-bursts: N students generating 20 tokens each at once on the embedded LLM (/generate, all
  headless, then N-1 headless sessions and one Chromium tab), against the same N generations one after
  another in the same run on a server with VIZ_BATCHING=0 (lone runs); each student's tokens (the tab's
  read from its page) are compared with its lone run, and each headless session's time is split at its
  first and last progress line.  --gen-soak then runs that many generations in waves of
  --gen-soak-wave and reports RSS after each wave (it runs without --gen-bursts too).
- --queue-bursts: the burst of N heatmap runs on a server with VIZ_BATCHING=0 (the serialized queue)
  and on one with batching, the same N one after another, and the burst with every result already in
  the cache (the page's own cost, no forward pass).

Usage:
    .venv/bin/python benchmarks/load.py                          # bursts (ws + browser) + soak 300
    .venv/bin/python benchmarks/load.py --clients ws --soak 0    # quick: server cost only
    .venv/bin/python benchmarks/load.py --bursts 0 --soak 600 --soak-session-ttl 5
    .venv/bin/python benchmarks/load.py --bursts 0 --soak 0 --queue-bursts 3 --gen-bursts 2 --gen-soak 300
Results go to benchmarks/load_results.md (pass --out to change).  Every loop
and wait is bounded (--timeout per session, --soak-minutes for the soak).
"""
from __future__ import annotations

import argparse
import asyncio
import html
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from browser_tools import CHROMIUM_ARGS, chromium_path  # noqa: E402

ANIMALS = ("cat dog horse rabbit fox owl lion tiger bear wolf mouse goat sheep duck eagle shark whale frog "
           "snake monkey zebra camel deer bee ant crab seal swan hawk moose otter parrot turtle").split()
PLACES = ("street road river bridge field garden park forest hill square").split()
REASONS = ("it was too tired", "the light was red", "it heard a noise", "the road was wet",
           "it wanted to rest", "the wind was strong")


def sentence(i: int) -> tuple[str, str]:
    """Student i's own sentence and the word that must appear on that student's heatmap axis."""
    animal = ANIMALS[i % len(ANIMALS)]
    text = (f"The {animal} didn't cross the {PLACES[i % len(PLACES)]} because "
            f"{REASONS[i % len(REASONS)]} (student {i}).")
    return text, animal


def long_sentence(i: int) -> tuple[str, str]:
    """About 80 tokens, unique per run: fills the result cache quickly in the soak."""
    text, word = sentence(i)
    return " ".join([text] * 4) + f" Run number {i}.", word


# ---------------------------------------------------------------- server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    script: str
    env: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    url: str = ""
    log: Path | None = None

    def start(self, timeout: float = 120) -> "Server":
        port = _free_port()
        self.log = Path(f"/tmp/load-{Path(self.script).stem}-{port}.log")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **self.env)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamlit", "run", str(ROOT / self.script), "--server.port", str(port),
                 "--server.address", "127.0.0.1", "--server.headless", "true"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log.read_text()}")
            try:
                if urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2).status == 200:
                    return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"streamlit did not start in {timeout} s:\n{self.log.read_text()}")

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class RssSampler:
    """Peak and samples of the server's RSS, read from /proc every ``every`` seconds."""

    def __init__(self, server: Server, every: float = 0.25):
        self.server, self.every = server, every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self.server.rss_mb())
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


# ---------------------------------------------------------------- one session
READY = "[data-testid='stApp'][data-test-connection-state='CONNECTED'][data-test-script-state='notRunning']"
NO_SPINNER = "!document.querySelector(\"[data-testid='stSpinner']\")"


# The heatmap page's view: the canvas heatmap (viz/views/heatmap.py) once it has drawn; its text
# holds the tokens (a screen-reader description), so the student's word can be checked.
APP_VIEW = "#hm[data-drawn='1']"

# Did this session ever show the "waiting for a free slot" state (viz.ui.compute)?
WATCH_WAITING = """
window.__sawWaiting = false;
const __watch = setInterval(() => {
  if (document.body && document.body.textContent.includes('Waiting for a free slot')) {
    window.__sawWaiting = true; clearInterval(__watch);
  }
}, 150);
"""


@dataclass
class Outcome:
    seconds: float
    error: str = ""
    saw_waiting: bool = False
    html: str = ""          # the view's inner HTML, when asked for (a generation's tokens)


async def new_context(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(WATCH_WAITING)
    return context


async def one_session(browser, url: str, view: str, word: str, timeout_s: float, *, context=None,
                      grab_html: bool = False) -> Outcome:
    """Open ``url`` in a new tab (a new Streamlit session); time until the script finished and ``view`` shows ``word``.

    With ``context`` the tab shares that context's HTTP and code cache (as a student's browser
    that has loaded the app before would); without, it gets a fresh context of its own.
    """
    own = context is None
    if own:
        context = await new_context(browser)
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
    start = time.perf_counter()
    try:
        ms = timeout_s * 1000
        await page.goto(url, timeout=ms)
        drawn_view = page.locator(view).first
        await drawn_view.wait_for(state="visible", timeout=ms)
        await page.wait_for_selector(READY, timeout=ms)
        await page.wait_for_function(NO_SPINNER, timeout=ms)
        elapsed = time.perf_counter() - start
        drawn = await drawn_view.text_content(timeout=ms)
        problems = []
        if word and word not in (drawn or ""):
            problems.append(f"view lacks '{word}'")
        for testid in ("stException", "stAlertContentError"):
            if await page.locator(f"[data-testid='{testid}']").count():
                problems.append(testid + ": " + (await page.locator(f"[data-testid='{testid}']").first
                                                 .text_content() or "")[:120])
        if dialogs:
            problems.append(f"dialog: {dialogs}")
        return Outcome(elapsed, "; ".join(problems), bool(await page.evaluate("window.__sawWaiting")),
                       await drawn_view.inner_html(timeout=ms) if grab_html else "")
    except Exception as exc:  # noqa: BLE001 - a failed session is a result, not a crash
        return Outcome(time.perf_counter() - start, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    finally:
        await page.close()
        if own:
            await context.close()


async def ws_session(url: str, page_name: str, query: str, want: str, word: str, timeout_s: float) -> Outcome:
    """A browser-less session: Streamlit's own websocket protocol, as the frontend speaks it.

    Times from connecting until the script run that delivers the ``want`` element (the heatmap's
    canvas view, or the trivial page's markdown) has finished: the server's whole cost for one
    student, without a browser on this machine drawing it.
    """
    import websockets
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    start = time.perf_counter()
    problems, saw_waiting, got = [], False, ""
    try:
        async with websockets.connect(url.replace("http://", "ws://") + "/_stcore/stream", subprotocols=["streamlit"],
                                      max_size=2 ** 28, open_timeout=timeout_s) as ws:
            msg = BackMsg()
            msg.rerun_script.query_string = query
            msg.rerun_script.page_name = page_name
            await ws.send(msg.SerializeToString())
            deadline = start + timeout_s
            while True:
                fm = ForwardMsg()
                fm.ParseFromString(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.perf_counter())))
                kind = fm.WhichOneof("type")
                if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                    el = fm.delta.new_element
                    name = el.WhichOneof("type")
                    if name == want:
                        got = {"plotly_chart": lambda e: e.spec}.get(
                            name, lambda e: getattr(e, "body", "") or "drawn")(getattr(el, name))
                    elif name == "exception":
                        problems.append("exception: " + el.exception.message[:120])
                    elif name == "alert":
                        if el.alert.format == Alert.Format.Value("ERROR"):
                            problems.append("error: " + el.alert.body[:120])
                        saw_waiting |= "Waiting for a free slot" in el.alert.body
                elif kind == "script_finished" and fm.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY and got:
                    break
    except Exception as exc:  # noqa: BLE001 - a failed session is a result, not a crash
        problems.append(f"{type(exc).__name__}: {str(exc)[:160]}")
    elapsed = time.perf_counter() - start
    if got and word and word not in got:
        problems.append(f"view lacks '{word}'")
    return Outcome(elapsed, "; ".join(problems), saw_waiting)


async def ws_burst(server: Server, *, target: str, path: str, want: str, n: int, timeout_s: float,
                   offset: int = 0, cached: bool = False) -> BurstResult:
    """n ws sessions at once, each its own sentence (``cached``: all the warm-up's sentence, whose result
    every session finds in the shared cache: no forward pass at all, the page's own cost)."""
    warm_text, warm_word = sentence(offset + 900)
    await ws_session(server.url, path, f"text={quote(warm_text)}", want, "", timeout_s)
    await asyncio.sleep(2)
    load_before, rss_before = loadavg(), server.rss_mb()
    with RssSampler(server) as rss:
        jobs = []
        for i in range(n):
            text, word = (warm_text, warm_word) if cached else sentence(offset + i)
            jobs.append(ws_session(server.url, path, f"text={quote(text)}", want, word if path else "", timeout_s))
        outcomes = await asyncio.gather(*jobs)
    await asyncio.sleep(1)
    return BurstResult(target=target, sessions=n, times=[o.seconds for o in outcomes if not o.error],
                       errors=[o.error for o in outcomes if o.error], rss_before=rss_before,
                       rss_peak=max(rss.samples, default=float("nan")), rss_after=server.rss_mb(),
                       load_before=load_before, saw_waiting=sum(o.saw_waiting for o in outcomes))


async def student_burst(server: Server, *, target: str, path: str, view: str, want: str, n: int,
                        timeout_s: float, offset: int = 0) -> BurstResult:
    """One real Chromium tab (a fresh context: a first visit) opened at the same moment as n-1 ws sessions.

    The tab is one student on their own machine while the whole class presses Run:
    its time includes downloading and starting the frontend and drawing the view,
    with the server under the full burst.  Only the tab's time is a sample.
    """
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        await (await browser.new_page()).goto("about:blank")
        load_before, rss_before = loadavg(), server.rss_mb()
        text, word = sentence(offset)
        with RssSampler(server) as rss:
            jobs = [one_session(browser, f"{server.url}/{path}?text={quote(text)}", view, word if path else "",
                                timeout_s)]
            for i in range(1, n):
                text_i, word_i = sentence(offset + i)
                jobs.append(ws_session(server.url, path, f"text={quote(text_i)}", want, word_i if path else "",
                                       timeout_s))
            outcomes = await asyncio.gather(*jobs)
        await browser.close()
    await asyncio.sleep(1)
    tab = outcomes[0]
    return BurstResult(target=target, sessions=n, times=[] if tab.error else [tab.seconds],
                       errors=[o.error for o in outcomes if o.error], rss_before=rss_before,
                       rss_peak=max(rss.samples, default=float("nan")), rss_after=server.rss_mb(),
                       load_before=load_before, saw_waiting=int(tab.saw_waiting))


def merged(results: list[BurstResult]) -> BurstResult:
    """Several student bursts as one row: each burst gave one tab's time."""
    first = results[0]
    return BurstResult(target=first.target, sessions=first.sessions, times=[t for r in results for t in r.times],
                       errors=[e for r in results for e in r.errors], rss_before=first.rss_before,
                       rss_peak=max(r.rss_peak for r in results), rss_after=results[-1].rss_after,
                       load_before=first.load_before, saw_waiting=sum(r.saw_waiting for r in results))


# ---------------------------------------------------------------- burst and soak
@dataclass
class BurstResult:
    target: str
    sessions: int
    times: list[float]
    errors: list[str]
    rss_before: float
    rss_peak: float
    rss_after: float
    load_before: str
    saw_waiting: int = 0


def configured_ttl() -> int:
    """server.disconnectedSessionTTL as the app's .streamlit/config.toml sets it (Streamlit's default: 120)."""
    import tomllib
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    return int(config.get("server", {}).get("disconnectedSessionTTL", 120))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def burst(server: Server, *, target: str, path: str, view: str, n: int, timeout_s: float,
                offset: int = 0, shared: bool = True) -> BurstResult:
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        # Warm the browser: with a shared context, load the page once so its scripts are cached
        # (the browser on this machine stands in for 30 students' own machines: its cost is not the server's).
        ctx = await new_context(browser)
        if shared:
            text, word = sentence(offset + 900)
            await one_session(browser, f"{server.url}/{path}?text={quote(text)}", view, "", timeout_s, context=ctx)
        else:
            await (await ctx.new_page()).goto("about:blank")
        await asyncio.sleep(2)
        load_before = loadavg()
        rss_before = server.rss_mb()
        with RssSampler(server) as rss:
            jobs = []
            for i in range(n):
                text, word = sentence(offset + i)
                jobs.append(one_session(browser, f"{server.url}/{path}?text={quote(text)}", view,
                                        word if path else "", timeout_s, context=ctx if shared else None))
            outcomes = await asyncio.gather(*jobs)
        await ctx.close()
        await browser.close()
    time.sleep(1)
    return BurstResult(target=target, sessions=n, times=[o.seconds for o in outcomes if not o.error],
                       errors=[o.error for o in outcomes if o.error], rss_before=rss_before,
                       rss_peak=max(rss.samples, default=float("nan")), rss_after=server.rss_mb(),
                       load_before=load_before, saw_waiting=sum(o.saw_waiting for o in outcomes))


async def soak(server: Server, *, runs: int, max_minutes: float, timeout_s: float,
               client: str = "ws") -> list[tuple[int, float, float, str]]:
    """Sequential fresh sessions; (run, seconds, RSS MB after the run, error) for each."""
    rows = []
    deadline = time.time() + max_minutes * 60
    if client == "ws":
        for i in range(runs):
            if time.time() > deadline:
                print(f"soak stopped at the time bound after {i} runs", flush=True)
                break
            text, word = long_sentence(i)
            out = await ws_session(server.url, "heatmap", f"text={quote(text)}", "html", word, timeout_s)
            rows.append((i + 1, out.seconds, server.rss_mb(), out.error))
            if (i + 1) % 25 == 0:
                print(f"  soak {i + 1}/{runs}: {out.seconds:.2f} s, RSS {rows[-1][2]:.0f} MB", flush=True)
        return rows
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        ctx = await new_context(browser)
        for i in range(runs):
            if time.time() > deadline:
                print(f"soak stopped at the time bound after {i} runs", flush=True)
                break
            text, word = long_sentence(i)
            out = await one_session(browser, f"{server.url}/heatmap?text={quote(text)}", APP_VIEW,
                                    word, timeout_s, context=ctx)
            rows.append((i + 1, out.seconds, server.rss_mb(), out.error))
            if (i + 1) % 25 == 0:
                print(f"  soak {i + 1}/{runs}: {out.seconds:.2f} s, RSS {rows[-1][2]:.0f} MB", flush=True)
        await browser.close()
    return rows


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------- report
def burst_table(results: list[BurstResult]) -> str:
    lines = ["| target | sessions | ok | errors | p50 s | p95 s | max s | server RSS before / peak / after MB "
             "| load avg before | saw \"waiting\" |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.target} | {r.sessions} | {len(r.times)} | {len(r.errors)} | {pct(r.times, 50):.1f} "
                     f"| {pct(r.times, 95):.1f} | {max(r.times, default=float('nan')):.1f} "
                     f"| {r.rss_before:.0f} / {r.rss_peak:.0f} / {r.rss_after:.0f} | {r.load_before} | {r.saw_waiting} |")
    return "\n".join(lines)


def soak_table(rows, cache_mb: int, client: str) -> str:
    if not rows:
        return "(no soak run)"
    n = len(rows)
    half = rows[n // 2:]
    rss_half = [r[2] for r in half]
    xs = [r[0] for r in half]
    mx, my = statistics.mean(xs), statistics.mean(rss_half)
    denom = sum((x - mx) ** 2 for x in xs) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, rss_half)) / denom
    checkpoints = sorted({1, n // 4, n // 2, 3 * n // 4, n} - {0})
    lines = [f"Soak: {n} sequential fresh sessions ({client} client) on /heatmap, each a new ~80-token text "
             f"(VIZ_CACHE_MB={cache_mb}, so the result cache fills and evicts early).",
             "",
             "| run | RSS MB | run time s |", "|---|---|---|"]
    for c in checkpoints:
        lines.append(f"| {c} | {rows[c - 1][2]:.0f} | {rows[c - 1][1]:.2f} |")
    errors = [r for r in rows if r[3]]
    lines += ["",
              f"Second half (runs {half[0][0]}-{half[-1][0]}): RSS min {min(rss_half):.0f} MB, "
              f"max {max(rss_half):.0f} MB, trend {slope * 100:+.1f} MB per 100 runs; "
              f"run time p50 {pct([r[1] for r in rows], 50):.2f} s, p95 {pct([r[1] for r in rows], 95):.2f} s; "
              f"errors {len(errors)}" + (f" (first: {errors[0][3]})" if errors else "") + "."]
    return "\n".join(lines)


# ---------------------------------------------------------------- a class generating at once
# The generation page's text view (viz.ui.lm.completion_text), and each of its tokens: the label
# before the tooltip.  Comparing the labels compares the tokens every student got.
GEN_TITLE = "The text and what the model wrote"
GEN_VIEW = f".tt:has(> .tt-title:has-text('{GEN_TITLE}'))"
_TOKEN = re.compile(r'data-pos="\d+"[^>]*>(.*?)<span class="tip">', re.S)


def gen_query(i: int, new: int) -> tuple[str, str]:
    """Student i's generation link (own prompt; every third samples with its own seed, every third chats)."""
    animal = ANIMALS[i % len(ANIMALS)]
    prompt = f"Student {i} asks: why did the {animal} cross the {PLACES[i % len(PLACES)]}? Because"
    query = f"text={quote(prompt)}&model=embedded-llm&new={new}"
    if i % 3 == 1:
        query += f"&sample=1&seed={i}&temperature=0.8"
    elif i % 3 == 2:
        query += "&chat=1"
    return query, animal


@dataclass
class GenOutcome:
    seconds: float
    error: str = ""
    tokens: tuple = ()
    saw_progress: bool = False
    saw_waiting: bool = False
    first_token: float = float("nan")   # seconds from connecting to the first "Generating, 1 of n"
    last_token: float = float("nan")    # ... to the last progress line (the model's part ends there)


async def ws_generation(url: str, query: str, word: str, timeout_s: float) -> GenOutcome:
    """One headless session on /generate: time from connecting until the script run that generated
    (streaming "Generating, k of n" as it goes) has finished with the finished text on the page."""
    import websockets
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    start = time.perf_counter()
    problems, tokens, progress, waiting = [], (), False, False
    first = last = float("nan")
    try:
        async with websockets.connect(url.replace("http://", "ws://") + "/_stcore/stream", subprotocols=["streamlit"],
                                      max_size=2 ** 28, open_timeout=timeout_s) as ws:
            msg = BackMsg()
            msg.rerun_script.query_string = query
            msg.rerun_script.page_name = "generate"
            await ws.send(msg.SerializeToString())
            deadline = start + timeout_s
            while True:
                fm = ForwardMsg()
                fm.ParseFromString(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.perf_counter())))
                kind = fm.WhichOneof("type")
                if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                    el = fm.delta.new_element
                    name = el.WhichOneof("type")
                    if name == "html" and GEN_TITLE in el.html.body:
                        tokens = tuple(html.unescape(t) for t in _TOKEN.findall(el.html.body))
                    elif name == "exception":
                        problems.append("exception: " + el.exception.message[:120])
                    elif name == "alert":
                        if el.alert.format == Alert.Format.Value("ERROR"):
                            problems.append("error: " + el.alert.body[:120])
                        if el.alert.body.startswith("Generating,"):
                            last = time.perf_counter() - start
                            first = last if first != first else first
                            progress = True
                        waiting |= "Waiting for a free slot" in el.alert.body
                elif kind == "script_finished" and (tokens or problems):
                    break
    except Exception as exc:  # noqa: BLE001 - a failed session is a result, not a crash
        problems.append(f"{type(exc).__name__}: {str(exc)[:160]}")
    if tokens and word not in "".join(tokens):
        problems.append(f"text lacks '{word}'")
    return GenOutcome(time.perf_counter() - start, "; ".join(problems), tokens, progress, waiting, first, last)


@dataclass
class GenRun:
    label: str
    times: list[float]
    tokens: dict[int, tuple]
    errors: list[str]
    wall: float
    rss: tuple[float, float, float] = (float("nan"),) * 3
    tab: float | None = None
    progress: int = 0
    waiting: int = 0
    first_token: list = field(default_factory=list)   # headless sessions: connect to the first token, s
    after_last: list = field(default_factory=list)    # headless sessions: last token to the script's end, s


async def gen_serial(server: Server, *, n: int, new: int, timeout_s: float, offset: int = 0) -> GenRun:
    """The same n generations one after another (fresh sessions): today's queue, its last student's wait."""
    times, tokens, errors, progress, outs = [], {}, [], 0, []
    began = time.perf_counter()
    for i in range(n):
        query, word = gen_query(offset + i, new)
        out = await ws_generation(server.url, query, word, timeout_s)
        times.append(out.seconds)
        tokens[i] = out.tokens
        progress += out.saw_progress
        if out.error:
            errors.append(out.error)
        outs.append(out)
    return GenRun("one after another", times, tokens, errors, time.perf_counter() - began, progress=progress,
                  **_phases(outs))


def _phases(outs) -> dict:
    """Where a headless session's time went: waiting for its first token, and drawing the page after its last."""
    outs = [o for o in outs if isinstance(o, GenOutcome) and not o.error and o.first_token == o.first_token]
    return dict(first_token=[o.first_token for o in outs], after_last=[o.seconds - o.last_token for o in outs])


async def gen_burst(server: Server, *, n: int, new: int, timeout_s: float, offset: int = 0,
                    tab: bool = True) -> GenRun:
    """n students press Generate at once: n - 1 headless sessions and (``tab``) one real Chromium tab
    (a fresh context: a first visit), whose time includes drawing the page."""
    from playwright.async_api import async_playwright
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS) \
            if tab else None
        if browser is not None:
            await (await browser.new_page()).goto("about:blank")
        rss_before = server.rss_mb()
        began = time.perf_counter()
        with RssSampler(server) as rss:
            jobs = []
            for i in range(n):
                query, word = gen_query(offset + i, new)
                if i == 0 and browser is not None:
                    jobs.append(one_session(browser, f"{server.url}/generate?{query}", GEN_VIEW, word, timeout_s,
                                            grab_html=True))
                else:
                    jobs.append(ws_generation(server.url, query, word, timeout_s))
            outcomes = await asyncio.gather(*jobs)
        wall = time.perf_counter() - began
        if browser is not None:
            await browser.close()
    await asyncio.sleep(1)
    first = outcomes[0] if browser is not None else None
    return GenRun(f"{n} at once" + (" (one a Chromium tab)" if tab else " (headless)"),
                  [o.seconds for o in outcomes if not o.error],
                  {i: o.tokens if isinstance(o, GenOutcome) else tuple(html.unescape(t) for t in _TOKEN.findall(o.html))
                   for i, o in enumerate(outcomes)},
                  [o.error for o in outcomes if o.error], wall,
                  (rss_before, max(rss.samples, default=float("nan")), server.rss_mb()),
                  tab=None if first is None or first.error else first.seconds,
                  progress=sum(getattr(o, "saw_progress", False) for o in outcomes),
                  waiting=sum(getattr(o, "saw_waiting", False) for o in outcomes), **_phases(outcomes))


async def gen_soak(server: Server, *, runs: int, wave: int, new: int, timeout_s: float,
                   max_minutes: float) -> list[tuple[int, float, float, int]]:
    """``runs`` generations in waves of ``wave`` at once (new prompts each): (runs done, wave p95 s, RSS MB, errors)."""
    rows, done, deadline = [], 0, time.time() + max_minutes * 60
    while done < runs and time.time() < deadline:
        k = min(wave, runs - done)
        outs = await asyncio.gather(*(ws_generation(server.url, *gen_query(5000 + done + i, new), timeout_s)
                                      for i in range(k)))
        done += k
        rows.append((done, pct([o.seconds for o in outs], 95), server.rss_mb(), sum(bool(o.error) for o in outs)))
        print(f"  generation soak {done}/{runs}: wave p95 {rows[-1][1]:.1f} s, RSS {rows[-1][2]:.0f} MB, "
              f"errors {rows[-1][3]}", flush=True)
    return rows


def _gen_server(cache_mb: int | None = None, **extra: str) -> Server:
    env = {"VIZ_SERVER_MODE": "1", **extra}
    if cache_mb is not None:
        env["VIZ_CACHE_MB"] = str(cache_mb)
    server = Server("app.py", env=env).start()
    warm = asyncio.run(ws_generation(server.url, gen_query(999, 20)[0], "", 300))
    print(f"generation server: warm-up (loads the LLM) {warm.seconds:.1f} s {warm.error}, RSS {server.rss_mb():.0f} MB",
          flush=True)
    return server


def gen_section(args) -> tuple[list[str], bool]:
    """Serial baseline and bursts (the same prompts, each on a fresh server: nothing comes from the
    result cache, while a page still finds its own result there), then the soak."""
    n, runs, lines, ok = args.sessions, [], [], True
    serial = None
    modes = [("", {})] + ([(", final pass", {"VIZ_BATCH_FINAL_PASS": "1"})] if args.gen_final_pass else [])
    for b in range(args.gen_bursts):
        # All headless (the server's own cost), then one of them a real Chromium tab, which runs on this
        # same machine's 2 cores during the burst (a student's browser would not).
        for mode, extra in modes:
            for tab in (False, True):
                server = _gen_server(**extra)
                try:
                    run = asyncio.run(gen_burst(server, n=n, new=args.gen_new, timeout_s=args.timeout, tab=tab))
                finally:
                    server.stop()
                run.label += mode
                runs.append(run)
                print(f"  burst{mode}{' with a tab' if tab else ''}: p95 {pct(run.times, 95):.1f} s, "
                      f"wall {run.wall:.1f} s, errors {len(run.errors)}", flush=True)
        if serial is None:
            # Lone runs (viz.generation.generate, batching off): today's queue, and the outputs to match.
            server = _gen_server(VIZ_BATCHING="0")
            try:
                serial = asyncio.run(gen_serial(server, n=n, new=args.gen_new, timeout_s=args.timeout))
            finally:
                server.stop()
            print(f"  serial: total {sum(serial.times):.1f} s, errors {len(serial.errors)}", flush=True)
    soak_rows, idle_rss = [], float("nan")
    if args.gen_soak:
        server = _gen_server(args.gen_soak_cache_mb)
        try:
            soak_rows = asyncio.run(gen_soak(server, runs=args.gen_soak, wave=args.gen_soak_wave, new=args.gen_new,
                                             timeout_s=args.timeout, max_minutes=args.soak_minutes))
            idle_rss = server.rss_mb()
        finally:
            server.stop()
    if serial is not None:      # the bursts against the serial baseline (none with --gen-bursts 0)
        total = sum(serial.times)
        lines += [f"## A class generating at once: {n} students x {args.gen_new} new tokens, embedded LLM", "",
                  f"`VIZ_SERVER_MODE=1`, batching on (`VIZ_BATCHING=1`, the default). Student i has its own prompt; "
                  f"every third samples with its own seed (temperature 0.8), every third uses the chat template "
                  f"(longer prompts). The serial baseline is the same {n} generations one after another, in this same "
                  f"run, on a server with batching off (`VIZ_BATCHING=0`: lone runs, today's queue): its total is what "
                  f"the last student waits with a queue, and its tokens are what each student must get. Each row on a "
                  f"fresh server (warmed by "
                  f"one generation of another prompt), so no result comes from the cache. Time = connect until the "
                  f"script run that generated has finished (the tab: until the page is drawn).", "",
                  "| run | sessions | ok | errors | p50 s | p95 s | max s | p95 / serial total | one Chromium tab s "
                  "| first token p95 s | page after last token p95 s "
                  "| saw progress | saw \"waiting\" | RSS before / peak / after MB | same tokens as serial |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        lines.append(f"| {serial.label} | {n} | {len(serial.times) - len(serial.errors)} | {len(serial.errors)} "
                     f"| {pct(serial.times, 50):.1f} | {pct(serial.times, 95):.1f} | {max(serial.times):.1f} "
                     f"| total {total:.1f} s | | {pct(serial.first_token, 95):.1f} | {pct(serial.after_last, 95):.1f} "
                     f"| {serial.progress} | | | |")
        for r in runs:
            compared = [i for i, t in r.tokens.items() if t and serial.tokens.get(i)]
            same = sum(r.tokens[i] == serial.tokens[i] for i in compared)
            ok &= not r.errors and same == len(compared)
            lines.append(f"| {r.label} | {n} | {len(r.times)} | {len(r.errors)} | {pct(r.times, 50):.1f} "
                         f"| {pct(r.times, 95):.1f} | {max(r.times, default=float('nan')):.1f} "
                         f"| **{pct(r.times, 95) / total:.2f}** | {'' if r.tab is None else f'{r.tab:.1f}'} "
                         f"| {pct(r.first_token, 95):.1f} | {pct(r.after_last, 95):.1f} | {r.progress} | {r.waiting} "
                         f"| {r.rss[0]:.0f} / {r.rss[1]:.0f} / {r.rss[2]:.0f} "
                         f"| {same} / {len(compared)} |")
        ok &= not serial.errors
        errs = sorted({e for r in [serial, *runs] for e in r.errors})
        if errs:
            lines += ["", "Errors:", ""] + [f"- {e}" for e in errs[:10]]
    if soak_rows:
        half = soak_rows[len(soak_rows) // 2:]
        xs, ys = [r[0] for r in half], [r[2] for r in half]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / (sum((x - mx) ** 2 for x in xs) or 1.0)
        n_err = sum(r[3] for r in soak_rows)
        ok &= not n_err
        if serial is None:
            lines += [f"## A class generating at once: soak, {args.gen_new} new tokens each, embedded LLM"]
        lines += ["", f"Generation soak: {soak_rows[-1][0]} generations in waves of {args.gen_soak_wave} at once "
                      f"(a new prompt each; `VIZ_CACHE_MB={args.gen_soak_cache_mb}`, so the result cache fills and "
                      f"evicts). RSS after each wave (MB): " + ", ".join(f"{r[2]:.0f}" for r in soak_rows)
                  + f". Second half: min {min(ys):.0f}, max {max(ys):.0f} MB, trend {slope * 100:+.1f} MB per "
                    f"100 generations; wave p95 {min(r[1] for r in soak_rows):.1f}-{max(r[1] for r in soak_rows):.1f} s; "
                    f"errors {n_err}. RSS at the end: {idle_rss:.0f} MB."]
    return lines + [""], ok


def queue_section(args) -> tuple[list[str], bool]:
    """The burst of single runs on /heatmap with batching on, against today's serialized queue."""
    results, ok, serial = [], True, []
    for label, batching in (("serialized queue (`VIZ_BATCHING=0`)", "0"), ("shared passes (`VIZ_BATCHING=1`)", "1")):
        server = Server("app.py", env={"VIZ_SERVER_MODE": "1", "VIZ_BATCHING": batching}).start()
        try:
            asyncio.run(ws_session(server.url, "heatmap", "text=" + quote(sentence(99)[0]), "html", "", args.timeout))
            for b in range(args.queue_bursts):
                r = asyncio.run(ws_burst(server, target=f"/heatmap, {label}, websocket", path="heatmap", want="html",
                                         n=args.sessions, timeout_s=args.timeout, offset=(b + 1) * 100))
                results.append(r)
                print(burst_table([r]).splitlines()[-1], flush=True)
            if batching == "0":     # the same number of runs one after another (new sentences: no cache)
                for i in range(args.sessions):
                    text, word = sentence(500 + i)
                    serial.append(asyncio.run(ws_session(server.url, "heatmap", f"text={quote(text)}", "html", word,
                                                         args.timeout)))
                print(f"  {args.sessions} one after another: total {sum(o.seconds for o in serial):.1f} s", flush=True)
            if batching == "1":     # the floor: the same burst with every result already in the cache
                r = asyncio.run(ws_burst(server, target="/heatmap, every result from the cache (no forward pass), "
                                                        "websocket", path="heatmap", want="html", n=args.sessions,
                                         timeout_s=args.timeout, offset=700, cached=True))
                results.append(r)
                print(burst_table([r]).splitlines()[-1], flush=True)
            runs = [asyncio.run(student_burst(
                server, target=f"/heatmap, {label}, one browser tab among {args.sessions}", path="heatmap",
                view=APP_VIEW, want="html", n=args.sessions, timeout_s=args.timeout, offset=(b + 1) * 1000 + 7))
                for b in range(args.queue_bursts)]
            results.append(merged(runs))
            print(burst_table([results[-1]]).splitlines()[-1], flush=True)
        finally:
            server.stop()
    ok = not any(r.errors for r in results) and not any(o.error for o in serial)
    total = sum(o.seconds for o in serial)
    shared = [r for r in results if "VIZ_BATCHING=1" in r.target and "websocket" in r.target]
    return ["## The burst of single runs: shared passes against the serialized queue", "",
            f"{args.sessions} students press Run on /heatmap at once (each their own sentence; embedded encoder), "
            f"on a server with batching off (today's queue: one forward pass at a time) and on, and the same burst "
            f"with every result already in the shared cache (no forward pass: what the page itself costs the "
            f"server). Same run, same machine.", "", burst_table(results), "",
            f"The same {args.sessions} runs one after another (batching off, new sentences, one websocket session "
            f"each): total {total:.1f} s (each p50 {pct([o.seconds for o in serial], 50):.2f} s), errors "
            f"{sum(bool(o.error) for o in serial)}; shared passes' p95 / that total: "
            + ", ".join(f"{pct(r.times, 95) / total:.2f}" for r in shared) + ".", ""], ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--bursts", type=int, default=1, help="bursts per target and client (0: skip the burst)")
    ap.add_argument("--clients", default="ws,student,browser",
                    help="ws: browser-less websocket sessions (the server's cost); student: one Chromium tab "
                         "opened with n-1 ws sessions (what one student sees on their own machine); browser: "
                         "n Chromium tabs (end to end, but all n browsers run on this same machine)")
    ap.add_argument("--student-bursts", type=int, default=5, help="bursts for the student client (a tab each)")
    ap.add_argument("--separate-contexts", action="store_true",
                    help="browser: a fresh context per session (no shared browser cache: the browser, on this "
                         "same machine, then costs far more CPU than the server)")
    ap.add_argument("--soak", type=int, default=300, help="sequential runs in the soak (0: skip)")
    ap.add_argument("--soak-client", choices=("ws", "browser"), default="ws")
    ap.add_argument("--soak-minutes", type=float, default=30)
    ap.add_argument("--soak-cache-mb", type=int, default=16)
    ap.add_argument("--soak-idle", type=float, default=130,
                    help="seconds to wait after the soak before a last RSS reading (Streamlit keeps a "
                         "disconnected session for server.disconnectedSessionTTL)")
    ap.add_argument("--soak-session-ttl", type=int, default=None,
                    help="server.disconnectedSessionTTL for the soak's server (default: .streamlit/config.toml's)")
    ap.add_argument("--gen-bursts", type=int, default=0,
                    help="bursts of --sessions students generating at once on the embedded LLM, against the same "
                         "generations one after another in the same run (0: skip)")
    ap.add_argument("--gen-new", type=int, default=20, help="new tokens per generation")
    ap.add_argument("--gen-final-pass", action="store_true",
                    help="also burst with VIZ_BATCH_FINAL_PASS=1 (attention from one more shared pass)")
    ap.add_argument("--gen-soak", type=int, default=0,
                    help="generations in the generation soak, in waves of --gen-soak-wave at once (goal 300; 0: skip)")
    ap.add_argument("--gen-soak-wave", type=int, default=30)
    ap.add_argument("--gen-soak-cache-mb", type=int, default=160,
                    help="VIZ_CACHE_MB of the generation soak's server (~40 results: it fills, then evicts)")
    ap.add_argument("--queue-bursts", type=int, default=0,
                    help="bursts of --sessions heatmap runs with batching off (the serialized queue) and on (0: skip)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per session")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "load_results.md"))
    args = ap.parse_args(argv)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if ("browser" in clients or args.soak_client == "browser") and chromium_path() is None:
        print("Chromium is missing (apt-get install chromium)", file=sys.stderr)
        return 2

    sections = [f"# Load test ({time.strftime('%Y-%m-%d %H:%M')})", "",
                f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
                f"load average at start {loadavg()} (other work on the machine shows here). "
                f"Server: `VIZ_SERVER_MODE=1`, embedded model, 127.0.0.1, warmed by one visit. "
                f"Each session has its own sentence.", "",
                "- websocket: browser-less clients speaking Streamlit's protocol; time = connect until the "
                "script run that delivers the view (the heatmap's canvas view with that student's tokens, the "
                "home page's token table, the trivial page's markdown) has finished. This is the server's cost.",
                f"- one browser tab among {args.sessions}: one headless Chromium tab with a fresh context (a "
                f"student's first visit) opened at the same moment as {args.sessions - 1} websocket sessions; "
                f"time = navigation until the script has finished and the view is drawn. One sample per "
                f"burst, {args.student_bursts if args.bursts else args.queue_bursts} bursts. This is what a "
                f"student sees on their own machine."]
    if args.bursts and "browser" in clients:
        sections += [
                f"- browser: {args.sessions} tabs of one headless Chromium "
                f"({'each in its own context' if args.separate_contexts else 'one context, cache warmed by one visit'}); "
                "time = navigation until the script has finished and the view is drawn. Chromium runs on the "
                "same 2 cores (30 students would bring 30 machines), so this measures the browser as much "
                "as the server."]
    sections.append("")
    results: list[BurstResult] = []
    if args.bursts:
        for target, script, path, view, want in (
                ("trivial Streamlit page", "benchmarks/trivial_app.py", "", "[data-testid='stMarkdown']", "markdown"),
                ("app /heatmap", "app.py", "heatmap", APP_VIEW, "html"),
                # The app's root, like the trivial page's: no sub-page path for the frontend to probe
                # (at /heatmap it first asks /heatmap/_stcore/health, ~0.1 s, before finding the server).
                ("app / (home: facts and token table)", "app.py", "", "[data-testid='stDataFrame']",
                 "dataframe")):
            server = Server(script, env={"VIZ_SERVER_MODE": "1"}).start()
            try:
                # The teacher's own first visit: loads the model, warms imports.
                warm = asyncio.run(ws_session(server.url, path, "text=" + quote(sentence(99)[0]), want, "",
                                              args.timeout))
                print(f"{target}: warm-up {warm.seconds:.1f} s {warm.error}, idle RSS {server.rss_mb():.0f} MB",
                      flush=True)
                for client in clients:
                    if client == "student":
                        runs = [asyncio.run(student_burst(
                            server, target=f"{target}, one browser tab among {args.sessions}", path=path,
                            view=view, want=want, n=args.sessions, timeout_s=args.timeout,
                            offset=(b + 1) * 1000)) for b in range(args.student_bursts)]
                        results.append(merged(runs))
                        print(burst_table([results[-1]]).splitlines()[-1], flush=True)
                        continue
                    for b in range(args.bursts):
                        offset = (b + 1) * args.sessions * (1 + clients.index(client))
                        if client == "ws":
                            r = asyncio.run(ws_burst(server, target=f"{target}, websocket", path=path, want=want,
                                                     n=args.sessions, timeout_s=args.timeout, offset=offset))
                        else:
                            r = asyncio.run(burst(server, target=f"{target}, browser", path=path, view=view,
                                                  n=args.sessions, timeout_s=args.timeout, offset=offset,
                                                  shared=not args.separate_contexts))
                        results.append(r)
                        print(burst_table([r]).splitlines()[-1], flush=True)
                        for e in sorted(set(r.errors))[:5]:
                            print("   error:", e, flush=True)
            finally:
                server.stop()
        sections += ["## Burst", "", burst_table(results), ""]
        errs = sorted({e for r in results for e in r.errors})
        if errs:
            sections += ["Errors:", ""] + [f"- {e}" for e in errs[:10]] + [""]
    extra_ok = True
    if args.queue_bursts:
        lines, good = queue_section(args)
        sections += lines
        extra_ok &= good
    if args.gen_bursts or args.gen_soak:
        lines, good = gen_section(args)
        sections += lines
        extra_ok &= good
    rows = []
    if args.soak:
        env = {"VIZ_SERVER_MODE": "1", "VIZ_CACHE_MB": str(args.soak_cache_mb)}
        if args.soak_session_ttl is not None:
            env["STREAMLIT_SERVER_DISCONNECTED_SESSION_TTL"] = str(args.soak_session_ttl)
        server = Server("app.py", env=env).start()
        try:
            rows = asyncio.run(soak(server, runs=args.soak, max_minutes=args.soak_minutes, timeout_s=args.timeout,
                                    client=args.soak_client))
            time.sleep(max(0.0, min(args.soak_idle, 600)))
            idle_rss = server.rss_mb()
        finally:
            server.stop()
        ttl = args.soak_session_ttl if args.soak_session_ttl is not None else f"{configured_ttl()} (config.toml)"
        sections += ["## Soak", "", f"server.disconnectedSessionTTL = {ttl} s.", "",
                     soak_table(rows, args.soak_cache_mb, args.soak_client), "",
                     f"RSS after {args.soak_idle:.0f} s idle at the end: {idle_rss:.0f} MB.", ""]
        sections += ["RSS every 25 runs (MB): " + ", ".join(f"{r[2]:.0f}" for r in rows[24::25]), ""]
    sections.append(f"Load average at the end: {loadavg()}.")
    report = "\n".join(sections) + "\n"
    print(report)
    Path(args.out).write_text(report)
    return 0 if extra_ok and not any(r.errors for r in results) and not any(r[3] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
