"""The CLI contract: `python -m viz capture ... --out FILE.npz`, bad input exits non-zero without a traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args, timeout=180):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_capture_embedded_npz(tmp_path):
    out = tmp_path / "a.npz"
    p = run_cli("capture", "--text", "The cat sat on the mat.", "--out", str(out))
    assert p.returncode == 0, p.stderr
    d = np.load(out)
    assert list(d["tokens"][:2]) == ["[CLS]", "the"]
    T = len(d["tokens"])
    assert d["attentions"].shape == (6, 12, T, T) and d["attentions"].dtype == np.float32
    assert int(d["truncated"]) == 0
    np.testing.assert_allclose(d["attentions"].sum(-1), 1, atol=1e-5)


def test_capture_truncation_notice(tmp_path):
    out = tmp_path / "long.npz"
    p = run_cli("capture", "--text", "word " * 1000, "--out", str(out))
    assert p.returncode == 0 and "truncated" in p.stderr
    assert int(np.load(out)["truncated"]) == 1002 - 512


def test_capture_encoder_decoder_npz(tmp_path, tiny_models):
    out = tmp_path / "ed.npz"
    p = run_cli("capture", "--text", "the cat sat", "--target", "der hund", "--model",
                tiny_models["encoder-decoder"], "--out", str(out))
    assert p.returncode == 0, p.stderr
    d = np.load(out)
    te, td = len(d["encoder_tokens"]), len(d["decoder_tokens"])
    assert d["cross_attentions"].shape == (2, 4, td, te)
    assert d["decoder_attentions"].shape == (2, 4, td, td) and d["encoder_attentions"].shape == (2, 4, te, te)


def test_capture_pair_and_decoder(tmp_path, tiny_models):
    out = tmp_path / "p.npz"
    assert run_cli("capture", "--text", "the cat", "--pair", "the dog", "--model", tiny_models["encoder"],
                   "--out", str(out)).returncode == 0
    assert list(np.load(out)["tokens"]).count("[SEP]") == 2
    assert run_cli("capture", "--text", "the cat sat", "--model", tiny_models["decoder"],
                   "--out", str(out)).returncode == 0
    a = np.load(out)["attentions"]
    assert np.triu(a[0, 0], 1).max() == 0


@pytest.mark.parametrize("args,message", [
    (["--text", "   "], "empty"),
    (["--text", "hi", "--model", "/no/such/dir"], "No model folder"),
    (["--text", "hi", "--model", "someone/unknown-model"], "reached"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    p = run_cli("capture", *args, "--out", str(tmp_path / "x.npz"))
    assert p.returncode != 0
    assert message in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 3


def test_unwritable_output(tmp_path):
    p = run_cli("capture", "--text", "hi", "--out", str(tmp_path / "missing" / "x.npz"))
    assert p.returncode != 0 and "does not exist" in p.stderr and "Traceback" not in p.stderr
