"""Command-line interface for scripts and notebooks: `python -m viz capture|stats|generate|predict|lens ...`.

    python -m viz capture --text TEXT [--pair TEXT] [--target TEXT] [--model NAME_OR_PATH]
                          [--word-level] [--rollout] --out FILE.npz
    python -m viz stats   --text TEXT [--pair TEXT] [--model NAME_OR_PATH]
                          [--corpus FILE [--column COL] [--max-texts N] [--batch-size B]
                           [--engine local|ray] [--workers N] [--address ADDR] [--resume]]
                          [--kind KIND] [--detectors [--seed N]] --out FILE.csv
    python -m viz generate --text PROMPT [--model M] [--max-new-tokens N] [--chat] [--sample]
                           [--temperature T] [--top-p P] [--seed S] [--top-k K] --out FILE.npz
    python -m viz predict  --text TEXT [--model M] [--top-k K] --out FILE.csv
    python -m viz lens     --text TEXT [--model M] [--position P] [--top-k K] --out FILE.csv
    python -m viz ablate   --text TEXT --heads L:H[,L:H...] [--mode zero|mean] [--model M] --out FILE.csv
    python -m viz importance --text TEXT [--method gradient|ablation] [--mode zero|mean] [--model M] --out FILE.csv

``generate``, ``predict``, ``lens``, ``ablate`` and ``importance`` default to the embedded LLM (``embedded-llm``).

Every subcommand is one ``_add_<name>(sub)`` function (its flags) and one ``_<name>_command(args)``
handler, listed in :func:`build_parser`.  To add one, write both and add a line there.  The npz and
CSV layouts live in :mod:`viz.export`, shared with the app's download buttons.

Every failure a person can cause (empty text, unknown model, unreadable path) ends with one line on
stderr and a non-zero exit, never a traceback: raise :class:`CliError` (or let the torch tier's
``InputError``/``ModelError`` through).  The torch tier is imported inside handlers, so ``--help``
stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import pandas as pd

from viz import corpus, export, launch, stats
from viz.result import AttentionResult

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A one-line problem to report and exit with."""


# ---------------------------------------------------------------- shared pieces
def _model_inputs(p: argparse.ArgumentParser, *, text_required: bool = True) -> None:
    """--text, --pair and --model, the same for every subcommand that runs a model."""
    p.add_argument("--text", required=text_required, default=None, help="the text to run through the model")
    p.add_argument("--pair", default=None, help="a second sentence (encoder models, BERT-style pairs)")
    p.add_argument("--model", default=None,
                   help="hub id, local directory saved with save_pretrained, or embedded-llm (the embedded "
                        "SmolLM2-135M-Instruct) (default: embedded all-MiniLM-L6-v2)")


def check_out(path: str) -> None:
    """Fail before any model runs when the output file cannot be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise CliError(f"cannot write {path}: it is a folder")


def write_file(path: str, write) -> None:
    """Call ``write(path)``, turning an OS error into a one-line CliError."""
    try:
        write(path)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


# ---------------------------------------------------------------- capture
def _add_capture(sub) -> None:
    p = sub.add_parser("capture", help="capture every layer's and head's attention to an .npz file")
    _model_inputs(p)
    p.add_argument("--target", default=None,
                   help="decoder text for encoder-decoder models (default: the model's own greedy output)")
    p.add_argument("--word-level", action="store_true",
                   help="merge subword tokens into words (attention to a word summed, from it averaged; "
                        "special tokens stay separate) in tokens and attentions")
    p.add_argument("--rollout", action="store_true",
                   help="add `rollout` float32 (n_layers, T, T): attention rollout (Abnar and Zuidema 2020) "
                        "of the saved attentions")
    p.add_argument("--out", required=True, help="output .npz file")
    p.set_defaults(handler=_capture_command, parser=p)


def _capture_command(args: argparse.Namespace) -> int:
    from viz.capture import capture
    check_out(args.out)
    result = capture(args.text, pair=args.pair, target=args.target, model=args.model)
    arrays = export.result_arrays(result, word_level=args.word_level, rollout=args.rollout)
    # save_npz: a long result's attention goes into the file one exactly recomputed layer at a time
    write_file(args.out, lambda path: export.save_npz(path, arrays))
    if result.truncated:
        print(f"warning: input truncated: {result.truncated} tokens dropped to fit the model's limit of "
              f"{result.model.max_length} tokens", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- stats
def _add_stats(sub) -> None:
    """One row per (layer, head), 0-based: ``layer``, ``head`` and the metrics of :data:`viz.stats.METRICS`.

    With ``--corpus`` the metrics are means over the corpus texts (each text weighs the same) and a
    column ``n_texts`` is added; ``--detectors`` adds :func:`viz.stats.detect_heads` scores.
    """
    p = sub.add_parser(
        "stats", help="per-head attention metrics (entropy, special_share, prev_share, ...) to a CSV file",
        description="Write one row per (layer, head) with the head metrics of viz.stats to a CSV file.")
    _model_inputs(p, text_required=False)
    p.add_argument("--corpus", default=None,
                   help="a .txt (one text a line), .csv, .jsonl or .parquet file: write mean metrics over "
                        "its texts instead of one text's (batched, streamed, any size)")
    p.add_argument("--column", default=None,
                   help="the column (.csv, .parquet) or field (.jsonl) holding the texts (with --corpus)")
    p.add_argument("--max-texts", type=int, default=None, help="use at most this many corpus texts (default all)")
    _corpus_run_flags(p)
    p.add_argument("--kind", default=None, choices=("encoder", "decoder", "cross"),
                   help="attention block for encoder-decoder models (default: the main block)")
    p.add_argument("--detectors", action="store_true",
                   help="add head-detector columns: previous_token, duplicate_token and induction "
                        "(on a repeated random word sequence) for decoders; positional, "
                        "positional_offset and special for encoders")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sequence for --detectors")
    p.add_argument("--out", required=True, help="output .csv file")
    p.set_defaults(handler=_stats_command, parser=p)


def _stats_command(args: argparse.Namespace) -> int:
    from viz.capture import capture
    from viz.models import load_model

    text = args.text if args.text and args.text.strip() else None
    if text is None and args.corpus is None:
        raise CliError("give --text TEXT (or --corpus FILE); the text is empty")
    if args.column and not args.corpus:
        raise CliError("--column goes with --corpus FILE.csv")
    check_out(args.out)
    if args.corpus is not None:
        return _stats_corpus(args, text)

    loaded = load_model(args.model)
    kinds = AttentionResult(model=loaded.info, text="").kinds
    if args.kind is not None and args.kind not in kinds:
        raise CliError(f"{loaded.info.family} models have no {args.kind} attention "
                       f"(choose from {', '.join(kinds)})")
    kind = args.kind or kinds[0]
    truncated = []

    def run(one_text: str):
        result = capture(one_text, pair=args.pair, model=loaded)
        if result.truncated:
            truncated.append(result.truncated)
        return result.block(kind)

    table = stats.head_metrics(run(text))
    if truncated:
        note(f"{len(truncated)} input(s) truncated to the model's limit of {loaded.info.max_length} tokens "
             f"({max(truncated)} tokens dropped at most)")

    if args.detectors:
        table = table.merge(_detectors(args, loaded, kind, text), on=["layer", "head"])
    write_file(args.out, lambda path: table.to_csv(path, index=False))
    return 0


def _corpus_run_flags(p: argparse.ArgumentParser) -> None:
    """How a --corpus run goes: batching, engine (local or Ray), resuming."""
    p.add_argument("--batch-size", type=int, default=16,
                   help="texts per forward pass, grouped by length (default 16; long texts go in smaller batches)")
    p.add_argument("--padding-side", default="right", choices=("right", "left"),
                   help="where decoders are padded in a batch (encoders: right); the numbers are the same")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="local: batches in this process; ray: Ray actors holding the model (pip install ray)")
    p.add_argument("--workers", type=int, default=2, help="Ray actors, one CPU each (with --engine ray, default 2)")
    p.add_argument("--address", default=None,
                   help="an existing Ray cluster (ray://HEAD:10001 or HEAD:6379); default: start a local Ray")
    p.add_argument("--resume", action="store_true",
                   help="continue the partial run saved in the state file (after Ctrl-C or a crash)")
    p.add_argument("--state", default=None,
                   help="state file of a partial run (default: OUT.partial.json, written every 30 s)")


class _ProgressLine:
    """texts/s and ETA on stderr: one line redrawn on a terminal, a line every 10 s in a log."""

    def __init__(self, *, every_s: float = 10.0):
        import time
        self._clock, self._every, self._last, self._tty = time.monotonic, every_s, 0.0, sys.stderr.isatty()
        self.latest = self._shown = None

    def __call__(self, progress) -> None:
        self.latest = progress
        if self._tty:
            print(f"\r{progress.line()}   ", end="", file=sys.stderr, flush=True)
        elif self._clock() - self._last >= self._every:
            self._last, self._shown = self._clock(), progress
            print(progress.line(), file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.latest is not None and self.latest is not self._shown:
            print(("\r" if self._tty else "") + self.latest.line() + "   ", file=sys.stderr, flush=True)


def _stats_corpus(args: argparse.Namespace, text: str | None) -> int:
    """--corpus: mean metrics over a corpus file, batched and streamed (viz.batch), resumable."""
    from viz import batch
    from viz.models import load_model

    if args.batch_size < 1 or args.workers < 1:
        raise CliError("--batch-size and --workers must be at least 1")
    if args.max_texts is not None and args.max_texts < 1:
        raise CliError("--max-texts must be at least 1")
    if text is not None and not args.detectors:
        note("--corpus given: writing mean metrics over the corpus; --text is not part of them")
    if args.pair:
        note("--pair is not used with --corpus (each corpus text is read alone)")
    if args.engine == "local" and args.address:
        raise CliError("--address goes with --engine ray")
    state = args.state or f"{args.out}.partial.json"
    # The local engine runs in this process; Ray workers load the model themselves (by name).
    loaded = load_model(args.model) if args.engine == "local" or args.detectors else None
    # Detectors read one probe text: done first, so a missing --text fails before the corpus runs.
    detectors = _detectors(args, loaded, batch.resolve_kind(loaded, args.kind), text) if args.detectors else None
    progress = _ProgressLine()
    try:
        done = batch.corpus_file_stats(
            args.corpus, column=args.column, model=loaded if args.engine == "local" else args.model,
            kind=args.kind, batch_size=args.batch_size, padding_side=args.padding_side, engine=args.engine,
            workers=args.workers, address=args.address, max_texts=args.max_texts, state_path=state,
            resume=args.resume, progress=progress, on_note=note)
    except corpus.CorpusError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        progress.finish()
        note(f"stopped: the partial run is saved in {state}; run the same command with --resume to go on")
        raise
    except ValueError as exc:   # e.g. left padding for an encoder
        raise CliError(str(exc)) from None
    progress.finish()
    for message in done.failed[:5]:
        note(f"skipped {message}")
    if done.n_failed > 5:
        note(f"... {done.n_failed} texts skipped in all")
    if done.n_truncated:
        note(f"{done.n_truncated} input(s) truncated to the model's token limit "
             f"({done.max_dropped} tokens dropped at most)")
    table = done.table
    if detectors is not None:
        table = table.merge(detectors, on=["layer", "head"])
    write_file(args.out, lambda path: table.to_csv(path, index=False))
    try:
        os.remove(state)    # finished: nothing left to resume
    except FileNotFoundError:
        pass
    return 0


def _detectors(args: argparse.Namespace, loaded, kind: str, text: str | None) -> pd.DataFrame:
    """Detector columns: causal blocks read the repeated random sequence, others the text."""
    from viz.capture import capture

    if kind == "decoder":
        probe = stats.repeated_random_text(loaded.tokenizer.get_vocab(), seed=args.seed,
                                           pool=corpus.word_pool(), max_tokens=loaded.info.max_length)
        return stats.detect_heads(capture(probe, model=loaded).block(kind))
    if text is None:
        raise CliError("--detectors for encoder attention needs --text")
    return stats.detect_heads(capture(text, pair=args.pair, model=loaded).block(kind))


# ---------------------------------------------------------------- generate, predict, lens (decoders)
def _llm_inputs(p: argparse.ArgumentParser) -> None:
    from viz.embedded import EMBEDDED_LLM
    p.add_argument("--text", required=True, help="the text (the prompt, for generate)")
    p.add_argument("--model", default=EMBEDDED_LLM,
                   help=f"a decoder: hub id or local directory saved with save_pretrained (default: {EMBEDDED_LLM}, "
                        f"SmolLM2-135M-Instruct)")
    p.add_argument("--top-k", type=int, default=10, help="alternatives kept per position (default 10)")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="generate tokens after a prompt; every step's attention and top-k to .npz",
                       description="Generate after a prompt (greedy, or sampled with --sample) and write the whole "
                                   "sequence's attention and each step's top-k next tokens to an .npz file "
                                   "(see viz.export.generation_arrays).  The generated text goes to stdout.")
    _llm_inputs(p)
    p.add_argument("--max-new-tokens", type=int, default=20, help="new tokens, 1..64 (default 20)")
    p.add_argument("--chat", action="store_true",
                   help="wrap the prompt in the model's chat template (one user message + the generation prompt)")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep tokens up to this mass (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--out", required=True, help="output .npz file")
    p.set_defaults(handler=_generate_command, parser=p)


def _generate_command(args: argparse.Namespace) -> int:
    from viz.generation import generate
    check_out(args.out)
    result = generate(args.text, args.model, max_new_tokens=args.max_new_tokens, chat=args.chat,
                      sample=args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                      top_k=args.top_k)
    arrays = export.generation_arrays(result)
    write_file(args.out, lambda path: export.save_npz(path, arrays))
    if result.notice:
        print(f"warning: {result.notice}", file=sys.stderr)
    print(result.completion)
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="per position: the model's top-k next tokens and the actual one's p and rank",
                       description="One CSV row per position: position, token, next_token, p_next, rank_next "
                                   "(1-based), top1..topK, p1..pK, then surprisal (bits) and token ids.")
    _llm_inputs(p)
    p.add_argument("--out", required=True, help="output .csv file")
    p.set_defaults(handler=_predict_command, parser=p)


def _predict_command(args: argparse.Namespace) -> int:
    from viz.lm import predictions
    check_out(args.out)
    pred = predictions(args.text, args.model, top_k=args.top_k)
    table = export.predictions_table(pred)
    write_file(args.out, lambda path: table.to_csv(path, index=False))
    if pred.truncated:
        print(f"warning: input truncated: {pred.truncated} tokens dropped to fit the model's limit of "
              f"{pred.model.max_length} tokens", file=sys.stderr)
    return 0


def _add_lens(sub) -> None:
    p = sub.add_parser("lens", help="logit lens: the top-k tokens the residual stream after each layer would give",
                       description="One CSV row per layer (0-based, after that layer's block): top1..topK and "
                                   "p1..pK at one position (the model's final norm, then its unembedding).")
    _llm_inputs(p)
    p.add_argument("--position", type=int, default=None,
                   help="the token position to read, 0-based; negative counts from the end (default: the last)")
    p.add_argument("--out", required=True, help="output .csv file")
    p.set_defaults(handler=_lens_command, parser=p)


def _lens_command(args: argparse.Namespace) -> int:
    from viz.lm import logit_lens
    check_out(args.out)
    lens = logit_lens(args.text, args.model, position=args.position, top_k=args.top_k)
    table = export.lens_table(lens)
    write_file(args.out, lambda path: table.to_csv(path, index=False))
    if lens.truncated:
        print(f"warning: input truncated: {lens.truncated} tokens dropped to fit the model's limit of "
              f"{lens.model.max_length} tokens", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- ablate, importance (head ablation)
def _ablation_inputs(p: argparse.ArgumentParser) -> None:
    from viz.embedded import EMBEDDED_LLM
    p.add_argument("--text", required=True, help="the text to run through the model")
    p.add_argument("--model", default=EMBEDDED_LLM,
                   help=f"a decoder or an encoder: hub id or local directory (default: {EMBEDDED_LLM}, "
                        f"SmolLM2-135M-Instruct; 'embedded' is all-MiniLM-L6-v2)")
    p.add_argument("--mode", default="zero",
                   help="how a head is knocked out: zero (default) or mean (its mean output over the positions)")
    p.add_argument("--out", required=True, help="output .csv file")


def _check_mode(mode: str) -> None:
    from viz.ablation_result import MODES
    if mode not in MODES:
        raise CliError(f"unknown --mode '{mode}': choose {' or '.join(MODES)}")


def _add_ablate(sub) -> None:
    p = sub.add_parser("ablate", help="knock heads out and write the effect on the output per position to CSV",
                       description="Decoders: one row per position with position, token, next_token, "
                                   "p_next_before, p_next_after, kl (KL(before || after) of the next-token "
                                   "distribution, nats). Encoders: a first row position=-1 with the sentence "
                                   "embedding's cosine before/after, then position, token, cosine per token.")
    _ablation_inputs(p)
    p.add_argument("--heads", required=True, help="heads to knock out, 0-based LAYER:HEAD[,LAYER:HEAD...], e.g. 3:4,5:0")
    p.set_defaults(handler=_ablate_command, parser=p)


def _ablate_command(args: argparse.Namespace) -> int:
    from viz.ablation_result import HeadSpecError, effect_table, parse_heads
    _check_mode(args.mode)
    try:
        heads = parse_heads(args.heads)
    except HeadSpecError as exc:
        raise CliError(f"--heads: {exc}") from None
    check_out(args.out)
    from viz.ablation import effect
    from viz.models import load_model
    result = effect(args.text, heads, model=load_model(args.model), mode=args.mode)
    table = effect_table(result)
    write_file(args.out, lambda path: table.to_csv(path, index=False))
    if result.truncated:
        print(f"warning: input truncated: {result.truncated} tokens dropped to fit the model's limit", file=sys.stderr)
    return 0


def _add_importance(sub) -> None:
    p = sub.add_parser("importance", help="importance of every head (gradient or ablation) to CSV: layer, head, importance",
                       description="gradient: |dL/dg| for a gate on each head's output, one backward pass "
                                   "(Michel et al. 2019); ablation: the effect of removing each head alone "
                                   "(decoders: mean KL over positions; encoders: 1 - cosine of the sentence "
                                   "embedding). One row per (layer, head), 0-based, with its rank (1 = most important).")
    _ablation_inputs(p)
    p.add_argument("--method", default="gradient", help="gradient (default) or ablation")
    p.set_defaults(handler=_importance_command, parser=p)


def _importance_command(args: argparse.Namespace) -> int:
    from viz.ablation_result import METHODS, importance_table
    if args.method not in METHODS:
        raise CliError(f"unknown --method '{args.method}': choose {' or '.join(METHODS)}")
    _check_mode(args.mode)
    check_out(args.out)
    from viz.ablation import head_importance
    from viz.models import load_model
    result = head_importance(args.text, method=args.method, model=load_model(args.model), mode=args.mode)
    table = importance_table(result)
    write_file(args.out, lambda path: table.to_csv(path, index=False))
    if result.truncated:
        print(f"warning: input truncated: scored on the first {len(result.tokens)} tokens "
              f"({result.truncated} tokens dropped)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parser and entry point
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=_prog(), description="Capture and analyse Transformer attention.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_capture(sub)
    _add_stats(sub)
    _add_generate(sub)
    _add_predict(sub)
    _add_lens(sub)
    _add_ablate(sub)
    _add_importance(sub)
    launch.add_parser(sub)  # `app`: the Streamlit app (viz/launch.py)
    return parser


def _prog() -> str:
    """The name the person typed (`attention-explorer`), or `python -m viz`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m viz" if name in ("", "__main__.py", "-c") else name


def _user_errors() -> tuple[type, ...]:
    """Errors a person caused: CliError, and the torch tier's InputError/ModelError if it was imported.

    Looked up in sys.modules so that commands that never touch a model (`app`, `--help`) do not
    import torch just to name its error classes.
    """
    errors: list[type] = [CliError]
    for module, name in (("viz.capture", "InputError"), ("viz.embedded", "ModelError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None:
            errors.append(cls)
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a person gets one line, not a traceback
        if isinstance(exc, _user_errors()):
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {first[:300]}", file=sys.stderr)
        return 1
