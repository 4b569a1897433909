"""URL and session state: every URL parameter is declared here once, and one helper binds it to its widget.

A page never parses the URL. It asks :func:`bind` for the widget key of a declared
parameter; bind seeds the widget from the session's applied value, or from the URL
when the URL changed from outside (a shared link, a gallery preset), validates it
against the parameter's choices, and :func:`remember` mirrors the picked value back
into the URL, so a link reproduces exactly what a person sees.

Session keys use two prefixes: ``viz_<param>`` holds the applied value (it survives page
switches, where widget keys vanish) and ``w_<param>`` is the widget's own key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import streamlit as st

from viz import models
from viz import settings

DEFAULT_TEXT = "The animal didn't cross the street because it was too tired."
MAX_TEXT_CHARS = 20_000
CUSTOM = "Other (hub id or local folder)…"


@dataclass(frozen=True)
class Param:
    """A URL parameter: its default (None: absent from the URL) and what it means."""

    default: object = None
    doc: str = ""
    omit_default: bool = False   # keep links short: the default value is left out of the URL


# Every URL parameter of the app. The shared inputs first, then each page's own.
PARAMS: dict[str, Param] = {
    # the input, shared by every page
    "model": Param(models.EMBEDDED, "hub id, local folder, `embedded` or `embedded-llm`", True),
    "text": Param(DEFAULT_TEXT, "the text (or the prompt, on the generation page)"),
    "pair": Param("", "a second sentence (encoders)"),
    "target": Param("", "the decoder's text (encoder-decoders)"),
    # view state shared by the pages
    "kind": Param(None, "attention block: encoder, decoder or cross"),
    "layer": Param(None, "layer, 0-based"),
    "head": Param(None, "head, 0-based, or `mean`"),
    "words": Param("0", omit_default=True, doc="1: merge subword tokens into words"),
    "nospecial": Param("0", omit_default=True, doc="1: hide special tokens and renormalise"),
    "nofirst": Param("0", omit_default=True, doc="1: hide the first token (attention sink) and renormalise"),
    "zoom": Param("0", omit_default=True, doc="1: the heatmap as a zoomable plotly chart"),
    "queries": Param("", omit_default=True, doc="heatmap: the query rows drawn, `from-to` (0-based, both included)"),
    "keys": Param("", omit_default=True, doc="heatmap: the key columns drawn, `from-to` (0-based, both included)"),
    "present": Param("0", omit_default=True, doc="1: presentation mode"),
    "ablate": Param("", omit_default=True, doc="heads knocked out, `L:H,L:H`, on every view"),
    "mode": Param("zero", omit_default=True, doc="ablation: `zero` or `mean` (each head's mean output)"),
    "method": Param("gradient", omit_default=True, doc="ablation page: head importance by `gradient` or `ablation`"),
    # head view
    "slice": Param("all", omit_default=True, doc="sentence-pair slice of the head view"),
    "mass": Param("off", omit_default=True, doc="share of each row's weight the head view keeps"),
    # compare heads
    "metric": Param("entropy", "the head metric drawn in the grids"),
    "compare": Param("Two heads", "side-by-side mode"),
    "a": Param("0.0", "side by side: head A as layer.head"),
    "b": Param("0.1", "side by side: head B as layer.head"),
    "text2": Param("", "side by side: the second sentence"),
    "model2": Param("", "side by side: the second model"),
    # attention flow, attention math
    "pos": Param(None, "attention flow: the output position"),
    "query": Param(None, "attention math: the query position"),
    # generation (a decoder continues the text) and predictions
    "gen": Param("0", omit_default=True, doc="1: every page shows the generated sequence of the settings below"),
    "new": Param(20, "generation: new tokens (1-64)"),
    "chat": Param("0", omit_default=True, doc="1: the prompt is one chat user message (models with a template)"),
    "sample": Param("0", omit_default=True, doc="1: sample instead of greedy decoding"),
    "temperature": Param(1.0, "generation: sampling temperature", True),
    "top_p": Param(1.0, "generation: nucleus sampling mass", True),
    "step": Param(None, "generation: the step being viewed, 0-based"),
    "branch": Param("", omit_default=True, doc="generation: forced tokens, `step:token_id[,step:token_id]`"),
    "position": Param(None, "predictions: the position the logit lens reads"),
    # efficient attention
    **{name: Param(default, "efficient attention: pattern setting", True) for name, default in (
        ("window", 4), ("dilation", 2), ("block_size", 8), ("random", 2), ("buckets", 8), ("hashes", 2),
        ("rank", 8), ("globals", "special"), ("colour", "sqrt"))},
    "seed": Param(0, "random seed: sampling (generation) and random patterns (efficient attention)", True),
    "pattern": Param("window", "efficient attention: the pattern looked at closer"),
}


# ---------------------------------------------------------------- the URL
def url_value(name: str, default=None):
    """The URL's value of a declared parameter (a string), or ``default``."""
    assert name in PARAMS, f"undeclared URL parameter {name!r}: declare it in viz/ui/state.py"
    value = st.query_params.get(name)
    return default if value in (None, "") else value


def set_url(name: str, value) -> None:
    """Mirror a value into the URL; None, "" or the parameter's default removes it."""
    assert name in PARAMS, f"undeclared URL parameter {name!r}: declare it in viz/ui/state.py"
    param = PARAMS[name]
    if value is None or value == "" or (param.omit_default and str(value) == str(param.default)):
        if name in st.query_params:
            del st.query_params[name]
    elif st.query_params.get(name) != str(value):
        st.query_params[name] = str(value)


# ---------------------------------------------------------------- applied values
def get(name: str, default=None):
    """The session's applied value of ``name``."""
    return st.session_state.get(f"viz_{name}", default)


def put(name: str, value) -> None:
    st.session_state[f"viz_{name}"] = value


def current_text() -> str:
    return get("text", DEFAULT_TEXT)


def current_model() -> str:
    return get("model", models.EMBEDDED)


def remember(name: str, value) -> None:
    """Apply a picked value: into the session (all pages) and the URL."""
    put(name, value)
    st.session_state[f"_url_{name}"] = None if value is None else str(value)
    set_url(name, value)


# Pages about language models: opened with no model named, they use the embedded LLM.
LLM_PAGES = ("generate", "predictions")


def init(url_path: str | None = None) -> None:
    """First run of a session: take the inputs from the URL (a shared link)."""
    if st.session_state.get("viz_initialised"):
        return
    st.session_state.viz_initialised = True
    default = models.EMBEDDED_LLM if (url_path or "").strip("/") in LLM_PAGES else models.EMBEDDED
    put("model", allowed_model(url_value("model", default)))
    put("model_chosen", url_value("model") is not None)
    put("text", url_value("text", DEFAULT_TEXT)[:MAX_TEXT_CHARS])
    put("pair", url_value("pair", ""))
    put("target", url_value("target", ""))


def prefer_llm() -> bool:
    """On a language-model page: switch to the embedded LLM if nobody picked a model (True: switched)."""
    if get("model_chosen") or get("model") != models.EMBEDDED:
        return False
    put("model", models.EMBEDDED_LLM)
    put("model_chosen", True)
    st.session_state.pop("w_model_choice", None)   # the sidebar re-reads the model on the rerun
    return True


def sync_inputs() -> None:
    """Mirror the applied input into the URL (every run, so the address bar is always a link)."""
    for name in ("model", "text", "pair", "target"):
        set_url(name, get(name))
    if flag("gen"):
        sync_generation()
    sync_ablation()


def set_input(*, text: str, pair: str = "", target: str = "", model: str | None = None,
              picks: dict | None = None) -> None:
    """Make a preset the applied input; call it from a widget callback (before the sidebar is built)."""
    st.session_state.viz_initialised = True
    if model is not None:
        put("model", allowed_model(model))
        put("model_chosen", True)
    put("text", text)
    put("pair", pair)
    put("target", target)
    for name, value in (picks or {}).items():
        put(name, value)
    for name in ("text", "pair", "target", "model_choice", "model_custom", *(picks or {})):
        st.session_state.pop(f"w_{name}", None)  # the widgets re-read the viz_* state when rebuilt


# ---------------------------------------------------------------- models a person may pick
def allowed_model(name: str | None) -> str:
    """In server mode students may only pick the embedded models and the allow-list."""
    name = (name or models.EMBEDDED).strip()
    if settings.SETTINGS.server_mode and name not in (*models.EMBEDDED_MODELS, *settings.SETTINGS.allowed_models):
        return models.EMBEDDED
    return name


def model_choices() -> list[str]:
    if settings.SETTINGS.server_mode:
        return [*models.EMBEDDED_MODELS, *settings.SETTINGS.allowed_models]
    return [*models.PRESETS, CUSTOM]


# ---------------------------------------------------------------- binding a parameter to a widget
def _parse(value, options: Sequence | None, convert: Callable | None):
    if value is None:
        return None
    try:
        value = convert(value) if convert else value
    except (TypeError, ValueError):
        return None
    if options is not None:
        if value in options:
            return value
        as_text = {str(o): o for o in options}
        return as_text.get(str(value))
    return value


def bind(name: str, options: Sequence | None = None, *, default=None, convert: Callable | None = None) -> str:
    """The widget key for parameter ``name``, seeded and validated; pass it as ``key=`` to the widget.

    The widget starts from, in order: a new value in the URL (changed from outside since this session
    last wrote it), the widget's own state (a person just changed it), the session's applied value
    (picked on another page, where this widget's key vanished), the parameter's default.
    ``options`` limits the values (an invalid URL value falls back quietly); ``convert`` turns the URL's
    string into the widget's type (int, float...). After drawing the widget, call :func:`remember`.
    """
    key = f"w_{name}"
    fallback = default if default is not None else PARAMS[name].default
    url = url_value(name)
    url_is_new = url is not None and url != st.session_state.get(f"_url_{name}")
    candidates = ([url] if url_is_new else []) + [st.session_state.get(key), get(name), fallback]
    for candidate in candidates:
        value = _parse(candidate, options, convert)
        if value is not None:
            break
    else:
        value = options[0] if options else None
    if st.session_state.get(key) != value or key not in st.session_state:
        st.session_state[key] = value
    if url_is_new:
        st.session_state[f"_url_{name}"] = url
    return key


def view_key() -> tuple[bool, bool, bool]:
    """(word level, hide special tokens, hide the first token) as last picked on any page."""
    return flag("words"), flag("nospecial"), flag("nofirst")


def flag(name: str) -> bool:
    """A 0/1 option as last applied on any page (or from the URL)."""
    value = get(name)
    if value is None:
        value = url_value(name, PARAMS[name].default) in ("1", "true", "True")
    return bool(value)


def select_layer_head(layer: int, head: int | None) -> None:
    """Make (layer, head) the picked one on every page (a click on a figure); call before the pickers."""
    for name, value in (("layer", layer), ("head", "mean" if head is None else head)):
        st.session_state[f"w_{name}"] = str(value)
        put(name, str(value))


def park_pick(source: str, picked: tuple[int, int] | None, n_layers: int, n_heads: int) -> None:
    """A head clicked in a chart or table: parked and applied at the top of the next run.

    The pickers' widget state may only change before they are drawn in a run.
    """
    if picked is None or st.session_state.get(f"_picked_{source}") == picked:
        return
    st.session_state[f"_picked_{source}"] = picked
    if 0 <= picked[0] < n_layers and 0 <= picked[1] < n_heads:
        st.session_state["_pending_pick"] = picked
        st.rerun()


def apply_parked_pick() -> None:
    pending = st.session_state.pop("_pending_pick", None)
    if pending is not None:
        select_layer_head(*pending)
        set_url("layer", str(pending[0]))
        set_url("head", str(pending[1]))


# ---------------------------------------------------------------- links
def share_url(base: str | None, url_path: str, params) -> str:
    """The link that reproduces a view: app base URL + page path + every query parameter."""
    query = urlencode([(k, v) for k, v in dict(params).items() if v not in (None, "")])
    root = (base or "").rstrip("/")
    path = f"{root}/{url_path.strip('/')}" if url_path.strip("/") else f"{root}/"
    return f"{path}?{query}" if query else path


def app_base(url: str | None, page_paths) -> str:
    """The app's root URL: st.context.url can still end in a page path (seen: /heatmap/heatmap links)."""
    if not url:
        return ""
    parts = urlsplit(url)
    segments = [p for p in parts.path.split("/") if p]
    known = {p.strip("/") for p in page_paths if p and p.strip("/")}
    while segments and segments[-1] in known:
        segments.pop()
    path = "/" + "/".join(segments) if segments else ""
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _page_paths() -> set[str]:
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
        ctx = get_script_run_ctx()
        return {info.get("url_pathname", "") for info in ctx.pages_manager.get_pages().values()} if ctx else set()
    except Exception:  # noqa: BLE001 - private API: without it only the current page's path is trimmed
        return set()


def page_link(url_path: str, **params) -> str:
    """A relative link to another page that keeps the current input (and sets ``params``)."""
    query = {k: v for k, v in st.query_params.to_dict().items() if k in ("model", "text", "pair", "target")}
    query.update({k: str(v) for k, v in params.items()})
    return share_url("", url_path, query).lstrip("/")


def current_url(url_path: str) -> str:
    base = app_base(st.context.url, _page_paths() | {url_path})
    return share_url(base, url_path, st.query_params.to_dict())


# ---------------------------------------------------------------- generation settings
@dataclass(frozen=True)
class GenerationSettings:
    """What a generation run depends on, as the URL carries it (prompt and model are the shared input)."""

    new: int = 20
    chat: bool = False
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    branch: tuple[tuple[int, int], ...] = ()    # (step, token_id): forced tokens, by step

    @property
    def forced(self) -> dict[int, int]:
        return dict(self.branch)

    def branched(self, step: int, token_id: int) -> GenerationSettings:
        """These settings with ``token_id`` forced at ``step`` (later forced tokens dropped: they
        were chosen for a continuation that no longer exists)."""
        kept = tuple((s, t) for s, t in self.branch if s < step)
        return dataclasses.replace(self, branch=(*kept, (int(step), int(token_id))))


def parse_branch(text: str | None) -> tuple[tuple[int, int], ...]:
    """``"3:88,7:1234"`` -> ((3, 88), (7, 1234)); malformed parts are dropped."""
    out = {}
    for part in str(text or "").split(","):
        step, _, token = part.partition(":")
        if step.strip().isdigit() and token.strip().isdigit():
            out[int(step)] = int(token)
    return tuple(sorted(out.items()))


def format_branch(branch) -> str:
    return ",".join(f"{s}:{t}" for s, t in branch)


def _number(value, kind, lo, hi, default):
    try:
        return min(hi, max(lo, kind(value)))
    except (TypeError, ValueError):
        return default


def generation_settings() -> GenerationSettings:
    """The session's generation settings (first run: from the URL)."""
    if get("generation") is None:
        put("generation", GenerationSettings(
            new=_number(url_value("new"), int, 1, 64, 20), chat=url_value("chat") == "1",
            sample=url_value("sample") == "1", temperature=_number(url_value("temperature"), float, 0.05, 5.0, 1.0),
            top_p=_number(url_value("top_p"), float, 0.05, 1.0, 1.0), seed=_number(url_value("seed"), int, 0, 2**31 - 1, 0),
            branch=parse_branch(url_value("branch"))))
    return get("generation")


def set_generation(settings: GenerationSettings) -> None:
    put("generation", settings)
    sync_generation()


def sync_generation() -> None:
    """Mirror the generation settings into the URL (on the generation page, and on every page in gen mode)."""
    g = generation_settings()
    set_url("new", g.new)
    for name in ("chat", "sample"):
        set_url(name, "1" if getattr(g, name) else None)
    set_url("temperature", g.temperature if g.sample else None)
    set_url("top_p", g.top_p if g.sample else None)
    set_url("seed", g.seed if g.sample else None)
    set_url("branch", format_branch(g.branch))



# ---------------------------------------------------------------- ablation (heads knocked out on every view)
def ablation() -> tuple[tuple[tuple[int, int], ...], str]:
    """The heads knocked out (sorted (layer, head) pairs) and the mode, as last applied or linked."""
    from viz.ablation_result import HeadSpecError, parse_heads
    url = url_value("ablate", "")
    # Take the URL's heads on the first run and when the URL changed from outside since we last
    # looked (a link, a gallery preset); otherwise the session's choice stands.
    if get("ablate") is None or (url and url != st.session_state.get("_url_ablate")):
        put("ablate", url)
        put("mode", url_value("mode", "zero") if url_value("mode") in ("zero", "mean") else "zero")
    st.session_state["_url_ablate"] = url
    try:
        heads = parse_heads(get("ablate")) if get("ablate") else ()
    except HeadSpecError:
        heads = ()
    return heads, get("mode", "zero")


def set_ablation(heads, mode: str = "zero") -> None:
    from viz.ablation_result import format_heads
    put("ablate", format_heads(sorted(set(heads))))
    put("mode", mode)
    sync_ablation()


def knock_out(layer: int, head: int) -> None:
    """Add one head to the knocked-out set (a button next to a page's head picker)."""
    heads, mode = ablation()
    set_ablation({*heads, (int(layer), int(head))}, mode)


def sync_ablation() -> None:
    heads, mode = ablation()
    set_url("ablate", get("ablate") if heads else None)
    set_url("mode", mode if heads else None)
