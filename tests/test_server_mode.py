"""Classroom server mode: allow-listed models only, caps, thread cap, safe config, a visible wait."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from viz import capture as capture_module
from viz import settings as settings_module
from viz.capture import BusyError, capture, run_slot
from viz.models import load_model

ROOT = Path(__file__).resolve().parents[1]


def _load_with(monkeypatch, **env) -> settings_module.Settings:
    for name in ("VIZ_SERVER_MODE", "VIZ_TORCH_THREADS", "VIZ_UPLOAD_MAX_LINES", "VIZ_CONCURRENT_RUNS",
                 "VIZ_ALLOWED_MODELS", "VIZ_RUN_WAIT_S"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_module.load()


def test_settings_server_mode_defaults(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    s = _load_with(monkeypatch, VIZ_SERVER_MODE="1", VIZ_ALLOWED_MODELS=" gpt2, ./local ,,")
    assert s.server_mode and s.allowed_models == ("gpt2", "./local")
    assert s.torch_threads == 1 and s.upload_max_lines == 200 and s.concurrent_runs == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert _load_with(monkeypatch, VIZ_SERVER_MODE="yes").torch_threads == 8


def test_settings_desktop_defaults_and_overrides(monkeypatch):
    s = _load_with(monkeypatch)
    assert not s.server_mode and s.torch_threads is None and s.upload_max_lines == 500
    s = _load_with(monkeypatch, VIZ_SERVER_MODE="1", VIZ_TORCH_THREADS="3", VIZ_CONCURRENT_RUNS="0")
    assert s.torch_threads == 3 and s.concurrent_runs == 1  # at least one run at a time


def test_server_mode_caps_torch_threads_in_a_real_process():
    code = "import torch, viz.capture; print(torch.get_num_threads())"
    env = dict(os.environ, VIZ_SERVER_MODE="1", HF_HUB_OFFLINE="1")
    env.pop("VIZ_TORCH_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    expected = 1 if (os.cpu_count() or 1) <= 4 else os.cpu_count() // 2
    assert int(out.stdout.strip().splitlines()[-1]) == expected


def test_streamlit_config_is_safe_for_students():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "viewer"          # no "Clear cache" / developer menu
    assert config["client"]["showErrorDetails"] in ("none", False)  # no tracebacks in the browser
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"]["headless"] is True
    assert 0 < config["server"]["maxUploadSize"] <= 10            # MB per uploaded file
    assert config["browser"]["gatherUsageStats"] is False         # works offline, sends nothing


# ---------------------------------------------------------------- the run slot
@pytest.fixture
def held_slot():
    """Hold every forward-pass slot, as a long run of another student would."""
    held = 0
    while capture_module._RUNS.acquire(blocking=False):
        held += 1
    yield
    for _ in range(held):
        capture_module._RUNS.release()


def test_waiting_run_reports_how_many_are_ahead(tiny_models, held_slot):
    model = load_model(tiny_models["encoder"])
    seen, results = [], []
    worker = threading.Thread(target=lambda: results.append(capture(
        "the cat sat", model=model, on_wait=seen.append, on_start=lambda: seen.append("start"))))
    worker.start()
    deadline = time.time() + 30
    while not seen and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert seen == [1] and not results           # told it waits, and really waiting (not started)
    capture_module._RUNS.release()               # the other student's run ends
    worker.join(30)
    capture_module._RUNS.acquire()               # the fixture releases what it took
    assert seen == [1, "start"]                  # the page's spinner starts only now
    assert len(results) == 1 and results[0].tokens.tokens[1] == "the"


def test_run_gives_up_with_a_clear_message(held_slot):
    with pytest.raises(BusyError, match="busy"):
        with run_slot(timeout=0.2):
            pass
    assert capture_module._QUEUE == {"running": 0, "waiting": 0}


def test_slot_released_after_a_failing_run():
    with pytest.raises(RuntimeError):
        with run_slot():
            raise RuntimeError("boom")
    assert capture_module._RUNS.acquire(blocking=False)
    capture_module._RUNS.release()


def test_app_says_busy_instead_of_hanging(app_test, held_slot, monkeypatch):
    monkeypatch.setattr(capture_module, "SETTINGS", dataclasses.replace(capture_module.SETTINGS, run_wait_s=0.5))
    at = app_test("pages/heatmap.py", text="A sentence nobody has sent before, busy server.")
    assert not at.exception, at.exception
    assert any("busy" in w.value for w in at.warning), [w.value for w in at.warning]
    assert not at.error


# ---------------------------------------------------------------- the app in server mode
@pytest.fixture
def server_mode(monkeypatch, tiny_models):
    s = dataclasses.replace(settings_module.SETTINGS, server_mode=True, allowed_models=(tiny_models["encoder"],))
    monkeypatch.setattr(settings_module, "SETTINGS", s)
    return s


def test_server_mode_offers_only_the_allow_list(app_test, server_mode, tiny_models):
    at = app_test()
    assert not at.exception
    box = at.sidebar.selectbox(key="w_model_choice")
    # both embedded models are always offered (issue 14), then the allow-list
    assert list(box.options) == ["all-MiniLM-L6-v2 (embedded)", "SmolLM2-135M-Instruct (embedded LLM)",
                                 tiny_models["encoder"]]
    assert not [t for t in at.sidebar.text_input if t.key == "w_model_custom"]  # no free model field


def test_server_mode_ignores_models_outside_the_allow_list(app_test, server_mode, tmp_path):
    for model in ("/etc", str(tmp_path), "some-user/huge-checkpoint", "../../secret"):
        at = app_test(model=model, text="The cat sat.")
        assert not at.exception and not at.error, [e.value for e in at.error]
        metrics = {m.label: m.value for m in at.metric}
        assert metrics["Layers"] == "6"                  # the embedded model, not what the link asked for
        assert at.session_state["viz_model"] == "embedded"


def test_server_mode_allows_an_allow_listed_model(app_test, server_mode, tiny_models):
    at = app_test(model=tiny_models["encoder"], text="the cat sat")
    assert not at.exception and not at.error
    assert {m.label: m.value for m in at.metric}["Layers"] == "2"


@pytest.mark.parametrize("page", ["pages/heatmap.py", "pages/head_view.py"])
def test_download_buttons_do_not_keep_the_result_alive(app_test, monkeypatch, page):
    """Streamlit keeps a session's download functions until the session is dropped: they must hold the
    input, not the result, or every held session would pin its result past VIZ_CACHE_MB."""
    import gc
    import weakref
    from streamlit.elements.widgets.button import ButtonMixin
    from viz import models, ui
    import streamlit as st
    kept = []
    method, function = ButtonMixin.download_button, st.download_button

    def recording(self, label, data, *args, **kwargs):      # d1.download_button(...)
        kept.append(data)                                   # what the runtime would keep for the session
        return method(self, label, data, *args, **kwargs)

    def recording_st(label, data, *args, **kwargs):         # st.download_button(...)
        kept.append(data)
        return function(label, data, *args, **kwargs)
    monkeypatch.setattr(ButtonMixin, "download_button", recording)
    monkeypatch.setattr(st, "download_button", recording_st)
    text = f"A sentence only this test sends, for {page}."
    at = app_test(page, text=text)
    assert not at.exception and sum(callable(d) for d in kept) >= 3
    ref = weakref.ref(ui.result_for(text, model=models.EMBEDDED))   # the cached result the page drew
    del at
    ui.compute._RESULTS.clear()                                     # evicted, as VIZ_CACHE_MB would
    gc.collect()
    assert ref() is None
    npz = [d for d in kept if callable(d) and getattr(d, "__name__", "") == "<lambda>"]
    assert any(len(d()) > 1000 for d in npz)                # and each still works: the input is captured again
