#!/usr/bin/env python3
"""Reference models and values for Mosaic's Hugging Face parity tests (tests/interop).

Creates tiny random `transformers` models (nothing is downloaded), saves each as a Hugging Face
folder (config.json + safetensors) under OUT/<name>/ and writes OUT/<name>/reference.safetensors
with the inputs, the outputs and the gradient of every parameter (named as in the HF model):
  input.*    what the C++ test feeds Mosaic
  out.*      HF's outputs (fp32)
  grad.<p>   d loss / d p for every HF parameter p

  python3 tests/interop/make_reference.py OUT
"""
import json
import os
import sys

import torch
import transformers
from transformers import (CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM, LlavaConfig,
                          LlavaForConditionalGeneration, WhisperConfig,
                          WhisperForAudioClassification, WhisperForConditionalGeneration)
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_tokenizer_reference  # noqa: E402  (the BPE vocab for the fine-tuning folder)


def grads(model):
    return {"grad." + n: p.grad.detach().clone().contiguous()
            for n, p in model.named_parameters() if p.grad is not None}


def clip_tokens(batch, seq_len, vocab, eos, pad, gen):
    """Right-padded ids with EOS (the highest id) closing each row, and the attention mask."""
    ids = torch.full((batch, seq_len), pad, dtype=torch.long)
    mask = torch.zeros((batch, seq_len), dtype=torch.long)
    for b in range(batch):
        n = seq_len - 3 * b  # lengths seq_len, seq_len - 3, ...
        ids[b, : n - 1] = torch.randint(3, vocab - 1, (n - 1,), generator=gen)
        ids[b, n - 1] = eos
        mask[b, :n] = 1
    return ids, mask


def open_clip_state_dict(model):
    """The model's weights under OpenCLIP's names (open_clip.model.CLIP.state_dict()), written
    from OpenCLIP's module layout: resblocks with a fused in_proj, c_fc/c_proj MLPs, and the
    projections applied as x @ proj, so stored transposed."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    out = {"logit_scale": sd["logit_scale"]}
    for hf, oc in (("vision_model", "visual."), ("text_model", "")):
        n = len([k for k in sd if k.startswith(hf + ".encoder.layers.") and k.endswith("fc1.weight")])
        for i in range(n):
            h, o = f"{hf}.encoder.layers.{i}.", f"{oc}transformer.resblocks.{i}."
            for part in ("weight", "bias"):
                out[o + "attn.in_proj_" + part] = torch.cat(
                    [sd[h + f"self_attn.{x}_proj.{part}"] for x in "qkv"])
                out[o + "attn.out_proj." + part] = sd[h + "self_attn.out_proj." + part]
                out[o + "ln_1." + part] = sd[h + "layer_norm1." + part]
                out[o + "ln_2." + part] = sd[h + "layer_norm2." + part]
                out[o + "mlp.c_fc." + part] = sd[h + "mlp.fc1." + part]
                out[o + "mlp.c_proj." + part] = sd[h + "mlp.fc2." + part]
    out["visual.class_embedding"] = sd["vision_model.embeddings.class_embedding"]
    out["visual.positional_embedding"] = sd["vision_model.embeddings.position_embedding.weight"]
    out["visual.conv1.weight"] = sd["vision_model.embeddings.patch_embedding.weight"]
    for part in ("weight", "bias"):
        out["visual.ln_pre." + part] = sd["vision_model.pre_layrnorm." + part]
        out["visual.ln_post." + part] = sd["vision_model.post_layernorm." + part]
        out["ln_final." + part] = sd["text_model.final_layer_norm." + part]
    out["visual.proj"] = sd["visual_projection.weight"].t()
    out["text_projection"] = sd["text_projection.weight"].t()
    out["token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def make_clip(out, name, hidden_act, eos_token_id, layer_norm_eps, shards, vocab=99):
    torch.manual_seed(0)
    seq_len = 12
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=seq_len, hidden_act=hidden_act,
                         layer_norm_eps=layer_norm_eps, eos_token_id=eos_token_id,
                         bos_token_id=0, pad_token_id=1),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, image_size=16, patch_size=4,
                           hidden_act=hidden_act, layer_norm_eps=layer_norm_eps),
        projection_dim=24)
    config._attn_implementation = "eager"
    model = CLIPModel(config).float().train()
    # Random LayerNorm affine and logit scale, so that a swapped weight/bias cannot pass.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "layer_norm" in n or "layrnorm" in n or "layernorm" in n:
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.3)
    folder = os.path.join(out, name)
    model.save_pretrained(folder, max_shard_size=shards)
    save_file(open_clip_state_dict(model), os.path.join(folder, "open_clip_model.safetensors"))

    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(3, 3, 16, 16, generator=gen)
    ids, mask = clip_tokens(3, seq_len, vocab, vocab - 1, 1, gen)
    result = model(input_ids=ids, attention_mask=mask, pixel_values=pixels, return_loss=True)
    result.loss.backward()
    # transformers 5: the pooler_output of get_*_features is already projected.
    image_features = result.vision_model_output.pooler_output
    text_features = result.text_model_output.pooler_output
    assert image_features.shape[-1] == config.projection_dim
    ref = {
        "input.pixel_values": pixels, "input.input_ids": ids, "input.attention_mask": mask,
        "out.image_features": image_features, "out.text_features": text_features,
        "out.image_embeds": result.image_embeds, "out.text_embeds": result.text_embeds,
        "out.logits_per_image": result.logits_per_image,
        "out.loss": result.loss.reshape(()),
    }
    ref.update(grads(model))
    save_file({k: v.detach().contiguous() for k, v in ref.items()},
              os.path.join(folder, "reference.safetensors"))


def make_open_clip(out, hf_folder):
    """OpenCLIP itself (open_clip.model.CLIP) in the configuration of the HF CLIP in hf_folder:
    checks that open_clip_state_dict's names load into it strictly and compute what HF computes,
    then saves OUT/open-clip/open_clip_model.safetensors (OpenCLIP's own random weights, its own
    state_dict) and reference.safetensors (the same inputs, OpenCLIP's features, logits, ClipLoss
    and gradients under OpenCLIP's names)."""
    import open_clip
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    hf = CLIPModel.from_pretrained(hf_folder).float().train()
    hf.config._attn_implementation = "eager"
    t, v = hf.config.text_config, hf.config.vision_config
    assert t.hidden_act == v.hidden_act == "quick_gelu" and t.layer_norm_eps == 1e-5
    build = lambda: CLIP(  # noqa: E731
        embed_dim=hf.config.projection_dim, quick_gelu=True,
        vision_cfg=CLIPVisionCfg(layers=v.num_hidden_layers, width=v.hidden_size,
                                 head_width=v.hidden_size // v.num_attention_heads,
                                 mlp_ratio=v.intermediate_size / v.hidden_size,
                                 patch_size=v.patch_size, image_size=v.image_size),
        text_cfg=CLIPTextCfg(context_length=t.max_position_embeddings, vocab_size=t.vocab_size,
                             width=t.hidden_size, heads=t.num_attention_heads,
                             layers=t.num_hidden_layers,
                             mlp_ratio=t.intermediate_size / t.hidden_size)).float().train()
    model = build()
    ref_hf = load_file(os.path.join(hf_folder, "reference.safetensors"))
    pixels, ids = ref_hf["input.pixel_values"], ref_hf["input.input_ids"]
    # The names Mosaic writes for OpenCLIP are OpenCLIP's: a strict load, and the same numbers.
    model.load_state_dict(open_clip_state_dict(hf), strict=True)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(pixels), ref_hf["out.image_features"], atol=1e-5)
        assert torch.allclose(model.encode_text(ids), ref_hf["out.text_features"], atol=1e-5)
    # Then OpenCLIP's own initialization (LayerNorms perturbed as for HF) is the reference.
    torch.manual_seed(2)
    model = build()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if ".ln_" in n or n.startswith("ln_"):  # ln_final, visual.ln_pre/post, ln_1/2
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(2.3)
    folder = os.path.join(out, "open-clip")
    os.makedirs(folder, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "open_clip_model.safetensors"))
    image = model.encode_image(pixels)
    text = model.encode_text(ids)
    image_n, text_n = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    scale = model.logit_scale.exp()
    loss = ClipLoss()(image_n, text_n, scale)
    loss.backward()
    ref = {"input.pixel_values": pixels, "input.input_ids": ids,
           "input.attention_mask": ref_hf["input.attention_mask"],
           "out.image_features": image, "out.text_features": text,
           "out.image_embeds": image_n, "out.text_embeds": text_n,
           "out.logits_per_image": scale * image_n @ text_n.t(), "out.loss": loss.reshape(())}
    ref.update(grads(model))
    save_file({k: v.detach().contiguous() for k, v in ref.items()},
              os.path.join(folder, "reference.safetensors"))
    return open_clip.__version__


def make_llama(out, name, tie, kv_heads):
    torch.manual_seed(0)
    vocab = 101
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48,
                         num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=kv_heads, max_position_embeddings=16,
                         rms_norm_eps=1e-5, rope_theta=1000.0, tie_word_embeddings=tie)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).float().train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    folder = os.path.join(out, name)
    model.save_pretrained(folder)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (2, 10), generator=gen)
    result = model(input_ids=ids, labels=ids)
    result.loss.backward()
    ref = {"input.input_ids": ids, "out.logits": result.logits,
           "out.loss": result.loss.reshape(())}
    ref.update(grads(model))
    save_file({k: v.detach().contiguous() for k, v in ref.items()},
              os.path.join(folder, "reference.safetensors"))


def make_llava(out, name):
    """LlavaForConditionalGeneration: a 3-layer CLIP tower read at vision_feature_layer -2 (the
    last layer and the post-layernorm unused), class token dropped, gelu projector, Llama. The
    image placeholders come first, so HF computes what Mosaic's image prefix does."""
    torch.manual_seed(0)
    # vocab >= 128: `mosaic train --init` on generated data uses a 128-piece tokenizer.
    vocab, image_token = 160, 159
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=48, intermediate_size=96,
                           num_hidden_layers=3, num_attention_heads=4, image_size=16,
                           patch_size=4, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        text_config=dict(model_type="llama", vocab_size=vocab, hidden_size=32,
                         intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-5,
                         rope_theta=1000.0),
        image_token_index=image_token, projector_hidden_act="gelu", vision_feature_layer=-2,
        vision_feature_select_strategy="default", image_seq_length=16)
    config._attn_implementation = "eager"
    config.vision_config._attn_implementation = "eager"
    config.text_config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(config).float().train()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or "layrnorm" in n or "layer_norm" in n:
                p.add_(0.1 * torch.randn_like(p))
            if "multi_modal_projector" in n and n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    folder = os.path.join(out, name)
    model.save_pretrained(folder)

    gen = torch.Generator().manual_seed(1)
    batch, text_len, patches = 2, 9, (16 // 4) ** 2
    pixels = torch.randn(batch, 3, 16, 16, generator=gen)
    ids = torch.randint(0, image_token, (batch, text_len), generator=gen)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    mask[1, -3:] = 0  # row 1: the last 3 text tokens are padding (not predicted)
    # Mosaic's loss predicts text token t+1 from text position t; in HF's shifted loss that is
    # labels = text tokens from the second on, everything before them (image, first token)
    # -100. Attention is over everything in both (padding only leaves the loss).
    labels = torch.full((batch, patches + text_len), -100, dtype=torch.long)
    labels[:, patches + 1:] = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    input_ids = torch.cat([torch.full((batch, patches), image_token, dtype=torch.long), ids], 1)
    result = model(input_ids=input_ids, pixel_values=pixels, labels=labels)
    result.loss.backward()
    g = grads(model)
    # Parameters HF leaves without a gradient (the tower's last layer and post-layernorm, which
    # vision_feature_layer -2 skips): zero, so the test compares every parameter.
    for n, p in model.named_parameters():
        g.setdefault("grad." + n, torch.zeros_like(p))
    ref = {"input.pixel_values": pixels, "input.input_ids": ids, "input.attention_mask": mask,
           "out.logits": result.logits[:, patches:], "out.loss": result.loss.reshape(()),
           "out.image_features": result.image_hidden_states.reshape(batch, patches, -1)}
    ref.update(g)
    save_file({k: v.detach().contiguous() for k, v in ref.items()},
              os.path.join(folder, "reference.safetensors"))


def make_whisper(out):
    """Whisper's audio encoder, saved three ways with the same encoder weights:
      whisper             WhisperForConditionalGeneration (model.encoder.*, a decoder Mosaic skips)
      whisper-classifier  WhisperForAudioClassification (encoder.*, projector/classifier), sharded
      whisper-encoder     WhisperEncoder alone (no prefix): what Mosaic's export writes
    The reference: log-mel input features, last_hidden_state, its mean over positions (the pooled
    feature), and the gradient of every encoder parameter of loss = mean(last_hidden_state * probe)
    (embed_positions included, though WhisperEncoder's constructor freezes it)."""
    torch.manual_seed(0)
    n_mels, positions, batch = 8, 12, 2
    config = WhisperConfig(
        vocab_size=64, num_mel_bins=n_mels, d_model=32, encoder_layers=2,
        encoder_attention_heads=4, encoder_ffn_dim=48, decoder_layers=1,
        decoder_attention_heads=4, decoder_ffn_dim=32, max_source_positions=positions,
        max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=3, suppress_tokens=[], begin_suppress_tokens=[],
        classifier_proj_size=16, num_labels=3,
        init_std=0.2)  # weights large enough that GELU and attention are far from linear
    config._attn_implementation = "eager"
    model = WhisperForConditionalGeneration(config).float().train()
    encoder = model.model.encoder
    # Random LayerNorm affines, biases and position table, so that a swapped tensor cannot pass.
    with torch.no_grad():
        for n, p in encoder.named_parameters():
            if "layer_norm" in n or n.endswith("bias") or "embed_positions" in n:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(os.path.join(out, "whisper"))
    classifier = WhisperForAudioClassification(config).float()
    classifier.encoder.load_state_dict(encoder.state_dict())
    classifier.save_pretrained(os.path.join(out, "whisper-classifier"), max_shard_size="20KB")
    encoder.save_pretrained(os.path.join(out, "whisper-encoder"))

    gen = torch.Generator().manual_seed(1)
    features = torch.randn(batch, n_mels, 2 * positions, generator=gen)
    hidden = encoder(input_features=features).last_hidden_state
    probe = torch.randn(hidden.shape, generator=gen)
    # WhisperEncoder freezes embed_positions (requires_grad False, as OpenAI's buffer), but
    # transformers 5.23's from_pretrained leaves them trainable: record their gradient too.
    assert not encoder.embed_positions.weight.requires_grad
    encoder.embed_positions.weight.requires_grad_(True)
    hidden = encoder(input_features=features).last_hidden_state
    (hidden * probe).mean().backward()
    ref = {"input.input_features": features, "input.probe": probe,
           "out.last_hidden_state": hidden, "out.pooled": hidden.mean(1)}
    ref.update(grads(encoder))
    assert "grad.embed_positions.weight" in ref
    for name in ("whisper", "whisper-classifier", "whisper-encoder"):
        save_file({k: v.detach().contiguous() for k, v in ref.items()},
                  os.path.join(out, name, "reference.safetensors"))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    # OpenAI CLIP: quick_gelu, pooled at the highest id (eos_token_id 2 is HF's legacy marker).
    make_clip(out, "clip-quickgelu", "quick_gelu", 2, 1e-5, shards="5GB")
    # A later HF CLIP: exact GELU, pooled at the first eos_token_id, other eps, saved in shards.
    make_clip(out, "clip-gelu-sharded", "gelu", 98, 1e-6, shards="40KB")
    # For `mosaic train --init`: a CLIP whose folder holds its own BPE tokenizer files.
    vocab, merges = make_tokenizer_reference.build_vocab_and_merges()
    make_clip(out, "clip-finetune", "quick_gelu", vocab["<|endoftext|>"], 1e-5, shards="5GB",
              vocab=len(vocab))
    make_tokenizer_reference.write_tokenizer_files(os.path.join(out, "clip-finetune"), vocab,
                                                   merges)
    make_llama(out, "llama", tie=False, kv_heads=2)
    make_llama(out, "llama-tied", tie=True, kv_heads=4)
    make_llava(out, "llava")
    make_whisper(out)
    open_clip_version = make_open_clip(out, os.path.join(out, "clip-quickgelu"))
    with open(os.path.join(out, "versions.json"), "w") as f:
        json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
                   "open_clip": open_clip_version}, f)


if __name__ == "__main__":
    main()
