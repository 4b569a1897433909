"""Attention flow: raw attention vs rollout vs flow vs norm-based, token relevance, rollout by layer."""
import streamlit as st

from viz import aggregate, ui
from viz.figures.flow import relevance_figure
from viz.figures.overview import attention_figure
from viz.flow import default_output_position, layer_readings

result = ui.page("Attention flow")
kind = ui.pick_kind(result)
raw_block = result.block(kind)
layer, head = ui.pick_layer_head(raw_block, allow_mean=True)
with ui.row():
    word_level = ui.flag_toggle("words", "Word level", "Merge subword tokens into words: attention to a word "
                                                       "summed, from it averaged.")
    hide_special = ui.flag_toggle("nospecial", "Hide special tokens", "Drop [CLS]/[SEP]/BOS/EOS and "
                                                                      "renormalise every row over the other tokens.")
block = aggregate.transform_block(raw_block, word_level=word_level, hide_special=hide_special)
note = aggregate.describe_transform(word_level=word_level, hide_special=hide_special)
if note:
    st.info(note, icon="ℹ️")
labels_q, labels_k = block.queries.labels, block.keys.labels

with st.spinner("Computing attention flow…"):
    readings = layer_readings(block, raw_block, layer=layer, head=head, internals=ui.layer_internals(kind, layer),
                              flow_of=ui.flow_of(result, kind), word_level=word_level, hide_special=hide_special)
st.caption(" ".join(readings.notes))

st.subheader(f"Layer {layer}: four ways to read it")
head_text = "mean of heads" if head is None else ui.head_label(head, block.kv_head)
names = list(readings.matrices)
for row_start in range(0, len(names), 2):
    for col, name in zip(st.columns(2), names[row_start:row_start + 2]):
        with col:
            title = f"{name} · layer {layer}" + (f" · {head_text}" if name in ("raw attention", "norm-based") else "")
            ui.show_figure(attention_figure(readings.matrices[name], labels_q, labels_k, causal=block.causal,
                                            title=title),
                           name=f"{name.replace(' ', '_')}_{kind}_L{layer}", key=f"flow_fig_{name}")
st.caption("Every matrix is shown as shares of its row (each row sums to 1) so the four can be compared; "
           "each has its own colour scale (see its colour bar). Rows are output positions (queries), "
           "columns the tokens they draw on.")

# ---- one output position: which input tokens matter for it
st.subheader("Token relevance for one output position")
last = len(labels_q) - 1
pos = ui.pick("pos", st.selectbox, "Output position", list(range(len(labels_q))), convert=int,
              default=default_output_position(block.queries, causal=block.causal),
              format_func=lambda i: f"{i}: {labels_q[i]}" + (" (first)" if i == 0 else "")
              + (" (last)" if i == last else ""))
bars = relevance_figure({name: matrix[pos] for name, matrix in readings.matrices.items()}, labels_k,
                        title=f"Where output {pos} ({labels_q[pos]}) draws from, layer {layer}")
ui.show_figure(bars, name=f"relevance_{kind}_L{layer}_pos{pos}", key="flow_fig_bars")

if readings.rollout is not None:
    st.subheader("Rollout, layer by layer")
    evolution = attention_figure(readings.rollout[:, pos, :], [f"after layer {i}" for i in range(block.n_layers)],
                               labels_k, title=f"Rollout of output {pos} ({labels_q[pos]}) after each layer",
                               query_axis="layer", key_axis="input token")
    ui.show_figure(evolution, name=f"rollout_evolution_{kind}_pos{pos}", key="flow_fig_evolution")
    st.caption("Row l is rollout after layer l: how the mixing of input tokens into this position builds up.")
