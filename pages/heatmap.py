"""Heatmap: one head's attention, or heads/layers combined, with tokens on both axes."""
import streamlit as st

from viz import aggregate, figures, ui

st.title("Attention heatmap")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
block = ui.view_options(result.block(kind))
layer, head = ui.pick_layer_head(block)
c1, c2 = st.columns(2)
combine = c1.radio("Combine heads", ["mean", "max"], horizontal=True, disabled=head is not None,
                   help="When 'mean of all heads' is picked: average them, or keep each cell's strongest head.")
all_layers = c2.checkbox("Average over all layers", help="Mean of every layer (after combining heads).")

layers = block.pattern if all_layers else block.pattern[layer:layer + 1]
if head is None:
    per_layer = aggregate.aggregate_heads(layers, how=combine)  # (n_layers', T_q, T_k)
else:
    per_layer = layers[:, head]
pattern = per_layer.mean(axis=0)
where = "all layers (mean)" if all_layers else f"layer {layer}"
which = f"{combine} of heads" if head is None else f"head {head}"
fig = figures.attention_heatmap(pattern, block.queries.labels, block.keys.labels, causal=block.causal,
                                title=f"{ui.KIND_LABELS[kind]} · {where} · {which}")
ui.show_figure(fig, name=f"attention_{kind}_{'all' if all_layers else f'L{layer}'}_"
                         f"{combine if head is None else f'H{head}'}")

ui.explain(
    "Each row is a **query** token and shows how it spreads its attention over the **key** tokens (columns); "
    "every row sums to 1. Darker means more weight. Hover a cell for the exact weight."
    + (" In a decoder a token cannot look ahead: the grey triangle is masked, not zero." if block.causal else "")
    + (" Cross-attention rows are decoder tokens, columns are encoder tokens." if kind == "cross" else ""))
