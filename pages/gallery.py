"""Example gallery: one click sets a preset input and opens the view that shows the phenomenon."""
import streamlit as st
from streamlit.errors import StreamlitAPIException

from viz import gallery, models, ui

ui.page("Example gallery", needs_result=False)
st.markdown("Each example sets the text (and the model when it needs another kind), then opens the view "
            "where the effect shows. The note says what to look for.")


def _apply(key: str) -> None:
    """Button callback: runs before the sidebar is rebuilt, so the sidebar shows the preset's text."""
    preset = gallery.BY_KEY[key]
    loaded = ui.loaded_model() if preset.family else None
    model = gallery.model_for(preset, current_model=st.session_state.get("viz_model", models.EMBEDDED),
                              current_family=loaded.info.family if loaded else None)
    ui.set_input(text=preset.text, pair=preset.pair, target=preset.target, model=model, picks=preset.picks())
    st.session_state.gallery_open = key


def _open(preset: gallery.Preset) -> None:
    for page in (preset.page, "heatmap"):
        try:
            st.switch_page(f"pages/{page}.py", query_params=preset.page_params() or None)
        except StreamlitAPIException:  # that view is not part of this app (yet): fall back to the heatmap
            continue


opening = st.session_state.pop("gallery_open", None)
if opening in gallery.BY_KEY:
    _open(gallery.BY_KEY[opening])

current = st.session_state.get("viz_model", models.EMBEDDED)
for preset in gallery.PRESETS:
    with st.container(border=True):
        st.subheader(preset.title)
        shown = preset.text if len(preset.text) < 300 else preset.text[:300] + "…"
        st.markdown(f"> {shown}" + (f"\n>\n> *second sentence:* {preset.pair}" if preset.pair else "")
                    + (f"\n>\n> *target:* {preset.target}" if preset.target else ""))
        st.markdown(f"**What to look for.** {preset.look_for}")
        c1, c2 = st.columns([1, 3], vertical_alignment="center")
        c1.button(f"Open in {preset.page.replace('_', ' ')}", key=f"preset_{preset.key}", type="primary",
                  on_click=_apply, args=(preset.key,))
        link_model = preset.model if preset.family and preset.model else current
        c2.markdown(f"[Link to share]({gallery.relative_link(preset, model=link_model)})")
