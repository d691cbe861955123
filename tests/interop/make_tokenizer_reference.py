#!/usr/bin/env python3
"""Reference tokenizations for Mosaic's tokenizer tests (tests/interop/clip_tokenizer_test.cc).

CLIP: builds a small byte-level BPE vocabulary locally (no training, nothing downloaded): the
512-symbol byte alphabet (with and without "</w>") plus merges that spell out a word list
left to right, writes vocab.json + merges.txt to OUT/clip-tokenizer, loads them with
transformers' CLIPTokenizer.from_pretrained and records its ids for a varied corpus in
OUT/clip-tokenizer/expected.json (full ids without specials, and padded/truncated to 16).

Llama: trains a small sentencepiece BPE model with Llama's settings (byte fallback, split
digits, dummy prefix, identity normalization) on the same words, saves it as
OUT/llama-tokenizer/tokenizer.model and records transformers' LlamaTokenizer ids.

  python3 tests/interop/make_tokenizer_reference.py OUT
"""
import json
import os
import sys

import io

import sentencepiece as spm
from transformers import CLIPTokenizer, LlamaTokenizer

SEQ_LEN = 16

WORDS = """a photo of the cat dog on in and is it to red blue green circle square top left right
bottom small large picture painting i'm don't they'll we've you're she'd it's can't hello world
café naïve résumé σοφία οδος istanbul 日本 語 über straße 2024 3 14 mosaic clip token bpe
!! ... ?! :) -- @@ ## "" ''""".split()

CORPUS = [
    "a photo of a cat",
    "A Photo Of The CAT on the Mat",
    "I'm sure they'll say it's fine, don't you think? We've gone; you're late; she'd know.",
    "'s's 'tis O'Neil's 'LL ''quoted'' !'s",
    "Hello,   world!!!   ...and\tthen\nnew\r\nlines",
    "tabs\t\tand\u00a0no-break\u3000ideographic\u2003em\u2028line separators",
    "caf\u00e9 vs cafe\u0301 (NFC composes the second)",
    "NA\u00cfVE r\u00e9sum\u00e9 \u00dcBER STRA\u00dfE",
    "\u039f\u0394\u039f\u03a3 \u03c3\u03bf\u03c6\u03af\u03b1 \u03a3\u03a3\u03a3",
    "\u0130stanbul \u0130I\u0131i",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002",
    "\u0939\u093f\u0928\u094d\u0926\u0940 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u0663\u0664",
    "emoji \U0001f642\U0001f44d\U0001f3fd and \u2764\ufe0f \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "numbers 2024, 3.14159, \u00bd \u216b \u2460 x\u00b2",
    "zero\u200bwidth soft\u00adhyphen",
    "<|startoftext|>a cat<|endoftext|> dog <|ENDOFTEXT|> a<|endoftext|>b",
    "mosaic-clip_token/bpe@2024 #tag $5 50% a&b",
    "",
    "     ",
    "x",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 12),
    "".join(chr(c) for c in range(0x20, 0x7f)),
    "control\x00\x01\x7f chars",
    " a photo of a cat",
    " ",
    "  hello  world  ",
    " \u65e5\u672c \u8a9e",
    "\u2581a literal metaspace",
    " \u2581a",
    "\ta tab first",
]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_vocab_and_merges():
    """The byte alphabet (with and without "</w>"), merges spelling out WORDS, the specials."""
    b2u = bytes_to_unicode()
    alphabet = [b2u[b] for b in range(256)]
    vocab = {}
    for s in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(s, len(vocab))
    merges = []
    for word in WORDS:
        symbols = [b2u[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            if pair not in merges:
                merges.append(pair)
            symbols = [symbols[0] + symbols[1]] + symbols[2:]
            vocab.setdefault(symbols[0], len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def write_tokenizer_files(folder, vocab, merges):
    """vocab.json + merges.txt, as in a Hugging Face CLIP folder."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


def main():
    out = os.path.join(sys.argv[1], "clip-tokenizer")
    vocab, merges = build_vocab_and_merges()
    write_tokenizer_files(out, vocab, merges)
    tok = CLIPTokenizer.from_pretrained(out)
    expected = []
    for text in CORPUS:
        full = tok(text, add_special_tokens=False)["input_ids"]
        padded = tok(text, max_length=SEQ_LEN, truncation=True, padding="max_length")["input_ids"]
        expected.append({"text": text, "ids": full, "ids_%d" % SEQ_LEN: padded})
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"seq_len": SEQ_LEN, "cases": expected}, f, ensure_ascii=False, indent=1)
    make_llama(os.path.join(sys.argv[1], "llama-tokenizer"))


def make_llama(out):
    os.makedirs(out, exist_ok=True)
    sentences = WORDS + CORPUS[:14] * 3 + ["the quick brown fox jumps over the lazy dog"] * 20
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=600, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, character_coverage=0.9995, num_threads=1, minloglevel=2)
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    tok = LlamaTokenizer.from_pretrained(out)
    cases = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in CORPUS]
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
