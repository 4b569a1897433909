"""`python -m viz stats`: head metrics (and optionally head detectors) to CSV.

    python -m viz stats --text TEXT [--pair TEXT] [--model NAME_OR_PATH]
                        [--corpus FILE [--column COL]] [--kind KIND] [--detectors] --out FILE.csv

Writes one row per (layer, head), 0-based, with the columns ``layer``, ``head``
and the metrics of :data:`viz.stats.METRICS`.  With ``--corpus`` the metrics
are means over the corpus texts (each text weighs the same) and a column
``n_texts`` is added.  ``--detectors`` adds the head-detector scores of
:func:`viz.stats.detect_heads`.  Registered through ``viz.cli.SUBCOMMANDS``.
"""
from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from viz import cli, corpus, stats
from viz.result import AttentionResult


def add_stats_command(subparsers) -> None:
    """Add the ``stats`` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser(
        "stats", help="per-head attention metrics (entropy, special_share, prev_share, ...) to a CSV file",
        description="Write one row per (layer, head) with the head metrics of viz.stats to a CSV file.")
    p.add_argument("--text", default=None, help="the text to run through the model")
    p.add_argument("--pair", default=None, help="a second sentence (encoder models, BERT-style pairs)")
    p.add_argument("--model", default=None,
                   help="hub id or local directory saved with save_pretrained "
                        "(default: embedded all-MiniLM-L6-v2)")
    p.add_argument("--corpus", default=None,
                   help="a .txt (one text a line) or .csv file: write mean metrics over its texts "
                        "instead of one text's")
    p.add_argument("--column", default=None, help="the CSV column holding the texts (with --corpus)")
    p.add_argument("--max-texts", type=int, default=corpus.MAX_TEXTS,
                   help=f"use at most this many corpus texts (default {corpus.MAX_TEXTS})")
    p.add_argument("--kind", default=None, choices=("encoder", "decoder", "cross"),
                   help="attention block for encoder-decoder models (default: the main block)")
    p.add_argument("--detectors", action="store_true",
                   help="add head-detector columns: previous_token, duplicate_token and induction "
                        "(on a repeated random word sequence) for decoders; positional, "
                        "positional_offset and special for encoders")
    p.add_argument("--seed", type=int, default=0, help="seed of the random sequence for --detectors")
    p.add_argument("--out", required=True, help="output .csv file")
    p.set_defaults(handler=stats_command, parser=p)


def _check_out(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise cli.CliError(f"cannot write {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise cli.CliError(f"cannot write {path}: it is a folder")


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def stats_command(args: argparse.Namespace) -> int:
    from viz.capture import capture
    from viz.models import load_model

    text = args.text if args.text and args.text.strip() else None
    if text is None and args.corpus is None:
        raise cli.CliError("give --text TEXT (or --corpus FILE); the text is empty")
    if args.column and not args.corpus:
        raise cli.CliError("--column goes with --corpus FILE.csv")
    _check_out(args.out)
    texts = None
    if args.corpus is not None:
        try:
            chosen = corpus.read_corpus(args.corpus, column=args.column, max_texts=args.max_texts)
        except corpus.CorpusError as exc:
            raise cli.CliError(str(exc)) from None
        if chosen.message:
            _note(chosen.message)
        if text is not None:
            _note("--corpus given: writing mean metrics over the corpus; --text is not part of them")
        texts = chosen.texts

    loaded = load_model(args.model)
    kinds = AttentionResult(model=loaded.info, text="").kinds
    if args.kind is not None and args.kind not in kinds:
        raise cli.CliError(f"{loaded.info.family} models have no {args.kind} attention "
                           f"(choose from {', '.join(kinds)})")
    kind = args.kind or kinds[0]
    truncated = []

    def run(one_text: str):
        result = capture(one_text, pair=args.pair, model=loaded)
        if result.truncated:
            truncated.append(result.truncated)
        return result.block(kind)

    if texts is not None:
        done = corpus.corpus_metrics(texts, run)
        table = done.table
        for message in done.failed:
            _note(f"skipped {message}")
    else:
        block = run(text)
        table = stats.head_metrics(block)
    if truncated:
        _note(f"{len(truncated)} input(s) truncated to the model's limit of {loaded.info.max_length} tokens "
              f"({max(truncated)} tokens dropped at most)")

    if args.detectors:
        table = table.merge(_detectors(args, loaded, kind, text), on=["layer", "head"])
    try:
        table.to_csv(args.out, index=False)
    except OSError as exc:
        raise cli.CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    return 0


def _detectors(args: argparse.Namespace, loaded, kind: str, text: str | None) -> pd.DataFrame:
    """Detector columns: causal blocks read the repeated random sequence, others the text."""
    from viz.capture import capture

    causal = kind == "decoder"
    if causal:
        probe = stats.repeated_random_text(loaded.tokenizer.get_vocab(), seed=args.seed,
                                           pool=corpus.word_pool(), max_tokens=loaded.info.max_length)
        return stats.detect_heads(capture(probe, model=loaded).block(kind))
    if text is None:
        raise cli.CliError("--detectors for encoder attention needs --text")
    return stats.detect_heads(capture(text, pair=args.pair, model=loaded).block(kind))


def _register() -> None:
    if add_stats_command not in cli.SUBCOMMANDS:
        cli.SUBCOMMANDS.append(add_stats_command)


_register()
