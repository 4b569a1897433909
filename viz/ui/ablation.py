"""The widgets of the ablation page: which heads to knock out, and what the model says without them."""
from __future__ import annotations

import streamlit as st

from viz.result import Block, head_label
from viz.ui import compute, state
from viz.ui.output import show_view, theme
from viz.views.token_text import token_text

MODES = {"zero": "zero (remove the head's output)", "mean": "mean (replace it by its average over positions)"}


def _head_name(block: Block, head: tuple[int, int]) -> str:
    return f"L{head[0]} " + head_label(head[1], block.kv_head).replace("head ", "H")


def _apply_picker(options: dict) -> None:
    picked = [options[name] for name in st.session_state.get("w_ablate", [])]
    state.set_ablation(picked, st.session_state.get("w_mode", "zero"))


def ablation_picker(block: Block) -> tuple[tuple[tuple[int, int], ...], str]:
    """Pick heads (any layers, several at once) and the mode; the choice applies to every page."""
    heads, mode = state.ablation()
    options = {_head_name(block, (layer, head)): (layer, head)
               for layer in range(block.n_layers) for head in range(block.n_heads)}
    valid = tuple(h for h in heads if h[0] < block.n_layers and h[1] < block.n_heads)
    st.session_state["w_ablate"] = [_head_name(block, h) for h in valid]
    st.session_state["w_mode"] = mode
    with st.container(horizontal=True, gap="medium", vertical_alignment="bottom"):
        st.multiselect("Heads to knock out", list(options), key="w_ablate", on_change=_apply_picker,
                       args=(options,), placeholder="e.g. L18 H6", help="Any layers, several at once.")
        st.radio("Mode", list(MODES), format_func=MODES.get, key="w_mode", horizontal=True,
                 on_change=_apply_picker, args=(options,))
    state.sync_ablation()
    return valid, mode


def knock_out_clicked(picked: tuple[int, int] | None) -> None:
    """A click on the importance grid adds that head (once per new click)."""
    if picked is None or st.session_state.get("_knocked_click") == picked:
        return
    st.session_state["_knocked_click"] = picked
    state.knock_out(*picked)
    st.rerun()


def cached_importance(method: str, mode: str):
    """The other method's importance grid if it was computed already (for the rank correlation)."""
    inputs = compute._current_input()
    loaded = compute.loaded_model(inputs["model"])
    return None if loaded is None else compute._RESULTS.get(("importance", loaded.path, inputs["text"], method, mode))


def continuation_text(cont) -> None:
    """The two greedy continuations, token by token, the tokens that differ shaded."""
    for label, run in (("with every head", cont.before), ("with those heads knocked out", cont.after)):
        labels = run.attention.tokens.labels
        n = run.n_prompt
        other = cont.after if run is cont.before else cont.before
        differs = [1.0 if t >= len(other.step_ids) or other.step_ids[t] != run.step_ids[t] else 0.15
                   for t in range(len(run.step_ids))]
        values = [float("nan")] * n + differs
        show_view(token_text(labels, values, vmax=1.0, scale="Reds", special=run.attention.tokens.special,
                             title=f"Continuation {label}", theme=theme()))
    st.caption("Shaded darker: where the two continuations differ." if cont.changed else
               "The continuation is the same: these heads are not needed for it.")


def masked_lm_effect(heads, mode: str) -> None:
    """For encoders with a masked-LM head and a mask token in the text: its top-k before and after."""
    masked = compute.masked_effect(heads, mode)
    if masked is None:
        return
    from viz.figures.ablation import topk_compare_figure
    top = masked.top
    st.plotly_chart(topk_compare_figure(top.before_labels, top.before_probs, top.before_probs_after,
                                        title=f"The masked token at position {top.position}: top guesses, "
                                              f"before → after"), key="abl_mlm")
