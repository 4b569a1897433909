"""Home: a first picture of attention (an interesting head of the current text), then the model and its tokens."""
import pandas as pd
import streamlit as st

from viz import export, models, stats, ui
from viz.views import heatmap as heatmap_view

result = ui.page("Attention explorer")
st.markdown(
    "Type a text in the sidebar and press **Run**: the model reads it, and every page shows a different "
    "view of where each token *attends*. The link in your address bar reproduces what you see.")

# ---- first sight: one head that does something visible, drawn on a light canvas (no chart library)
block = result.block()
pick = stats.interesting_head(ui.head_metrics(result, block))
row = block.pattern[pick.layer, pick.head]
st.subheader("Where one head looks")
view = heatmap_view.build_heatmap(row, list(block.queries.labels), list(block.keys.labels), causal=block.causal,
                                  title=f"layer {pick.layer} · {ui.head_label(pick.head, block.kv_head)}",
                                  font_px=ui.figure_font_px(), file_name=export.safe_name("first_head"),
                                  theme=ui.theme())
ui.show_view(view.fragment)
st.markdown(f"{pick.why} Each row is a token looking at the others (every row sums to 1); hover a cell for "
            f"the weight. [Open it in the heatmap]({ui.page_link('heatmap', layer=pick.layer, head=pick.head)}), "
            f"or see every head at once in the [model view]({ui.page_link('model_view')}).")

with st.expander(f"The model and the {len(result.tokens)} tokens it read"):
    info = result.model
    c = st.columns(5)
    c[0].metric("Family", info.family)
    c[1].metric("Layers", info.n_layers if not info.n_decoder_layers else f"{info.n_layers} + {info.n_decoder_layers}")
    c[2].metric("Heads per layer", info.n_heads if info.n_kv_heads == info.n_heads
                else f"{info.n_heads} ({info.n_kv_heads} KV)")
    c[3].metric("Max tokens", info.max_length)
    c[4].metric("Tokens now", len(result.tokens))
    st.caption(f"Model: {models.display_name(info.name)} ({info.model_type}, width {info.d_model})")
    for kind in ("encoder", "decoder"):
        seq = getattr(result, kind)
        if seq is None:
            continue
        if result.family == "encoder-decoder":
            st.markdown(f"**{kind.capitalize()} tokens**" + (" (the model's own greedy output)"
                                                             if kind == "decoder" and result.generated else ""))
        table = pd.DataFrame({"position": range(len(seq)), "token": list(seq.tokens), "shown as": list(seq.labels),
                              "special": seq.special, "word": seq.word_ids, "segment": seq.segment_ids})
        st.dataframe(table, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(seq)))
