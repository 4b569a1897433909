"""Entry point: `streamlit run app.py`. Builds the shared sidebar, then runs the chosen page."""
import streamlit as st

from viz import ui

st.set_page_config(page_title="Attention explorer", page_icon="🔍", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon="🏠", url_path="home", default=True),
    st.Page("pages/heatmap.py", title="Heatmap", icon="🟦", url_path="heatmap"),
    st.Page("pages/attention_flow.py", title="Attention flow", icon="🌊", url_path="attention_flow"),
]

page = st.navigation(PAGES)
ui.sidebar()
page.run()
