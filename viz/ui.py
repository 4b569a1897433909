"""Streamlit glue shared by every page: the sidebar, URL state, cached loading, pickers.

State lives in non-widget session keys (``viz_*``) so it survives page
switches (widget keys vanish when a widget is not rendered), and is mirrored
into the URL on every run so a teacher can share exactly what they see.
The model and the results are shared by all sessions of the process:
models through st.cache_resource, results through a byte-bounded LRU.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable

import streamlit as st

from viz import figures, models
from viz.cache import ByteLRU
from viz.result import AttentionResult, Block
from viz.settings import SETTINGS

log = logging.getLogger("viz")

SHARED_PARAMS = ("model", "text", "pair", "target")
DEFAULT_TEXT = "The animal didn't cross the street because it was too tired."
CUSTOM = "Other (hub id or local folder)…"
KIND_LABELS = {"encoder": "encoder self-attention", "decoder": "decoder self-attention (causal)",
               "cross": "cross-attention (decoder → encoder)"}

_RESULTS = ByteLRU(SETTINGS.cache_mb * 1024 * 1024)


# ---------------------------------------------------------------- URL state
def query_param(name: str, default=None):
    value = st.query_params.get(name)
    return default if value in (None, "") else value


def set_query_param(name: str, value) -> None:
    """Mirror a value into the URL (None or "" removes it)."""
    if value is None or value == "":
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != str(value):
        st.query_params[name] = str(value)


def _state(name: str, default=None):
    return st.session_state.get(f"viz_{name}", default)


def _init_state() -> None:
    """First run of a session: take the inputs from the URL (a shared link)."""
    if st.session_state.get("viz_initialised"):
        return
    st.session_state.viz_initialised = True
    st.session_state.viz_model = allowed_model(query_param("model", models.EMBEDDED))
    st.session_state.viz_text = query_param("text", DEFAULT_TEXT)[:20000]
    st.session_state.viz_pair = query_param("pair", "")
    st.session_state.viz_target = query_param("target", "")
    for name in ("layer", "head", "kind"):
        st.session_state[f"viz_{name}"] = query_param(name)


def allowed_model(name: str | None) -> str:
    """In server mode students may only pick the embedded model and the allow-list."""
    name = (name or models.EMBEDDED).strip()
    if SETTINGS.server_mode and name not in (models.EMBEDDED, *SETTINGS.allowed_models):
        return models.EMBEDDED
    return name


def model_choices() -> list[str]:
    if SETTINGS.server_mode:
        return [models.EMBEDDED, *SETTINGS.allowed_models]
    return [*models.PRESETS, CUSTOM]


def _sync_url() -> None:
    for name in SHARED_PARAMS:
        value = _state(name)
        set_query_param(name, None if name == "model" and value == models.EMBEDDED else value)


# ---------------------------------------------------------------- loading
@st.cache_resource(max_entries=3, show_spinner=False)
def _load_model(name: str) -> models.LoadedModel:
    return models.load_model(None if name == models.EMBEDDED else name, cap=SETTINGS.max_tokens)


def loaded_model(name: str | None = None) -> models.LoadedModel | None:
    """The shared model, or None after showing a one-line error."""
    name = allowed_model(name if name is not None else _state("model", models.EMBEDDED))
    try:
        with st.spinner(f"Loading {models.display_name(name)}…"):
            return _load_model(name)
    except models.ModelError as exc:
        st.error(str(exc))
    except Exception as exc:  # noqa: BLE001 - never a traceback for a student
        log.exception("model load failed")
        st.error(f"Could not load {name}: {type(exc).__name__}")
    return None


def _run_capture(loaded, text, pair, target, internals, on_wait=None, on_start=None):
    from viz.capture import capture
    return capture(text, pair=pair or None, target=target or None, model=loaded, internals=internals,
                   on_wait=on_wait, on_start=on_start)


def _cache_key(loaded, text, pair, target, internals) -> tuple:
    return (loaded.path, text, pair or "", target or "",
            tuple(sorted(internals)) if isinstance(internals, (set, list, tuple)) else bool(internals))


def _recall(loaded, text, pair, target) -> AttentionResult:
    return _RESULTS.get_or_compute(_cache_key(loaded, text, pair, target, False),
                                   lambda: _run_capture(loaded, text, pair, target, False))


def result_later() -> Callable[[], AttentionResult] | None:
    """The current input's result, fetched again when called: for download buttons' data.

    Streamlit keeps a session's deferred download functions until the session is dropped
    (30 s after its tab closed). A function closing over the result would keep every such
    session's result alive (75 MB at 512 tokens) past VIZ_CACHE_MB; this one holds only the
    input and the shared model, and finds the result in the cache (or captures it again)
    when the button is pressed. Call it during the script run, use what it returns any time.
    """
    loaded = loaded_model(_state("model", models.EMBEDDED))
    if loaded is None:
        return None
    return functools.partial(_recall, loaded, _state("text", DEFAULT_TEXT), _state("pair", ""),
                             _state("target", ""))


def compute(text: str, *, pair: str = "", target: str = "", model: str | None = None,
            internals=False) -> AttentionResult | None:
    """Capture for any input (cached, shared), or None after showing a clear message."""
    from viz.capture import InputError
    loaded = loaded_model(model)
    if loaded is None:
        return None
    key = _cache_key(loaded, text, pair, target, internals)
    try:
        cached = _RESULTS.get(key)
        if cached is not None:
            return cached
        # When another session holds the forward-pass slot, say so (a class pressing Run together)
        # with a still message; the spinner (shown after 0.5 s) is only for the model's own run.
        # 30 tabs spinning while they wait cost their browsers CPU for nothing.
        waiting = st.empty()
        with contextlib.ExitStack() as running:
            def on_wait(ahead: int) -> None:
                waiting.info(f"Waiting for a free slot ({ahead} {'student' if ahead == 1 else 'students'} "
                             f"ahead)…", icon="⏳")

            def on_start() -> None:
                waiting.empty()
                running.enter_context(st.spinner("Running the model…"))
            try:
                return _RESULTS.get_or_compute(
                    key, lambda: _run_capture(loaded, text, pair, target, internals, on_wait=on_wait,
                                              on_start=on_start))
            finally:
                waiting.empty()
    except (InputError, models.ModelError) as exc:
        st.warning(str(exc))
    except Exception as exc:  # noqa: BLE001
        log.exception("capture failed")
        st.error(f"The model could not process this text ({type(exc).__name__}). Try a shorter or plainer text.")
    return None


def ensure_navigation() -> None:
    """Make sure app.py (the sidebar and st.navigation) runs, even on a fresh server's first sub-page.

    Streamlit runs files in pages/ directly, skipping app.py, while it believes
    the app uses the old pages-directory mode, which it does until the first
    st.navigation call in the process.  A shared link to /heatmap on a freshly
    started classroom server would then show no sidebar: switch the mode and
    rerun once, through app.py.
    """
    from streamlit.runtime.pages_manager import PagesManager
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def get_result() -> AttentionResult | None:
    """The result for the sidebar's current input (shared cache); None after showing why."""
    ensure_navigation()
    _init_state()
    result = compute(_state("text", DEFAULT_TEXT), pair=_state("pair", ""), target=_state("target", ""),
                     model=_state("model", models.EMBEDDED))
    if result is not None and result.truncated:
        st.warning(f"Your text was truncated: {result.truncated} tokens were dropped to fit this model's "
                   f"limit of {result.model.max_length} tokens.", icon=":material/content_cut:")
    return result


def get_internals(kind: str, layer: int):
    """LayerInternals (q, k, v, scores...) of one layer for the current input."""
    result = compute(_state("text", DEFAULT_TEXT), pair=_state("pair", ""), target=_state("target", ""),
                     model=_state("model", models.EMBEDDED), internals=[(kind, int(layer))])
    if result is None:
        return None
    li = result.internals.get((kind, int(layer)))
    if li is None:
        st.info("This model's attention internals cannot be recorded (only its weights).")
    return li


def set_input(*, text: str, pair: str = "", target: str = "", model: str | None = None,
              picks: dict | None = None) -> None:
    """Make a gallery preset the applied input; call it from a widget callback (before the sidebar is built)."""
    st.session_state.viz_initialised = True
    if model is not None:
        st.session_state.viz_model = allowed_model(model)
    st.session_state.viz_text, st.session_state.viz_pair, st.session_state.viz_target = text, pair, target
    for name, value in (picks or {}).items():
        st.session_state[f"viz_{name}"] = value
    for name in ("text", "pair", "target", "model_choice", "model_custom", *(picks or {})):
        st.session_state.pop(f"w_{name}", None)  # the widgets re-read the viz_* state when rebuilt


# ---------------------------------------------------------------- sidebar
def _apply_form() -> None:
    st.session_state.viz_text = st.session_state.get("w_text", "")
    st.session_state.viz_pair = st.session_state.get("w_pair", "")
    st.session_state.viz_target = st.session_state.get("w_target", "")


def _apply_model() -> None:
    choice = st.session_state.get("w_model_choice")
    if choice == CUSTOM:
        custom = st.session_state.get("w_model_custom", "").strip()
        if not custom:
            return
        choice = custom
    st.session_state.viz_model = allowed_model(choice)


def sidebar() -> None:
    """The shared sidebar: model, text form with Run, pair/target. Built by app.py on every page."""
    _init_state()
    with st.sidebar:
        choices = model_choices()
        current = _state("model", models.EMBEDDED)
        if "w_model_choice" not in st.session_state:
            st.session_state.w_model_choice = current if current in choices else CUSTOM
            if current not in choices:
                st.session_state.w_model_custom = current
        st.selectbox("Model", choices, key="w_model_choice", on_change=_apply_model,
                     format_func=lambda m: models.display_name(m) if m != CUSTOM else m,
                     help="Presets other than the embedded model need a network the first time.")
        if st.session_state.w_model_choice == CUSTOM:
            st.text_input("Hub id or local folder", key="w_model_custom", on_change=_apply_model,
                          placeholder="e.g. bert-base-cased or ./my-model", max_chars=300)
        loaded = loaded_model()
        family = loaded.info.family if loaded else "encoder"
        for name in ("text", "pair", "target"):
            if f"w_{name}" not in st.session_state:
                st.session_state[f"w_{name}"] = _state(name, "")
        with st.form("input_form", border=False):
            st.text_area("Text", key="w_text", height=120, max_chars=20000,
                         help="Press Run to send it through the model.")
            if family == "encoder":
                st.text_input("Second sentence (optional)", key="w_pair", max_chars=5000,
                              help="BERT-style sentence pair: [CLS] text [SEP] second [SEP]")
            elif family == "encoder-decoder":
                st.text_input("Target text (optional)", key="w_target", max_chars=5000,
                              help="What the decoder reads. Empty: the model's own greedy output.")
            st.form_submit_button("Run", type="primary", on_click=_apply_form, use_container_width=True)
    _sync_url()


# ---------------------------------------------------------------- pickers
def _sticky(name: str, options: list, default):
    """A picker whose value is shared by all pages and mirrored into the URL."""
    key = f"w_{name}"
    shared = _state(name)
    value = shared if shared in options else default
    if key not in st.session_state or st.session_state[key] not in options:
        st.session_state[key] = value
    return key


def _remember(name: str, value) -> None:
    st.session_state[f"viz_{name}"] = value
    set_query_param(name, value)


def pick_kind(result: AttentionResult) -> str:
    kinds = list(result.kinds)
    if len(kinds) == 1:
        return kinds[0]
    key = _sticky("kind", kinds, kinds[0])
    kind = st.segmented_control("Attention", kinds, key=key, format_func=KIND_LABELS.get) or kinds[0]
    _remember("kind", kind)
    return kind


def row():
    """Widgets side by side in one flex row: one block, where st.columns adds one per column."""
    return st.container(horizontal=True, gap="medium", vertical_alignment="bottom")


def select_layer_head(layer: int, head: int | None) -> None:
    """Make (layer, head) the picked one on every page (e.g. from a click on a figure)."""
    for name, value in (("layer", layer), ("head", "mean" if head is None else head)):
        st.session_state[f"w_{name}"] = str(value)
        st.session_state[f"viz_{name}"] = str(value)


def pick_layer_head(block: Block, *, allow_mean: bool = True) -> tuple[int, int | None]:
    """Layer and head pickers; head None means the mean over heads."""
    layers = [str(i) for i in range(block.n_layers)]
    heads = (["mean"] if allow_mean else []) + [str(i) for i in range(block.n_heads)]
    lkey = _sticky("layer", layers, layers[0])
    hkey = _sticky("head", heads, heads[0])
    with row():
        layer = st.selectbox("Layer", layers, key=lkey, format_func=lambda v: f"layer {v}")
        head = st.selectbox("Head", heads, key=hkey,
                            format_func=lambda v: "mean of all heads" if v == "mean" else f"head {v}")
    _remember("layer", layer)
    _remember("head", head)
    return int(layer), None if head == "mean" else int(head)


def flag_toggle(name: str, label: str, help_text: str) -> bool:
    """A toggle shared by all pages and mirrored into the URL as name=1."""
    key = f"w_{name}"
    if key not in st.session_state:
        st.session_state[key] = str(_state(name, query_param(name, "0"))) in ("1", "True", "true")
    value = st.toggle(label, key=key, help=help_text)
    st.session_state[f"viz_{name}"] = value
    set_query_param(name, "1" if value else None)
    return value


def view_flags() -> tuple[bool, bool]:
    """(word level, hide special tokens) as last picked on any page."""
    return bool(_state("words", False)), bool(_state("nospecial", False))


def transform(block: Block, flags: tuple[bool, bool] | None = None) -> Block:
    """Apply the word-level / hide-special options (the session's, or ``flags``) to a block (no widgets)."""
    from viz import aggregate
    words, hide = view_flags() if flags is None else flags
    if not (words or hide):
        return block
    try:
        out = aggregate.transform_block(block, word_level=words, hide_special=hide)
    except ValueError:
        return block
    return out if len(out.queries) and len(out.keys) else block


def view_options(block: Block) -> Block:
    """Word-level merging and special-token hiding (Clark et al. 2019), shared by the views.

    Returns the transformed block and says on the page what was done, because
    the weights shown are then no longer the model's raw weights.
    """
    from viz import aggregate
    with row():
        flag_toggle("words", "Word level",
                    "Merge subword tokens into words: attention to a word is summed, from it averaged.")
        flag_toggle("nospecial", "Hide special tokens",
                    "Drop [CLS]/[SEP]/BOS/EOS and renormalise each row to sum to 1.")
    out = transform(block)
    if out is not block:
        st.caption(aggregate.describe_transform(word_level=view_flags()[0], hide_special=view_flags()[1]))
    elif any(view_flags()):
        st.caption("These options change nothing for this text.")
    return out


# ---------------------------------------------------------------- output
def explain(markdown: str, *, title: str = "What am I looking at?") -> None:
    st.session_state["_viz_explained"] = True  # app.py's footer adds a general text only when a page has none
    with st.expander(title):
        st.markdown(markdown)


def show_figure(fig, *, name: str, key: str | None = None, **kwargs):
    """st.plotly_chart with the PNG export button named after the view."""
    from viz import ui_share  # lazy: ui_share imports this module
    ui_share.style_figure(fig)
    shown = st.plotly_chart(fig, config=figures.export_config(name), key=key, **kwargs)
    ui_share.svg_button(fig, name=name, key=key)
    return shown
