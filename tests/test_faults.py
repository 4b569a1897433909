"""Broken models: each gives one clear line, and the app keeps serving everyone else.

The broken models are copies of the tiny models (tests/tiny_models.py) in a
temp dir, damaged one way each: weights that do not fit the config, a missing
folder, corrupted or truncated weights, no tokenizer files at all, a tokenizer
with no fast version (and one whose files are missing), a model with no attention
to capture.
"""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from viz import capture as capture_module
from viz.capture import capture
from viz.models import ModelError, load_model


def _copy(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def broken(tiny_models, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken-models")
    enc = tiny_models["encoder"]
    out: dict[str, Path] = {}

    d = out["weights-do-not-fit"] = _copy(enc, root / "mismatch")
    _edit_json(d / "config.json", hidden_size=48, intermediate_size=96)

    d = out["unknown-architecture"] = _copy(enc, root / "unknown-type")
    _edit_json(d / "config.json", model_type="no-such-architecture")

    d = out["config-not-json"] = _copy(enc, root / "bad-json")
    (d / "config.json").write_text("{this is not json")

    out["missing-folder"] = root / "not-here"

    d = out["corrupted-weights"] = _copy(enc, root / "corrupted")
    (d / "model.safetensors").write_bytes(b"\x00garbage\xff" * 64)

    d = out["truncated-weights"] = _copy(enc, root / "truncated")
    weights = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(weights[: len(weights) // 2])

    d = out["no-weights"] = _copy(enc, root / "no-weights")
    (d / "model.safetensors").unlink()

    # Weights and config but no tokenizer files: transformers would build an empty vocabulary.
    d = out["no-tokenizer-files"] = _copy(enc, root / "no-tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (d / name).unlink()

    # A tokenizer class with no fast (Rust) version whose vocabulary files are missing.
    d = out["slow-tokenizer-missing-files"] = _copy(enc, root / "slow-missing")
    (d / "tokenizer.json").unlink()
    (d / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CTRLTokenizer"}))

    # The same class with its files: a slow (Python) tokenizer that must still work.
    d = out["slow-tokenizer"] = _copy(enc, root / "slow")
    vocab = json.loads((d / "tokenizer.json").read_text())["model"]["vocab"]
    (d / "tokenizer.json").unlink()
    (d / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CTRLTokenizer", "unk_token": "[UNK]", "model_max_length": 64}))
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\nt h\nth e\nc a\nca t\n")

    # A model with no attention at all (a state-space model): nothing to capture.
    import torch
    from transformers import MambaConfig, MambaModel
    torch.manual_seed(0)
    d = out["no-attention"] = root / "no-attention"
    MambaModel(MambaConfig(vocab_size=200, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2,
                           conv_kernel=2, time_step_rank=2)).save_pretrained(d)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_models["decoder"]) / name, d / name)
    return out


# fault -> words the one-line message must contain (it names what is wrong, not a library's internals only)
EXPECTED = {
    "weights-do-not-fit": "do not fit its config.json",
    "unknown-architecture": "does not recognize this architecture",
    "config-not-json": "not a valid JSON",
    "missing-folder": "No model folder",
    "corrupted-weights": "weights file is damaged or incomplete",
    "truncated-weights": "weights file is damaged or incomplete",
    "no-weights": "has no weights file",
    "no-tokenizer-files": "vocabulary files are missing",
    "slow-tokenizer-missing-files": "vocabulary files are missing",
    "no-attention": "attention",
}


def _run_slot_is_free() -> bool:
    """The forward-pass semaphore was released (a failure must not block the class)."""
    if capture_module._RUNS.acquire(blocking=False):
        capture_module._RUNS.release()
        return True
    return False


@pytest.mark.parametrize("fault", sorted(EXPECTED))
def test_api_fault_is_one_clear_line(broken, fault):
    with pytest.raises(ModelError) as info:
        capture("the cat sat on the mat", model=str(broken[fault]))
    message = str(info.value)
    assert EXPECTED[fault] in message
    assert "\n" not in message and "Traceback" not in message and 0 < len(message) <= 400
    assert _run_slot_is_free()


def test_slow_tokenizer_still_works(broken):
    loaded = load_model(str(broken["slow-tokenizer"]))
    assert not loaded.tokenizer.is_fast
    result = capture("the cat sat", model=loaded)
    assert len(result.tokens) >= 3  # no special tokens here: CTRL adds none
    assert len(result.tokens.word_ids) == len(result.tokens) and result.attentions.shape[-1] == len(result.tokens)
    np.testing.assert_allclose(result.attentions.sum(-1), 1, atol=1e-5)


def test_fault_next_to_a_good_run_in_threads(broken):
    """One student's broken model must not stop another student's run."""
    good = load_model(None)
    results, errors = [], []

    def bad(fault):
        try:
            capture("the cat", model=str(broken[fault]))
        except ModelError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=bad, args=(f,)) for f in ("no-attention", "corrupted-weights")]
    threads.append(threading.Thread(target=lambda: results.append(capture("A good sentence.", model=good))))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(errors) == 2 and len(results) == 1
    assert results[0].tokens.tokens[1] == "a"
    assert _run_slot_is_free()


def _messages(at) -> list[str]:
    return [e.value for e in at.error] + [w.value for w in at.warning]


@pytest.mark.parametrize("fault", ["weights-do-not-fit", "corrupted-weights", "missing-folder",
                                   "slow-tokenizer-missing-files", "no-attention"])
def test_app_shows_one_line_and_keeps_serving(app_test, broken, fault):
    at = app_test("pages/heatmap.py", model=str(broken[fault]), text="the cat sat")
    assert not at.exception, at.exception
    shown = _messages(at)
    assert any(EXPECTED[fault] in m for m in shown), shown
    assert all("Traceback" not in m and "\n" not in m.strip() for m in shown)
    # The same server (process) still serves the embedded model to the next student.
    at = app_test("pages/heatmap.py", text="The next student's sentence.")
    assert not at.exception and not _messages(at), _messages(at)
    assert any('id="hm-data"' in el.proto.body for el in at.get("html"))   # the heatmap was drawn
    assert _run_slot_is_free()
