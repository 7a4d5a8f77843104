#!/usr/bin/env python3
"""Golden fixtures for the latent-diffusion models, made by diffusers (random weights).

What it makes (under tests/fixtures/autoencoders/ and tests/fixtures/unets_cond/):

  kl_tiny/config.json                          AutoencoderKL config (save_pretrained)
  kl_tiny/diffusion_pytorch_model.safetensors  random f32 weights (save_pretrained)
  kl_tiny/io.safetensors                       an image `x`, the encoder's moments (`moments`,
                                               after quant_conv), the posterior's mode (`mean`),
                                               a latent `z` and its decoding `decoded`
                                               (post_quant_conv + decoder)
  taesd_tiny/                                  AutoencoderTiny (TAESD's architecture); io.safetensors:
                                               an image `x`, its `latents`, a latent `z` and
                                               its decoding
  ../text_encoders/clip_{quick_gelu,gelu}/     transformers CLIPTextModel configs and weights;
                                               io.safetensors: input_ids, last_hidden_state,
                                               pooler_output, penultimate_hidden_state
  ../pipelines/sd_tiny/                        a StableDiffusionPipeline folder (save_pretrained):
                                               tiny CLIP tokenizer (bytes, no merges) and text
                                               encoder, SD 1.x-shaped U-Net, 2-level VAE, DDIM;
                                               io.safetensors / io.json: the prompts, given
                                               latents, both prompt embeddings, the image (NHWC
                                               in [0, 1]) of a 4-step guided run
  ../unets_cond/{sd1_tiny,sd2_tiny}/           UNet2DConditionModel configs and weights in SD 1.x
                                               and SD 2.x shapes; io.safetensors: sample,
                                               timesteps, encoder_hidden_states, the output and
                                               block activations (`act.*`)

  vq_tiny/                                     VQModel (latent 3, codebook 64 x 4); io.safetensors:
                                               an image `x`, its pre-quantization latents `h`
                                               (encode), their codebook indices, the quantized
                                               latents `quant`, and `decoded` = decode(h) (which
                                               quantizes first) and `decoded_unquantized`
                                               (force_not_quantize); io.json: the margins
  ../pipelines/ldm_tiny/                       an LDMPipeline folder (UNet2DModel, VQModel, DDIM);
                                               io.safetensors / io.json: 20 DDIM steps (eta 0)
                                               from a seeded generator: the initial latents, the
                                               latents at some steps, the final latents, their
                                               codebook indices and the image; the change a 1e-6
                                               perturbation of the initial latents makes

Run from the repository root (needs torch, diffusers, transformers, safetensors):

    python tools/make_latent_fixtures.py [--only SECTION]

SECTION is one of kl, taesd, clip, sd, unet_cond, ldm (VQModel and LDMPipeline); without it,
every section runs. Deterministic (fixed seeds, one CPU thread); it rewrites only the folders
of the sections it runs.
"""

import argparse

import json
import os
import shutil

import torch

torch.set_num_threads(1)
torch.set_grad_enabled(False)

from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel, UNet2DModel, VQModel  # noqa: E402
from diffusers import LDMPipeline  # noqa: E402
from diffusers.utils.torch_utils import randn_tensor  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402
from diffusers import DDIMScheduler, StableDiffusionPipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "autoencoders")


def rerandomise(model, seed):
    """Random weights of a useful scale (diffusers' init leaves some layers at zero)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


def make_kl_tiny():
    d = os.path.join(OUT, "kl_tiny")
    shutil.rmtree(d, ignore_errors=True)
    # Two levels (one downsample), a mid block with attention, 4 latent channels: the shape of
    # SD's VAE at a size a test can afford.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()
    rerandomise(vae, 7)
    vae.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(11)
    x = torch.rand((2, 3, 16, 16), generator=g) * 2 - 1
    h = vae.encoder(x)
    moments = vae.quant_conv(h)
    mean = vae.encode(x).latent_dist.mode()
    z = torch.randn((2, 4, 8, 8), generator=g)
    decoded = vae.decode(z).sample
    save_file(
        {k: v.contiguous() for k, v in dict(x=x, moments=moments, mean=mean, z=z, decoded=decoded).items()},
        os.path.join(d, "io.safetensors"),
    )
    print("kl_tiny:", sum(p.numel() for p in vae.parameters()), "parameters")


def make_unet_cond(name, **kw):
    """A random-weight UNet2DConditionModel with the block kinds of SD: cross-attention down,
    mid and up blocks (Transformer2DModel, BasicTransformerBlock, GEGLU) beside plain ones."""
    d = os.path.join(UNETS, name)
    shutil.rmtree(d, ignore_errors=True)
    unet = UNet2DConditionModel(**kw).eval()
    rerandomise(unet, 3)
    unet.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(5)
    cfg = unet.config
    sample = torch.randn((2, cfg.in_channels, cfg.sample_size, cfg.sample_size), generator=g)
    context = torch.randn((2, 7, cfg.cross_attention_dim), generator=g)
    timesteps = torch.tensor([10, 500])
    acts = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out[0] if isinstance(out, tuple) else out))
        for k, m in [("time_embedding", unet.time_embedding), ("conv_in", unet.conv_in), ("mid_block", unet.mid_block)]
        + [(f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
        + [(f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    ]
    out = unet(sample, timesteps, encoder_hidden_states=context).sample
    for h in hooks:
        h.remove()
    tensors = dict(sample=sample, timesteps=timesteps.float(), encoder_hidden_states=context, out=out)
    tensors.update({f"act.{k}": v for k, v in acts.items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "io.safetensors"))
    print(f"{name}:", sum(p.numel() for p in unet.parameters()), "parameters")


def make_tiny_tiny():
    """A random-weight AutoencoderTiny (TAESD's architecture at a test's size): encoder and
    decoder of two levels with one block each, 4 latent channels."""
    d = os.path.join(OUT, "taesd_tiny")
    shutil.rmtree(d, ignore_errors=True)
    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 2),
        num_decoder_blocks=(2, 1),
        latent_channels=4,
    ).eval()
    rerandomise(vae, 17)
    vae.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(19)
    x = torch.rand((2, 3, 16, 16), generator=g) * 2 - 1
    latents = vae.encode(x).latents
    z = torch.randn((2, 4, 8, 8), generator=g)
    decoded = vae.decode(z).sample
    save_file(
        {k: v.contiguous() for k, v in dict(x=x, latents=latents, z=z, decoded=decoded).items()},
        os.path.join(d, "io.safetensors"),
    )
    print("taesd_tiny:", sum(p.numel() for p in vae.parameters()), "parameters")


UNETS = os.path.join(OUT, "..", "unets_cond")
TEXT = os.path.join(OUT, "..", "text_encoders")


def make_clip_text(name, hidden_act):
    """A random-weight transformers CLIPTextModel (a small vocabulary keeps the file small; SD
    1.x's encoder uses quick_gelu, SD 2.x's gelu): the last hidden state, the pooled output and
    the penultimate layer's states (what `clip_skip=1` reads) for token ids below the vocab."""
    d = os.path.join(TEXT, name)
    shutil.rmtree(d, ignore_errors=True)
    config = CLIPTextConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act=hidden_act,
        bos_token_id=998, eos_token_id=999, pad_token_id=999,
    )
    model = CLIPTextModel(config).eval()
    rerandomise(model, 9)
    model.save_pretrained(d, safe_serialization=True)
    g = torch.Generator().manual_seed(13)
    ids = torch.randint(0, 998, (2, 77), generator=g)
    ids[:, 0] = 998
    ids[0, 9:] = 999  # a short prompt, padded with the end token
    ids[1, 40:] = 999
    out = model(ids, output_hidden_states=True)
    save_file(
        {
            "input_ids": ids.float().contiguous(),
            "last_hidden_state": out.last_hidden_state.contiguous(),
            "pooler_output": out.pooler_output.contiguous(),
            "penultimate_hidden_state": out.hidden_states[-2].contiguous(),
        },
        os.path.join(d, "io.safetensors"),
    )
    print(f"{name}:", sum(p.numel() for p in model.parameters()), "parameters")

SD1_LIKE = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(16, 32),
    layers_per_block=1,
    norm_num_groups=8,
    cross_attention_dim=8,
    attention_head_dim=2,
)

PIPELINES = os.path.join(OUT, "..", "pipelines")


def tiny_clip_tokenizer_files(d):
    """A CLIP tokenizer with the 256 byte symbols, their `</w>` forms and the two special
    tokens, and no merges (514 ids): real CLIP tokenization rules at a text encoder size a test
    can afford. Returns (vocab.json path, merges.txt path)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(d, exist_ok=True)
    vf, mf = os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")
    with open(vf, "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(mf, "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
    return vf, mf


def make_sd_pipeline(name):
    """A random-weight StableDiffusionPipeline (tiny CLIP tokenizer and text encoder, an SD
    1.x-shaped U-Net, a 2-level AutoencoderKL, SD's DDIM schedule) saved as a diffusers
    pipeline folder, and one guided text-to-image run from given latents."""
    d = os.path.join(PIPELINES, name)
    shutil.rmtree(d, ignore_errors=True)
    tmp = os.path.join(PIPELINES, name + "-tok")
    vf, mf = tiny_clip_tokenizer_files(tmp)
    tokenizer = CLIPTokenizer(vf, mf, model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=512, eos_token_id=513, pad_token_id=513,
    )).eval()
    rerandomise(text_encoder, 21)
    unet = UNet2DConditionModel(**{**SD1_LIKE, "cross_attention_dim": 32}).eval()
    rerandomise(unet, 22)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
        sample_size=16,
    ).eval()
    rerandomise(vae, 23)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(d, safe_serialization=True)
    # The vocab.json / merges.txt pair that SD checkpoints carry (transformers 5 writes only
    # tokenizer.json).
    for f in (vf, mf):
        shutil.copy(f, os.path.join(d, "tokenizer"))
    shutil.rmtree(tmp)
    g = torch.Generator().manual_seed(31)
    latents = torch.randn((1, 4, 8, 8), generator=g)
    prompt, negative = "a red apple", "blurry"
    prompt_embeds, negative_embeds = pipe.encode_prompt(prompt, "cpu", 1, True, negative)
    image = pipe(
        prompt, negative_prompt=negative, num_inference_steps=4, guidance_scale=7.5,
        latents=latents.clone(), output_type="np",
    ).images
    save_file(
        {
            "latents": latents,
            "prompt_embeds": prompt_embeds.contiguous(),
            "negative_prompt_embeds": negative_embeds.contiguous(),
            "image": torch.from_numpy(image).contiguous(),
        },
        os.path.join(d, "io.safetensors"),
    )
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump({"prompt": prompt, "negative_prompt": negative, "num_inference_steps": 4, "guidance_scale": 7.5}, f, indent=1)
    print(f"{name}: image {image.shape}")


def codebook_margins(z, codebook):
    """For each latent vector of `z` [B, C, H, W]: its nearest codebook entry (in f64) and how
    clearly it is the nearest: (second-smallest minus smallest squared distance) over the scale
    |z|^2 + |e|^2 that f32 rounding errors of the distances are relative to. Returns (indices,
    the smallest margin)."""
    zf = z.permute(0, 2, 3, 1).reshape(-1, codebook.shape[1]).double()
    e = codebook.double()
    d = ((zf[:, None, :] - e[None, :, :]) ** 2).sum(-1)
    two = d.topk(2, dim=1, largest=False)
    best = two.indices[:, 0]
    scale = (zf**2).sum(-1) + (e[best] ** 2).sum(-1)
    margin = (two.values[:, 1] - two.values[:, 0]) / scale
    return best, margin.min().item()


def rel_err(a, b):
    """max |a - b| / max |b|: the measure the Rust tests use (tests/common/mod.rs)."""
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def make_vq_tiny():
    """A random-weight VQModel: two levels (16, 32 channels), 3 latent channels quantized
    against a 64-entry codebook of width 4 (`vq_embed_dim` != `latent_channels`, so both 1x1
    convolutions change the width). The image is chosen (by seed) so that every latent vector's
    nearest codebook entry is clear: f32 rounding cannot flip an index."""
    d = os.path.join(OUT, "vq_tiny")
    shutil.rmtree(d, ignore_errors=True)
    vq = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=3,
        num_vq_embeddings=64,
        norm_num_groups=8,
        vq_embed_dim=4,
        sample_size=16,
        scaling_factor=0.5,
    ).eval()
    rerandomise(vq, 41)
    # The codebook at the spread of the latents it quantizes (diffusers' init is +-1/64).
    x0 = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(42)) * 2 - 1
    spread = vq.encode(x0).latents.std().item()
    g = torch.Generator().manual_seed(43)
    vq.quantize.embedding.weight.copy_(torch.randn(vq.quantize.embedding.weight.shape, generator=g) * spread)
    vq.save_pretrained(d, safe_serialization=True)
    for seed in range(100, 200):
        x = torch.rand((2, 3, 16, 16), generator=torch.Generator().manual_seed(seed)) * 2 - 1
        h = vq.encode(x).latents
        indices, margin = codebook_margins(h, vq.quantize.embedding.weight)
        if margin > 1e-3:
            break
    quant, commit_loss, (_, _, torch_indices) = vq.quantize(h)
    assert torch.equal(torch_indices.flatten(), indices), "cdist and f64 distances disagree"
    dec = vq.decode(h)
    decoded_unquantized = vq.decode(h, force_not_quantize=True).sample
    tensors = dict(
        x=x, h=h, indices=indices.reshape(h.shape[0], h.shape[2], h.shape[3]).float(), quant=quant,
        commit_loss=commit_loss.reshape(1), decoded=dec.sample, decoded_unquantized=decoded_unquantized,
    )
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "io.safetensors"))
    info = {"image_seed": seed, "min_codebook_margin": margin, "distinct_indices": len(set(indices.tolist()))}
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump(info, f, indent=1)
    print("vq_tiny:", sum(p.numel() for p in vq.parameters()), "parameters", info)


LDM_RECORDED_STEPS = (1, 5, 10, 15, 20)


def ldm_loop(pipe, latents, steps, record=()):
    """LDMPipeline.__call__'s loop by hand (eta 0): the latents after each step in `record`,
    the final latents and their decoding (NCHW, in about [-1, 1], before the clamp)."""
    sched = pipe.scheduler
    latents = latents * sched.init_noise_sigma
    sched.set_timesteps(steps)
    seen = []
    for i, t in enumerate(sched.timesteps):
        eps = pipe.unet(sched.scale_model_input(latents, t), t).sample
        latents = sched.step(eps, t, latents, eta=0.0).prev_sample
        if i + 1 in record:
            seen.append(latents)
    scaled = latents / pipe.vqvae.config.scaling_factor
    return seen, latents, pipe.vqvae.decode(scaled).sample


def make_ldm_pipeline(name):
    """A random-weight LDMPipeline folder (UNet2DModel on 3x8x8 latents with an attention level,
    a two-level VQModel with a 64-entry codebook, the DDIM schedule of CompVis/ldm-celebahq-256)
    and a 20-step run (eta 0, batch 2) from a seeded generator. The codebook is spread like the
    final latents it quantizes, and the seed is one where every final latent vector's nearest
    codebook entry is clear."""
    d = os.path.join(PIPELINES, name)
    shutil.rmtree(d, ignore_errors=True)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
    ).eval()
    rerandomise(unet, 51)
    vqvae = VQModel(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=3, num_vq_embeddings=64,
        norm_num_groups=4, vq_embed_dim=3, sample_size=16, scaling_factor=0.5,
    ).eval()
    rerandomise(vqvae, 52)
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
        clip_sample=False,
    )
    pipe = LDMPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler)
    steps, batch = 20, 2
    shape = (batch, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    sf = vqvae.config.scaling_factor
    codebook = vqvae.quantize.embedding.weight
    for seed in range(200, 300):
        # What LDMPipeline draws from `generator=torch.Generator().manual_seed(seed)`.
        latents = randn_tensor(shape, generator=torch.Generator().manual_seed(seed))
        _, final, _ = ldm_loop(pipe, latents, steps)
        g = torch.Generator().manual_seed(seed + 1000)
        codebook.copy_(torch.randn(codebook.shape, generator=g) * (final / sf).std())
        indices, margin = codebook_margins(final / sf, codebook)
        if margin > 1e-3:
            break
    pipe.save_pretrained(d, safe_serialization=True)
    image = pipe(batch_size=batch, generator=torch.Generator().manual_seed(seed), eta=0.0,
                 num_inference_steps=steps, output_type="np").images
    seen, final, decoded = ldm_loop(pipe, latents, steps, LDM_RECORDED_STEPS)
    assert torch.equal(torch.from_numpy(image), (decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)), \
        "the hand loop and LDMPipeline disagree"
    # How far a 1e-6 change of the initial latents moves diffusers' own result: the scale of
    # disagreement that f32 rounding alone makes, against which the Rust tolerance is set.
    bump = 1e-6 * torch.randn(shape, generator=torch.Generator().manual_seed(7))
    _, final_p, decoded_p = ldm_loop(pipe, latents + bump, steps)
    indices_p, _ = codebook_margins(final_p / sf, codebook)
    tensors = {
        "latents": latents,
        "latents_at_steps": torch.stack(seen),
        "final_latents": final,
        "indices": indices.reshape(batch, shape[2], shape[3]).float(),
        "decoded": decoded,
        "image": torch.from_numpy(image),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "io.safetensors"))
    info = {
        "seed": seed,
        "batch_size": batch,
        "num_inference_steps": steps,
        "eta": 0.0,
        "recorded_steps": list(LDM_RECORDED_STEPS),
        "timesteps": [int(t) for t in pipe.scheduler.timesteps],
        "min_codebook_margin": margin,
        "distinct_indices": len(set(indices.tolist())),
        "perturbation": 1e-6,
        "perturbed_final_latents_rel_change": rel_err(final_p, final),
        "perturbed_decoded_rel_change": rel_err(decoded_p, decoded),
        "perturbed_indices_changed": int((indices_p != indices).sum()),
    }
    with open(os.path.join(d, "io.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"{name}:", sum(p.numel() for p in unet.parameters()), "+",
          sum(p.numel() for p in vqvae.parameters()), "parameters", info)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["kl", "taesd", "clip", "sd", "unet_cond", "ldm"])
    only = parser.parse_args().only
    run = lambda section: only is None or only == section  # noqa: E731
    os.makedirs(OUT, exist_ok=True)
    os.makedirs(UNETS, exist_ok=True)
    os.makedirs(TEXT, exist_ok=True)
    os.makedirs(PIPELINES, exist_ok=True)
    # The order of the sections is the order they always ran in (each seeds its own generators).
    if run("clip"):
        make_clip_text("clip_quick_gelu", "quick_gelu")
    if run("sd"):
        make_sd_pipeline("sd_tiny")
    if run("clip"):
        make_clip_text("clip_gelu", "gelu")
    if run("kl"):
        make_kl_tiny()
    if run("taesd"):
        make_tiny_tiny()
    if run("unet_cond"):
        # SD 1.x's shape: `attention_head_dim` (really the number of heads), 1x1-conv projections.
        make_unet_cond("sd1_tiny", **SD1_LIKE)
        # SD 2.x's: linear projections, heads per level, upcast attention.
        make_unet_cond(
            "sd2_tiny",
            **{**SD1_LIKE, "attention_head_dim": (2, 4), "use_linear_projection": True, "upcast_attention": True},
        )
    if run("ldm"):
        make_vq_tiny()
        make_ldm_pipeline("ldm_tiny")
