"""The package as a new user installs it: pyproject.toml, the wheel, the console command, the app.

The wheel is built from the working tree and installed into a fresh venv outside the repository
(tests/installed.py); every command runs from a temp folder, so nothing can come from the clone.
"""
from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
import zipfile
from email.parser import Parser
from pathlib import Path

import numpy as np
import pytest

from browser_tools import shot, wait_for_app
from installed import ROOT, clean_env, install, installed_venv, make_venv

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    return installed_venv(tmp_path_factory.getbasetemp() / "installed")


@pytest.fixture
def elsewhere(tmp_path):
    """A working directory with no clone in sight."""
    assert not (tmp_path / "viz").exists() and ROOT not in tmp_path.parents
    return tmp_path


def _requirement_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


# ---------------------------------------------------------------- one source of truth
def test_requirements_files_are_the_pyproject_pins():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert _requirement_lines(ROOT / "requirements.txt") == project["dependencies"]
    assert _requirement_lines(ROOT / "requirements-dev.txt") == ["-r requirements.txt", *extras["test"],
                                                                 *extras["llm"], *extras["ray"]]
    assert _requirement_lines(ROOT / "requirements-nodeps.txt") == PYPROJECT["tool"]["attention-explorer"]["no-deps"]["llm"]
    out = subprocess.run(["python3", str(ROOT / "tools" / "sync_requirements.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "torch==2.13.0" in project["dependencies"]          # README "CPU-only torch"


def test_sync_tool_finds_drift_and_fixes_it(tmp_path):
    (tmp_path / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "sync_requirements.py", tmp_path / "tools")
    for f in ["pyproject.toml", *(p.name for p in ROOT.glob("requirements*.txt"))]:
        shutil.copy(ROOT / f, tmp_path / f)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"networkx==3.6.1",', '"networkx==3.6.1",\n    "rich==13.9.4",'))
    tool = [str(shutil.which("python3")), str(tmp_path / "tools" / "sync_requirements.py")]
    out = subprocess.run([*tool, "--check"], capture_output=True, text=True)
    assert out.returncode == 1
    assert "requirements.txt is out of step" in out.stderr and "requirements-dev.txt" not in out.stderr
    assert subprocess.run(tool).returncode == 0
    assert "rich==13.9.4" in _requirement_lines(tmp_path / "requirements.txt")
    assert subprocess.run([*tool, "--check"]).returncode == 0


# ---------------------------------------------------------------- the wheel
def test_wheel_holds_the_package_its_assets_data_and_the_app(venv):
    with zipfile.ZipFile(venv.wheel) as whl:
        names = set(whl.namelist())
        meta = Parser().parsestr(whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        entry_points = whl.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    repo_assets = {f"viz/views/assets/{p.name}" for p in (ROOT / "viz" / "views" / "assets").iterdir() if p.is_file()}
    assert repo_assets and repo_assets <= names
    assert "viz/data/sample_corpus.txt" in names
    assert {f"viz/_app/pages/{p.name}" for p in (ROOT / "pages").glob("*.py")} <= names
    assert {"viz/_app/app.py", "viz/_app/.streamlit/config.toml"} <= names
    assert not any("__pycache__" in n or n.startswith(("tests/", "benchmarks/")) for n in names)
    assert "attention-explorer = viz.cli:main" in entry_points
    import viz
    assert PYPROJECT["project"]["dynamic"] == ["version"] and meta["Version"] == viz.__version__
    assert meta["License-Expression"] == "MIT"
    assert set(meta.get_all("Provides-Extra")) >= {"llm", "test", "ray"}
    assert set(PYPROJECT["project"]["dependencies"]) <= set(meta.get_all("Requires-Dist"))
    assert meta.get_payload().startswith("# Attention explorer")   # README as long description


# ---------------------------------------------------------------- the console command
def test_console_command_and_python_m_viz_from_another_directory(venv, elsewhere):
    where = venv.run(venv.python, "-c", "import viz, viz.launch; print(viz.__file__); print(viz.launch.app_script())",
                     cwd=elsewhere)
    package_file, app_script = where.stdout.split()
    assert Path(package_file).is_relative_to(venv.site_packages), package_file
    assert Path(app_script) == venv.site_packages / "viz" / "_app" / "app.py"

    helped = venv.run(venv.bin("attention-explorer"), "--help", cwd=elsewhere)
    assert helped.returncode == 0, helped.stderr
    assert re.search(r"\{capture,stats,.*app.*\}", helped.stdout) and "attention-explorer" in helped.stdout

    text = "The keys to the cabinet are on the table."
    ran = venv.run(venv.python, "-m", "viz", "capture", "--text", text, "--out", "out.npz", cwd=elsewhere)
    assert ran.returncode == 0, ran.stderr
    saved = np.load(elsewhere / "out.npz")

    # Independent: transformers' own eager attention on the same checkpoint.
    import torch
    from transformers import AutoModel, AutoTokenizer
    from viz.embedded import embedded_model_dir
    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    ref = AutoModel.from_pretrained(embedded_model_dir(), attn_implementation="eager").eval()
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        expected = torch.stack(ref(**enc, output_attentions=True).attentions)[:, 0].numpy()
    assert list(saved["tokens"]) == tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert saved["attentions"].shape == expected.shape == (6, 12, len(saved["tokens"]), len(saved["tokens"]))
    assert np.abs(saved["attentions"] - expected).max() < 1e-5


def test_editable_install_runs_the_clone(tmp_path, elsewhere):
    python = make_venv(tmp_path / "editable")
    install(python, "--no-deps", "-e", str(ROOT))
    out = subprocess.run(
        [str(python), "-c", "import viz, viz.launch, viz.views.template as t; print(viz.__file__); "
                            "print(viz.launch.app_script()); print(len(t.asset('head_view.js')))"],
        cwd=elsewhere, capture_output=True, text=True, env=clean_env(), check=True)
    package_file, app_script, js_chars = out.stdout.split()
    assert Path(package_file) == ROOT / "viz" / "__init__.py"
    assert Path(app_script) == ROOT / "app.py"            # the clone's own files, never stale copies
    assert int(js_chars) == len((ROOT / "viz" / "views" / "assets" / "head_view.js").read_text(encoding="utf-8"))
    assert list((tmp_path / "editable").glob("lib/python3*/site-packages/viz")) == []   # no copies in site-packages


# ---------------------------------------------------------------- the app from the installed command
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_command_serves_the_app_in_dark_theme(venv, elsewhere, page):
    port = _free_port()
    log = open(elsewhere / "app.log", "w")
    proc = subprocess.Popen(
        [str(venv.bin("attention-explorer")), "app", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--theme.base", "dark"],
        cwd=elsewhere, env=clean_env(VIZ_TORCH_THREADS="1"), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                health = urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None, (elsewhere / "app.log").read_text()
                assert time.time() < deadline, (elsewhere / "app.log").read_text()
                time.sleep(0.3)
        assert health.status == 200 and health.read() == b"ok"
        # The installed command replaced itself with Streamlit running the wheel's copy of the app.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert str(venv.site_packages / "viz" / "_app" / "app.py").encode() in cmdline

        page.goto(f"{url}/heatmap")
        wait_for_app(page, timeout=120_000)
        page.locator("#hm[data-drawn='1']").wait_for(timeout=60_000)
        assert page.locator("h1").first.inner_text() == "Attention heatmap"
        background = page.evaluate("getComputedStyle(document.querySelector('.stApp')).backgroundColor")
        assert sum(map(int, re.findall(r"\d+", background)[:3])) < 200, background   # --theme.base dark arrived
        # The canvas heatmap follows the app's dark theme, although st.context.theme says "light" on a
        # session's first run (viz/views/theme.py).
        assert page.locator("#hm").get_attribute("data-ae-theme") == "dark"
        shot(page, "installed_app_heatmap_dark")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
