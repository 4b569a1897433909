"""Home: what the app is, the model's facts, and the tokens of the current input."""
import pandas as pd
import streamlit as st

from viz import models, ui

result = ui.page("Attention explorer")
st.markdown(
    "Type a text in the sidebar and press **Run**: the model reads it, and every page shows a different "
    "view of where each token *attends*. Pick a page on the left: the heatmap of one head, head and model "
    "views, head comparisons and more. The link in your address bar reproduces what you see.")

info = result.model
c = st.columns(5)
c[0].metric("Family", info.family)
c[1].metric("Layers", info.n_layers if not info.n_decoder_layers else f"{info.n_layers} + {info.n_decoder_layers}")
c[2].metric("Heads per layer", info.n_heads)
c[3].metric("Max tokens", info.max_length)
c[4].metric("Tokens now", len(result.tokens))
st.caption(f"Model: {models.display_name(info.name)} ({info.model_type}, width {info.d_model})")

for kind in ("encoder", "decoder"):
    seq = getattr(result, kind)
    if seq is None:
        continue
    if result.family == "encoder-decoder":
        st.subheader(f"{kind.capitalize()} tokens" + (" (the model's own greedy output)"
                                                      if kind == "decoder" and result.generated else ""))
    else:
        st.subheader("Tokens")
    table = pd.DataFrame({"position": range(len(seq)), "token": list(seq.tokens), "shown as": list(seq.labels),
                          "special": seq.special, "word": seq.word_ids, "segment": seq.segment_ids})
    st.dataframe(table, hide_index=True, width="stretch", height=min(400, 38 + 35 * len(seq)))
