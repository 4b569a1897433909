"""Generate: a decoder continues the prompt token by token; scrub the steps, see what it attended to and
what else it could have said, and branch on an alternative."""
import numpy as np
import streamlit as st

from viz import aggregate, ui
from viz.figures.generation import step_grid_figure, topk_figure
from viz.views.token_text import token_text

result = ui.page("Generate", "A language model continues your text one token at a time. Every step reads "
                             "all the tokens before it (the causal mask) and picks the next one.",
                 needs_result=False, language_model=True)
settings = ui.generation_form()
generated = ui.generation(settings)
if generated is None:
    st.stop()
if generated.notice:
    st.warning(generated.notice, icon=":material/content_cut:")
if generated.attention.notice:   # a long sequence: its attention is recomputed layer by layer when shown
    st.caption(generated.attention.notice)
n_steps = len(generated.step_ids)
if n_steps == 0:
    st.info("The model ended the text at once (its first choice was the end-of-sequence token).")
    st.stop()
block = generated.attention.block()
labels = block.queries.labels
ui.completion_text(generated)

# ---- one step: what the query that produced the token attended to, and the alternatives
st.subheader("Step by step")
step = ui.pick("step", st.select_slider, "Step", list(range(n_steps)), convert=int, default=n_steps - 1,
               format_func=lambda t: f"{t + 1}: {labels[generated.n_prompt + t]}")
query = generated.n_prompt - 1 + step          # the position whose output was this step's token
new_pos = generated.n_prompt + step
layer, head = ui.pick_layer_head(block, allow_mean=True)
hide_first = ui.flag_toggle("nofirst", "Hide the first token", "Most heads park much of their weight on the "
                            "first token (an attention sink): hide it and renormalise the rest.")
rows = block.pattern[:, :, query, : query + 1]                                   # (L, H, query + 1)
rows = aggregate.hide_first_key(rows) if hide_first else rows
row = np.nanmean(rows[layer], axis=0) if head is None else rows[layer, head]
which = "mean of heads" if head is None else ui.head_label(head, block.kv_head)
tips = [f"{labels[j]}\nweight {row[j]:.4f}" for j in range(query + 1)]
ui.show_view(token_text(labels[: new_pos + 1], [*row, float("nan")], tips=[*tips, "the token this step chose"],
                        special=block.queries.special[: new_pos + 1], mark=new_pos,
                        title=f"Step {step + 1} chose “{labels[new_pos]}”: what it read (layer {layer}, {which})",
                        note="Darker = more attention. The framed token is the one this step wrote; it read "
                             "every token before it, and nothing after.", theme=ui.theme()))

left, right = st.columns([3, 2])
with right:
    top_labels, top_probs = generated.top_labels[step], generated.top_probs[step]
    chosen = [i for i, t in enumerate(generated.top_ids[step]) if t == generated.step_ids[step]]
    ui.show_figure(topk_figure(top_labels, top_probs, chosen=chosen[0] if chosen else None,
                               title=f"What the model expected at step {step + 1}"),
                   name=f"generation_top_step{step + 1}", key="gen_topk")
    st.caption("Probabilities at temperature 1 (softmax of the raw logits)"
               + (f"; {generated.step_probs[step]:.1%} for the chosen token." if not chosen else ".")
               + (" This token was forced by a branch." if generated.forced[step] else ""))
    ui.branch_buttons(settings, step, generated)
with left:
    ui.show_figure(step_grid_figure(rows, labels[: query + 1],
                                    kv_head=block.kv_head, selected=None if head is None else (layer, head),
                                    title=f"Step {step + 1}: every layer and head"),
                   name=f"generation_grid_step{step + 1}", key="gen_grid")
ui.gen_mode_switch(generated)
