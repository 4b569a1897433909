"""Predictions: what a language model expected at every position of the text, and the logit lens."""
import numpy as np
import streamlit as st

from viz import export, ui
from viz.figures.generation import lens_figure, topk_figure
from viz.views.token_text import SURPRISAL_SCALE, token_text

ui.page("Predictions", "At every position a language model gives a probability to every possible next "
                       "token. Here is how surprised it was by each token of your text, and how its "
                       "guess forms layer by layer.", needs_result=False, language_model=True)
text, model = ui.current_text(), ui.current_model()
pred = ui.predictions(text, model)
if pred is None:
    st.stop()
labels, n = pred.tokens.labels, len(pred.tokens)

# ---- the text coloured by surprisal; hover a token for what the model expected there
surprisal = np.concatenate([[np.nan], pred.surprisal[:-1]])   # token i was predicted at position i - 1
tips = ["(first token: nothing before it to predict from)"] + [
    f"p = {pred.p_next[i - 1]:.3f} (rank {pred.rank_next[i - 1]}), {pred.surprisal[i - 1]:.1f} bits\nexpected: "
    + ", ".join(f"{lab!s} {p:.2f}" for lab, p in zip(pred.top_labels[i - 1][:5], pred.top_probs[i - 1][:5]))
    for i in range(1, n)]
ui.show_view(token_text(labels, surprisal, tips=tips, scale=SURPRISAL_SCALE, special=pred.tokens.special,
                        title="How surprising each token was to the model",
                        note="Darker = more surprising (surprisal = −log2 p of the token, given the tokens "
                             "before it). Hover or tab to a token for its probability and the model's "
                             "top guesses there.", theme=ui.theme()))
if pred.truncated:
    st.warning(f"Your text was truncated: {pred.truncated} tokens were dropped to fit the model.")

# ---- one position: the top-k next tokens, and the logit lens
st.subheader("One position: the next-token guess, and how it forms through the layers")
position = ui.pick("position", st.select_slider, "Position (the model has read up to here)", list(range(n)),
                   convert=int, default=n - 1, format_func=lambda i: f"{i}: {labels[i]}")
left, right = st.columns([2, 3])
with left:
    nxt = labels[position + 1] if position + 1 < n else None
    chosen = [j for j, t in enumerate(pred.top_ids[position]) if nxt is not None and t == pred.next_ids[position]]
    ui.show_figure(topk_figure(pred.top_labels[position], pred.top_probs[position],
                               chosen=chosen[0] if chosen else None, title=f"After “{labels[position]}”"),
                   name=f"predictions_pos{position}", key="pred_topk")
    if nxt is not None:
        st.caption(f"The text goes on with “{nxt}”: p = {pred.p_next[position]:.3f}, rank "
                   f"{pred.rank_next[position]} (red when it is among the top {pred.top_ids.shape[1]}).")
with right:
    lens = ui.logit_lens(text, model, position)
    if lens is not None:
        ui.show_figure(lens_figure(lens.top_labels, lens.top_probs,
                                   title=f"Logit lens at position {position} (“{labels[position]}”)"),
                       name=f"logit_lens_pos{position}", key="pred_lens")
        if lens.next_probs is not None and nxt is not None:
            st.caption(f"p(“{nxt}”) after each layer: "
                       + " · ".join(f"{p:.2f}" for p in np.asarray(lens.next_probs)))

with ui.row():
    ui.table_download("Predictions (CSV)", export.predictions_table, pred, file_name="predictions.csv")
    if lens is not None:
        ui.table_download("Logit lens (CSV)", export.lens_table, lens, file_name=f"lens_pos{position}.csv")
