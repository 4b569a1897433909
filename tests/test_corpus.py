"""Corpus mode (viz.corpus): reading files, caps, mean metrics, progress and stop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from viz import corpus, stats
from viz.result import Block, TokenSeq


def _seq(n):
    special = np.zeros(n, dtype=bool)
    special[0] = True
    return TokenSeq(tuple(f"t{i}" for i in range(n)), tuple(f"t{i}" for i in range(n)),
                    np.arange(n, dtype=np.int64), special, np.arange(n) - 1, np.zeros(n, dtype=np.int64))


def fake_run(text):
    """'self ...' texts -> one identity head; anything else -> one uniform head, T = 4."""
    if text == "boom":
        raise ValueError("The text is empty: type a sentence")
    t = 4
    head = np.eye(t) if text.startswith("self") else np.full((t, t), 1 / t)
    return Block("encoder", head[None, None], _seq(t), _seq(t), False)


# ------------------------------------------------------------------ reading

def test_read_txt_one_text_a_line(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("First text.\n\n  Second text.  \r\nThird\n", encoding="utf-8")
    c = corpus.read_corpus(path)
    assert c.texts == ("First text.", "Second text.", "Third")
    assert c.source == "c.txt" and not c.capped and c.message is None


def test_read_csv_with_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('id,sentence\n1,"Hello, world."\n2,\n3,Bye\n', encoding="utf-8")
    assert corpus.csv_columns(path) == ["id", "sentence"]
    assert corpus.read_corpus(path, column="sentence").texts == ("Hello, world.", "Bye")
    with pytest.raises(corpus.CorpusError, match="pick the one holding the texts: id, sentence"):
        corpus.read_corpus(path)
    with pytest.raises(corpus.CorpusError, match="no column 'text'"):
        corpus.read_corpus(path, column="text")


def test_read_uploaded_bytes():
    c = corpus.read_corpus("text\nalpha\nbeta\n".encode(), name="up.csv")
    assert c.texts == ("alpha", "beta")        # a single column is taken as is
    assert corpus.read_corpus(b"\xef\xbb\xbfone\ntwo", name="u.txt").texts == ("one", "two")


def test_cap_on_number_of_texts_keeps_the_first_and_says_so():
    data = "\n".join(f"text {i}" for i in range(12)).encode()
    c = corpus.read_corpus(data, name="big.txt", max_texts=5)
    assert c.texts == tuple(f"text {i}" for i in range(5))
    assert c.capped and c.total == 12
    assert c.message == "big.txt has 12 texts; only the first 5 are used (the corpus limit is 5 texts)."


@pytest.mark.parametrize("data,name,message", [
    (b"x" * 2000, "huge.txt", "huge.txt is 0.0 MB; corpus files are limited to 0.0 MB"),
    (b"a\nb", "notes.docx", "must be a .txt file"),
    (b"\xff\xfe\x00bad", "latin.txt", "not UTF-8"),
    (b"\n \n", "blank.txt", "holds no texts"),
    (b"", "empty.csv", "not a readable CSV"),
])
def test_bad_corpus_files_get_one_clear_message(data, name, message):
    with pytest.raises(corpus.CorpusError, match=message):
        corpus.read_corpus(data, name=name, max_bytes=1000)


def test_missing_file(tmp_path):
    with pytest.raises(corpus.CorpusError, match="No corpus file"):
        corpus.read_corpus(tmp_path / "nope.txt")


def test_sample_corpus_is_shipped_and_varied():
    c = corpus.sample_corpus()
    assert 200 <= len(c.texts) <= c.max_texts and not c.capped
    assert len(set(c.texts)) == len(c.texts)
    assert sum(t.endswith("?") for t in c.texts) >= 20          # questions
    assert sum('"' in t for t in c.texts) >= 10                 # quotes
    assert sum(any(ch.isdigit() for ch in t) for t in c.texts) >= 15   # numbers
    pool = corpus.word_pool()
    assert "because" in pool and all(w.isalpha() and w.islower() for w in pool)


# ------------------------------------------------------------------ mean metrics

def test_corpus_metrics_mean_progress_and_failures():
    calls = []
    result = corpus.corpus_metrics(["self a", "other", "boom", "self b"], fake_run,
                                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert (result.n_done, result.n_total, result.stopped) == (4, 4, False)
    assert result.failed == ("text 3: The text is empty: type a sentence",)
    row = result.table.iloc[0]
    assert list(result.table.columns) == ["layer", "head", *stats.METRICS, "n_texts"]
    assert row["n_texts"] == 3
    # two identity texts and one uniform text, each weighing one third
    assert row["entropy"] == pytest.approx(math.log(4) / 3)
    assert row["self_share"] == pytest.approx((1 + 1 + 0.25) / 3)
    assert row["confidence"] == pytest.approx((1 + 1 + 0.25) / 3)
    assert row["special_share"] == pytest.approx((0.25 + 0.25 + 0.25) / 3)
    assert row["mean_distance"] == pytest.approx((0 + 0 + 1.25) / 3)


def test_corpus_metrics_stop_flag_and_resume():
    acc = corpus.MetricAccumulator()
    seen = []

    def run(text):
        seen.append(text)
        return fake_run(text)

    first = corpus.corpus_metrics(["self", "other", "self"], run,
                                  should_stop=lambda: len(seen) >= 2, into=acc)
    assert first.stopped and first.n_done == 2 and seen == ["self", "other"]
    assert first.table.loc[0, "self_share"] == pytest.approx((1 + 0.25) / 2)
    rest = corpus.corpus_metrics(["self"], fake_run, into=acc)
    assert rest.table.loc[0, "n_texts"] == 3
    assert rest.table.loc[0, "self_share"] == pytest.approx((1 + 0.25 + 1) / 3)


def test_corpus_metrics_nothing_analysed():
    with pytest.raises(corpus.CorpusError, match="No text"):
        corpus.corpus_metrics(["boom"], fake_run)


def test_corpus_metrics_on_a_small_file_with_the_embedded_model(tmp_path):
    from viz import capture
    path = tmp_path / "small.txt"
    path.write_text("The cat sat on the mat.\nWhere did you put the keys?\n", encoding="utf-8")
    texts = corpus.read_corpus(path).texts
    result = corpus.corpus_metrics(texts, lambda t: capture.capture(t).block())
    per_text = [stats.head_metrics(capture.capture(t).block()) for t in texts]
    expected = (per_text[0]["prev_share"] + per_text[1]["prev_share"]) / 2
    assert len(result.table) == 6 * 12
    assert np.allclose(result.table["prev_share"], expected, atol=1e-6)
