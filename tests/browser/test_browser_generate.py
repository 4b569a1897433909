"""Chromium: type a prompt, generate, scrub to a step, see its attention and alternatives, branch."""
from __future__ import annotations

from urllib.parse import parse_qs, quote, urlsplit

import pytest
from browser_tools import shot, wait_for_app

from viz.generation import generate
from viz.models import load_model

PROMPT = "the cat sat on the mat and the dog"


@pytest.fixture
def settled(page, app_url):
    page.goto(f"{app_url}/")
    wait_for_app(page, timeout=180_000)
    return page


def _params(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlsplit(page.url).query).items()}


def _step_title(page) -> str:
    return page.locator(".tt-title", has_text="Step").first.inner_text()


def test_generate_scrub_and_branch(settled, app_url, tiny_models):
    page, model = settled, tiny_models["llama"]
    page.goto(f"{app_url}/generate?model={quote(model)}&new=5")
    wait_for_app(page, timeout=180_000)
    page.get_by_role("textbox", name="Prompt").fill(PROMPT)
    page.get_by_role("button", name="Generate").click()
    wait_for_app(page, timeout=180_000)
    ref = generate(PROMPT, load_model(model), max_new_tokens=5)
    labels = ref.attention.tokens.labels
    assert _params(page)["text"] == PROMPT
    # the last step is shown first: its token is framed in the text view
    assert f"Step 5 chose “{labels[ref.n_prompt + 4]}”" in _step_title(page)
    shot(page, "generate_last_step")

    # scrub back two steps with the keyboard on the step slider
    for _ in range(2):
        thumb = page.get_by_role("slider").last         # the step slider (after "New tokens")
        thumb.focus()
        thumb.press("ArrowLeft")
        wait_for_app(page)
    assert _params(page)["step"] == "2"
    assert f"Step 3 chose “{labels[ref.n_prompt + 2]}”" in _step_title(page)
    # the step's attention row is on the text: the tokens it read carry their weight in a tooltip
    tips = page.locator(".tt .tok .tip").all_inner_texts()
    assert any("weight" in t for t in tips)

    # branch: the first alternative at step 3 that is not the model's own choice
    alternatives = [(i, lab) for i, (tid, lab) in enumerate(zip(ref.top_ids[2], ref.top_labels[2]))
                    if tid != ref.step_ids[2] and lab.strip()]
    index, label = alternatives[0]
    page.get_by_role("button", name=label, exact=True).first.click()
    wait_for_app(page, timeout=180_000)
    forced = int(ref.top_ids[2][index])
    assert _params(page)["branch"] == f"2:{forced}"
    branched = generate(PROMPT, load_model(model), max_new_tokens=5, forced={2: forced})
    assert f"chose “{branched.attention.tokens.labels[branched.n_prompt + 2]}”" in _step_title(page)
    shot(page, "generate_branched")


def test_generate_on_the_embedded_llm(settled, app_url):
    """The real model, opened from a teacher's link with no model named: it runs without a click."""
    page = settled
    page.goto(f"{app_url}/generate?text={quote('The capital of France is')}&new=6")
    wait_for_app(page, timeout=300_000)
    assert _params(page)["model"] == "embedded-llm"
    ref = generate("The capital of France is", load_model("embedded-llm"), max_new_tokens=6)
    assert ref.completion.strip()[:5] in page.locator(".tt").first.inner_text().replace("\n", " ")
    shot(page, "generate_embedded_llm")


def test_a_long_text_wraps_on_the_predictions_page(settled, app_url, tiny_models):
    """The surprisal text of a few hundred tokens wraps inside the page instead of running off its edge."""
    page = settled
    text = " ".join(["the cat sat on the mat and the dog slept by the door"] * 12)
    page.goto(f"{app_url}/predictions?model={quote(tiny_models['llama'])}&text={quote(text)}")
    wait_for_app(page, timeout=180_000)
    strip = page.locator(".tt > div:not(.tt-title):not(.tt-note)").first
    size = strip.evaluate("el => ({scroll: el.scrollWidth, client: el.clientWidth, height: el.clientHeight,"
                          " line: parseFloat(getComputedStyle(el).lineHeight)})")
    assert size["scroll"] <= size["client"] + 1, size
    assert size["height"] > 1.5 * size["line"], size        # more than one line, none running off the edge
    shot(page, "predictions_wrapped")
