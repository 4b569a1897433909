"""Command-line interface for scripts and notebooks: `python -m viz capture|stats ...`.

Every failure a person can cause (empty text, unknown model, unreadable path)
ends with one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from viz.result import AttentionResult

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A one-line problem to report and exit with."""


def _common_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", required=True, help="the text to run through the model")
    p.add_argument("--pair", default=None, help="a second sentence (encoder models, BERT-style pairs)")
    p.add_argument("--model", default=None,
                   help="hub id or local directory saved with save_pretrained (default: embedded all-MiniLM-L6-v2)")


def result_arrays(result: AttentionResult) -> dict[str, np.ndarray]:
    """The npz contract: one stream for encoder/decoder models, three blocks for encoder-decoder."""
    if result.family == "encoder-decoder":
        return {
            "encoder_tokens": np.array(result.encoder.tokens, dtype=str),
            "decoder_tokens": np.array(result.decoder.tokens, dtype=str),
            "encoder_attentions": result.encoder_attentions.astype(np.float32),
            "decoder_attentions": result.decoder_attentions.astype(np.float32),
            "cross_attentions": result.cross_attentions.astype(np.float32),
            "truncated": np.array(result.truncated, dtype=np.int64),
        }
    return {
        "tokens": np.array(result.tokens.tokens, dtype=str),
        "attentions": result.attentions.astype(np.float32),
        "truncated": np.array(result.truncated, dtype=np.int64),
    }


def _capture_command(args: argparse.Namespace) -> int:
    from viz.capture import capture
    result = capture(args.text, pair=args.pair, target=args.target, model=args.model)
    arrays = result_arrays(result)
    for extend in CAPTURE_EXTENSIONS:
        arrays.update(extend(args, result, arrays))
    _save_npz(args.out, arrays)
    if result.truncated:
        print(f"warning: input truncated: {result.truncated} tokens dropped to fit the model's limit of "
              f"{result.model.max_length} tokens", file=sys.stderr)
    return 0


def _save_npz(path: str, arrays: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"cannot write {path}: folder {folder} does not exist")
    try:
        np.savez(path, **arrays)
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None


# Functions (args, result, arrays) -> extra npz arrays, registered by the modules
# that own them (rollout, word-level merging), so the capture command stays small.
CAPTURE_EXTENSIONS: list = []
# Functions (subparsers) -> None that add more subcommands (e.g. stats).
SUBCOMMANDS: list = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m viz", description="Capture and analyse Transformer attention.")
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="capture every layer's and head's attention to an .npz file")
    _common_inputs(cap)
    cap.add_argument("--target", default=None,
                     help="decoder text for encoder-decoder models (default: the model's own greedy output)")
    cap.add_argument("--out", required=True, help="output .npz file")
    cap.set_defaults(handler=_capture_command, parser=cap)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _load_plugins() -> None:
    """Import the modules that register CLI extensions (kept optional so a half-built one cannot break capture)."""
    import importlib
    for name in ("viz.cli_stats", "viz.cli_flow"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore")
    _load_plugins()
    parser = build_parser()
    args = parser.parse_args(argv)
    from viz.capture import InputError
    from viz.models import ModelError
    try:
        return args.handler(args)
    except (CliError, InputError, ModelError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a person gets one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: {first[:300]}", file=sys.stderr)
        return 1
