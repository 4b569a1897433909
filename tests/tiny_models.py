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


FAMILIES = ("encoder", "decoder", "encoder-decoder", "t5")
