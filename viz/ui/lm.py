"""The widgets of the language-model pages: the generation form, the completion, branching, gen mode."""
from __future__ import annotations

import dataclasses

import numpy as np
import streamlit as st

from viz import models
from viz.ui import compute, state
from viz.ui.output import show_view, theme
from viz.ui.widgets import flag_toggle
from viz.views.token_text import token_text

MAX_NEW = 64


def _apply_form() -> None:
    """Form callback (runs before the script): the prompt becomes the shared text, a new run starts."""
    prompt = st.session_state.get("w_prompt", "")
    state.put("text", prompt)
    st.session_state["w_text"] = prompt            # the sidebar's box shows the same prompt
    old = state.generation_settings()
    state.set_generation(state.GenerationSettings(
        new=int(st.session_state.get("w_gen_new", old.new)), chat=bool(st.session_state.get("w_gen_chat", old.chat)),
        sample=bool(st.session_state.get("w_gen_sample", old.sample)),
        temperature=float(st.session_state.get("w_gen_temperature", old.temperature)),
        top_p=float(st.session_state.get("w_gen_top_p", old.top_p)),
        seed=int(st.session_state.get("w_gen_seed", old.seed))))
    state.put("step", None)                        # look at the last step of the new run
    st.session_state.pop("w_step", None)


def use_embedded_llm() -> None:
    state.put("model", models.EMBEDDED_LLM)
    st.session_state["w_model_choice"] = models.EMBEDDED_LLM


def generation_form() -> state.GenerationSettings:
    """Prompt and settings in a form; Generate applies them. Returns the settings to run with."""
    g = state.generation_settings()
    text = state.get("text", state.DEFAULT_TEXT)
    if st.session_state.get("_prompt_seeded") != text:   # the text changed elsewhere (sidebar, a link)
        st.session_state["w_prompt"] = text
        st.session_state["_prompt_seeded"] = text
    loaded = compute.loaded_model()
    if loaded is not None and loaded.info.family != "decoder":
        st.button("Use the embedded LLM (SmolLM2-135M-Instruct)", on_click=use_embedded_llm, type="primary")
    from viz.generation import supports_chat
    has_chat = loaded is not None and loaded.info.family == "decoder" and supports_chat(loaded)
    for name, value in (("new", g.new), ("chat", g.chat and has_chat), ("sample", g.sample),
                        ("temperature", g.temperature), ("top_p", g.top_p), ("seed", g.seed)):
        st.session_state.setdefault(f"w_gen_{name}", value)
    with st.form("gen_form", border=False):
        st.text_area("Prompt", key="w_prompt", height=90, max_chars=state.MAX_TEXT_CHARS)
        with st.container(horizontal=True, gap="medium", vertical_alignment="bottom"):
            st.slider("New tokens", 1, MAX_NEW, key="w_gen_new")
            st.toggle("Chat", key="w_gen_chat", disabled=not has_chat,
                      help="The prompt becomes one user message of the model's chat template, plus the "
                           "assistant's turn to answer. The template's own tokens are marked special.")
            st.toggle("Sample", key="w_gen_sample", help="Draw each token at random from the model's "
                                                     "distribution instead of always taking the most probable.")
        with st.expander("Sampling settings"):
            with st.container(horizontal=True, gap="medium"):
                st.number_input("Temperature", 0.05, 5.0, step=0.1, key="w_gen_temperature",
                                help="Below 1 sharpens the distribution, above 1 flattens it.")
                st.number_input("Top-p", 0.05, 1.0, step=0.05, key="w_gen_top_p",
                                help="Sample only from the most probable tokens holding this much probability.")
                st.number_input("Seed", 0, 2**31 - 1, step=1, key="w_gen_seed",
                                help="The same seed gives the same sampled text.")
        st.form_submit_button("Generate", type="primary", on_click=_apply_form)
    state.sync_generation()
    return g


def completion_text(generated) -> None:
    """The prompt and the generated tokens, each new token shaded by how probable the model found it."""
    block = generated.attention.block()
    labels, n_prompt = block.queries.labels, generated.n_prompt
    probs = np.full(len(labels), np.nan)
    probs[n_prompt:] = generated.step_probs
    tips = [("chat template" if generated.template[i] else "prompt") for i in range(n_prompt)]
    tips += [f"step {t + 1}: p = {p:.3f}" + (" (forced by a branch)" if generated.forced[t] else "")
             for t, p in enumerate(generated.step_probs)]
    stop = {"eos": "it ended the text", "length": f"{generated.max_new_tokens} new tokens",
            "limit": "the model's length limit"}.get(generated.stop, generated.stop)
    show_view(token_text(labels, probs, tips=tips, vmax=1.0, scale="Greens", special=block.queries.special,
                         title="The text and what the model wrote",
                         note=f"Shaded: the {len(generated.step_ids)} generated tokens, darker = more probable "
                              f"(stopped at {stop}). Hover a token for its probability.", theme=theme()))


def _branch(settings: state.GenerationSettings, step: int, token_id: int) -> None:
    state.set_generation(settings.branched(step, token_id))
    state.put("step", step)
    st.session_state.pop("w_step", None)


def branch_buttons(settings: state.GenerationSettings, step: int, generated) -> None:
    """One button per alternative token: the sequence is forced to it at this step and continues."""
    st.caption("Branch: make the model say one of these instead, and continue from there.")
    chosen = int(generated.step_ids[step])
    with st.container(horizontal=True, gap="small"):
        for i, (token_id, label) in enumerate(zip(generated.top_ids[step], generated.top_labels[step])):
            if int(token_id) == chosen:
                continue
            st.button(label if label.strip() else repr(label), key=f"branch_{step}_{i}", type="secondary",
                      on_click=_branch, args=(settings, step, int(token_id)),
                      help=f"p = {generated.top_probs[step][i]:.3f}")
    if settings.branch:
        st.button("Back to the model's own choices", key="branch_reset", type="tertiary",
                  on_click=state.set_generation, args=(dataclasses.replace(settings, branch=()),))


def gen_mode_switch(generated) -> None:
    """Let every other page show this generated sequence (the link carries gen=1 and the settings)."""
    on = flag_toggle("gen", "Show this generation on every page",
                     "The heatmap, head view, model view, compare heads, math... then show the prompt and the "
                     "generated tokens instead of the sidebar's text alone.")
    if on:
        st.caption(f"Every page now shows these {len(generated.attention.tokens)} tokens.")
