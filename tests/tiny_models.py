"""Tiny random checkpoints of each family, built locally (the hub is unreachable in tests).

Each is saved with save_pretrained to a directory, with a WordPiece tokenizer
trained by the `tokenizers` library, and then loaded through the same public
path (viz.models.load_model) that a user's local folder takes.
"""
from __future__ import annotations

from pathlib import Path

WORDS = ("the a an cat dog animal street road mat sat on in it was too tired wide because didn t cross "
         "keys to cabinet is are big small red blue runs ran quickly . , ! ? ' the quick brown fox jumps "
         "over lazy hello world der die das hund katze ist ein eine und").split()


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {"bert": ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                "gpt2": ["<|endoftext|>", "[UNK]"],
                "seq2seq": ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]}[kind]
    unk = "<unk>" if kind == "seq2seq" else "[UNK]"
    tok = Tokenizer(models.WordPiece(unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    corpus = [" ".join(WORDS)] * 3 + ["the animal didn't cross the street because it was too tired",
                                      "the keys to the cabinet are on the table"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    if kind == "bert":
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                       cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                       model_max_length=64)
    if kind == "gpt2":
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<|endoftext|>",
                                       eos_token="<|endoftext|>", model_max_length=48)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", mask_token="<mask>", model_max_length=40)


# ChatML with a default system prompt, as SmolLM2's template has: the template's own
# tokens (markers, role names, newlines, the system prompt) are part of the input.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nyou are a small cat<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _bpe_tokenizer():
    """A byte-level BPE tokenizer (as Llama-3, Qwen, SmolLM use) with ChatML specials and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS)] * 3 + ["the animal didn't cross the street because it was too tired",
                                      "the keys to the cabinet are on the table", "system\nuser\nassistant\n"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   unk_token="<|endoftext|>", pad_token="<|im_end|>", model_max_length=64)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build(family: str, root: Path) -> Path:
    """Build and save one tiny model of ``family``; return its directory."""
    import torch
    from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertModel, GPT2Config,
                              GPT2Model, T5Config, T5ForConditionalGeneration)
    torch.manual_seed(0)
    out = root / family
    if family == "encoder":
        tok = _tokenizer("bert")
        model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=64))
    elif family == "decoder":
        tok = _tokenizer("gpt2")
        model = GPT2Model(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=48,
                                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    elif family == "encoder-decoder":
        tok = _tokenizer("seq2seq")
        model = BartForConditionalGeneration(BartConfig(
            vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=40,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            decoder_start_token_id=tok.eos_token_id, forced_eos_token_id=None))
    elif family == "llama":
        # Grouped-query attention: 4 query heads share 2 key/value heads (0,1 -> 0; 2,3 -> 1).
        from transformers import LlamaConfig, LlamaForCausalLM
        tok = _bpe_tokenizer()
        # A wide initialisation keeps the logits far apart, so greedy choices are not
        # decided by float rounding (a KV-cache step and a full pass round differently).
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.3,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            tie_word_embeddings=False))
    elif family == "t5":
        tok = _tokenizer("seq2seq")
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id))
    else:
        raise ValueError(family)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# "llama": a decoder with grouped-query attention, an LM head and a chat template.
FAMILIES = ("encoder", "decoder", "encoder-decoder", "t5", "llama")
