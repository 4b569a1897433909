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

Usage:
    .venv/bin/python benchmarks/load.py                          # bursts (ws + browser) + soak 300
    .venv/bin/python benchmarks/load.py --clients ws --soak 0    # quick: server cost only
    .venv/bin/python benchmarks/load.py --bursts 0 --soak 600 --soak-session-ttl 5
Results go to benchmarks/load_results.md (pass --out to change).  Every loop
and wait is bounded (--timeout per session, --soak-minutes for the soak).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
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


async def new_context(browser):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(WATCH_WAITING)
    return context


async def one_session(browser, url: str, view: str, word: str, timeout_s: float, *, context=None) -> Outcome:
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
        return Outcome(elapsed, "; ".join(problems), bool(await page.evaluate("window.__sawWaiting")))
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
                   offset: int = 0) -> BurstResult:
    warm_text, _ = sentence(offset + 900)
    await ws_session(server.url, path, f"text={quote(warm_text)}", want, "", timeout_s)
    await asyncio.sleep(2)
    load_before, rss_before = loadavg(), server.rss_mb()
    with RssSampler(server) as rss:
        jobs = []
        for i in range(n):
            text, word = sentence(offset + i)
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
                f"burst, {args.student_bursts} bursts. This is what a student sees on their own machine.",
                f"- browser: {args.sessions} tabs of one headless Chromium "
                f"({'each in its own context' if args.separate_contexts else 'one context, cache warmed by one visit'}); "
                "time = navigation until the script has finished and the view is drawn. Chromium runs on the "
                "same 2 cores (30 students would bring 30 machines), so this measures the browser as much "
                "as the server.", ""]
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
    return 0 if not any(r.errors for r in results) and not any(r[3] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
