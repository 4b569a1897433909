"""AppTest wiring of the language-model pages: generate (steps, top-k, branch, gen mode) and predictions."""
from __future__ import annotations

import numpy as np
import pytest

from viz.generation import generate
from viz.lm import logit_lens, predictions
from viz.models import load_model

PROMPT = "the cat sat on the mat and the dog"


@pytest.fixture(scope="module")
def llama(tiny_models):
    return tiny_models["llama"]


def _html(at) -> str:
    return "".join(e.proto.body for e in at.get("html"))


def test_generate_page_runs_from_a_link_and_matches_the_api(app_test, llama):
    at = app_test("pages/generate.py", model=llama, text=PROMPT, new=4, step=2)
    assert not at.exception and not at.error
    ref = generate(PROMPT, load_model(llama), max_new_tokens=4)
    params = dict(at.query_params)
    assert params["new"] in ("4", ["4"]) and params["step"] in ("2", ["2"])
    assert at.select_slider(key="w_step").value == 2
    body = _html(at)
    for label in ref.top_labels[2][:1]:           # the alternatives of the viewed step are offered
        assert any(b.label == label for b in at.button) or ref.step_ids[2] == ref.top_ids[2][0]
    # every generated token is on the page, in the text view
    labels = ref.attention.tokens.labels
    assert all(f">{lab}<" in body or lab.strip() == "" for lab in labels[ref.n_prompt:] if "<" not in lab)


def test_branching_forces_the_token_and_goes_into_the_link(app_test, llama):
    at = app_test("pages/generate.py", model=llama, text=PROMPT, new=4, step=1)
    ref = generate(PROMPT, load_model(llama), max_new_tokens=4)
    alternatives = [b for b in at.button if b.key and b.key.startswith("branch_1_")]
    assert alternatives
    chosen = alternatives[0]
    index = int(chosen.key.rsplit("_", 1)[1])
    forced_id = int(ref.top_ids[1][index])
    chosen.click().run()
    assert not at.exception
    branch = at.query_params["branch"]
    assert (branch[0] if isinstance(branch, list) else branch) == f"1:{forced_id}"
    again = generate(PROMPT, load_model(llama), max_new_tokens=4, forced={1: forced_id})
    assert again.step_ids[1] == forced_id and again.forced[1]
    assert again.step_ids[0] == ref.step_ids[0]                     # the steps before are kept


def test_gen_mode_shows_the_generated_sequence_on_other_pages(app_test, llama):
    ref = generate(PROMPT, load_model(llama), max_new_tokens=3)
    at = app_test("pages/heatmap.py", model=llama, text=PROMPT, new=3, gen=1)
    assert not at.exception
    from viz.ui import compute
    shown = compute._RESULTS.get(("generate", load_model(llama).path, PROMPT,
                                  __import__("viz.ui.state", fromlist=["x"]).GenerationSettings(new=3)))
    assert shown is not None and shown.attention.tokens.tokens == ref.attention.tokens.tokens
    assert "gen" in at.query_params


def test_predictions_page_shows_surprisal_and_the_lens(app_test, llama):
    at = app_test("pages/predictions.py", model=llama, text=PROMPT, position=3)
    assert not at.exception and not at.error
    pred = predictions(PROMPT, load_model(llama))
    body = _html(at)
    # the tooltip of token 4 holds the probability the model gave it at position 3
    assert f"p = {pred.p_next[3]:.3f}" in body
    lens = logit_lens(PROMPT, load_model(llama), position=3)
    np.testing.assert_allclose(lens.top_probs[-1], pred.top_probs[3], atol=1e-5)   # last layer = output
    assert {b.proto.label for b in at.get("download_button")} >= {"Predictions (CSV)", "Logit lens (CSV)"}


def test_an_encoder_on_the_generate_page_gets_a_clear_message(app_test, tiny_models):
    at = app_test("pages/generate.py", model=tiny_models["encoder"], text=PROMPT)
    assert not at.exception
    assert any("needs a decoder" in i.value for i in at.info)
    assert any(b.label.startswith("Use the embedded LLM") for b in at.button)


def test_generate_page_without_a_model_uses_the_embedded_llm(app_test):
    at = app_test("pages/generate.py", text="The capital of France is", new=2)
    assert not at.exception and not at.error
    assert at.session_state["viz_model"] == "embedded-llm"


def test_ablation_page_shows_the_effect_and_every_page_the_ablated_run(app_test, llama):
    from viz.ablation import ablated_capture, decoder_effect
    at = app_test("pages/ablation.py", model=llama, text=PROMPT, ablate="1:0,0:3")
    assert not at.exception and not at.error
    expected = decoder_effect(PROMPT, [(0, 3), (1, 0)], model=load_model(llama))
    shown = [m.value for m in at.metric if m.label.startswith("Mean KL")]
    assert shown and abs(float(shown[0].split()[0]) - expected.mean_kl) < 1e-4
    assert at.multiselect(key="w_ablate").value == ["L0 H3 · KV 1", "L1 H0 · KV 0"]
    # the heatmap page shows the run without those heads, and says so
    at = app_test("pages/heatmap.py", model=llama, text=PROMPT, ablate="0:3", layer=1, head=0)
    assert any("Heads knocked out (zero): L0 H3" in w.value for w in at.warning)
    from viz.ui import compute
    key = ("ablated", load_model(llama).path, PROMPT, "", "", ((0, 3),), "zero")
    np.testing.assert_array_equal(compute._RESULTS.get(key).attentions,
                                  ablated_capture(PROMPT, [(0, 3)], model=load_model(llama)).attentions)


def test_knock_this_head_out_from_a_head_picker(app_test, llama):
    at = app_test("pages/heatmap.py", model=llama, text=PROMPT, layer=1, head=2)
    at.button(key="knock_out").click().run()
    assert not at.exception
    ablate = at.query_params["ablate"]
    assert (ablate[0] if isinstance(ablate, list) else ablate) == "1:2"
    at.button(key="restore_heads").click().run()
    assert "ablate" not in at.query_params


def test_math_page_in_gen_mode_reads_the_generated_sequence(app_test, llama):
    """The math page's check (softmax of the recorded scores vs the model's weights) on a generated text."""
    ref = generate(PROMPT, load_model(llama), max_new_tokens=3)
    last = len(ref.attention.tokens) - 1
    at = app_test("pages/attention_math.py", model=llama, text=PROMPT, new=3, gen=1, layer=1, head=3, query=last)
    assert not at.exception and not at.error
    assert at.selectbox(key="w_query").value == last            # a generated token's row exists
    (message,) = [s.value for s in at.success]
    import re
    assert float(re.search(r"= \*\*([0-9.e+-]+)\*\*", message).group(1)) <= 1e-5
    assert any("share one key/value head" in i.value for i in at.info)   # GQA said on the math page
