"""What a person sees in Chromium: type, Run, heatmap; a shared URL; hostile text stays text."""
from __future__ import annotations

from urllib.parse import parse_qs, quote, urlparse

from browser_tools import heatmap_data, heatmap_frame, hover_heatmap_cell, shot, wait_for_app, text_box_value

XSS = '<img src=x onerror=alert(1)>'


def test_type_run_and_see_heatmap(page, app_url):
    from viz.capture import capture
    text = "Colorless green ideas sleep furiously."
    page.goto(f"{app_url}/heatmap")
    wait_for_app(page)
    box = page.get_by_role("textbox", name="Text")
    box.fill(text)
    page.get_by_role("button", name="Run").click()
    wait_for_app(page)
    frame = heatmap_frame(page)
    data = heatmap_data(frame)
    assert "ideas" in data["k"] and "sleep" in data["q"]
    assert parse_qs(urlparse(page.url).query)["text"] == [text]
    # hover the cell "sleep" -> "ideas": the tooltip names both tokens and the weight the model gave
    i, j = data["q"].index("sleep"), data["k"].index("ideas")
    hover = hover_heatmap_cell(page, frame, i, j)
    assert f"query {i} sleep" in hover and f"key {j} ideas" in hover
    expected = capture(text).block().pattern[0].mean(axis=0)[i, j]       # layer 0, mean of heads
    assert abs(float(hover.split("weight")[1]) - expected) < 1e-4
    shot(page, "heatmap_typed")
    # the arrow keys move the same read-out
    frame.locator("#hm-plot").press("ArrowRight")
    frame.locator(f"#hm[data-hover='{i},{j + 1}']").wait_for(timeout=10_000)


def test_zoom_draws_the_plotly_chart_with_hover(page, app_url):
    page.goto(f"{app_url}/heatmap?text={quote('Colorless green ideas sleep furiously.')}&zoom=1")
    wait_for_app(page)
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(timeout=30_000)
    ticks = page.locator(".js-plotly-plot .xtick text").evaluate_all("els => els.map(e => e.textContent)")
    assert "ideas" in ticks and "sleep" in ticks
    box = plot.locator(".nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
    hover = page.locator(".hoverlayer .hovertext").first.text_content()
    assert "query" in hover and "key" in hover and "weight" in hover
    page.get_by_text("Zoom and pan", exact=True).first.click()  # back to the light view
    wait_for_app(page)
    heatmap_frame(page)
    assert "zoom" not in parse_qs(urlparse(page.url).query)


def test_shared_url_reproduces_view(page, app_url):
    page.goto(f"{app_url}/heatmap?text={quote('The keys to the cabinet are here.')}&layer=3&head=5")
    wait_for_app(page)
    title = heatmap_data(heatmap_frame(page))["title"]
    assert "layer 3" in title and "head 5" in title
    assert text_box_value(page) == "The keys to the cabinet are here."


def test_hostile_text_shows_literally_and_fires_nothing(page, app_url):
    page.goto(f"{app_url}/?text={quote(XSS + ' </script><b>bold</b>')}")
    wait_for_app(page)
    # the home page opens on a head's canvas heatmap; the token table is folded below it
    heatmap_frame(page)
    page.locator("[data-testid='stDataFrame']").first.wait_for(state="attached", timeout=30_000)
    assert text_box_value(page).startswith(XSS)
    assert page.locator("img[src='x']").count() == 0 and page.locator("b:text('bold')").count() == 0
    page.goto(f"{app_url}/heatmap?text={quote(XSS)}")
    wait_for_app(page)
    frame = heatmap_frame(page)
    assert page.locator("img[src='x']").count() == 0 and frame.locator("img").count() == 0
    assert heatmap_data(frame)["k"][1:4] == ["<", "im", "##g"]
    assert "< | im | ##g" in frame.locator("#hm-desc").text_content()   # the tokens, as text
    hover = hover_heatmap_cell(page, frame, 1, 1)
    assert "query 1 <" in hover
    assert page.dialogs == []
    shot(page, "hostile_heatmap")


def test_fresh_server_first_request_to_a_sub_page(page, tmp_path):
    """A shared link is often the first request a classroom server gets: it must show the full app."""
    from conftest import streamlit_server
    with streamlit_server(tmp_path / "fresh.log") as url:
        page.goto(f"{url}/glossary")
        wait_for_app(page)
        page.get_by_role("textbox", name="Text").wait_for(timeout=30_000)  # the shared sidebar is there
        nav = page.locator("[data-testid='stSidebarNav']").inner_text()
        assert "Glossary" in nav and "app" not in nav.split()
