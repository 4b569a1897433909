"""Entry point: `streamlit run app.py`. Builds the shared sidebar, then runs the chosen page."""
import streamlit as st

from viz import ui, ui_share

st.set_page_config(page_title="Attention explorer", page_icon="🔍", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", url_path="home", default=True),
    st.Page("pages/heatmap.py", title="Heatmap", icon="🟦", url_path="heatmap"),
    st.Page("pages/head_view.py", title="Head view", icon="🕸️", url_path="head_view"),
    st.Page("pages/model_view.py", title="Model view", icon="🔲", url_path="model_view"),
    st.Page("pages/compare_heads.py", title="Compare heads", icon="⚖️", url_path="compare_heads"),
    st.Page("pages/attention_flow.py", title="Attention flow", icon="🌊", url_path="attention_flow"),
    st.Page("pages/efficient_attention.py", title="Efficient attention", icon="✂️", url_path="efficient_attention"),
    st.Page("pages/attention_math.py", title="Attention math", icon="🧮", url_path="attention_math"),
    st.Page("pages/gallery.py", title="Example gallery", icon="🖼️", url_path="gallery"),
    st.Page("pages/glossary.py", title="Glossary", icon="📖", url_path="glossary"),
]

page = st.navigation(PAGES)
ui.sidebar()
ui_share.apply_presentation()
page.run()
ui_share.footer(page)
