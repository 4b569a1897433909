"""Compare heads: per-head metrics, the head similarity map, side by side views, detectors, corpus mode."""
import streamlit as st

from viz import stats, ui
from viz.ui import compare

TABS = ("Metrics", "Similarity map", "Side by side", "Detectors", "Corpus")

result = ui.page("Compare heads")
kind = ui.pick_kind(result)
block = ui.view_options(result.block(kind))
metric = ui.pick("metric", st.selectbox, "Metric", list(stats.METRICS),
                 help="The per-head number drawn in the grids below.")
st.caption(stats.METRIC_EXPLANATIONS[metric])

tabs = st.tabs(list(TABS), key="cmp_tab", bind="query-params")
panels = (compare.metrics_tab, compare.similarity_tab, compare.side_by_side_tab, compare.detectors_tab,
          compare.corpus_tab)
for i, (tab, panel) in enumerate(zip(tabs, panels)):
    with tab:
        if tab.open or (tab.open is None and i == 0):   # only the open tab is drawn: each costs figures
            panel(result, kind, block, metric)
