"""Heatmap: one head's (or the mean of a layer's heads') attention, tokens on both axes."""
import streamlit as st

from viz import figures, ui

st.title("Attention heatmap")
result = ui.get_result()
if result is None:
    st.stop()

kind = ui.pick_kind(result)
block = result.block(kind)
layer, head = ui.pick_layer_head(block)
pattern = block.pattern[layer].mean(axis=0) if head is None else block.pattern[layer, head]
title = f"{ui.KIND_LABELS[kind]} · layer {layer} · " + ("mean of heads" if head is None else f"head {head}")
fig = figures.attention_heatmap(pattern, block.queries.labels, block.keys.labels, causal=block.causal, title=title)
ui.show_figure(fig, name=f"attention_{kind}_L{layer}_{'mean' if head is None else f'H{head}'}")

ui.explain(
    "Each row is a **query** token and shows how it spreads its attention over the **key** tokens (columns); "
    "every row sums to 1. Darker means more weight. Hover a cell for the exact weight."
    + (" In a decoder a token cannot look ahead: the grey triangle is masked, not zero." if block.causal else "")
    + (" Cross-attention rows are decoder tokens, columns are encoder tokens." if kind == "cross" else ""))
