"""Glossary: the words the pages use, and the ideas of the classic Transformer account behind them."""
import streamlit as st

from viz import explain, ui

ui.page("Glossary", needs_result=False)
st.header("The ideas")
st.markdown(explain.core_ideas_markdown())
st.header("The words")
search = st.text_input("Find a term", key="glossary_search", placeholder="e.g. softmax").strip().lower()
terms = [t for t in explain.GLOSSARY if search in t.term.lower() or search in t.definition.lower()]
if terms:
    st.markdown("\n".join(f"- **{t.term}**: {t.definition}" for t in terms))
else:
    st.info("No term matches.")
