"""The layering rules of DESIGN.md, checked on the source (imports read with ast, nothing executed).

- streamlit only in app.py, pages/ and viz/ui/;
- torch / transformers only in the torch tier;
- no import cycles between viz modules;
- pages stay thin: no caches, no capture calls, no URL parsing, about 120 lines at most.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
VIZ = ROOT / "viz"

# The modules allowed to import torch or transformers (the torch tier).
TORCH_TIER = {"viz.models", "viz.capture", "viz.attention_fn", "viz.embedded", "viz.generation", "viz.lm",
              "viz.ablation", "viz.batch", "viz.batching", "viz.ray_engine", "viz.costbench", "viz.families_torch"}
HEAVY = ("torch", "transformers", "tokenizers", "accelerate", "gguf")
PAGE_MAX_LINES = 130


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, known: set[str] | frozenset = frozenset()) -> set[str]:
    """Every module name imported anywhere in the file (top level or inside functions).

    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module in ``known``
    (a package's submodule), else as importing ``pkg``.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            subs = {f"{base}.{alias.name}" for alias in node.names} & set(known)
            found.update(subs)
            if len(subs) < len(node.names):
                found.add(base)
    return found


def viz_modules() -> dict[str, Path]:
    return {module_name(p): p for p in VIZ.rglob("*.py")}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_streamlit_only_in_the_ui_layer():
    offenders = [name for name, path in viz_modules().items()
                 if not (name == "viz.ui" or name.startswith("viz.ui."))
                 and any(_top(m) == "streamlit" for m in imports_of(path))]
    assert offenders == [], f"streamlit imported outside app.py, pages/ and viz/ui/: {offenders}"


def test_torch_only_in_the_torch_tier():
    offenders = [name for name, path in viz_modules().items()
                 if name not in TORCH_TIER and any(_top(m) in HEAVY for m in imports_of(path))]
    assert offenders == [], f"torch/transformers imported outside the torch tier: {offenders}"


def test_pages_do_not_import_torch():
    for path in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        heavy = [m for m in imports_of(path) if _top(m) in HEAVY]
        assert heavy == [], f"{path.name} imports {heavy}"


def test_no_import_cycles_between_viz_modules():
    modules = viz_modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for imported in imports_of(path, set(modules)):
            # `from viz.figures import x` names viz.figures.x: keep the longest prefix that is a module
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target not in (name, "viz"):
                graph.add_edge(name, target)
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], f"import cycles: {cycles[:5]}"


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "pages").glob("*.py")))
def test_pages_are_thin(page):
    path = ROOT / "pages" / page
    source = path.read_text(encoding="utf-8")
    n_lines = len(source.splitlines())
    assert n_lines <= PAGE_MAX_LINES, f"{page} has {n_lines} lines (keep logic in viz/)"
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("cache_data", "cache_resource", "query_params"):
            pytest.fail(f"{page} uses st.{node.attr}: caches live in viz/ui/compute.py, URL state in viz/ui/state.py")
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "capture":
            pytest.fail(f"{page} calls capture(): the one route to a result is viz/ui/compute.py")
    assert "viz.capture" not in imports_of(path), f"{page} imports viz.capture"
