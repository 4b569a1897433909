"""Entry point: `streamlit run app.py`. Builds the shared sidebar, then runs the chosen page."""
import streamlit as st

from viz import ui
from viz.cache import release_free_memory

st.set_page_config(page_title="Attention explorer", page_icon=":material/visibility:", layout="wide")

# Grouped so a newcomer sees at once what is there; expanded, so no page hides behind "View more".
PAGES = {
    "Attention": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", url_path="home", default=True),
        st.Page("pages/heatmap.py", title="Heatmap", icon=":material/grid_on:", url_path="heatmap"),
        st.Page("pages/head_view.py", title="Head view", icon=":material/hub:", url_path="head_view"),
        st.Page("pages/model_view.py", title="Model view", icon=":material/apps:", url_path="model_view"),
        st.Page("pages/compare_heads.py", title="Compare heads", icon=":material/compare:",
                url_path="compare_heads"),
        st.Page("pages/attention_flow.py", title="Attention flow", icon=":material/water:",
                url_path="attention_flow"),
        st.Page("pages/efficient_attention.py", title="Efficient attention", icon=":material/content_cut:",
                url_path="efficient_attention"),
        st.Page("pages/attention_math.py", title="Attention math", icon=":material/calculate:",
                url_path="attention_math"),
    ],
    "Language models": [
        st.Page("pages/generate.py", title="Generate", icon=":material/edit_note:", url_path="generate"),
        st.Page("pages/predictions.py", title="Predictions", icon=":material/insights:", url_path="predictions"),
        st.Page("pages/ablation.py", title="Ablation", icon=":material/block:", url_path="ablation"),
    ],
    "Learn": [
        st.Page("pages/gallery.py", title="Example gallery", icon=":material/photo_library:", url_path="gallery"),
        st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:", url_path="glossary"),
    ],
}

page = st.navigation(PAGES, expanded=True)
ui.sidebar(page.url_path)
ui.apply_presentation()
try:
    page.run()
    ui.footer(page)
finally:
    release_free_memory()   # a long input's page frees layer-sized buffers: hand them back (viz.cache)
