"""Batched capture for corpora: many texts per forward pass, each measured on its own attention.

Owns grouping texts by token length into padded batches (with a cap on the attention memory a
batch may take), the padded forward pass of every family (encoders right-padded; decoders right-
or left-padded, with position ids that skip the padding; encoder-decoder models with batched
greedy decoding, as :func:`viz.capture.capture` decodes one text), cutting each text's own
unpadded attention out of the batch, so padding never enters a statistic, and the local engine
of :func:`viz.corpus.run_corpus`.  It also holds the entry points of corpus statistics:
:func:`corpus_stats` (texts in memory, for the app) and :func:`corpus_file_stats` (a corpus file,
local or Ray engine, resumable, for the CLI).

Tokenization, truncation, special-token flags and greedy decoding are those of
:mod:`viz.capture` (its helpers are called, not copied), so a text gives the same numbers here
as one at a time, to float error (~1e-7).
"""
from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from viz import capture as cap
from viz import corpus, stats
from viz.models import LoadedModel, ModelError, load_model
from viz.result import CROSS, DECODER, ENCODER, AttentionResult, Block, TokenSeq
from viz.settings import SETTINGS

DEFAULT_BATCH_SIZE = 16
CHUNK_BATCHES = 4            # a chunk (the unit handed to an engine) is this many batches of texts
# Attention a batch may hold, float32, all layers: batch x n_layers x n_heads x T^2 x 4 bytes.
# The LLM (270 heads) at 512 tokens needs 283 MB for one text: long texts go one at a time.
BATCH_ATTENTION_MB = SETTINGS.batch_attention_mb
PADDING_SIDES = ("right", "left")


@dataclass(frozen=True)
class Encoded:
    """One text, tokenized as :func:`viz.capture.capture` would."""

    index: int                 # position in the corpus
    ids: tuple[int, ...]       # input ids, truncated at the model's limit
    seq: TokenSeq
    dropped: int               # tokens cut by the truncation


def resolve_kind(loaded: LoadedModel, kind: str | None) -> str:
    """The attention block to measure: ``kind``, or the model's main block."""
    kinds = AttentionResult(model=loaded.info, text="").kinds
    if kind is None:
        return kinds[0]
    if kind not in kinds:
        raise cap.InputError(f"{loaded.info.family} models have no {kind} attention "
                             f"(choose from {', '.join(kinds)})")
    return kind


def encode(loaded: LoadedModel, index: int, text: str) -> Encoded:
    """Tokenize one text exactly as capture does; raises InputError (a ValueError) for unusable text."""
    text = cap.clean_text(text)
    enc, dropped = cap._encode(loaded, text, None)
    seq = cap._token_seq(loaded.tokenizer, enc)
    unk = getattr(loaded.tokenizer, "unk_token_id", None)
    if not ((~seq.special) | (seq.token_ids == unk)).any():
        raise cap.InputError("The text has no tokens this model can read (only invisible characters or "
                             "special tokens): type a sentence")
    return Encoded(index, tuple(int(i) for i in enc["input_ids"][0]), seq, dropped)


def plan_batches(lengths: Sequence[int], batch_size: int, *, max_cells: int | None = None) -> list[list[int]]:
    """Positions into ``lengths`` grouped into batches of similar length.

    Sorted by length (stable, so the plan is the same on every engine), at most
    ``batch_size`` texts a batch and at most ``max_cells`` = texts x longest² (the
    attention cells of one head); a text longer than that goes alone.
    """
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[i]     # ascending order: the newcomer is the longest of the batch
        full = len(current) >= batch_size or (
            max_cells is not None and (len(current) + 1) * longest * longest > max_cells)
        if current and full:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _max_cells(loaded: LoadedModel) -> int:
    info = loaded.info
    n_maps = info.n_heads * (info.n_layers + 2 * info.n_decoder_layers)
    # x2: the per-layer tensors and their stacked float32 copy live together for a moment.
    return max(1, BATCH_ATTENTION_MB * 2**20 // (n_maps * 4 * 2))


def _pad(rows: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), both (batch, longest) int64; padding on ``side``."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(longest - len(row), longest) if side == "left" else slice(0, len(row))
        ids[b, span] = torch.tensor(row, dtype=torch.long)
        mask[b, span] = 1
    return ids, mask


def _pad_id(loaded: LoadedModel) -> int:
    # The id under the mask never reaches a real token; any valid id does.
    for value in (getattr(loaded.tokenizer, "pad_token_id", None), getattr(loaded.model.config, "pad_token_id", None),
                  getattr(loaded.tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            return value
    return 0


def _stack(attentions, what: str) -> np.ndarray:
    """Tuple of (B, H, Tq, Tk) tensors -> float32 (n_layers, B, H, Tq, Tk)."""
    if not attentions or any(a is None for a in attentions):
        raise ModelError(f"The model returned no {what} attention weights (its attention implementation "
                         f"does not expose them)")
    return torch.stack(list(attentions)).float().cpu().numpy()


def _accepts(module, name: str) -> bool:
    try:
        return name in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _eos_ids(loaded: LoadedModel) -> set[int]:
    config = getattr(loaded.model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = getattr(loaded.model.config, "eos_token_id", None)
    if eos is None:
        return set()
    return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])}


def _generated(row: list[int], eos: set[int]) -> list[int]:
    """One row of batched greedy output as the model gives it alone: cut after its first EOS.

    In a batch, a finished row goes on with padding until the last row finishes; the first
    token is the decoder start (which may itself be EOS, as in BART), so the search starts at 1.
    """
    for k in range(1, len(row)):
        if row[k] in eos:
            return row[:k + 1]
    return row


def check_padding(loaded: LoadedModel, padding_side: str) -> None:
    """Refuse a padding side the model cannot take, before any text runs."""
    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side is 'right' or 'left', not {padding_side!r}")
    if padding_side == "left" and loaded.info.family != "decoder":
        raise ValueError("left padding is for decoder models (encoders read absolute positions)")


def batch_blocks(loaded: LoadedModel, items: Sequence[Encoded], kind: str, *,
                 padding_side: str = "right") -> list[Block]:
    """One padded forward pass over ``items``; each text's own Block, padding cut away.

    ``padding_side="left"`` is for decoders (position ids then skip the padding);
    encoders and encoder-decoder models are always right-padded.
    """
    check_padding(loaded, padding_side)
    family = loaded.info.family
    model, pad_id = loaded.model, _pad_id(loaded)
    ids, mask = _pad([it.ids for it in items], pad_id, padding_side)
    lengths = [len(it.ids) for it in items]
    longest = ids.shape[1]
    with cap.run_slot(), torch.inference_mode():
        if family == "decoder":
            # The bare transformer: the LM head's logits (vocabulary x tokens) are not needed here.
            model = getattr(model, "base_model", model)
            inputs = {"input_ids": ids, "attention_mask": mask}
            if _accepts(model, "position_ids"):
                # 0, 1, 2 ... from each text's first real token, whatever the padding before it.
                inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            elif padding_side == "left":
                raise ValueError(f"{loaded.info.model_type} takes no position ids: use right padding")
            pattern = _stack(getattr(model(**inputs, output_attentions=True), "attentions", None), "self")
            starts = [longest - n if padding_side == "left" else 0 for n in lengths]
            return [Block(DECODER, pattern[:, b, :, s:s + n, s:s + n], it.seq, it.seq, True)
                    for b, (it, s, n) in enumerate(zip(items, starts, lengths))]
        if family == "encoder":
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
            pattern = _stack(getattr(out, "attentions", None), "self")
            return [Block(ENCODER, pattern[:, b, :, :n, :n], it.seq, it.seq, False)
                    for b, (it, n) in enumerate(zip(items, lengths))]
        if kind == ENCODER:
            # Encoder attention does not depend on the decoder: no decoding needed.
            out = model.get_encoder()(input_ids=ids, attention_mask=mask, output_attentions=True)
            pattern = _stack(getattr(out, "attentions", None), "encoder")
            return [Block(ENCODER, pattern[:, b, :, :n, :n], it.seq, it.seq, False)
                    for b, (it, n) in enumerate(zip(items, lengths))]
        limit = loaded.info.max_length
        generated = model.generate(input_ids=ids, attention_mask=mask,
                                   max_new_tokens=max(1, min(cap.MAX_NEW_TOKENS, limit - 1)),
                                   do_sample=False, num_beams=1)
        eos = _eos_ids(loaded)
        dec_rows = [_generated([int(t) for t in row], eos) for row in generated]
        dec_ids, dec_mask = _pad(dec_rows, pad_id, "right")
        out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                    decoder_attention_mask=dec_mask, output_attentions=True)
        what = "decoder" if kind == DECODER else "cross"
        pattern = _stack(getattr(out, f"{what}_attentions", None), what)
    blocks = []
    for b, (it, n, row) in enumerate(zip(items, lengths, dec_rows)):
        dec_seq, n_dec = cap._target_seq(loaded.tokenizer, row), len(row)
        if kind == DECODER:
            blocks.append(Block(DECODER, pattern[:, b, :, :n_dec, :n_dec], dec_seq, dec_seq, True))
        else:
            blocks.append(Block(CROSS, pattern[:, b, :, :n_dec, :n], dec_seq, it.seq, False))
    return blocks


def process_chunk(loaded: LoadedModel, chunk: corpus.Chunk, *, kind: str, batch_size: int = DEFAULT_BATCH_SIZE,
                  padding_side: str = "right",
                  should_stop: Callable[[], bool] | None = None) -> Iterator[corpus.ChunkResult]:
    """Per-head metric sums of a chunk of texts, one result per batch (then the failed texts).

    The chunk's texts are tokenized, grouped by length (:func:`plan_batches`), and
    each batch is run once; each text's metrics are :func:`viz.stats.head_metrics`
    of its own unpadded block.  ``should_stop()`` is checked before each batch: the
    texts not yet run are left out of every result, so a resumed run does them.
    """
    encoded, failed = [], corpus.ChunkResult((), corpus.MetricAccumulator())
    for index, text in chunk:
        try:
            encoded.append(encode(loaded, index, text))
        except ValueError as exc:
            failed.acc.fail(f"text {index + 1}: {exc}")
            failed.indices += (index,)
    if failed.indices:
        yield failed
    for batch in plan_batches([len(e.ids) for e in encoded], batch_size, max_cells=_max_cells(loaded)):
        if should_stop is not None and should_stop():
            return
        items = [encoded[i] for i in batch]
        acc = corpus.MetricAccumulator()
        for block in batch_blocks(loaded, items, kind, padding_side=padding_side):
            acc.add_values(stats.metric_values(block))
        dropped = [it.dropped for it in items if it.dropped]
        yield corpus.ChunkResult(tuple(it.index for it in items), acc, len(dropped), max(dropped, default=0))


def merge_results(results: Iterable[corpus.ChunkResult]) -> corpus.ChunkResult:
    """Several results as one (what a remote worker sends back for a whole chunk)."""
    merged = corpus.ChunkResult((), corpus.MetricAccumulator())
    for result in results:
        merged.indices += tuple(result.indices)
        merged.acc.merge(result.acc)
        merged.n_truncated += result.n_truncated
        merged.max_dropped = max(merged.max_dropped, result.max_dropped)
    return merged


class ChunkRunner:
    """What an engine's worker holds: the model, loaded once, and the batching settings.

    ``runner(chunk)`` gives the whole chunk's :class:`~viz.corpus.ChunkResult`.  Built on
    the worker from a picklable factory (``functools.partial(ChunkRunner, name, ...)``), so
    the model never travels, only its name.
    """

    def __init__(self, model: str | LoadedModel | None, *, kind: str | None, batch_size: int = DEFAULT_BATCH_SIZE,
                 padding_side: str = "right"):
        self.loaded = model if isinstance(model, LoadedModel) else load_model(model)
        self.kind = resolve_kind(self.loaded, kind)
        check_padding(self.loaded, padding_side)
        self.batch_size, self.padding_side = batch_size, padding_side

    def __call__(self, chunk: corpus.Chunk) -> corpus.ChunkResult:
        return merge_results(process_chunk(self.loaded, chunk, kind=self.kind, batch_size=self.batch_size,
                                           padding_side=self.padding_side))


def local_engine(loaded: LoadedModel, *, kind: str, batch_size: int = DEFAULT_BATCH_SIZE,
                 padding_side: str = "right", should_stop: Callable[[], bool] | None = None) -> corpus.Engine:
    """The in-process engine for :func:`viz.corpus.run_corpus`: chunks in order, a result per batch."""
    check_padding(loaded, padding_side)
    def engine(chunks: Iterator[corpus.Chunk]) -> Iterator[corpus.ChunkResult]:
        for chunk in chunks:
            yield from process_chunk(loaded, chunk, kind=kind, batch_size=batch_size,
                                     padding_side=padding_side, should_stop=should_stop)
    return engine


def chunk_size(batch_size: int) -> int:
    return max(1, batch_size) * CHUNK_BATCHES


def corpus_stats(texts: Iterable[str], *, model: str | LoadedModel | None = None, kind: str | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, padding_side: str = "right",
                 progress: Callable[[corpus.Progress], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 job: corpus.CorpusJob | None = None) -> corpus.CorpusStats:
    """Mean head metrics over ``texts`` with batched capture, in this process (the app's corpus tab).

    ``progress(Progress)`` is called after each batch (texts/s and ETA in it);
    ``should_stop()`` is checked before each batch.  Pass the same ``job`` (a
    :class:`viz.corpus.CorpusJob`, kept between reruns) and the same texts to go on
    after a stop: the texts it has done are skipped.  Texts that cannot be read are
    skipped and listed in ``failed``.
    """
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    kind = resolve_kind(loaded, kind)
    texts = list(texts)
    engine = local_engine(loaded, kind=kind, batch_size=batch_size, padding_side=padding_side,
                          should_stop=should_stop)
    return corpus.run_corpus(texts, engine, job=job, chunk_size=chunk_size(batch_size), total=len(texts),
                             progress=progress, should_stop=should_stop)


def job_key(source: corpus.CorpusSource, *, model: str | None, kind: str | None) -> dict:
    """What a resumed file run must agree on (see :meth:`viz.corpus.CorpusJob.load`)."""
    name = model or "embedded"
    if os.path.isdir(os.path.expanduser(name)):
        name = str(Path(name).expanduser().resolve())
    return {**source.fingerprint(), "model": name, "kind": kind or "main", "metrics": list(stats.METRICS)}


def corpus_file_stats(path: str | Path, *, column: str | None = None, model: str | LoadedModel | None = None,
                      kind: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE, padding_side: str = "right",
                      engine: str = "local", workers: int = 2, address: str | None = None,
                      max_texts: int | None = None, state_path: str | Path | None = None, resume: bool = False,
                      save_every_s: float = 30.0,
                      progress: Callable[[corpus.Progress], None] | None = None,
                      should_stop: Callable[[], bool] | None = None,
                      on_note: Callable[[str], None] | None = None) -> corpus.CorpusStats:
    """Mean head metrics over a corpus file, streamed (``python -m viz stats --corpus``).

    ``engine="local"`` runs batches in this process; ``engine="ray"`` hands chunks to
    ``workers`` Ray actors, each holding the model once (:mod:`viz.ray_engine`), on a
    local Ray it starts or the cluster at ``address``.  With ``state_path`` the run
    is saved as it goes (and on Ctrl-C); ``resume=True`` continues that state.  A
    state file left by an earlier run is never overwritten silently: pass ``resume``.
    ``model`` may be a loaded model (local engine; Ray workers load it by its name).
    ``on_note(message)`` hears what a person should know (resuming, texts left out).
    """
    note = on_note or (lambda message: None)
    loaded = model if isinstance(model, LoadedModel) else None
    name = loaded.info.name if loaded is not None else model
    source = corpus.open_corpus(path, column=column)
    key = job_key(source, model=name, kind=kind)
    job = None
    if state_path is not None and Path(state_path).exists():
        if not resume:
            raise corpus.CorpusError(f"{Path(state_path).name} holds a partial run: add --resume to continue "
                                     f"it, or delete it to start again")
        job = corpus.CorpusJob.load(state_path, key)
        note(f"resuming: {job.n_done:,} texts already done")
    elif resume:
        note("nothing to resume (no partial state): starting from the first text")
    if job is None:
        job = corpus.CorpusJob(key=key)
    total = source.count()
    if max_texts is not None and total > max_texts:
        note(f"{source.name} has {total:,} texts; only the first {max_texts:,} are used (--max-texts)")
        total = max_texts
    run = {"job": job, "chunk_size": chunk_size(batch_size), "total": total, "max_texts": max_texts,
           "progress": progress, "should_stop": should_stop, "state_path": state_path, "save_every_s": save_every_s}
    if engine == "local":
        loaded = loaded if loaded is not None else load_model(name)
        local = local_engine(loaded, kind=resolve_kind(loaded, kind), batch_size=batch_size,
                             padding_side=padding_side, should_stop=should_stop)
        return corpus.run_corpus(source, local, **run)
    if engine == "ray":
        from viz import ray_engine
        make_runner = functools.partial(ChunkRunner, name, kind=kind, batch_size=batch_size,
                                        padding_side=padding_side)
        with ray_engine.ray_engine(make_runner, workers=workers, address=address) as remote:
            return corpus.run_corpus(source, remote, **run)
    raise ValueError(f"engine is 'local' or 'ray', not {engine!r}")
