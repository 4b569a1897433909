"""Ablation: knock heads out, see what changes in the output, and how much every head matters."""
import numpy as np
import streamlit as st

from viz import ui
from viz.ablation_result import DecoderEffect, effect_table, importance_table, spearman
from viz.figures import ablation as fa
from viz.figures import stats as sf

result = ui.page("Knock heads out", "Switch attention heads off and rerun the model: attention weights say "
                                    "where a head looks, an ablation says whether the model needs it.")
block = result.block()
heads, mode = ui.ablation_picker(block)
if not heads:
    st.info("Pick one or more heads above (or press **Knock this head out** next to a head picker on any "
            "page, or click a cell of the importance grid below) to see what the model does without them.")
else:
    effect = ui.ablation_effect(heads, mode)
    if isinstance(effect, DecoderEffect):
        labels = effect.tokens.labels
        st.metric("Mean KL(before ‖ after) over positions", f"{effect.mean_kl:.4f} nats")
        ui.show_figure(fa.decoder_effect_figure(labels, effect.p_next_before, effect.p_next_after, effect.kl,
                                                title="How probable the actual next token was"),
                       name="ablation_effect", key="abl_effect")
        pos = ui.pick("position", st.select_slider, "Position", list(range(len(labels) - 1)), convert=int,
                      default=len(labels) - 2, format_func=lambda i: f"{i}: {labels[i]}")
        top = effect.top_k(pos)
        left, right = st.columns(2)
        left.plotly_chart(fa.topk_compare_figure(top.before_labels, top.before_probs, top.before_probs_after,
                                                 title="The model's top tokens, before → after"), key="abl_top_b")
        right.plotly_chart(fa.topk_compare_figure(top.after_labels, top.after_probs_before, top.after_probs,
                                                  title="The top tokens after the ablation"), key="abl_top_a")
        if st.toggle("Compare the continuations (greedy, 20 tokens)", key="w_abl_cont"):
            cont = ui.continuation(heads, mode)
            if cont is not None:
                ui.continuation_text(cont)
    elif effect is not None:
        st.metric("Sentence embedding: cosine before/after", f"{effect.sentence_cosine:.4f}")
        ui.show_figure(fa.encoder_effect_figure(effect.tokens.labels, effect.token_cosine,
                                                title="How far each token's last hidden state moved"),
                       name="ablation_effect", key="abl_effect")
        ui.masked_lm_effect(heads, mode)
    if effect is not None:
        ui.table_download("Effect (CSV)", effect_table, effect, file_name="ablation_effect.csv")
        st.caption("Every other page now shows the run with these heads knocked out (see the banner there): "
                   "look at how the later layers' attention changes.")

st.subheader("How much does every head matter?")
method = ui.pick("method", st.segmented_control, "Importance", ["gradient", "ablation"],
                 format_func={"gradient": "gradient (one backward pass)",
                              "ablation": "ablation (remove each head alone)"}.get)
importance = ui.head_importance(method, mode)
if importance is not None:
    event = ui.show_figure(sf.metric_grid_figure(importance.importance, metric="importance", kv_head=block.kv_head,
                                                 selected=heads[0] if heads else None),
                           name=f"importance_{method}", key="abl_grid", on_select="rerun", selection_mode="points")
    ui.knock_out_clicked(sf.selected_head(event))
    scored = (f" Scored on the first {len(importance.tokens):,} tokens ({importance.truncated:,} later ones left "
              f"out: every head at once needs every layer's activations)." if importance.truncated else "")
    st.caption(f"{importance.objective}.{scored} Computed in {importance.seconds:.1f} s. Click a cell to knock "
               f"that head out.")
    other = ui.cached_importance("ablation" if method == "gradient" else "gradient", mode)
    if other is not None:
        rho = spearman(importance, other)
        st.markdown(f"**Do the two methods agree?** Spearman rank correlation of the two rankings: "
                    f"**{rho:.2f}** (1 = the same order of heads)." if np.isfinite(rho) else "")
    ui.table_download("Importance (CSV)", importance_table, importance, file_name=f"importance_{method}.csv")
