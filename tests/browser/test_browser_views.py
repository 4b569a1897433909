"""Head view and model view in Debian's Chromium, as a person uses them.

Hovering a token isolates its lines, heads toggle and solo, the layer picker switches the
drawn layer, a click on a model-view thumbnail opens that head, token text stays inert, and
a 512-token input stays within the byte budget. These tests fail (never skip) when Chromium
is missing: see the `_browser` fixture.
"""
from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pytest

from browser_tools import shot, wait_for_app

TEXT = "The animal didn't cross the street because it was too tired. It slept."
LONG_TEXT = (Path(__file__).resolve().parents[2] / "viz" / "data" / "sample_corpus.txt").read_text()[:6000]


def open_page(page, app_url, name, **params):
    page.goto(f"{app_url}/{name}?{urlencode(params)}")
    wait_for_app(page, timeout=120_000)


def head_view_frame(page):
    frame = page.frame_locator("iframe").first
    frame.locator("#hv[data-ready='1']").wait_for(timeout=60_000)
    return frame


def view_state(frame) -> dict:
    return frame.locator("#hv").evaluate("el => ({...el.dataset})")


def visible_edges(frame) -> list:
    return frame.locator("#hv").evaluate("() => window.headView.visibleEdges()")


@pytest.fixture(scope="module")
def expected_layer1():
    """What the server should send for TEXT at layer 1: the same capture and pruning, in Python."""
    from viz.capture import capture
    from viz.views.head_view import auto_threshold, prune_edges
    block = capture(TEXT).block()
    edges = prune_edges(block.pattern[1])
    return block, edges, auto_threshold(edges)


def test_hover_isolates_a_token_and_heads_toggle(page, app_url, expected_layer1):
    block, edges, threshold = expected_layer1
    open_page(page, app_url, "head_view", text=TEXT, layer=1)
    frame = head_view_frame(page)
    state = view_state(frame)
    assert state["layer"] == "1" and state["heads"] == ",".join(map(str, range(block.n_heads)))
    shown = edges.weight >= round(threshold * 255)
    assert int(state["visibleEdges"]) == int(shown.sum()) > 0
    shot(page, "head_view")

    # Hover the query token "animal": only its lines remain, exactly the ones the server kept.
    pos = block.queries.labels.index("animal")
    frame.locator("#hv-left .hv-tok").nth(pos).hover()
    frame.locator(f"#hv[data-hover-pos='{pos}']").wait_for()
    lines = visible_edges(frame)
    assert lines and {q for _, q, _, _ in lines} == {pos}
    expected = {(int(h), int(k)) for h, q, k, s in zip(edges.head, edges.query_pos, edges.key_pos, shown)
                if q == pos and s}
    assert {(h, k) for h, _, k, _ in lines} == expected
    assert int(view_state(frame)["visibleEdges"]) == len(expected)
    hidden = frame.locator("#hv-base").evaluate("c => getComputedStyle(c).visibility")
    assert hidden == "hidden"                                 # the all-lines layer is not shown
    assert "animal" in frame.locator("#hv-status").inner_text()
    shot(page, "head_view_hover")

    # Hover a key token on the right: only lines ending there.
    frame.locator("#hv-right .hv-tok").nth(0).hover()
    frame.locator("#hv[data-hover-side='k']").wait_for()
    assert {k for _, _, k, _ in visible_edges(frame)} == {0}

    # Leave the columns: everything comes back.
    page.mouse.move(5, 5)
    frame.locator("#hv[data-hover-side='']").wait_for()
    assert int(view_state(frame)["visibleEdges"]) == int(shown.sum())

    # Click head 0 off: its lines go, the others stay.
    frame.locator(".hv-head[data-head='0']").click()
    frame.locator("#hv[data-heads='" + ",".join(map(str, range(1, block.n_heads))) + "']").wait_for()
    assert int(view_state(frame)["visibleEdges"]) == int((shown & (edges.head != 0)).sum())
    assert "off" in frame.locator(".hv-head[data-head='0']").get_attribute("class")

    # Double-click head 5: only head 5; double-click again: every head.
    frame.locator(".hv-head[data-head='5']").dblclick()
    frame.locator("#hv[data-heads='5']").wait_for()
    assert {h for h, _, _, _ in visible_edges(frame)} == {5}
    shot(page, "head_view_solo")
    frame.locator(".hv-head[data-head='5']").dblclick()
    frame.locator("#hv[data-heads='" + ",".join(map(str, range(block.n_heads))) + "']").wait_for()
    assert page.locator("[data-testid='stException']").count() == 0


def test_layer_picker_switches_the_drawn_layer(page, app_url):
    open_page(page, app_url, "head_view", text=TEXT, layer=1, head=3)
    frame = head_view_frame(page)
    assert view_state(frame)["heads"] == "3"             # the URL's head is shown alone at first
    page.get_by_label("Layer").first.click()
    page.get_by_role("option", name="layer 4").click()
    wait_for_app(page)
    frame = head_view_frame(page)
    frame.locator("#hv[data-layer='4']").wait_for(timeout=30_000)
    assert "layer=4" in page.url
    assert "layer 4" in frame.locator("#hv-title").inner_text()


def test_png_and_html_exports(page, app_url, tmp_path):
    open_page(page, app_url, "head_view", text=TEXT, layer=2)
    frame = head_view_frame(page)
    with page.expect_download() as download:
        frame.locator("#hv-png").click()
    png = Path(download.value.path()).read_bytes()
    assert download.value.suggested_filename == "head_view_layer2.png"
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    with page.expect_download() as download:
        page.get_by_role("button", name="HTML (this layer)").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    html = saved.read_text(encoding="utf-8")
    assert saved.suffix == ".html" and html.startswith("<!DOCTYPE html>") and 'id="hv-data"' in html
    # the exported page draws on its own, from a file, with no network
    page.goto(saved.as_uri())
    page.locator("#hv[data-ready='1'][data-layer='2']").wait_for()


def test_sentence_pair_slice(page, app_url):
    open_page(page, app_url, "head_view", text="The cat sat.", pair="It was warm.", slice="A->B")
    frame = head_view_frame(page)
    left = frame.locator("#hv-left .hv-tok").all_inner_texts()
    right = frame.locator("#hv-right .hv-tok").all_inner_texts()
    assert left[0] == "[CLS]" and "cat" in left and "warm" not in left
    assert "warm" in right and "cat" not in right


def test_token_text_is_inert(page, app_url):
    hostile = "</script><script>alert(1)</script> <img src=x onerror=alert(2)> & done"
    open_page(page, app_url, "head_view", text=hostile)
    frame = head_view_frame(page)
    labels = frame.locator("#hv-left .hv-tok").all_inner_texts()
    # the tokenizer splits the markup into pieces; each piece is shown as text
    assert "<" in labels and ">" in labels and "/" in labels and "script" in labels
    assert frame.locator("img").count() == 0
    page.wait_for_timeout(300)
    assert page.dialogs == []


def test_512_tokens_head_view_budget(page, app_url):
    received = []
    page.on("websocket", lambda ws: ws.on("framereceived",
                                          lambda payload: received.append(len(payload))))
    page.goto(f"{app_url}/head_view?{urlencode({'text': LONG_TEXT, 'layer': 3})}")
    wait_for_app(page, timeout=120_000)
    finished = time.perf_counter()
    frame = head_view_frame(page)
    frame.locator("#hv").evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
    drawn = time.perf_counter() - finished
    state = view_state(frame)
    n_tokens = frame.locator("#hv-left .hv-tok").count()
    print(f"\n512-token head view: {sum(received):,} websocket bytes, drawn {drawn:.2f} s after the "
          f"script finished, {state['visibleEdges']} lines, first paint {state['drawMs']} ms")
    assert n_tokens == 512
    assert sum(received) <= 3 * 1024 * 1024
    assert int(state["paints"]) >= 1 and 0 < int(state["visibleEdges"]) <= 25_000
    # scrolling redraws the window of lines that is on screen
    frame.locator("#hv-scroll").evaluate("el => { el.scrollTop = 4000; }")
    frame.locator("#hv").evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
    page.wait_for_timeout(200)
    assert int(view_state(frame)["paints"]) > int(state["paints"])
    shot(page, "head_view_512")


def thumbnail_point(page, index: int) -> tuple[float, float]:
    """Page coordinates of the model view's click marker ``index`` (layer * n_heads + head)."""
    return tuple(page.evaluate("""(i) => {
        const gd = document.querySelectorAll('.js-plotly-plot')[0];
        const fl = gd._fullLayout, tr = gd._fullData[1], box = gd.getBoundingClientRect();
        return [box.left + fl.xaxis._offset + fl.xaxis.l2p(tr.x[i]),
                box.top + fl.yaxis._offset + fl.yaxis.l2p(tr.y[i])];
    }""", index))


def test_model_view_click_opens_a_head(page, app_url):
    open_page(page, app_url, "model_view", text=TEXT, layer=0, head=0)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot image').length >= 1")
    shot(page, "model_view")
    x, y = thumbnail_point(page, 3 * 12 + 5)                       # layer 3, head 5
    page.mouse.move(x, y)
    page.wait_for_timeout(200)
    page.mouse.click(x, y)
    wait_for_app(page)
    page.wait_for_function("""() => Array.from(document.querySelectorAll('.js-plotly-plot .gtitle'))
                                 .some(t => t.textContent.includes('layer 3 · head 5'))""", timeout=30_000)
    assert "layer=3" in page.url and "head=5" in page.url
    # the large view has token labels
    ticks = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))[1]
                             ._fullLayout.xaxis.ticktext""")
    assert "animal" in ticks
    assert page.locator("[data-testid='stException']").count() == 0
    shot(page, "model_view_opened")


def test_model_view_512_tokens_budget(page, app_url):
    received = []
    page.on("websocket", lambda ws: ws.on("framereceived",
                                          lambda payload: received.append(len(payload))))
    open_page(page, app_url, "model_view", text=LONG_TEXT, layer=2, head=3)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot image').length >= 2",
                           timeout=60_000)
    print(f"\n512-token model view: {sum(received):,} websocket bytes")
    assert sum(received) <= 8 * 1024 * 1024
    shot(page, "model_view_512")


def test_expected_fixture_is_not_trivial(expected_layer1):
    # Guards the comparisons above: the pruned set must leave some edges out and keep some in.
    _, edges, threshold = expected_layer1
    shown = np.asarray(edges.weight) >= round(threshold * 255)
    assert 0 < shown.sum() < edges.n_possible
