"""Attention flow: raw attention vs rollout vs flow vs norm-based, token relevance, rollout by layer."""
import numpy as np
import streamlit as st

from viz import figures, ui
from viz.aggregate import describe_transform, transform_block, transform_matrix
from viz.flow import (FLOW_MAX_TOKENS, FLOW_TIME_LIMIT_S, FlowResult, attention_flow,
                      default_output_position, norm_based, norm_based_layer, relevance_bars,
                      rollout, row_normalise)


@st.cache_data(max_entries=32, ttl=3600, show_spinner=False)
def cached_flow(head_mean: np.ndarray, layer: int) -> FlowResult:
    """Flow depends only on the head mean, (n_layers, 1, T, T): a small key to hash and store."""
    return attention_flow(head_mean, layer=layer)


st.title("Attention flow")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
raw_block = result.block(kind)
layer, head = ui.pick_layer_head(raw_block, allow_mean=True)

c1, c2 = st.columns(2)
with c1:
    word_level = st.toggle("Word level", value=ui.query_param("words") == "1", key="flow_words",
                           help="Merge subword tokens into words: attention to a word summed, from it averaged.")
with c2:
    hide_special = st.toggle("Hide special tokens", value=ui.query_param("nospecial") == "1",
                             key="flow_nospecial",
                             help="Drop [CLS]/[SEP]/BOS/EOS and renormalise every row over the other tokens.")
ui.set_query_param("words", "1" if word_level else None)
ui.set_query_param("nospecial", "1" if hide_special else None)
block = transform_block(raw_block, word_level=word_level, hide_special=hide_special)
note = describe_transform(word_level=word_level, hide_special=hide_special)
if note:
    st.info(note, icon="ℹ️")

labels_q, labels_k = block.queries.labels, block.keys.labels
self_attention = kind != "cross"
head_text = "mean of heads" if head is None else f"head {head}"

# ---- the four matrices of the chosen layer, each as shares of its row
raw = block.pattern[layer].mean(axis=0) if head is None else block.pattern[layer, head]
matrices = {"raw attention": row_normalise(raw)}
roll = rollout(block.pattern) if self_attention else None
if roll is not None:
    matrices["rollout"] = roll[layer]
flow_message = (f"Attention flow is bounded: at most **{FLOW_MAX_TOKENS} tokens** and "
                f"**{FLOW_TIME_LIMIT_S:g} s** per computation (results are cached).")
if not self_attention:
    flow_message += " Rollout and flow follow one stack of self-attention, so they are not defined for cross-attention."
elif len(labels_q) > FLOW_MAX_TOKENS:
    flow_message += (f" This input has {len(labels_q)} tokens, so flow is not computed: shorten the text"
                     + ("." if word_level else " or switch on *Word level*."))
else:
    with st.spinner("Computing attention flow…"):
        flow = cached_flow(block.pattern.mean(axis=1, keepdims=True), layer)
    matrices["flow"] = flow.relevance
    flow_message += f" Computed in {flow.elapsed_s:.2f} s."
    if not flow.complete:
        flow_message += " The time limit stopped it early: blank rows were not computed."
internals = ui.get_internals(kind, layer)
if internals is not None and internals.value_out is not None:
    norms = (norm_based_layer(internals.pattern, internals.value_out) if head is None
             else norm_based(internals.pattern, internals.value_out)[head])
    norms, _, _ = transform_matrix(norms, raw_block.queries, raw_block.keys,
                                   word_level=word_level, hide_special=hide_special)
    matrices["norm-based"] = row_normalise(norms)
elif internals is not None:
    st.info("Norm-based attention needs the head's output projection, which was not found for this model.")
st.caption(flow_message)

st.subheader(f"Layer {layer}: four ways to read it")
names = list(matrices)
for row_start in range(0, len(names), 2):
    cols = st.columns(2)
    for col, name in zip(cols, names[row_start:row_start + 2]):
        with col:
            title = f"{name} · layer {layer}" + (f" · {head_text}" if name in ("raw attention", "norm-based") else "")
            fig = figures.attention_heatmap(matrices[name], labels_q, labels_k, causal=block.causal,
                                            title=title)
            ui.show_figure(fig, name=f"{name.replace(' ', '_')}_{kind}_L{layer}", key=f"flow_fig_{name}")
st.caption("Every matrix is shown as shares of its row (each row sums to 1) so the four can be compared; "
           "each has its own colour scale (see its colour bar). Rows are output positions (queries), "
           "columns the tokens they draw on.")

# ---- one output position: which input tokens matter for it
st.subheader("Token relevance for one output position")
positions = list(range(len(labels_q)))
default_pos = default_output_position(block.queries, causal=block.causal)
try:
    wanted = int(ui.query_param("pos", default_pos))
except ValueError:
    wanted = default_pos
if st.session_state.get("flow_pos") not in positions:
    st.session_state["flow_pos"] = wanted if wanted in positions else default_pos
pos = st.selectbox("Output position", positions, key="flow_pos",
                   format_func=lambda i: f"{i}: {labels_q[i]}" + (" (first)" if i == 0 else "")
                   + (" (last)" if i == len(labels_q) - 1 else ""))
ui.set_query_param("pos", pos)
bars = relevance_bars({name: matrix[pos] for name, matrix in matrices.items()}, labels_k,
                      title=f"Where output {pos} ({labels_q[pos]}) draws from, layer {layer}")
ui.show_figure(bars, name=f"relevance_{kind}_L{layer}_pos{pos}", key="flow_fig_bars")

if roll is not None:
    st.subheader("Rollout, layer by layer")
    evolution = figures.attention_heatmap(
        roll[:, pos, :], [f"after layer {i}" for i in range(block.n_layers)], labels_k,
        title=f"Rollout of output {pos} ({labels_q[pos]}) after each layer",
        query_axis="layer", key_axis="input token")
    ui.show_figure(evolution, name=f"rollout_evolution_{kind}_pos{pos}", key="flow_fig_evolution")
    st.caption("Row l is rollout after layer l: how the mixing of input tokens into this position builds up.")

ui.explain(
    "**Raw attention** is the softmax weights of one layer (one head or the mean of heads). It says where "
    "a head *looks*, not what reaches the output: it ignores the residual stream, the other layers and the "
    "size of the vectors being mixed.\n\n"
    "**Attention rollout** (Abnar and Zuidema 2020) adds the residual connection as 0.5·A + 0.5·I, "
    "renormalises the rows and multiplies the layers together: rollout after layer l = Â_l · … · Â_0. "
    "It claims to estimate how much each input token is mixed into each position. It assumes attention "
    "is the only mixing and that heads combine linearly (it averages them), and ignores the feed-forward "
    "layers and the value vectors, so it tends to blur toward uniform in deep layers.\n\n"
    "**Attention flow** (same paper) treats the layers as a graph whose edges carry Â as capacity and "
    "takes the maximum flow from an output position to each input token. It captures that information "
    "can arrive by many paths, but it is a capacity bound, not what the network computes, and it is "
    f"expensive (one max-flow per pair of tokens), hence the limit of {FLOW_MAX_TOKENS} tokens here.\n\n"
    "**Norm-based attention** (Kobayashi et al. 2020) weighs each attention weight by the size of the "
    "vector it moves, ‖α_ij · f(x_j)‖ with f the head's value and output projections, taken from the "
    "model's real weights. It shows that heavily attended tokens ([CLS], [SEP], punctuation) often carry "
    "small vectors. It is still one layer at a time and says nothing about the residual stream.\n\n"
    "None of these is an explanation of the prediction: they are views of how the attention layers "
    "route information, useful to compare, not proof of what the model relies on.")
