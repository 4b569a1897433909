"""The "What am I looking at?" texts of every page, and the glossary (plain strings, no streamlit).

Grounded in the classic account of the Transformer (Vaswani et al. 2017,
"Attention Is All You Need") and the attention-analysis papers the views
follow.  Texts are keyed by page url path; :func:`for_page` falls back to a
general text so a new page always has one.
"""
from __future__ import annotations

from dataclasses import dataclass

from viz.flow import FLOW_MAX_TOKENS


@dataclass(frozen=True)
class Term:
    term: str
    definition: str


# The ideas every page leans on, each one sentence a teacher can read aloud.
CORE_IDEAS: tuple[tuple[str, str], ...] = (
    ("Queries, keys and values",
     "Every token's vector is projected three ways: a **query** (what am I looking for?), a **key** (what do I "
     "offer?) and a **value** (what do I pass on?). A token's attention to another is the dot product of its "
     "query with the other's key, scaled by 1/√d_k, turned into weights by a softmax; its output is the "
     "weighted sum of the values."),
    ("Many heads, many relations",
     "A layer runs several heads side by side, each with its own smaller projections (a subspace of the "
     "vector). Different heads can learn different relations: the previous word, the verb's subject, "
     "the end of the sentence. Their outputs are concatenated and mixed by W_O."),
    ("Encoder, decoder, cross attention",
     "An encoder reads the whole input and every token may look at every other. A decoder writes one token "
     "at a time and may only look back (a causal mask). In an encoder-decoder model (translation), the "
     "decoder's **cross attention** lets each output token look at the encoder's tokens."),
    ("One step connects any two tokens, all in parallel",
     "Unlike a recurrent network, attention links any two positions in a single layer, however far apart, "
     "and every position is computed at the same time (one matrix product), which is why Transformers train "
     "fast on parallel hardware."),
    ("A window, not an explanation",
     "Attention weights show where a head reads from, not why the model decided something: values are "
     "mixed, later layers and the feed-forward blocks transform them again, and a high weight on [SEP] or a "
     "full stop often means 'nothing to do here'. Use the views as a window on what the model learned, "
     "with that limit in mind."),
    ("Trained positions limit the length",
     "A model knows only the positions it was trained on (512 tokens for BERT-like models, 1024 for GPT-2). "
     "Longer text is cut at that limit: the app tells you how many tokens were dropped."),
    ("Cost grows with the square of the length",
     "Every token attends to every token: n tokens make n × n weights per head and layer. Twice the text is "
     "four times the work and memory; efficient-attention variants (sliding windows, sparse or low-rank "
     "patterns) trade some of that away."),
)


def core_ideas_markdown(*names: str) -> str:
    """Selected core ideas (all of them when no name is given) as a markdown list."""
    chosen = [(t, d) for t, d in CORE_IDEAS if not names or t in names]
    return "\n".join(f"- **{t}.** {d}" for t, d in chosen)


_QKV = CORE_IDEAS[0][0]
_HEADS = CORE_IDEAS[1][0]
_ENCDEC = CORE_IDEAS[2][0]
_PARALLEL = CORE_IDEAS[3][0]
_WINDOW = CORE_IDEAS[4][0]
_LENGTH = CORE_IDEAS[5][0]
_SQUARE = CORE_IDEAS[6][0]

PAGE_TEXTS: dict[str, str] = {
    "home": (
        "A Transformer turns each token into a vector, then in every layer each token builds a **query** and compares it with every token's **key** (a scaled dot product). A softmax turns those scores into weights that sum to 1: the **attention pattern**. Each layer has several **heads** that learn different relations. The views in this app show those weights, captured from the real model as it ran."
        "\n\n"
        "You typed a text; the model split it into **tokens** (words or pieces of words, plus special tokens "
        "like [CLS] and [SEP]) and ran it through all its layers at once, keeping every attention weight.\n\n"
        + core_ideas_markdown(_QKV, _PARALLEL, _LENGTH)),
    "heatmap": (
        'Each row is a **query** token and shows how it spreads its attention over the **key** tokens (columns); every row sums to 1. A stronger colour means more weight. Hover or tap a cell (or focus the view and use the arrow keys) for the exact weight; **Zoom and pan** draws it as a zoomable chart.'
        "\n\n"
        "One square per (query, key) pair: the row is the token that is **looking**, the column the token it "
        "looks **at**, and the colour is the softmax weight. Each row sums to 1. Pick *mean of all heads* to "
        "see the layer as a whole, or one head to see one learned relation.\n\n"
        + core_ideas_markdown(_QKV, _HEADS, _SQUARE)),
    "head_view": (
        "Each line joins a **query** token (left) to a **key** token (right); its opacity is the attention weight and its colour the head. **Hover** a token (tap on touch screens) to see only its lines and, beside the other column, one small box per head whose strength is that head's weight. In the legend, **click** a head to hide or show it and **double-click** to show only that head. 'Hide below' removes faint lines; long inputs start with the faintest hidden so the view stays fast."
        "\n\n"
        "Lines from each token on the left to the tokens it attends to on the right; thicker means more "
        "weight. Each colour is a head: several heads of one layer can be shown together to compare what "
        "they attend to.\n\n" + core_ideas_markdown(_HEADS, _PARALLEL, _WINDOW)),
    "model_view": (
        'The grid shows the attention pattern of every head in every layer at once, shrunk to a thumbnail (each pixel is the mean weight of a block of query x key positions; query tokens run down, key tokens across). Diagonal stripes are heads that look at nearby tokens; vertical lines are heads that attend to one token (often [CLS], [SEP] or punctuation) from everywhere. Click a thumbnail, or pick a layer and head, to open it with token labels and exact weights on hover.'
        "\n\n"
        "A thumbnail of every head in every layer (rows are layers, columns are heads). Look for families of "
        "patterns: diagonal stripes (previous or next token), vertical bars (everyone looks at [SEP] or a "
        "full stop), broad blurs (bag of words in the first layers).\n\n"
        + core_ideas_markdown(_HEADS, _WINDOW)),
    "compare_heads": (
        "Numbers per head that summarise its pattern: how spread out it is (entropy), how confident "
        "(its largest weight), how much goes to special tokens, the previous or the next token. Heads close "
        "together in the similarity map attend in similar ways.\n\n" + core_ideas_markdown(_HEADS, _WINDOW)),
    "attention_flow": (
        "**Raw attention** is the softmax weights of one layer (one head or the mean of heads). It says where "
        "a head *looks*, not what reaches the output: it ignores the residual stream, the other layers and the "
        "size of the vectors being mixed.\n\n"
        "**Attention rollout** (Abnar and Zuidema 2020) adds the residual connection as 0.5·A + 0.5·I, "
        "renormalises the rows and multiplies the layers together: rollout after layer l = Â_l · … · Â_0. "
        "It claims to estimate how much each input token is mixed into each position. It assumes attention "
        "is the only mixing and that heads combine linearly (it averages them), and ignores the feed-forward "
        "layers and the value vectors, so it tends to blur toward uniform in deep layers.\n\n"
        "**Attention flow** (same paper) treats the layers as a graph whose edges carry Â as capacity and "
        "takes the maximum flow from an output position to each input token. It captures that information "
        "can arrive by many paths, but it is a capacity bound, not what the network computes, and it is "
        f"expensive (one max-flow per pair of tokens), hence the limit of {FLOW_MAX_TOKENS} tokens here.\n\n"
        "**Norm-based attention** (Kobayashi et al. 2020) weighs each attention weight by the size of the "
        "vector it moves, ‖α_ij · f(x_j)‖ with f the head's value and output projections, taken from the "
        "model's real weights. It shows that heavily attended tokens ([CLS], [SEP], punctuation) often carry "
        "small vectors. It is still one layer at a time and says nothing about the residual stream.\n\n"
        "None of these is an explanation of the prediction: they are views of how the attention layers "
        "route information, useful to compare, not proof of what the model relies on."
        "\n\n"
        "Raw attention shows one layer. But a token's vector after layer 3 already mixes others, so what did "
        "the input tokens contribute overall? **Rollout** multiplies the layers' patterns (with the residual "
        "connection as 0.5·I); **flow** treats the layers as a network of pipes; **norm-based** weighs each "
        "weight by how large the value vector it carries is.\n\n" + core_ideas_markdown(_WINDOW, _PARALLEL)),
    "efficient_attention": (
        "Full attention scores every query against every key: N² numbers per head and layer. Efficient "
        "attention methods compute only some of them (a **mask**) or squeeze the keys into k rows "
        "(**low rank**). Here each method is applied to the model's *real* pre-softmax scores for the chosen "
        "head: the softmax is taken over the allowed keys only, so you see the attention that method would "
        "produce on this text, without retraining.\n\n"
        "- **kept mass**: share of the original attention that falls inside the mask (1 = nothing lost). "
        "For a masked softmax the total-variation distance is exactly 1 − kept mass.\n"
        "- **TV distance**: half the L1 distance between the original and the new row, averaged over queries.\n"
        "- **output rel. error**: how far the head's output (attention-weighted sum of the values) moves.\n"
        "- A query left with nothing to attend to (possible with LSH in cross attention) produces no output "
        "and counts as fully lost.\n\n"
        "The model was trained with full attention; models trained with these patterns adapt to them, so the "
        "errors here show what a pattern assumes about attention, not how well a retrained model would do."
        "\n\n"
        "Full attention costs n² per head. Efficient variants keep only part of the pattern: a sliding "
        "window, a few global tokens, random links, hashing buckets, or a low-rank projection. Here they are "
        "applied to this model's real scores, so you can see what each keeps and loses.\n\n"
        + core_ideas_markdown(_SQUARE, _LENGTH)),
    "attention_math": (
        "The arithmetic of one head for one token, with the real numbers the model used. The query token's "
        "vector q is compared with every key k_j by a dot product, scaled by 1/√d_k so the softmax does not "
        "saturate when vectors are long, masked where the token may not look (the future in a decoder, "
        "padding), and turned into weights by a softmax. The head's output is the weighted sum of the value "
        "vectors v_j. The check at the end compares our softmax with the weights the model returned.\n\n"
        + core_ideas_markdown(_QKV, _HEADS, _ENCDEC)),
    "gallery": (
        "Ready-made inputs that show phenomena people have found in attention heads: pronouns linked to "
        "their noun, verbs to their subject, heads that copy a repeated sequence (induction heads), "
        "[SEP] and punctuation as a resting place, and what happens past the trained length. Each preset "
        "sets the input, opens the right view and says what to look for.\n\n"
        + core_ideas_markdown(_HEADS, _WINDOW, _LENGTH)),
    "generate": (
        "**Autoregressive generation.** A language model writes one token at a time: it reads the prompt, "
        "gives a probability to every token of its vocabulary, one is picked (the most probable: *greedy*; or "
        "drawn at random: *sampling*, sharper below temperature 1, flatter above; *top-p* keeps only the most "
        "probable tokens holding that much probability), appended, and the model runs again.\n\n"
        "**The causal mask.** Each token may only attend to itself and the tokens before it, never the "
        "future. That is why the attention of a generated token is simply **one row of the full pattern**: "
        "row i of one forward pass over the finished text is exactly what the model computed when it wrote "
        "token i + 1, because nothing after i could change it.\n\n"
        "**The KV cache.** While generating, the keys and values of earlier tokens never change, so the model "
        "keeps them and computes only the newest token's query, key and value at each step: one row per step "
        "instead of the whole square.\n\n"
        "**Grouped-query attention (GQA).** Newer models (Llama, Qwen, SmolLM) let several query heads share "
        "one key/value head to save memory: the pickers say *head 4 · KV 1*, and heads with the same KV group "
        "look with different queries at the same keys.\n\n"
        "**Attention sinks.** Most heads of an LLM park much of their weight on the first token, whatever it "
        "is (Xiao et al. 2023): a resting place for heads with nothing to do, not a sign that the first word "
        "matters. Switch on *Hide the first token* to see where the rest goes."),
    "predictions": (
        "At every position the model gives a probability to every possible next token. **Surprisal** is "
        "−log2 of the probability it gave the token that actually came next: 0 bits for a token it was sure "
        "of, about 10 bits for a 1-in-1000 surprise. The **logit lens** (nostalgebraist 2020) reads the "
        "residual stream after each layer as if it were the last one: the model's final norm, then its "
        "unembedding. Early layers often guess generic tokens; the answer forms in the middle and late "
        "layers, and the last row is the model's own prediction."),
    "ablation": (
        "**Knocking a head out** means rerunning the model with that head's output removed (set to zero, or "
        "to its average output over the positions), right where the heads' outputs are joined and mixed "
        "by W_O. Attention weights say where a head *looks*; an ablation says whether the model *needs* it "
        "(Michel et al. 2019, \"Are Sixteen Heads Really Better than One?\"; Voita et al. 2019). Many heads "
        "can go with little change; a few matter a lot, like an induction head on a repeated sequence.\n\n"
        "**Head importance**: *gradient* multiplies each head's output by a gate g = 1 and measures how fast "
        "the model's loss changes with each gate (one backward pass for all heads); *ablation* removes each "
        "head alone and measures how far the output moves (KL divergence of the next-token distribution for "
        "a decoder, 1 − cosine of the sentence embedding for an encoder). The rank correlation says how well "
        "the cheap estimate agrees with the real thing."),
    "glossary": "Short definitions of the words the pages use, and the ideas behind them.",
}

GENERAL_TEXT = ("Each view shows the attention weights captured from the model as it read your text: how much "
                "each token (the query) draws from every other token (the keys), per layer and head.\n\n"
                + core_ideas_markdown(_QKV, _WINDOW))


# What a page's text adds when it shows a decoder's (causal) or cross attention.
PAGE_NOTES: dict[str, dict[str, str]] = {
    "heatmap": {"causal": "In a decoder a token cannot look ahead: the grey triangle is masked, not zero.",
                "cross": "Cross-attention rows are decoder tokens, columns are encoder tokens."},
    "head_view": {"causal": "In a decoder a token only attends to itself and earlier tokens.",
                  "cross": "In cross-attention the left column is the decoder's tokens and the right the "
                           "encoder's."},
    "efficient_attention": {
        "causal": "This is a decoder: every pattern is intersected with the causal mask.",
        "cross": "Cross attention: queries are decoder tokens, keys encoder tokens; windows are centred on the "
                 "proportional position and there is no causal mask."},
}


def for_page(url_path: str | None, *, kind: str | None = None, causal: bool = False) -> str:
    """The "What am I looking at?" text of a page (a general one for pages without their own).

    ``kind`` and ``causal`` describe the attention block the page shows, for the notes that
    only hold for a decoder's or for cross attention.
    """
    page = (url_path or "").strip("/") or "home"
    notes = PAGE_NOTES.get(page, {})
    extra = [notes[name] for name, applies in (("causal", causal), ("cross", kind == "cross"))
             if applies and name in notes]
    return PAGE_TEXTS.get(page, GENERAL_TEXT) + ("\n\n" + " ".join(extra) if extra else "")


GLOSSARY: tuple[Term, ...] = (
    Term("token", "A piece of text the model reads as one unit: a word, part of a word (##ing, Ġthe) or a "
                  "special marker."),
    Term("special tokens", "Markers the tokenizer adds: [CLS] at the start and [SEP] between and after "
                           "sentences (BERT), <s> and </s> (BART, T5), <|endoftext|> (GPT-2)."),
    Term("embedding", "The vector a token starts as (token plus position); each layer updates it."),
    Term("hidden state", "A token's vector between layers (d_model numbers). The input vectors of a layer."),
    Term("query (q)", "What a token is looking for: its hidden state times W_Q."),
    Term("key (k)", "What a token offers to be found by: its hidden state times W_K."),
    Term("value (v)", "What a token passes on when attended to: its hidden state times W_V."),
    Term("W_Q, W_K, W_V", "The learned projection matrices of a head, each d_model × d_head."),
    Term("W_O", "The learned matrix that mixes the heads' concatenated outputs back to d_model."),
    Term("d_model", "The width of the hidden states (384 for the embedded model, 768 for BERT-base)."),
    Term("d_k, d_head", "The width of one head's queries and keys (d_model divided by the number of heads)."),
    Term("score", "A pre-softmax number: the scaled dot product q·k_j (plus a position bias in T5)."),
    Term("scaled dot product", "q·k divided by √d_k, so scores do not grow with the vector width and the "
                               "softmax keeps useful gradients."),
    Term("softmax", "Turns a row of scores into positive weights that sum to 1: exp(s_j) / Σ exp(s_i)."),
    Term("attention weight, pattern", "The softmax output: how much the query token draws from each key "
                                      "token. A head's pattern is a query × key matrix."),
    Term("mask", "Positions a token may not attend to, set to −∞ before the softmax: the future in a "
                 "decoder (causal mask) or padding."),
    Term("head", "One attention computation with its own W_Q, W_K, W_V; a layer runs several in parallel."),
    Term("multi-head attention", "Several heads side by side, each in its own subspace, so a layer can track "
                                 "several relations at once."),
    Term("layer", "One block of multi-head attention plus a feed-forward network, with residual connections "
                  "and normalisation. Models stack 6 to 24 or more."),
    Term("self-attention", "Tokens of one sequence attending to tokens of the same sequence."),
    Term("cross attention", "In an encoder-decoder model: decoder tokens (queries) attending to encoder "
                            "tokens (keys and values)."),
    Term("encoder", "A stack that reads the whole input; every token sees every other (BERT)."),
    Term("decoder", "A stack that generates left to right; each token sees only earlier ones (GPT-2)."),
    Term("encoder-decoder", "An encoder for the source and a decoder for the output linked by cross "
                            "attention (T5, BART, translation models)."),
    Term("causal", "Looking only backwards: a decoder's token i attends to positions 0..i."),
    Term("position embedding, trained positions", "How the model knows word order. A model only knows the "
                                                 "positions it was trained on, so input is cut at that length."),
    Term("position bias", "T5's way of encoding order: a learned number added to each score depending on "
                          "the distance between query and key (and no 1/√d_k scaling)."),
    Term("truncation", "Dropping the tokens past the model's limit; the app says how many."),
    Term("entropy", "How spread out a row of weights is: 0 when all weight is on one key, high when even."),
    Term("attention sink", "A token ([CLS], [SEP], a full stop, BOS) that many heads put their weight on when "
                           "they have nothing specific to attend to."),
    Term("induction head", "A head that, on a repeated sequence, attends to the token after the previous "
                           "occurrence of the current token, so the model can copy (Olsson et al. 2022)."),
    Term("rollout", "Attention multiplied through the layers (with 0.5·I for the residual) to estimate how "
                    "much each input token reaches the output (Abnar and Zuidema 2020)."),
    Term("autoregressive", "Generating one token at a time, each from the tokens before it (GPT-2, Llama)."),
    Term("KV cache", "The keys and values of earlier tokens, kept while generating so each step computes only "
                     "the newest token's row."),
    Term("grouped-query attention (GQA)", "Several query heads sharing one key/value head (Llama, SmolLM): "
                                          "fewer keys and values to store, one map per query head."),
    Term("surprisal", "−log2 of the probability a model gave the token that came: how surprised it was, in bits."),
    Term("logit lens", "Reading the residual stream after a layer through the final norm and unembedding, to "
                       "see what the model would predict if it stopped there."),
    Term("ablation", "Removing part of a model (here: one head's output) and rerunning it, to see whether "
                     "the model needs that part."),
    Term("quadratic cost", "n tokens give n² weights per head and layer: double the text, four times the work."),
)


def glossary_markdown() -> str:
    return "\n".join(f"- **{t.term}**: {t.definition}" for t in GLOSSARY)
