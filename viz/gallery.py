"""Example gallery: inputs that show known attention phenomena (plain data, no streamlit).

Each :class:`Preset` is an input (text, optional pair or target, a model when
the current one cannot show it), the page to open with its URL parameters,
and a note of what to look for.  The suggested layers and heads were found on
the embedded all-MiniLM-L6-v2 model; with another model, look around them.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from viz.models import EMBEDDED, EMBEDDED_LLM

TRANSLATION_MODEL = "Helsinki-NLP/opus-mt-en-de"

# A fixed "random" word sequence (drawn once with numpy's default_rng(7)), repeated
# twice: a model can only predict the second half by copying from the first.
_RANDOM_WORDS = "yellow candle tiger basket violin window forest apple pencil rocket"

_LONG_PARAGRAPH = ("Attention lets every token look at every other token in one step, and the model computes all "
                   "positions in parallel. But the model only knows the positions it was trained on. ")


@dataclass(frozen=True)
class Preset:
    key: str                       # stable id, also used in widget keys
    title: str
    text: str
    look_for: str                  # markdown: what to look for once the view is open
    page: str = "heatmap"          # url path of the view to open
    params: tuple[tuple[str, str], ...] = ()   # that view's URL parameters (layer, head, kind, ...)
    pair: str = ""
    target: str = ""
    family: str | None = None      # the model family the preset needs (None: any)
    model: str | None = None       # the model to switch to when the current one is not of `family`

    def picks(self) -> dict[str, str]:
        """The shared pickers (kind, layer, head) the preset sets."""
        return {k: v for k, v in self.params if k in ("kind", "layer", "head")}

    def page_params(self) -> dict[str, str]:
        """URL parameters that only the opened page reads (e.g. the math page's query token)."""
        return {k: v for k, v in self.params if k not in ("kind", "layer", "head")}


PRESETS: tuple[Preset, ...] = (
    Preset(
        key="coreference", title="Coreference: what does “it” refer to?",
        text="The animal didn't cross the street because it was too tired.",
        params=(("layer", "3"), ("head", "1")),
        look_for="Find the row of **it**. In layer 3, head 1 of the embedded model most of its weight goes to "
                 "**animal**, not to *street*. Change *tired* to *wide* and run again: does the head follow the "
                 "meaning, or just the nearest noun? Other heads of the same layer do something else entirely."),
    Preset(
        key="agreement", title="Subject-verb agreement across a clause",
        text="The keys that the man near the cabinets holds are on the table.",
        page="attention_math", params=(("layer", "3"), ("head", "1"), ("query", "are")),
        look_for="The verb **are** must agree with **keys**, six words back, not with the nearer *man* or "
                 "*cabinets*. Follow the math for the query *are*: its scaled dot product with *keys* is the "
                 "largest, so the softmax gives *keys* most of the weight."),
    Preset(
        key="pair", title="A sentence pair: [CLS] A [SEP] B [SEP]",
        text="The cat sat on the mat.", pair="It was very comfortable there.",
        family="encoder", params=(("layer", "2"), ("head", "mean")),
        look_for="BERT-style models read two sentences at once, separated by [SEP] (the second has segment "
                 "id 1). Look at the rows of the second sentence: how much of their weight crosses back to "
                 "the first? Which word does **It** attend to?"),
    Preset(
        key="induction", title="A repeated random sequence (induction)",
        text=f"{_RANDOM_WORDS} {_RANDOM_WORDS}", params=(("layer", "0"), ("head", "1")),
        look_for="The same ten random words twice. Look for stripes parallel to the diagonal, ten tokens "
                 "away: in the second copy a token attends to the *same* word, or the word *after* it, in the "
                 "first copy. In decoders (GPT-2) **induction heads** attend to the token after the earlier "
                 "occurrence, so the model can copy the sequence (Olsson et al. 2022)."),
    Preset(
        key="translation", title="Translation: cross attention aligns the languages",
        text="The cat sat on the mat.", target="Die Katze saß auf der Matte.",
        family="encoder-decoder", model=TRANSLATION_MODEL,
        params=(("kind", "cross"), ("layer", "0"), ("head", "mean")),
        look_for="Needs an encoder-decoder model (the preset switches to a translation model; it must be "
                 "downloaded once). In cross attention each German (decoder) token is a row and the English "
                 "(encoder) tokens are the columns: look for a rough diagonal, *Katze* → *cat*, *Matte* → "
                 "*mat*, bent where word order differs."),
    Preset(
        key="sinks", title="Punctuation and [SEP] as attention sinks",
        text="Wait, what? Yes: it works, mostly; but, well... no!", params=(("layer", "0"), ("head", "mean")),
        look_for="Dark **columns**: many tokens put their weight on the same commas, full stops and [SEP]. "
                 "Clark et al. (2019) found BERT heads that park attention there when they have nothing "
                 "specific to do. In the embedded model punctuation draws about 40% of all weight in layer 0."),
    # On the embedded LLM (SmolLM2-135M-Instruct, 30 layers x 9 heads); heads found with viz.stats.
    Preset(
        key="llm_induction", title="An LLM's induction head copies a repeated sequence",
        text=f"{_RANDOM_WORDS} {_RANDOM_WORDS}", family="decoder", model=EMBEDDED_LLM,
        params=(("layer", "18"), ("head", "6")),
        look_for="Ten random words, then the same ten again. In the second copy, the row of each word is "
                 "dark one column *after* that word's first occurrence: layer 18, head 6 looks at what came "
                 "next last time, so the model can predict the repeat (an **induction head**, Olsson et al. "
                 "2022; its induction score on this text is about 0.9). Compare Compare heads → Detectors."),
    Preset(
        key="llm_sink", title="An attention sink: the first token soaks up the weight",
        text="The animal didn't cross the street because it was too tired.", family="decoder",
        model=EMBEDDED_LLM, params=(("layer", "18"), ("head", "8")),
        look_for="The first column is almost black: nearly every token puts ~100% of this head's weight on "
                 "the first token, whatever it is (an **attention sink**, Xiao et al. 2023). Most heads of "
                 "the model do this in part (about 65% of all weight, averaged over heads, on this text). It "
                 "is a resting place for heads with nothing to do, not meaning: switch on **Hide the first "
                 "token** to see where the rest of the weight goes."),
    Preset(
        key="llm_coreference", title="Coreference in an LLM: “it” looks back at “animal”",
        text="The animal didn't cross the street because it was too tired.", family="decoder",
        model=EMBEDDED_LLM, page="head_view", params=(("layer", "13"), ("head", "8")),
        look_for="In a decoder a token can only look back. Hover **it**: in layer 13, head 8 about 75% of its "
                 "weight goes to **animal**, almost none to *street*, and little to the first token, so this "
                 "is not a sink. The head is one of three sharing key/value head 2 (grouped-query attention)."),
    Preset(
        key="llm_knockout", title="Knock out the induction heads and the model stops copying",
        text=f"{_RANDOM_WORDS}. {_RANDOM_WORDS}. {_RANDOM_WORDS}.", family="decoder", model=EMBEDDED_LLM,
        page="ablation", params=(("ablate", "17:3,17:4,17:5,18:6,18:7"),),
        look_for="The same ten words three times. In the third copy the model predicts the next word with "
                 "about 64% probability on average: it copies. Knock out the five induction heads of layers "
                 "17 and 18 and that falls to about 6%: the blue and red lines part, and the top guess after "
                 "*yellow* is no longer *candle*. Five of the model's 270 heads carry the copying."),
    Preset(
        key="long", title="Longer than the model's trained positions",
        text=(_LONG_PARAGRAPH * 20).strip(), page="home",
        look_for="This text has about 700 tokens; the embedded model was trained on 512 positions. The app "
                 "cuts the input at the limit and says how many tokens were dropped: a model cannot attend "
                 "to positions it never learned. And every token still attends to every other: n² weights."),
)

BY_KEY = {p.key: p for p in PRESETS}


def model_for(preset: Preset, *, current_model: str, current_family: str | None) -> str:
    """Keep the current model unless the preset needs another family."""
    if preset.family is None or preset.family == current_family or preset.model is None:
        return current_model
    return preset.model


def url_params(preset: Preset, *, model: str = EMBEDDED) -> dict[str, str]:
    """All URL query parameters that reproduce the preset (input, model, pickers, page options)."""
    params = {"text": preset.text}
    if preset.pair:
        params["pair"] = preset.pair
    if preset.target:
        params["target"] = preset.target
    if model and model != EMBEDDED:
        params["model"] = model
    params.update(dict(preset.params))
    return params


def relative_link(preset: Preset, *, model: str = EMBEDDED) -> str:
    """A link relative to the app's root, e.g. ``heatmap?text=...&layer=3``."""
    return f"{preset.page}?{urlencode(url_params(preset, model=model))}"
