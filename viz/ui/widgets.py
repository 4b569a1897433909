"""The widgets every page shares: the sidebar, the page header, the layer/head/kind pickers, view options."""
from __future__ import annotations

import streamlit as st

from viz import aggregate, models
from viz.result import AttentionResult, Block, head_label
from viz.ui import compute, state

KIND_LABELS = {"encoder": "encoder self-attention", "decoder": "decoder self-attention (causal)",
               "cross": "cross-attention (decoder → encoder)"}


# ---------------------------------------------------------------- navigation and page header
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


def page(title: str, caption: str | None = None, *, needs_result: bool = True,
         language_model: bool = False) -> AttentionResult | None:
    """The opening of every page: title, optional caption, and the current result (or stop after why).

    ``language_model``: the page is about decoders; opened with no model named, it uses the embedded LLM.
    """
    ensure_navigation()
    state.init()
    if language_model and state.prefer_llm():
        st.rerun()
    st.title(title)
    if caption:
        st.caption(caption)
    if not needs_result:
        return None
    if state.flag("gen"):
        st.caption("Showing the prompt and the tokens the model generated (gen mode: switch it off on the "
                   "Generate page).")
    knocked, mode = state.ablation()
    if knocked and not language_model:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.warning(f"Heads knocked out ({mode}): " + ", ".join(f"L{lay} H{hd}" for lay, hd in knocked)
                       + ". Everything below is the model without them.", icon=":material/block:")
            st.button("Restore all heads", key="restore_heads", on_click=state.set_ablation, args=((),))
    result = compute.current_result()
    if result is None:
        st.stop()
    state.apply_parked_pick()
    return result


# ---------------------------------------------------------------- sidebar
def _apply_form() -> None:
    for name in ("text", "pair", "target"):
        state.put(name, st.session_state.get(f"w_{name}", ""))


def _apply_model() -> None:
    choice = st.session_state.get("w_model_choice")
    if choice == state.CUSTOM:
        choice = st.session_state.get("w_model_custom", "").strip()
        if not choice:
            return
    state.put("model", state.allowed_model(choice))
    state.put("model_chosen", True)


def sidebar(url_path: str | None = None) -> None:
    """The shared sidebar: model, text form with Run, pair/target. Built by app.py on every page."""
    state.init(url_path)
    with st.sidebar:
        choices = state.model_choices()
        current = state.get("model", models.EMBEDDED)
        if "w_model_choice" not in st.session_state:
            st.session_state.w_model_choice = current if current in choices else state.CUSTOM
            if current not in choices:
                st.session_state.w_model_custom = current
        st.selectbox("Model", choices, key="w_model_choice", on_change=_apply_model,
                     format_func=lambda m: models.display_name(m) if m != state.CUSTOM else m,
                     help="Presets other than the embedded models need a network the first time.")
        if st.session_state.w_model_choice == state.CUSTOM:
            st.text_input("Hub id or local folder", key="w_model_custom", on_change=_apply_model,
                          placeholder="e.g. bert-base-cased or ./my-model", max_chars=300)
        loaded = compute.loaded_model()
        family = loaded.info.family if loaded else "encoder"
        for name in ("text", "pair", "target"):
            if f"w_{name}" not in st.session_state:
                st.session_state[f"w_{name}"] = state.get(name, "")
        with st.form("input_form", border=False):
            st.text_area("Text", key="w_text", height=120, max_chars=state.MAX_TEXT_CHARS,
                         help="Press Run to send it through the model.")
            if family == "encoder":
                st.text_input("Second sentence (optional)", key="w_pair", max_chars=5000,
                              help="BERT-style sentence pair: [CLS] text [SEP] second [SEP]")
            elif family == "encoder-decoder":
                st.text_input("Target text (optional)", key="w_target", max_chars=5000,
                              help="What the decoder reads. Empty: the model's own greedy output.")
            st.form_submit_button("Run", type="primary", on_click=_apply_form, use_container_width=True)
    state.sync_inputs()


# ---------------------------------------------------------------- pickers
def row():
    """Widgets side by side in one flex row: one block, where st.columns adds one per column."""
    return st.container(horizontal=True, gap="medium", vertical_alignment="bottom")


def pick(name: str, widget, label: str, options: list, *, convert=None, default=None, **kwargs):
    """Draw ``widget`` (st.selectbox, st.radio, st.segmented_control...) bound to URL parameter ``name``.

    ``default`` overrides the parameter's declared default (for one that depends on the input)."""
    key = state.bind(name, options, convert=convert, default=default)
    value = widget(label, options, key=key, **kwargs)
    if value is None:
        value = options[0]
    state.remember(name, value)
    return value


def pick_kind(result: AttentionResult) -> str:
    kinds = list(result.kinds)
    if len(kinds) == 1:
        return kinds[0]
    return pick("kind", st.segmented_control, "Attention", kinds, format_func=KIND_LABELS.get)


def head_names(block: Block, *, allow_mean: bool) -> tuple[list[str], callable]:
    heads = (["mean"] if allow_mean else []) + [str(i) for i in range(block.n_heads)]

    def label(v: str) -> str:
        return "mean of all heads" if v == "mean" else head_label(int(v), block.kv_head)
    return heads, label


def pick_layer_head(block: Block, *, allow_mean: bool = True) -> tuple[int, int | None]:
    """Layer and head pickers (a grouped-query model's heads say their key/value group); head None = mean."""
    layers = [str(i) for i in range(block.n_layers)]
    heads, label = head_names(block, allow_mean=allow_mean)
    with row():
        layer = pick("layer", st.selectbox, "Layer", layers, format_func=lambda v: f"layer {v}")
        head = pick("head", st.selectbox, "Head", heads, format_func=label)
        if head != "mean":
            st.button("Knock this head out", key="knock_out", type="tertiary", icon=":material/block:",
                      on_click=state.knock_out, args=(int(layer), int(head)),
                      help="Rerun the model without this head: every page then shows the ablated run "
                           "(see the Ablation page for its effect on the output).")
    return int(layer), None if head == "mean" else int(head)


def pick_head(block: Block) -> tuple[int, int]:
    """One head (no mean)."""
    layer, head = pick_layer_head(block, allow_mean=False)
    return layer, 0 if head is None else head


def flag_toggle(name: str, label: str, help_text: str) -> bool:
    """A toggle shared by all pages and mirrored into the URL as name=1."""
    key = f"w_{name}"
    if key not in st.session_state:
        st.session_state[key] = state.flag(name)
    value = st.toggle(label, key=key, help=help_text)
    state.put(name, value)
    state.set_url(name, "1" if value else None)
    return value


def transform(block: Block, flags: tuple[bool, bool, bool] | None = None) -> Block:
    """Apply the word-level / hide-special / hide-first options (the session's, or ``flags``) to a block."""
    words, hide, first = state.view_key() if flags is None else flags
    if not (words or hide or first):
        return block
    try:
        out = aggregate.transform_block(block, word_level=words, hide_special=hide, hide_first=first)
    except ValueError:
        return block
    return out if len(out.queries) and len(out.keys) else block


def view_options(block: Block) -> Block:
    """Word-level merging, special-token and first-token hiding, shared by the views.

    Returns the transformed block and says on the page what was done, because
    the weights shown are then no longer the model's raw weights.
    """
    with row():
        flag_toggle("words", "Word level",
                    "Merge subword tokens into words: attention to a word is summed, from it averaged.")
        flag_toggle("nospecial", "Hide special tokens",
                    "Drop [CLS]/[SEP]/BOS/EOS and renormalise each row to sum to 1.")
        flag_toggle("nofirst", "Hide the first token",
                    "Drop the first token (where many heads park their weight: an attention sink) and "
                    "renormalise each row.")
    out = transform(block)
    words, hide, first = state.view_key()
    if out is not block:
        st.caption(aggregate.describe_transform(word_level=words, hide_special=hide, hide_first=first))
    elif words or hide or first:
        st.caption("These options change nothing for this text.")
    return out
