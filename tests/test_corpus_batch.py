"""Corpus statistics at scale (viz.batch, viz.corpus, viz.ray_engine): batched capture equals
one text at a time, padding never counts, runs stream, stop and resume, every input format,
and the Ray engine gives the local engine's numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from viz import batch, corpus, stats
from viz.capture import capture
from viz.models import load_model

ROOT = Path(__file__).resolve().parents[1]

# Mixed lengths (1 word to ~20 tokens), so every batch of 3 holds padding; the last text is
# empty once control characters are dropped and must be skipped the same way on both paths.
TEXTS = ["the cat sat", "the quick brown fox jumps over the lazy dog . the dog ran", "hello",
         "a red big dog ran quickly on the wide road , because it was too tired !", "katze",
         "the animal didn't cross the street", "is it blue ?", "das ist ein hund und eine katze",
         "\x00\x01 "]

CASES = [("encoder", None, "right"), ("decoder", None, "right"), ("decoder", None, "left"),
         ("llama", None, "right"), ("llama", None, "left"),          # grouped-query attention
         ("encoder-decoder", "encoder", "right"), ("encoder-decoder", "decoder", "right"),
         ("encoder-decoder", "cross", "right"), ("t5", "cross", "right"), ("t5", "decoder", "right")]


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    loaded = {family: load_model(path) for family, path in tiny_models.items()}
    loaded["llama"] = load_model(_gqa_decoder(tmp_path_factory.mktemp("gqa")))
    return loaded


def _gqa_decoder(root: Path) -> str:
    """tests/tiny_models.py's Llama (4 query heads on 2 KV heads) at the usual init scale.

    The shared one is initialised wide (0.3, for stable greedy choices), which amplifies float32
    rounding: there a batch of two copies of one text, no padding at all, already moves a weight
    by 1.5e-6 (BLAS sums in another order).  At the usual 0.02, as in real checkpoints (the
    embedded LLM agrees to ~2e-7, benchmarks/corpus.py), what the test sees is padding, not rounding.
    """
    import tiny_models as builder
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    tok = builder._bpe_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False))
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return str(root)


def _values(block):
    return np.column_stack([v.reshape(-1) for v in stats.metric_values(block).values()])


def _singles(loaded, kind, texts):
    """One text at a time through the public capture path: {corpus index: Block}."""
    out = {}
    for k, text in enumerate(texts):
        try:
            out[k] = capture(text, model=loaded).block(kind)
        except ValueError:
            pass
    return out


@pytest.mark.parametrize("family,kind,side", CASES, ids=[f"{f}-{k or 'main'}-{s}" for f, k, s in CASES])
def test_batch_gives_each_text_its_own_attention(models, family, kind, side):
    loaded = models[family]
    kind = batch.resolve_kind(loaded, kind)
    singles = _singles(loaded, kind, TEXTS)
    items = [batch.encode(loaded, k, TEXTS[k]) for k in singles]
    lengths = [len(it.ids) for it in items]
    assert max(lengths) >= 4 * min(lengths)             # real padding in the batch
    blocks = batch.batch_blocks(loaded, items, kind, padding_side=side)
    for item, block in zip(items, blocks):
        alone = singles[item.index]
        assert block.pattern.shape == alone.pattern.shape
        assert block.queries.tokens == alone.queries.tokens and block.keys.tokens == alone.keys.tokens
        np.testing.assert_array_equal(block.keys.special, alone.keys.special)
        np.testing.assert_allclose(block.pattern, alone.pattern, atol=1e-6, rtol=0)
        np.testing.assert_allclose(block.pattern.sum(-1), 1.0, atol=1e-5)    # no weight left on padding
        got, want = _values(block), _values(alone)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        # 1e-6, relative for the metrics that are not shares: mean_distance reaches ~20 positions,
        # where float32 weights (7 significant digits) leave ~1e-6 absolute.
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-6, equal_nan=True)


def test_padding_would_change_the_numbers_if_it_were_counted(models):
    """The check above can fail: the shortest text's padded row, uncut, gives other metrics."""
    loaded = models["encoder"]
    items = [batch.encode(loaded, 0, "hello"), batch.encode(loaded, 1, TEXTS[3])]
    ids, mask = batch._pad([it.ids for it in items], batch._pad_id(loaded), "right")
    import torch
    with torch.inference_mode():
        att = loaded.model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    padded = torch.stack(att)[:, 0].numpy()                        # (L, H, T_long, T_long)
    own = batch.batch_blocks(loaded, items, "encoder")[0].pattern  # (L, H, 3, 3)
    assert padded.shape[-1] > own.shape[-1]
    # padded query rows give their self weight to a padded key, which has none
    assert (stats.metric_values(own)["self_share"] - stats.metric_values(padded)["self_share"]).min() > 0.05


@pytest.mark.parametrize("family,kind,side", [("encoder", None, "right"), ("llama", None, "left"),
                                              ("encoder-decoder", "cross", "right")])
def test_corpus_means_match_one_at_a_time(models, family, kind, side):
    loaded = models[family]
    resolved = batch.resolve_kind(loaded, kind)
    alone = corpus.corpus_metrics(TEXTS, lambda t: capture(t, model=loaded).block(resolved))
    seen = []
    got = batch.corpus_stats(TEXTS, model=loaded, kind=kind, batch_size=3, padding_side=side, progress=seen.append)
    assert (got.n_done, got.n_total, got.stopped) == (len(TEXTS), len(TEXTS), False)
    assert got.failed == alone.failed and got.n_failed == 1 and got.failed[0].startswith("text 9:")
    assert list(got.table.columns) == list(alone.table.columns) == ["layer", "head", *stats.METRICS, "n_texts"]
    assert (got.table["n_texts"] == len(TEXTS) - 1).all()
    np.testing.assert_allclose(got.table[list(stats.METRICS)].to_numpy(), alone.table[list(stats.METRICS)].to_numpy(),
                               atol=1e-6, rtol=1e-6, equal_nan=True)
    assert seen[-1].done == len(TEXTS) and seen[-1].total == len(TEXTS)
    assert [p.done for p in seen] == sorted(p.done for p in seen) and len(seen) >= 3    # one per batch


def test_plan_batches_groups_by_length_and_caps_memory():
    lengths = [5, 40, 6, 41, 7, 300, 5]
    plan = batch.plan_batches(lengths, 3)
    assert plan == [[0, 6, 2], [4, 1, 3], [5]]                 # sorted by length, stable
    assert sorted(i for b in plan for i in b) == list(range(len(lengths)))
    capped = batch.plan_batches(lengths, 8, max_cells=3 * 41 * 41)
    assert all(len(b) * max(lengths[i] for i in b) ** 2 <= 3 * 41 * 41 or len(b) == 1 for b in capped)
    assert [5] in capped                                       # too long for company: alone
    with pytest.raises(ValueError):
        batch.plan_batches(lengths, 0)


def test_left_padding_is_refused_for_encoders(models):
    loaded = models["encoder"]
    with pytest.raises(ValueError, match="left padding is for decoder"):
        batch.batch_blocks(loaded, [batch.encode(loaded, 0, "the cat")], "encoder", padding_side="left")


# ------------------------------------------------------------------ streaming, memory, stop and resume

class _FakeEngine:
    """A pure engine: text "self" -> identity head, else uniform (T = 4); counts what it ran."""

    def __init__(self):
        self.ran = []

    def __call__(self, chunks):
        for chunk in chunks:
            acc = corpus.MetricAccumulator()
            for index, text in chunk:
                head = np.eye(4) if text.startswith("self") else np.full((4, 4), 0.25)
                acc.add(stats.head_metrics(head[None, None]))
                self.ran.append(index)
            yield corpus.ChunkResult(tuple(i for i, _ in chunk), acc)


def test_state_stays_the_same_size_however_long_the_corpus(tmp_path):
    sizes = {}
    for n in (50, 5000):
        texts = (("self" if i % 3 == 0 else "other") for i in range(n))     # a generator: never a list
        state = tmp_path / f"s{n}.json"
        done = corpus.run_corpus(texts, _FakeEngine(), chunk_size=7, state_path=state)
        assert done.n_done == n and done.table.loc[0, "n_texts"] == n
        assert done.table.loc[0, "self_share"] == pytest.approx(((n + 2) // 3 + 0.25 * (n - (n + 2) // 3)) / n)
        sizes[n] = len(state.read_bytes())
        job = json.loads(state.read_text())
        assert job["next_index"] == n and job["done_after"] == []
    assert abs(sizes[5000] - sizes[50]) < 40            # a few more digits, nothing per text


def test_out_of_order_results_keep_a_small_done_set():
    job = corpus.CorpusJob()
    job.record(corpus.ChunkResult((3, 4), corpus.MetricAccumulator()))
    assert job.n_done == 2 and job.next_index == 0 and job.is_done(4) and not job.is_done(2)
    job.record(corpus.ChunkResult((0, 1, 2), corpus.MetricAccumulator()))
    assert job.next_index == 5 and job.done_after == set()


def test_stop_and_resume_after_an_interruption(tiny_models, tmp_path):
    path = tmp_path / "c.txt"
    texts = [TEXTS[k % 8] + f" {'the ' * (k % 5)}" for k in range(40)]
    path.write_text("\n".join(texts), encoding="utf-8")
    state = tmp_path / "run.partial.json"
    model = tiny_models["decoder"]
    whole = batch.corpus_file_stats(path, model=model, batch_size=3)

    calls = []

    def interrupt(progress):
        calls.append(progress)
        if len(calls) == 4:
            raise KeyboardInterrupt          # Ctrl-C in the middle of a chunk

    with pytest.raises(KeyboardInterrupt):
        batch.corpus_file_stats(path, model=model, batch_size=3, state_path=state, progress=interrupt)
    saved = json.loads(state.read_text())
    assert 0 < saved["acc"]["n_texts"] == calls[-1].done < len(texts)

    with pytest.raises(corpus.CorpusError, match="add --resume"):
        batch.corpus_file_stats(path, model=model, batch_size=3, state_path=state)
    with pytest.raises(corpus.CorpusError, match="belongs to another run"):
        batch.corpus_file_stats(path, model=tiny_models["llama"], batch_size=3, state_path=state, resume=True)

    notes, seen = [], []
    rest = batch.corpus_file_stats(path, model=model, batch_size=3, state_path=state, resume=True,
                                   on_note=notes.append, progress=seen.append)
    assert notes == [f"resuming: {calls[-1].done} texts already done"]
    assert seen[0].new < seen[0].done                       # speed counts this run's texts only
    assert rest.n_done == len(texts) and (rest.table["n_texts"] == len(texts)).all()
    np.testing.assert_allclose(rest.table[list(stats.METRICS)].to_numpy(),
                               whole.table[list(stats.METRICS)].to_numpy(), atol=1e-9, rtol=0)


def test_stop_flag_in_the_app_path_keeps_the_job(models):
    loaded = models["encoder"]
    job, count = corpus.CorpusJob(), []
    first = batch.corpus_stats(TEXTS, model=loaded, batch_size=2, job=job,
                               progress=count.append, should_stop=lambda: len(count) >= 2)
    assert first.stopped and 0 < first.n_done < len(TEXTS)
    rest = batch.corpus_stats(TEXTS, model=loaded, batch_size=2, job=job)
    assert rest.n_done == len(TEXTS) and not rest.stopped
    whole = batch.corpus_stats(TEXTS, model=loaded, batch_size=2)
    np.testing.assert_allclose(rest.table[list(stats.METRICS)].to_numpy(),
                               whole.table[list(stats.METRICS)].to_numpy(), atol=1e-9)


def test_progress_speed_and_eta():
    p = corpus.Progress(done=1200, total=2000, new=200, elapsed_s=4.0)
    assert p.texts_per_s == 50 and p.eta_s == 16 and p.fraction == 0.6
    assert p.line() == "1,200 / 2,000 texts, 50.0 texts/s, ETA 16 s"
    assert corpus.Progress(5, None, 5, 1.0).line() == "5 texts, 5.0 texts/s"
    assert "ETA 1 h 23 min" in corpus.Progress(0, 10_000, 2, 1.0).line()


# ------------------------------------------------------------------ input formats

def _write_all_formats(folder: Path, texts: list[str]) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = texts + [""]                           # an empty cell is skipped everywhere
    frame = pd.DataFrame({"id": range(len(rows)), "sentence": rows})
    paths = {"txt": folder / "c.txt", "csv": folder / "c.csv", "jsonl": folder / "c.jsonl",
             "parquet": folder / "c.parquet"}
    paths["txt"].write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    frame.to_csv(paths["csv"], index=False)
    paths["jsonl"].write_text("\n".join(json.dumps({"id": i, "sentence": t}, ensure_ascii=False)
                                        for i, t in enumerate(rows)) + "\n", encoding="utf-8")
    table = pa.table({"id": list(range(len(rows) + 1)), "sentence": rows + [None]})
    pq.write_table(table, paths["parquet"], row_group_size=2)    # several row groups
    return paths


def test_every_input_format_gives_the_same_texts(tmp_path):
    texts = ["Hello, world.", 'She said "yes"\u2028then left', "naïve café", "x" * 300]
    paths = _write_all_formats(tmp_path, texts)
    for fmt, path in paths.items():
        column = None if fmt == "txt" else "sentence"
        want = texts if fmt != "txt" else [t for t in "\n".join(texts).splitlines()]
        source = corpus.open_corpus(path, column=column)
        assert list(source) == want and source.count() == len(want), fmt
        assert list(corpus.read_corpus(path.read_bytes(), name=path.name, column=column).texts) == want, fmt
        if fmt != "txt":
            assert corpus.csv_columns(path) == ["id", "sentence"]
            with pytest.raises(corpus.CorpusError, match="pick the one holding the texts: id, sentence"):
                corpus.open_corpus(path)
            with pytest.raises(corpus.CorpusError, match="no column 'text'"):
                corpus.open_corpus(path, column="text")
    bare = tmp_path / "bare.jsonl"
    bare.write_text('"one"\n\n"two"\n', encoding="utf-8")
    assert list(corpus.open_corpus(bare)) == ["one", "two"]


@pytest.mark.parametrize("name,data,message", [
    ("bad.jsonl", b'{"text": "a"}\n{oops\n', "line 2 is not JSON"),
    ("bad.parquet", b"PAR1 not really", "not a readable Parquet file"),
    ("bad.csv", b"", "not a readable CSV"),
    ("latin.jsonl", b'{"text": "caf\xe9"}\n', "not UTF-8"),
    ("notes.docx", b"x", "must be a .txt file"),
])
def test_bad_corpus_files_get_one_line(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(corpus.CorpusError, match=message):
        list(corpus.open_corpus(path, column="text" if name.endswith("l") else None))


def cli_main(*args):
    from viz.cli import main
    return main([str(a) for a in args])


def test_cli_reads_every_format_and_the_csv_reads_back(tiny_models, tmp_path, capsys):
    texts = TEXTS[:8]
    paths = _write_all_formats(tmp_path, texts)
    tables = {}
    for fmt, path in paths.items():
        out = tmp_path / f"{fmt}.csv"
        column = [] if fmt == "txt" else ["--column", "sentence"]
        assert cli_main("stats", "--corpus", path, *column, "--model", tiny_models["encoder"], "--batch-size", 3,
                        "--out", out) == 0, capsys.readouterr().err
        assert not Path(f"{out}.partial.json").exists()         # finished: no state left behind
        tables[fmt] = pd.read_csv(out)
    assert "texts/s" in capsys.readouterr().err
    first = tables["txt"]
    assert list(first.columns) == ["layer", "head", *stats.METRICS, "n_texts"] and (first["n_texts"] == 8).all()
    for fmt, table in tables.items():
        pd.testing.assert_frame_equal(table, first, check_exact=False, atol=1e-12, obj=fmt)

    back = corpus.read_stats_csv(tmp_path / "csv.csv")
    pd.testing.assert_frame_equal(back, first)
    old = first.drop(columns=["first_token_share"]).iloc[::-1]     # a file from before a metric existed
    old.to_csv(tmp_path / "old.csv", index=False)
    back = corpus.read_stats_csv((tmp_path / "old.csv").read_bytes(), name="old.csv")
    assert back["first_token_share"].isna().all() and back["layer"].is_monotonic_increasing
    for bad, message in [(first.drop(columns="n_texts"), "no n_texts column"),
                         (first.iloc[1:], "one row per head"),
                         (first.assign(head=0.5), "whole numbers")]:
        with pytest.raises(corpus.CorpusError, match=message):
            corpus.read_stats_csv(bad.to_csv(index=False).encode(), name="x.csv")


def test_cli_resume_and_one_line_errors(tiny_models, tmp_path, capsys):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(TEXTS[:8] * 3), encoding="utf-8")
    out, state = tmp_path / "m.csv", tmp_path / "m.csv.partial.json"
    calls = []

    def interrupt(progress):
        calls.append(progress)
        if len(calls) == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        batch.corpus_file_stats(path, model=tiny_models["encoder"], batch_size=2, state_path=state,
                                progress=interrupt)
    capsys.readouterr()
    assert cli_main("stats", "--corpus", path, "--model", tiny_models["encoder"], "--out", out) == 2
    assert "add --resume" in capsys.readouterr().err
    assert cli_main("stats", "--corpus", path, "--model", tiny_models["encoder"], "--batch-size", 2,
                    "--resume", "--out", out) == 0
    assert "resuming: " in capsys.readouterr().err and not state.exists()
    resumed = pd.read_csv(out)
    assert cli_main("stats", "--corpus", path, "--model", tiny_models["encoder"], "--out", out) == 0
    pd.testing.assert_frame_equal(resumed, pd.read_csv(out), check_exact=False, atol=1e-9)

    for args, message in [(["--padding-side", "left"], "left padding is for decoder"),
                          (["--engine", "local", "--address", "x:1"], "--address goes with --engine ray"),
                          (["--batch-size", "0"], "at least 1"),
                          (["--kind", "cross"], "encoder models have no cross attention")]:
        code = cli_main("stats", "--corpus", path, "--model", tiny_models["encoder"], *args, "--out", out)
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, err


def test_cli_corpus_with_detectors(tiny_models, tmp_path, capsys):
    path = tmp_path / "c.txt"
    path.write_text("\n".join(TEXTS[:8]), encoding="utf-8")
    out = tmp_path / "d.csv"
    assert cli_main("stats", "--corpus", path, "--model", tiny_models["decoder"], "--detectors", "--out", out) == 0
    table = pd.read_csv(out)
    assert {"previous_token", "duplicate_token", "induction", "sink"} <= set(table.columns)
    assert (table["n_texts"] == 8).all() and len(table) == 2 * 4
    capsys.readouterr()
    missing = tmp_path / "e.csv"
    assert cli_main("stats", "--corpus", path, "--model", tiny_models["encoder"], "--detectors", "--out", missing) == 2
    assert "needs --text" in capsys.readouterr().err
    assert not missing.exists() and not Path(f"{missing}.partial.json").exists()


# ------------------------------------------------------------------ Ray

def _independent_mean(model_dir: str, texts: list[str]) -> pd.DataFrame:
    """Plain transformers, one text at a time, no padding, loop-free metrics from viz.stats on numpy."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    total = None
    for text in texts:
        enc = tok(text, return_tensors="pt", return_special_tokens_mask=True)
        with torch.no_grad():
            att = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                        output_attentions=True).attentions
        pattern = torch.stack([a[0] for a in att]).double().numpy()
        special = enc["special_tokens_mask"][0].numpy().astype(bool)
        tokens = tok.convert_ids_to_tokens(enc["input_ids"][0])
        punct = np.array([stats.is_punctuation(t) for t in tokens]) & ~special
        frame = stats.head_metrics(pattern, special=special, punct=punct)
        total = frame if total is None else total.add(frame)
    return total / len(texts)


def test_ray_engine_matches_local_and_an_independent_computation(tiny_models, tmp_path):
    """`--engine ray` on a local Ray with 2 workers, as a person runs it (a real process)."""
    texts = [TEXTS[k % 8] + " the dog" * (k % 4) for k in range(30)]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in texts), encoding="utf-8")
    env = dict(os.environ, HF_HUB_OFFLINE="1", VIZ_TORCH_THREADS="1")
    out = {}
    for engine in ("ray", "local"):
        out[engine] = tmp_path / f"{engine}.csv"
        p = subprocess.run([sys.executable, "-m", "viz", "stats", "--corpus", str(path), "--model",
                            tiny_models["encoder"], "--batch-size", "2", "--engine", engine, "--workers", "2",
                            "--out", str(out[engine])] if engine == "ray" else
                           [sys.executable, "-m", "viz", "stats", "--corpus", str(path), "--model",
                            tiny_models["encoder"], "--batch-size", "2", "--out", str(out[engine])],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
        assert p.returncode == 0, p.stderr
        assert "30 / 30 texts" in p.stderr
    ray_table, local_table = pd.read_csv(out["ray"]), pd.read_csv(out["local"])
    assert (ray_table["n_texts"] == 30).all()
    np.testing.assert_allclose(ray_table[list(stats.METRICS)].to_numpy(), local_table[list(stats.METRICS)].to_numpy(),
                               atol=1e-6, rtol=0)
    expected = _independent_mean(tiny_models["encoder"], texts)
    np.testing.assert_allclose(ray_table[list(stats.METRICS)].to_numpy(), expected[list(stats.METRICS)].to_numpy(),
                               atol=1e-6, rtol=0)
