"""Generation step by step against transformers' own generate(); GQA labels; the embedded LLM's loading.

Most tests use the tiny random Llama with grouped-query attention (4 query heads, 2 KV heads, a
chat template); a few use the embedded SmolLM2-135M-Instruct where the real thing matters.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from viz.capture import InputError, capture
from viz.generation import GeneratedToken, generate
from viz.models import load_model
from viz.result import head_label, kv_heads

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "the cat sat on the mat because it was"


@pytest.fixture(scope="module")
def llama(tiny_models):
    return load_model(tiny_models["llama"])


def reference_generate(loaded, ids: list[int], n: int):
    """transformers' generate(), greedy, with every step's attentions and raw logits."""
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        return loaded.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                     max_new_tokens=n, do_sample=False, output_attentions=True,
                                     output_logits=True, return_dict_in_generate=True)


def check_against_generate(loaded, result, n: int):
    """Same tokens, same top-k probabilities, and generate's per-step attentions == rows of the full pass."""
    prompt = [int(i) for i in result.tokens.token_ids[:result.n_prompt]]
    ref = reference_generate(loaded, prompt, n)
    ref_new = ref.sequences[0, len(prompt):].tolist()
    assert result.step_ids.tolist() == ref_new
    assert result.n_steps == len(ref.logits) == len(ref_new)
    for step, logits in enumerate(ref.logits):
        probs = torch.softmax(logits[0].float(), dim=-1).numpy()
        order = np.argsort(-probs, kind="stable")[: result.top_ids.shape[1]]
        np.testing.assert_allclose(result.top_probs[step], probs[order], atol=1e-6)
        np.testing.assert_allclose(result.top_probs[step], probs[result.top_ids[step]], atol=1e-6)
        assert result.step_probs[step] == pytest.approx(probs[ref_new[step]], abs=1e-6)
    worst = 0.0
    for step, layers in enumerate(ref.attentions):
        for layer, att in enumerate(layers):
            att = att[0].numpy()                              # (H, rows this step, keys so far)
            rows, keys = att.shape[1:]
            last = result.n_prompt - 1 + step                 # the query that chose step's token
            mine = result.attentions[layer, :, last - rows + 1: last + 1, :keys]
            worst = max(worst, float(np.abs(mine - att).max()))
            np.testing.assert_allclose(result.step_attention(step)[layer], att[:, -1], atol=1e-5)
    assert worst <= 1e-5
    np.testing.assert_allclose(result.attentions.sum(-1), 1.0, atol=1e-5)
    assert np.allclose(np.triu(result.attentions, k=1), 0.0)


@pytest.mark.parametrize("chat", [False, True])
def test_greedy_matches_transformers_generate(llama, chat):
    result = generate(PROMPT, llama, max_new_tokens=12, chat=chat, top_k=7)
    assert result.top_ids.shape == result.top_probs.shape == (result.n_steps, 7)
    assert result.top_probs.dtype == np.float32 and result.attentions.dtype == np.float32
    assert result.attentions.shape == (2, 4, result.n_prompt + result.n_steps, result.n_prompt + result.n_steps)
    check_against_generate(llama, result, 12)
    assert result.tokens.tokens == tuple(llama.tokenizer.convert_ids_to_tokens(result.tokens.token_ids.tolist()))
    assert result.completion == llama.tokenizer.decode(result.step_ids.tolist(), skip_special_tokens=True)


def test_plain_prompt_tokens_are_the_tokenizers(llama):
    result = generate(PROMPT, llama, max_new_tokens=3)
    assert result.tokens.token_ids[:result.n_prompt].tolist() == llama.tokenizer(PROMPT)["input_ids"]
    assert not result.template.any() and not result.chat
    assert result.query_pos(0) == result.n_prompt - 1
    assert result.step_attention(0).shape == (2, 4, result.n_prompt)


def test_chat_template_tokens_marked_special(llama):
    result = generate(PROMPT, llama, max_new_tokens=4, chat=True)
    tok = llama.tokenizer
    expected = tok.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                       tokenize=True)["input_ids"]
    assert result.tokens.token_ids[:result.n_prompt].tolist() == list(expected)
    template = result.template[:result.n_prompt]
    user = ~template
    # The user's tokens are exactly the plain tokenization of the prompt; everything else
    # (markers, role names, newlines, the default system prompt) is the template's.
    assert result.tokens.token_ids[:result.n_prompt][user].tolist() == tok(PROMPT)["input_ids"]
    assert tok.decode(result.tokens.token_ids[:result.n_prompt][template].tolist()).startswith(
        "<|im_start|>system\nyou are a small cat<|im_end|>")
    assert (result.tokens.special[:result.n_prompt] == template).all()
    assert not result.template[result.n_prompt:].any()
    assert result.tokens.labels[0] == "<|im_start|>" and "Ġ" not in "".join(result.tokens.labels)


def test_sampling_reproducible_by_seed(llama):
    runs = [generate(PROMPT, llama, max_new_tokens=10, sample=True, seed=s, temperature=1.5) for s in (1, 1, 2, 3)]
    assert runs[0].step_ids.tolist() == runs[1].step_ids.tolist()
    assert len({tuple(r.step_ids.tolist()) for r in runs}) >= 2      # other seeds, other tokens
    greedy = generate(PROMPT, llama, max_new_tokens=10)
    # The displayed top-k stays the temperature-1 softmax, whatever sampling chose.
    np.testing.assert_allclose(runs[0].top_probs[0], greedy.top_probs[0], atol=1e-6)
    cold = generate(PROMPT, llama, max_new_tokens=10, sample=True, seed=5, temperature=1e-4)
    assert cold.step_ids.tolist() == greedy.step_ids.tolist()         # temperature -> 0 is greedy


def test_top_p_keeps_draws_in_the_nucleus(llama):
    """Every sampled token lies in the top-p nucleus computed by transformers' TopPLogitsWarper."""
    from transformers.generation.logits_process import TopPLogitsWarper
    result = generate(PROMPT, llama, max_new_tokens=12, sample=True, seed=11, top_p=0.2)
    warper = TopPLogitsWarper(top_p=0.2)
    ids = result.tokens.token_ids.tolist()
    with torch.no_grad():
        logits = llama.model(input_ids=torch.tensor([ids])).logits[0].float()
    for step, token in enumerate(result.step_ids):
        row = logits[result.query_pos(step)].unsqueeze(0)
        allowed = torch.isfinite(warper(torch.tensor([ids[:result.query_pos(step) + 1]]), row.clone()))[0]
        assert allowed[int(token)], step
        assert allowed.sum() < row.shape[-1] / 2          # the nucleus really is a restriction here


def test_branch_forces_a_token_and_continues_greedily(llama):
    base = generate(PROMPT, llama, max_new_tokens=10)
    alt = int(base.top_ids[3][1])
    branched = generate(PROMPT, llama, max_new_tokens=10, forced=base.branch(3, alt))
    assert branched.step_ids[:3].tolist() == base.step_ids[:3].tolist()
    assert branched.step_ids[3] == alt
    assert branched.forced.tolist()[:4] == [True] * 4 and not branched.forced[4:].any()
    # From the branch on it is greedy again: the same as generate() continuing prompt + prefix + alt.
    prefix = base.tokens.token_ids[:base.n_prompt].tolist() + branched.step_ids[:4].tolist()
    ref = reference_generate(llama, prefix, branched.n_steps - 4)
    assert branched.step_ids[4:].tolist() == ref.sequences[0, len(prefix):].tolist()
    # A forced prefix (list form) and {step: id} give the same run.
    as_prefix = generate(PROMPT, llama, max_new_tokens=10, forced=branched.step_ids[:4].tolist())
    assert as_prefix.step_ids.tolist() == branched.step_ids.tolist()
    sampled = generate(PROMPT, llama, max_new_tokens=10, sample=True, seed=4)
    sampled_branch = generate(PROMPT, llama, max_new_tokens=10, sample=True, seed=4,
                              forced=sampled.branch(2, int(sampled.top_ids[2][-1])))
    assert sampled_branch.step_ids[:2].tolist() == sampled.step_ids[:2].tolist()
    assert sampled_branch.step_ids[2] == sampled.top_ids[2][-1]


def test_stops_at_eos(llama):
    eos = llama.tokenizer.eos_token_id
    result = generate(PROMPT, llama, max_new_tokens=10, forced={2: eos})
    assert result.n_steps == 3 and result.step_ids[-1] == eos and result.stop == "eos"
    assert result.tokens.special[-1]
    full = generate(PROMPT, llama, max_new_tokens=5, forced={})
    assert full.stop in ("length", "eos") and full.n_steps <= 5


def test_streams_tokens_as_they_come(llama):
    seen: list[GeneratedToken] = []
    result = generate(PROMPT, llama, max_new_tokens=6, on_token=seen.append)
    assert [t.step for t in seen] == list(range(result.n_steps))
    assert [t.token_id for t in seen] == result.step_ids.tolist()
    assert [t.prob for t in seen] == pytest.approx(result.step_probs.tolist())


def test_prompt_cut_to_leave_room_for_new_tokens(llama):
    limit = llama.info.max_length                    # 64 for the tiny model
    text = " ".join(["the cat sat on the mat"] * 30)
    full_ids = llama.tokenizer(text)["input_ids"]
    result = generate(text, llama, max_new_tokens=20)
    assert result.n_prompt == limit - 20 and result.truncated == len(full_ids) - (limit - 20)
    assert result.tokens.token_ids[:result.n_prompt].tolist() == full_ids[-(limit - 20):]   # the end is kept
    assert "cut" in result.notice and str(result.truncated) in result.notice
    chat = generate(text, llama, max_new_tokens=20, chat=True)
    assert chat.n_prompt == limit - 20 and chat.tokens.tokens[0] == "<|im_start|>"   # the template stays
    assert chat.tokens.tokens[chat.n_prompt - 1] == "Ċ" and chat.template[chat.n_prompt - 5:chat.n_prompt].all()


def test_refuses_what_it_cannot_do(llama, tiny_models):
    with pytest.raises(InputError, match="decoder"):
        generate("the cat", tiny_models["encoder"])
    with pytest.raises(InputError, match="between 1 and 64"):
        generate("the cat", llama, max_new_tokens=65)
    with pytest.raises(InputError, match="chat template"):
        generate("the cat", tiny_models["decoder"], chat=True)
    with pytest.raises(InputError, match="empty"):
        generate("   ", llama)
    with pytest.raises(InputError, match="vocabulary"):
        generate("the cat", llama, forced={0: 10 ** 6})


def test_gpt2_family_matches_generate(tiny_models):
    loaded = load_model(tiny_models["decoder"])
    result = generate("the cat sat on the", loaded, max_new_tokens=8)
    check_against_generate(loaded, result, 8)
    assert result.kv_head.tolist() == [0, 1, 2, 3]


# ---------------------------------------------------------------- grouped-query attention
def test_kv_head_and_labels(llama, tiny_models):
    assert llama.info.n_kv_heads == 2
    r = capture(PROMPT, model=llama, internals=True)
    assert r.kv_head.tolist() == r.block().kv_head.tolist() == [0, 0, 1, 1]
    # Independent of the formula: heads that read one KV head see identical keys and values.
    for layer in range(2):
        rec = r.internals[("decoder", layer)]
        for h in range(4):
            for g in range(4):
                same = np.array_equal(rec.key[h], rec.key[g]) and np.array_equal(rec.value[h], rec.value[g])
                assert same == (r.kv_head[h] == r.kv_head[g]), (layer, h, g)
    assert [head_label(h, r.kv_head) for h in range(4)] == ["head 0 · KV 0", "head 1 · KV 0",
                                                            "head 2 · KV 1", "head 3 · KV 1"]
    plain = capture("the cat", model=tiny_models["decoder"])
    assert plain.kv_head.tolist() == [0, 1, 2, 3] and head_label(3, plain.kv_head) == "head 3"
    assert head_label(4, kv_heads(9, 3)) == "head 4 · KV 1" and head_label(4, None) == "head 4"
    assert kv_heads(9, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError):
        kv_heads(9, 2)


def cli_main(*args) -> int:
    """The CLI in-process (same code path as `python -m viz`, without paying the torch import again)."""
    from viz.cli import main
    return main(list(args))


def run_cli(*args, timeout=300):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "viz", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_cli_generate_npz_and_capture_kv_head(llama, tiny_models, tmp_path):
    out = tmp_path / "g.npz"
    p = run_cli("generate", "--text", PROMPT, "--model", tiny_models["llama"], "--max-new-tokens", "6",
                "--top-k", "4", "--out", str(out))
    assert p.returncode == 0, p.stderr
    d = np.load(out)
    api = generate(PROMPT, llama, max_new_tokens=6, top_k=4)
    t = int(d["n_prompt"]) + len(d["step_ids"])
    assert d["attentions"].shape == (2, 4, t, t) and d["attentions"].dtype == np.float32
    assert d["tokens"].tolist() == list(api.tokens.tokens)
    assert d["step_ids"].tolist() == api.step_ids.tolist() and int(d["n_prompt"]) == api.n_prompt
    assert d["top_ids"].shape == (api.n_steps, 4) and d["top_probs"].dtype == np.float32
    np.testing.assert_allclose(d["top_probs"], api.top_probs, atol=1e-6)
    np.testing.assert_allclose(d["attentions"], api.attentions, atol=1e-6)
    assert d["kv_head"].tolist() == [0, 0, 1, 1] and int(d["truncated"]) == 0
    assert p.stdout.strip() == api.completion.strip()
    check_against_generate(llama, api, 6)

    cap = tmp_path / "c.npz"
    assert cli_main("capture", "--text", PROMPT, "--model", tiny_models["llama"], "--out", str(cap)) == 0
    assert np.load(cap)["kv_head"].tolist() == [0, 0, 1, 1]
    chat = tmp_path / "chat.npz"
    assert cli_main("generate", "--text", PROMPT, "--model", tiny_models["llama"], "--chat", "--sample", "--seed", "3",
                    "--temperature", "0.8", "--top-p", "0.9", "--max-new-tokens", "5", "--out", str(chat)) == 0
    d = np.load(chat)
    again = generate(PROMPT, llama, max_new_tokens=5, chat=True, sample=True, seed=3, temperature=0.8, top_p=0.9)
    assert d["step_ids"].tolist() == again.step_ids.tolist() and d["template"][0]


def test_cli_generate_refuses_an_encoder(tiny_models, tmp_path, capsys):
    assert cli_main("generate", "--text", "the cat", "--model", tiny_models["encoder"],
                    "--out", str(tmp_path / "x.npz")) == 2
    err = capsys.readouterr().err
    assert "decoder" in err and "Traceback" not in err and not (tmp_path / "x.npz").exists()


# ---------------------------------------------------------------- the embedded LLM
def test_embedded_llm_generates_as_transformers_does(embedded_llm):
    info = embedded_llm.info
    assert (info.name, info.family, info.model_type) == ("embedded-llm", "decoder", "llama")
    assert (info.n_layers, info.n_heads, info.n_kv_heads) == (30, 9, 3)
    result = generate("Name three colours of the rainbow.", embedded_llm, max_new_tokens=6, chat=True)
    check_against_generate(embedded_llm, result, 6)
    assert result.kv_head.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # SmolLM2's template adds a default system prompt: on screen, and marked as the template's.
    prompt_text = embedded_llm.tokenizer.decode(result.tokens.token_ids[:result.n_prompt][result.template[:result.n_prompt]])
    assert "You are a helpful AI assistant named SmolLM" in prompt_text
    user = result.tokens.token_ids[:result.n_prompt][~result.template[:result.n_prompt]]
    assert embedded_llm.tokenizer.decode(user) == "Name three colours of the rainbow."


def test_embedded_llm_conversion_is_atomic_and_runs_once(tmp_path, monkeypatch):
    """Two loads at once: one converts, the other waits and then reads the finished copy."""
    from viz import embedded
    monkeypatch.setenv("VIZ_CACHE_DIR", str(tmp_path))
    calls, seen = [], []

    def slow_convert(gguf, out, report):
        calls.append(out)
        out.mkdir(parents=True)
        for name in ("config.json", "tokenizer.json"):
            (out / name).write_text("{}")
            time.sleep(0.3)                              # a reader must never see this half-written folder
            seen.append(embedded.embedded_llm_ready())
        (out / "model.safetensors").write_bytes(b"x")
        report(0.98, "saved")

    monkeypatch.setattr(embedded, "_convert_gguf", slow_convert)
    messages: list[list] = [[], []]
    results = [None, None]

    def load(k):
        results[k] = embedded.embedded_llm_dir(progress=lambda f, m: messages[k].append((f, m)))

    threads = [threading.Thread(target=load, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
        time.sleep(0.05)
    for th in threads:
        th.join(10)
    assert len(calls) == 1 and results[0] == results[1] == embedded.embedded_llm_target()
    assert not any(seen)                                  # never complete before the rename
    assert results[0].parent == tmp_path and results[0].name.startswith("SmolLM2-135M-Instruct-")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert any("waiting" in m for _, m in messages[1]) and messages[1][-1][0] == 1.0
    assert embedded.embedded_llm_dir() == results[0]      # later calls find it at once


def test_internals_of_the_generated_sequence(llama):
    """internals=True records q/k/v/scores in the final pass, as a capture of the finished text would."""
    result = generate(PROMPT, llama, max_new_tokens=4, internals=True)
    for layer in range(2):
        rec = result.attention.internals[("decoder", layer)]
        np.testing.assert_allclose(rec.pattern, result.attentions[layer], atol=1e-6)
        masked = np.where(rec.mask, rec.scores, -np.inf)
        soft = np.exp(masked - masked.max(-1, keepdims=True))
        np.testing.assert_allclose(soft / soft.sum(-1, keepdims=True), rec.pattern, atol=1e-5)
