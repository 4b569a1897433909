"""Shared fixtures: tiny models of each family, AppTest runs, a live server and a Chromium page."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "browser"))

# The hub is unreachable here: never let a test wait on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tiny_models as model_builder  # noqa: E402
from browser_tools import CHROMIUM_ARGS, chromium_path  # noqa: E402


BROWSER_FIXTURES = {"page", "_browser"}


def pytest_collection_modifyitems(config, items):
    """Every test that drives Chromium carries the `browser` marker, wherever it lives, so
    `pytest -m "not browser"` runs without a browser (the README's command still runs them all)."""
    for item in items:
        if BROWSER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def tiny_models_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-models")
    for family in model_builder.FAMILIES:
        model_builder.build(family, root)
    return root


@pytest.fixture(scope="session")
def tiny_models(tiny_models_root) -> dict[str, str]:
    """family -> local directory: "encoder" (BERT), "decoder" (GPT-2), "encoder-decoder" (BART), "t5",
    "llama" (Llama with grouped-query attention: 4 query heads, 2 KV heads; a chat template)."""
    return {family: str(tiny_models_root / family) for family in model_builder.FAMILIES}


@pytest.fixture(scope="session")
def embedded_llm():
    """The embedded LLM (SmolLM2-135M-Instruct), loaded once per session: ~7 s once converted, the
    first conversion of the GGUF file (~40 s) happens once per cache directory."""
    from viz.models import EMBEDDED_LLM, load_model
    return load_model(EMBEDDED_LLM)


def _navigation_mode_pages_manager():
    """AppTest resets Streamlit's pages-directory flag before every run, so each run would start in
    the old mode that skips app.py (viz.ui then reruns once, which drops a clicked button). Make
    AppTest start the way a running server does after its first request: app.py + st.navigation."""
    import streamlit.testing.v1.app_test as app_test_module
    from streamlit.runtime.pages_manager import PagesManager

    class NavigationPagesManager(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    app_test_module.PagesManager = NavigationPagesManager


def run_app(page_path: str | None = None, timeout: float = 120, **query_params):
    """Run app.py in AppTest (switched to ``page_path``) with the given URL query parameters."""
    from streamlit.testing.v1 import AppTest
    _navigation_mode_pages_manager()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for key, value in query_params.items():
        at.query_params[key] = str(value)
    at.run()
    if page_path:
        at.switch_page(page_path)
        at.run()
    return at


@pytest.fixture
def app_test():
    return run_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(log: Path, **env_overrides):
    """A `streamlit run app.py` server on a free loopback port; yields its base URL."""
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", VIZ_TORCH_THREADS="1", **env_overrides)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.3)
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{log.read_text()}")
        else:
            raise RuntimeError(f"streamlit did not start:\n{log.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def app_url(tmp_path_factory):
    """Base URL of a `streamlit run app.py` server started for the test session."""
    with streamlit_server(tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def _browser():
    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: install Debian's chromium package (the browser tests must not skip)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(_browser):
    """A fresh Playwright page (1280x900) that records dialogs in page.dialogs."""
    context = _browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.dialogs = []

    def _on_dialog(dialog):
        pg.dialogs.append(dialog.message)
        dialog.dismiss()
    pg.on("dialog", _on_dialog)
    yield pg
    context.close()
