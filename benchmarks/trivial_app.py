"""Streamlit's own floor for the load test: a page with a text box and one line of output.

No model, no figure: the time 30 new sessions take to get this page drawn is
what Streamlit itself costs on this machine (benchmarks/load.py runs the same
burst against it and against the app).
"""
import streamlit as st

text = st.query_params.get("text", "hello")
st.sidebar.text_area("Text", value=text)
st.title("Trivial page")
st.markdown(f"Characters: **{len(text)}**")
