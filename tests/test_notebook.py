"""viz.notebook: views inline in notebooks, offline, in light or dark; and the example notebook.

The unit tests use hand-made arrays.  The last tests run examples/attention.ipynb with nbclient
in the package installed into a fresh venv (tests/installed.py), in dark, and open its HTML
outputs in Chromium with every request outside the page refused.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from installed import ROOT, installed_venv
from viz import notebook, stats
from viz.figures.common import DARK_ATTENTION_SCALE, colour_lut
from viz.result import Block, TokenSeq
from viz.views.model_view import build_mosaic

EXAMPLE = ROOT / "examples" / "attention.ipynb"
HOSTILE = ['"quoted"', "</iframe><script>alert(1)</script>", "<img src=x onerror=alert(2)>", "&amp;", "it's"]


def tokens(labels) -> TokenSeq:
    n = len(labels)
    return TokenSeq(tuple(labels), tuple(labels), np.arange(n), np.zeros(n, bool), np.arange(n),
                    np.zeros(n, np.int64))


def block(n_layers=2, n_heads=3, labels=("the", "cat", "sat", "on", "it"), seed=0) -> Block:
    rng = np.random.default_rng(seed)
    pattern = rng.dirichlet(np.ones(len(labels)), size=(n_layers, n_heads, len(labels))).astype(np.float32)
    return Block("encoder", pattern, tokens(labels), tokens(labels), False)


class _Iframes(HTMLParser):
    def __init__(self):
        super().__init__()
        self.frames = []

    def handle_starttag(self, tag, attrs):
        if tag == "iframe":
            self.frames.append(dict(attrs))


def iframes(markup: str) -> list[dict]:
    parser = _Iframes()
    parser.feed(markup)
    return parser.frames


def script_data(page: str, element_id: str) -> dict:
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    return json.loads(m.group(1))


# ---------------------------------------------------------------- the View wrapper
@pytest.mark.parametrize("make", [
    lambda b: notebook.head_view(b, layer=1),
    lambda b: notebook.model_view(b),
    lambda b: notebook.heatmap(b, layer=0, head=2),
], ids=["head_view", "model_view", "heatmap"])
def test_inline_view_is_one_sandboxed_iframe_holding_the_page(make):
    view = make(block(labels=HOSTILE))
    markup = view._repr_html_()
    frames = iframes(markup)
    assert len(frames) == 1 and markup.count("<iframe") == 1 and markup.endswith("</iframe>")
    assert frames[0]["srcdoc"] == view.html                 # the parser gives back exactly the page
    assert frames[0]["sandbox"].split() == ["allow-scripts", "allow-downloads"]   # no same-origin: no kernel access
    assert f"height:{view.height}px" in frames[0]["style"] and view.height > 100
    # nothing outside the page: no external script, stylesheet, image or frame
    assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)=', view.html)


def test_save_writes_the_same_page(tmp_path):
    view = notebook.heatmap(block(), layer=1)
    path = view.save(tmp_path / "heat.html")
    assert path == tmp_path / "heat.html" and path.read_text(encoding="utf-8") == view.html
    assert view.html.startswith("<!DOCTYPE html>")


def test_heatmap_sends_the_head_or_the_mean_of_the_layer():
    b = block(n_layers=2, n_heads=3)
    for head, expected in [(2, b.pattern[1, 2]), (None, b.pattern[1].mean(axis=0))]:
        data = script_data(notebook.heatmap(b, layer=1, head=head).html, "hm-data")
        z = np.frombuffer(base64.b64decode(data["z"]), dtype="<f4").reshape(data["nq"], data["nk"])
        np.testing.assert_allclose(z, expected, rtol=0, atol=1e-7)
        assert data["q"] == list(b.queries.labels) and data["k"] == list(b.keys.labels)
    with pytest.raises(ValueError, match="layer 2 out of range"):
        notebook.heatmap(b, layer=2)
    with pytest.raises(ValueError, match="head 3 out of range"):
        notebook.heatmap(b, layer=0, head=3)


def test_head_view_sends_every_layer_by_default_or_the_one_asked():
    b = block(n_layers=3)
    assert [layer["layer"] for layer in script_data(notebook.head_view(b).html, "hv-data")["layers"]] == [0, 1, 2]
    assert [layer["layer"] for layer in script_data(notebook.head_view(b, layer=2).html, "hv-data")["layers"]] == [2]


def test_theme_is_carried_by_every_view_and_checked():
    b = block()
    for theme in ("light", "dark"):
        for view in (notebook.head_view(b, theme=theme), notebook.model_view(b, theme=theme),
                     notebook.heatmap(b, theme=theme)):
            assert f'data-ae-theme="{theme}"' in view.html
    data = script_data(notebook.heatmap(b, theme="dark").html, "hm-data")
    assert tuple(data["luts"]["dark"]) == colour_lut(DARK_ATTENTION_SCALE)
    assert tuple(data["luts"]["light"]) == colour_lut("Blues")
    for make in (notebook.head_view, notebook.model_view, notebook.heatmap, notebook.metric_grid):
        with pytest.raises(ValueError, match="theme"):
            make(b, theme="blue")


def test_model_view_page_sends_the_mosaic_levels_with_transparent_gaps():
    b = block(n_layers=2, n_heads=3, labels=tuple("abcdefg"))
    data = script_data(notebook.model_view(b, normalize="global", gamma=1.0).html, "mv-data")
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data["png"]))))
    mosaic = build_mosaic(b.pattern, normalize="global")
    assert img.shape == (*mosaic.values.shape, 2)
    assert (img[..., 1] == np.where(mosaic.gap, 0, 255)).all()
    # one shared scale: the strongest weight anywhere is level 255, and levels follow the weights
    assert (img[..., 0][~mosaic.gap] == mosaic.values[~mosaic.gap]).all()
    r, c = mosaic.origin(1, 2)
    expected = np.rint(b.pattern[1, 2] / b.pattern.max() * 255)
    np.testing.assert_array_equal(img[r:r + mosaic.cell_h, c:c + mosaic.cell_w, 0], expected)
    assert (data["nLayers"], data["nHeads"]) == (2, 3)


def test_metric_grid_inlines_plotly_once_and_draws_every_metric():
    b = block()
    view = notebook.metric_grid(b)
    from plotly.offline import get_plotlyjs
    assert view.html.count(get_plotlyjs()) == 1
    assert view.html.count("Plotly.newPlot(") == len(stats.METRICS)
    one = notebook.metric_grid(b, metric="entropy", theme="dark")
    assert one.html.count("Plotly.newPlot(") == 1 and "#171614" in one.html
    with pytest.raises(ValueError, match="unknown metric"):
        notebook.metric_grid(b, metric="beauty")


def test_figure_wraps_any_plotly_figure_without_touching_it():
    from viz.figures.attention import heatmap_figure
    fig = heatmap_figure(block().pattern[0, 0], list("abcde"), list("abcde"), title="one head")
    before = fig.to_json()
    view = notebook.figure(fig, theme="dark")
    assert fig.to_json() == before and view.title == "one head" and "Plotly.newPlot(" in view.html


def test_notebook_module_needs_neither_streamlit_nor_torch():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, viz.notebook; "
                               "print([m for m in ('streamlit', 'torch', 'transformers') if m in sys.modules])"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- the example notebook
RUN_NOTEBOOK = textwrap.dedent("""
    import sys
    import nbformat
    from nbclient import NotebookClient
    source, target, workdir = sys.argv[1:4]
    nb = nbformat.read(source, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = 'theme = "dark"'
    nb.cells.append(nbformat.v4.new_code_cell("import sys, viz\\nprint(sys.executable)\\nprint(viz.__file__)"))
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": workdir}}).execute()
    nbformat.write(nb, target)
""")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """The example notebook run top to bottom (dark) by a kernel of the installed package, in a temp folder."""
    venv = installed_venv(tmp_path_factory.getbasetemp() / "installed")
    workdir = tmp_path_factory.mktemp("notebook-run")
    target = workdir / "executed.ipynb"
    out = venv.run(venv.python, "-c", RUN_NOTEBOOK, str(EXAMPLE), str(target), str(workdir), cwd=workdir,
                   timeout=900, VIZ_TORCH_THREADS="1")
    assert out.returncode == 0, out.stderr[-4000:]
    import nbformat
    return venv, workdir, nbformat.read(target, as_version=4)


def shots() -> Path:
    """Where screenshots for a person go (as browser_tools.shot): $VIZ_SHOTS, default /tmp/shots."""
    folder = Path(os.environ.get("VIZ_SHOTS", "/tmp/shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _outputs(cell, kind):
    return [o for o in cell.get("outputs", []) if o.get("output_type") == kind]


def test_example_notebook_runs_top_to_bottom_in_the_installed_package(executed):
    venv, workdir, nb = executed
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(_outputs(c, "error") for c in code)
    printed = "".join(o.get("text", "") for c in code for o in _outputs(c, "stream"))
    executable, package = printed.strip().splitlines()[-2:]
    assert Path(executable).parent == venv.python.parent                 # the kernel was the fresh venv
    assert Path(package).is_relative_to(venv.site_packages)            # and imported the installed viz
    assert "(6, 12, 16, 16)" in printed                                 # the embedded MiniLM's capture
    assert (workdir / "head_view.html").is_file()                       # the save cell wrote its file


def _html_outputs(nb) -> list[str]:
    return [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code"
            for o in _outputs(c, "execute_result") + _outputs(c, "display_data") if "text/html" in o.get("data", {})]


def _offline(page) -> list[str]:
    """Refuse every request that would leave the page; return the list of those tried."""
    tried = []

    def handle(route):
        url = route.request.url
        if url.startswith(("data:", "about:", "blob:")) or url == getattr(page, "allowed_url", None):
            route.continue_()
        else:
            tried.append(url)
            route.abort()
    page.context.route("**/*", handle)
    page.on("request", lambda request: None if request.url.startswith(("data:", "about:", "blob:"))
            or request.url == getattr(page, "allowed_url", None) else tried.append(request.url))
    return tried


DRAWN = {  # view -> the element its script marks when it has drawn
    "head_view": "#hv[data-ready='1']", "model_view": "#mv[data-drawn='1']", "heatmap": "#hm[data-drawn='1']",
}
NON_BACKGROUND_PIXELS = """sel => {
    const c = document.querySelector(sel), x = c.getContext('2d'), d = x.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[0]) + Math.abs(d[i + 1] - d[1]) + Math.abs(d[i + 2] - d[2]) > 30) n++;
    return n;
}"""


def test_example_notebook_views_draw_offline_in_dark(executed, page):
    _, _, nb = executed
    outputs = _html_outputs(nb)
    assert len(outputs) == 4 and all(len(iframes(o)) == 1 for o in outputs)
    tried = _offline(page)
    page.set_viewport_size({"width": 1100, "height": 900})
    page.set_content("<!DOCTYPE html><html><body style='margin:0;background:#101010'>" +
                     "".join(f"<div class='out'>{o}</div>" for o in outputs) + "</body></html>")
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 4 and all(f.url == "about:srcdoc" for f in frames)
    names = ["head_view", "model_view", "heatmap", "metric_grid"]
    for name, frame, element in zip(names, frames, page.locator("iframe").all()):
        if name == "metric_grid":
            frame.wait_for_function(f"""() => document.querySelectorAll('.js-plotly-plot').length === {len(stats.METRICS)}
                && Array.from(document.querySelectorAll('.js-plotly-plot')).every(p => p.querySelector('g.hm image'))""",
                                    timeout=60_000)
            assert frame.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(23, 22, 20)"
        else:
            frame.locator(DRAWN[name]).wait_for(timeout=60_000)
            assert frame.evaluate("document.querySelector('[data-ae-theme]').getAttribute('data-ae-theme')") == "dark"
            canvas = {"head_view": "#hv-base", "model_view": "#mv-mosaic", "heatmap": "#hm-plot"}[name]
            assert frame.evaluate(NON_BACKGROUND_PIXELS, canvas) > 2000, name
        element.scroll_into_view_if_needed()
        page.wait_for_timeout(200)
        element.screenshot(path=str(shots() / f"notebook_{name}_dark.png"))

    # The heatmap's cells carry the dark scale: a cell's pixel is the dark LUT colour of its weight.
    heat = frames[2]
    i, j = 1, 0
    data = heat.evaluate("window.heatmap.data")
    centre = heat.evaluate(f"window.heatmap.cellCentre({i}, {j})")
    dpr = heat.evaluate("window.devicePixelRatio")
    pixel = heat.evaluate(f"""() => Array.from(document.getElementById('hm-plot').getContext('2d')
        .getImageData({int(centre['x'] * dpr)}, {int(centre['y'] * dpr)}, 1, 1).data.slice(0, 3))""")
    weight = heat.evaluate(f"window.heatmap.weight({i}, {j})")
    t = 3 * max(0, min(255, round(weight / data["zmax"] * 255)))
    assert pixel == list(colour_lut(DARK_ATTENTION_SCALE)[t:t + 3])
    assert tried == []


def test_saved_view_opens_offline_from_its_file(executed, page):
    _, workdir, _ = executed
    saved = workdir / "head_view.html"
    page.allowed_url = saved.as_uri()
    tried = _offline(page)
    page.goto(saved.as_uri())
    page.locator("#hv[data-ready='1']").wait_for(timeout=30_000)
    assert page.locator("#hv-layer option").count() == 6                # every layer, with a selector
    page.select_option("#hv-layer", "3")
    page.wait_for_function("document.getElementById('hv').dataset.layer === '3'")
    assert page.evaluate(NON_BACKGROUND_PIXELS, "#hv-base") > 2000
    assert tried == []
