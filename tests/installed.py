"""The package built and installed the way a new user gets it, outside the repository.

:func:`installed_venv` builds the wheel from the working tree (hatchling, no build isolation: no
download), makes a fresh venv in a temp folder and ``pip install``s the wheel there.  To stay fast
and offline, the venv reads the dependencies (torch, transformers, streamlit...) from the venv
running the tests through a ``.pth`` line instead of installing them again; pip still checks them
against the wheel's pins (``--no-index``: nothing is fetched, a missing or mismatched pin fails).
Built once per test process, shared by tests/test_packaging.py and tests/test_notebook.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Venv:
    root: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def site_packages(self) -> Path:
        return Path(subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())

    def run(self, *args: str, cwd: Path, timeout: float = 300, **env) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              env=clean_env(**env))


def clean_env(**extra) -> dict[str, str]:
    """The test's environment without anything that would put the repository on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PIP_NO_INDEX="1", **extra)
    return env


def _pip(*args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600,
                         env=clean_env())
    if out.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def build_wheel(folder: Path) -> Path:
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(folder), str(ROOT))
    wheels = sorted(folder.glob("attention_explorer-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def make_venv(root: Path) -> Path:
    """A fresh venv (no pip of its own: the tests' pip installs into it with --python) that also sees
    the test venv's packages, after its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    purelib = subprocess.run([str(root / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return root / "bin" / "python"


def install(python: Path, *args: str) -> None:
    _pip("--python", str(python), "install", "--no-index", "--no-build-isolation", "-q", *args)


_CACHE: dict[Path, Venv] = {}


def installed_venv(tmp_root: Path) -> Venv:
    """``pip install <wheel>`` into a fresh venv under ``tmp_root`` (once per test process)."""
    if not _CACHE:
        wheel = build_wheel(tmp_root / "dist")
        python = make_venv(tmp_root / "venv")
        install(python, str(wheel))
        _CACHE[tmp_root] = Venv(tmp_root / "venv", wheel)
    return next(iter(_CACHE.values()))
