"""`capture --word-level` and `capture --rollout`: the aggregation/flow additions to the CLI.

Registered through viz.cli's plugin lists, so the capture command itself stays
untouched: the flags are added to the existing ``capture`` parser and
:func:`capture_extension` adds or replaces arrays in the npz.

* ``--word-level``: ``tokens``/``attentions`` (or, for encoder-decoder models,
  ``encoder_tokens``, ``decoder_tokens`` and the three attention arrays) are
  replaced by their word-level merge (:func:`viz.aggregate.transform_block`);
  the tokens become readable words ("playing" for "play ##ing").
* ``--rollout``: ``rollout`` float32 ``(n_layers, T, T)`` is attention rollout
  (:func:`viz.flow.rollout`) of the main self-attention stored in the same npz
  (``attentions``, or ``encoder_attentions``), after word merging when both
  flags are given, so it always matches the ``tokens`` beside it.
  Encoder-decoder models also get ``decoder_rollout`` for the decoder's
  self-attention.
"""
from __future__ import annotations

import argparse

import numpy as np

from viz import cli
from viz.aggregate import transform_block
from viz.flow import rollout
from viz.result import CROSS, DECODER, ENCODER, AttentionResult


def add_capture_flags(subparsers) -> None:
    """Add --word-level and --rollout to the existing capture subcommand."""
    capture_parser = subparsers.choices["capture"]
    capture_parser.add_argument(
        "--word-level", action="store_true",
        help="merge subword tokens into words (attention to a word summed, from it averaged; "
             "special tokens stay separate) in tokens and attentions")
    capture_parser.add_argument(
        "--rollout", action="store_true",
        help="add `rollout` float32 (n_layers, T, T): attention rollout (Abnar and Zuidema 2020) "
             "of the saved attentions")


def capture_extension(args: argparse.Namespace, result: AttentionResult,
                      arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays to add to (or replace in) the capture npz for the flags given."""
    extra: dict[str, np.ndarray] = {}
    encoder_decoder = result.family == "encoder-decoder"
    if getattr(args, "word_level", False):
        if encoder_decoder:
            for kind in (ENCODER, DECODER, CROSS):
                block = transform_block(result.block(kind), word_level=True)
                extra[f"{kind}_attentions"] = block.pattern.astype(np.float32)
                if kind != CROSS:
                    extra[f"{kind}_tokens"] = np.array(block.queries.labels, dtype=str)
        else:
            block = transform_block(result.block(), word_level=True)
            extra["tokens"] = np.array(block.queries.labels, dtype=str)
            extra["attentions"] = block.pattern.astype(np.float32)
    if getattr(args, "rollout", False):
        current = {**arrays, **extra}
        main_key = "encoder_attentions" if encoder_decoder else "attentions"
        extra["rollout"] = rollout(current[main_key])
        if encoder_decoder:
            extra["decoder_rollout"] = rollout(current["decoder_attentions"])
    return extra


def _register() -> None:
    if add_capture_flags not in cli.SUBCOMMANDS:
        cli.SUBCOMMANDS.append(add_capture_flags)
    if capture_extension not in cli.CAPTURE_EXTENSIONS:
        cli.CAPTURE_EXTENSIONS.append(capture_extension)


_register()
