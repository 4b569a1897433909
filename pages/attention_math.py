"""Attention math: one head's computation for one query token, with the numbers the model really used."""
import numpy as np
import pandas as pd
import streamlit as st

from viz import mathsteps, ui
from viz.figures.math import key_bars_figure, vector_strip_figure

TOLERANCE = 1e-5

result = ui.page("The attention math, step by step")
kind = ui.pick_kind(result)
block = result.block(kind)
layer, head = ui.pick_head(block)
q_labels, k_labels = block.queries.labels, block.keys.labels
positions = list(range(len(q_labels)))
first_plain = mathsteps.default_query(block.queries.special)
# The URL may name the query by position or by token text (?query=it).
query_pos = ui.pick("query", st.selectbox, "Query token (the token that is looking)", positions,
                    convert=lambda v: mathsteps.query_position(q_labels, v, default=first_plain),
                    format_func=lambda i: f"{i}: {q_labels[i]}")

li = ui.layer_internals(kind, layer)
if li is None:
    st.stop()
steps = mathsteps.math_steps(li, head=head, query_pos=query_pos)
shapes = steps.shapes
token = q_labels[query_pos]

# ---- the check first: a teacher can point at it before walking through the steps
ok = steps.max_abs_diff <= TOLERANCE and steps.head_max_abs_diff <= TOLERANCE
message = (f"**Check:** max |softmax(ours) − model's weights| = **{steps.max_abs_diff:.1e}** for “{token}”, "
           f"{steps.head_max_abs_diff:.1e} over all {len(q_labels)} query tokens of head {head} "
           f"(the head output differs by {steps.output_max_abs_diff:.1e}).")
(st.success if ok else st.warning)(message, icon=":material/check_circle:" if ok else ":material/warning:")

where = {"encoder": "the encoder", "decoder": "the decoder", "cross": "the decoder's cross attention"}[kind]
st.caption(f"{where.capitalize()}, layer {layer}, head {head} of {shapes.n_heads}; query “{token}” "
           f"(position {query_pos}). d_head = d_k = {shapes.d_head}.")

group = [int(h) for h in np.flatnonzero(block.kv_head == block.kv_head[head])]
if len(group) > 1:
    st.info(f"Grouped-query attention: heads {', '.join(map(str, group))} share one key/value head "
            f"(KV {int(block.kv_head[head])}), so the k and v below are the same for all of them; only their "
            f"queries differ.", icon=":material/group_work:")

# ---- 1. inputs and projections
st.header("1 · Input vectors and projections")
q_strip, k_strip = mathsteps.strip_of(q_labels, query_pos), mathsteps.strip_of(k_labels, query_pos * (kind != "cross"))
if li.hidden is not None:
    st.markdown(f"Each token enters layer {layer} as a vector of **d_model = {shapes.d_model}** numbers "
                f"(one row per token; the query token is framed)." + q_strip.note)
    ui.show_figure(vector_strip_figure(li.hidden[q_strip.rows], q_strip.labels,
                                       highlight=query_pos - int(q_strip.rows[0]), value_name="x"),
                   name=f"math_inputs_{kind}_L{layer}", key="math_inputs")
else:
    st.caption("This model's layer input was not recorded; the projections below are still the model's own.")
d_model = shapes.d_model if shapes.d_model is not None else "d_model"
st.markdown(
    f"The head multiplies each vector by three learned matrices, each **{d_model} × {shapes.d_head}** "
    f"(the layer's full W_Q is {d_model} × {shapes.n_heads * shapes.d_head}: {shapes.n_heads} heads side by "
    f"side, each in its own subspace):")
st.latex(r"q_i = x_i W_Q^{h},\quad k_j = x_j W_K^{h},\quad v_j = x_j W_V^{h}")
if kind == "cross":
    st.info("Cross attention: the query comes from the decoder token, the keys and values from the "
            "encoder's output tokens.", icon=":material/swap_horiz:")

st.markdown(f"The query vector of “{token}”:")
ui.show_figure(vector_strip_figure(steps.q[None, :], [token], value_name="q"),
               name=f"math_q_{kind}_L{layer}_H{head}", key="math_q")
c1, c2 = st.columns(2)
with c1:
    st.markdown("Key vectors k_j (one row per key token):" + k_strip.note)
    ui.show_figure(vector_strip_figure(steps.keys[k_strip.rows], k_strip.labels, value_name="k"),
                   name=f"math_k_{kind}_L{layer}_H{head}", key="math_k")
with c2:
    st.markdown("Value vectors v_j:" + k_strip.note)
    ui.show_figure(vector_strip_figure(steps.values[k_strip.rows], k_strip.labels, value_name="v"),
                   name=f"math_v_{kind}_L{layer}_H{head}", key="math_v")

# ---- 2. scores, scaling, bias, mask, softmax
st.header("2 · Scores, scaling, mask, softmax")
if steps.standard_scaling:
    scale_text = f"1/√d_k = 1/√{shapes.d_head} = {steps.scaling:.4f}"
else:
    scale_text = f"{steps.scaling:g} (this model does not use 1/√d_k)"
st.latex(r"s_j = \frac{q_i \cdot k_j}{\sqrt{d_k}}" + (r" + b_{i-j}" if steps.bias is not None else "")
         + r",\qquad \alpha_j = \frac{e^{s_j}}{\sum_{l} e^{s_l}}")
st.markdown(f"Dot product of q with every key, times the scaling **{scale_text}**"
            + (", plus a learned **position bias** that depends on the distance between the tokens (T5 puts "
               "word order here, and does not scale)." if steps.bias is not None else ".")
            + f" {mathsteps.mask_reason(steps.allowed, kind=kind, query_pos=query_pos)}")

table = {"key_pos": np.arange(len(k_labels)), "key token": list(k_labels), "q·k": steps.dots,
         f"× {steps.scaling:.4g}": steps.scaled}
if steps.bias is not None:
    table["+ position bias"] = steps.bias
table["score s_j"] = steps.scores
table["allowed"] = steps.allowed
table["softmax (ours)"] = steps.weights
table["model's weight"] = steps.model_weights
frame = pd.DataFrame(table)
frame.loc[~steps.allowed, "score s_j"] = -np.inf
st.dataframe(frame, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(frame)),
             column_config={"softmax (ours)": st.column_config.ProgressColumn(
                 "softmax (ours)", min_value=0.0, max_value=1.0, format="%.4f")})

c1, c2 = st.columns(2)
with c1:
    ui.show_figure(key_bars_figure(steps.masked, k_labels, allowed=steps.allowed, title="scores s_j",
                                   value_name="score"), name=f"math_scores_{kind}_L{layer}_H{head}",
                   key="math_scores")
with c2:
    ui.show_figure(key_bars_figure(steps.weights, k_labels, allowed=steps.allowed,
                                   title="softmax weights α_j", value_name="weight", color="#2a9d8f"),
                   name=f"math_weights_{kind}_L{layer}_H{head}", key="math_weights")
top = np.argsort(-steps.weights)[:3]
st.markdown("Largest weights: " + ", ".join(f"“{k_labels[j]}” {steps.weights[j]:.3f}" for j in top)
            + f". They sum to {steps.weights.sum():.4f}.")

# ---- 3. weighted sum
st.header("3 · Weighted sum of the values = the head's output")
st.latex(r"z_i = \sum_j \alpha_j\, v_j")
ui.show_figure(vector_strip_figure(np.stack([steps.output, steps.model_output]),
                                   ["ours: Σ α_j v_j", "model's head output"], value_name="z"),
               name=f"math_output_{kind}_L{layer}_H{head}", key="math_output")
st.markdown(f"A vector of d_head = {shapes.d_head} numbers. The layer concatenates the {shapes.n_heads} heads' "
            f"outputs and mixes them with W_O back to d_model, then adds them to the token's vector (the "
            f"residual connection).")
