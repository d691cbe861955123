#!/usr/bin/env python3
"""Loads a folder Mosaic exported (EXPORTED) with transformers, as the class named in its
config.json, and checks it against the folder it came from (ORIGINAL, made by make_reference.py):
same class, every state_dict tensor bit-identical, the same outputs on the reference inputs.

  python3 tests/interop/check_export.py EXPORTED ORIGINAL     # prints "export ok"
  python3 tests/interop/check_export.py EXPORTED              # loads cleanly: "export ok"
"""
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file


def check_whisper(a, original):
    """The exported WhisperEncoder against the encoder of the original folder (whichever Whisper
    class saved it): same tensors, same output; it also loads, strictly, into the original
    model's encoder (how a fine-tuned encoder goes back into WhisperForConditionalGeneration,
    whose decoder Mosaic never read)."""
    with open(os.path.join(original, "config.json")) as f:
        orig_arch = json.load(f)["architectures"][0]
    if orig_arch == "WhisperEncoder":
        b = type(a).from_pretrained(original).eval()
        encoder = b
    else:
        b = getattr(transformers, orig_arch).from_pretrained(original).eval()
        encoder = b.get_encoder() if hasattr(b, "get_encoder") else b.encoder
    sa, sb = a.state_dict(), encoder.state_dict()
    assert sa.keys() == sb.keys(), set(sa.keys()) ^ set(sb.keys())
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ref = load_file(os.path.join(original, "reference.safetensors"))
    with torch.no_grad():
        ha = a(input_features=ref["input.input_features"]).last_hidden_state
        hb = encoder(input_features=ref["input.input_features"]).last_hidden_state
    assert torch.equal(ha, hb)
    assert torch.allclose(ha, ref["out.last_hidden_state"], atol=1e-6)
    encoder.load_state_dict(a.state_dict(), strict=True)
    print("export ok: WhisperEncoder", len(sa), "tensors, loads into", orig_arch)


def main():
    exported = sys.argv[1]
    with open(os.path.join(exported, "config.json")) as f:
        arch = json.load(f)["architectures"][0]
    cls = getattr(transformers, arch, None)
    if arch == "WhisperEncoder":  # not exported at transformers' top level
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as cls
    a, info = cls.from_pretrained(exported, output_loading_info=True)
    a.eval()
    bad = {k: v for k, v in info.items() if v}
    assert not bad, bad
    if len(sys.argv) < 3:
        n = sum(p.numel() for p in a.parameters())
        print("export ok:", arch, n, "parameters, every tensor loaded")
        return
    original = sys.argv[2]
    if arch == "WhisperEncoder":
        check_whisper(a, original)
        return
    b = cls.from_pretrained(original).eval()
    assert type(a) is type(b), (type(a), type(b))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), set(sa.keys()) ^ set(sb.keys())
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ref = load_file(os.path.join(original, "reference.safetensors"))
    with torch.no_grad():
        if arch == "CLIPModel":
            kw = dict(input_ids=ref["input.input_ids"], attention_mask=ref["input.attention_mask"],
                      pixel_values=ref["input.pixel_values"])
            assert torch.equal(a(**kw).logits_per_image, b(**kw).logits_per_image)
        elif arch == "LlavaForConditionalGeneration":
            # Mosaic has no image placeholder id: the export keeps transformers' default, so
            # take the original's, and put the placeholders first (Mosaic's image prefix).
            a.config.image_token_id = b.config.image_token_id
            ids, pixels = ref["input.input_ids"], ref["input.pixel_values"]
            n = ref["out.image_features"].shape[1]
            ids = torch.cat([torch.full((ids.shape[0], n), b.config.image_token_id), ids], 1)
            la = a(input_ids=ids, pixel_values=pixels).logits
            assert torch.equal(la, b(input_ids=ids, pixel_values=pixels).logits)
            assert torch.allclose(la[:, n:], ref["out.logits"], atol=1e-6)
        else:
            ids = ref["input.input_ids"]
            assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)
    print("export ok:", arch, len(sa), "tensors")


if __name__ == "__main__":
    main()
