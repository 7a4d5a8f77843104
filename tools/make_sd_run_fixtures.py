#!/usr/bin/env python3
"""Golden fixtures for whole Stable Diffusion runs: diffusers' StableDiffusionPipeline (20 DDIM
steps, 4 Euler steps, SD-Turbo's one trailing Euler step), StableDiffusionImg2ImgPipeline and
StableDiffusionInpaintPipeline on the random-weight tests/fixtures/pipelines/sd_tiny folder
(made by tools/make_latent_fixtures.py), and a 9-channel inpainting pipeline made here.

Each case also records its sensitivity: how far diffusers' own image moves when the initial
noise is perturbed by 1e-6 (max |change| / max |image|), the floor any tolerance must respect.

What it makes:

  tests/fixtures/pipelines/sd_inpaint_tiny/    sd_tiny with a 9-channel (inpainting) U-Net
  tests/fixtures/pipelines/sd2_tiny/           sd_tiny in SD 2.x's shape: a U-Net with linear
                                               projections, heads per level and upcast attention,
                                               a gelu text encoder, `!` as the pad token and
                                               v-prediction
  tests/fixtures/pipelines/sd_runs.safetensors the inputs and outputs of each case below
  tests/fixtures/pipelines/sd_runs.json        the cases: pipeline, folder, scheduler, steps,
                                               strength, guidance, and the names of their
                                               tensors

Every standard-normal draw diffusers makes is recorded (`randn_tensor` is wrapped where the
pipelines and the VAE's posterior call it), split into the VAE posterior samples (`posterior`,
in call order) and the pipeline's noise (`noise`), so the Rust pipeline can be given the same.

Run from the repository root (needs torch, diffusers, transformers, safetensors):

    python tools/make_sd_run_fixtures.py
"""

import json
import os
import shutil

import torch

torch.set_num_threads(1)
torch.set_grad_enabled(False)

import diffusers.models.autoencoders.vae as vae_module  # noqa: E402
import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as img2img_module  # noqa: E402
import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as inpaint_module  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "pipelines")
SD = os.path.join(ROOT, "sd_tiny")
INPAINT = os.path.join(ROOT, "sd_inpaint_tiny")
SD2 = os.path.join(ROOT, "sd2_tiny")

draws = []


def recording(original, kind):
    def wrapped(shape, generator=None, device=None, dtype=None, layout=None, **kw):
        t = original(shape, generator=generator, device=device, dtype=dtype, layout=layout)
        draws.append((kind, t.clone()))
        return t

    return wrapped


vae_module.randn_tensor = recording(vae_module.randn_tensor, "posterior")
img2img_module.randn_tensor = recording(img2img_module.randn_tensor, "noise")
inpaint_module.randn_tensor = recording(inpaint_module.randn_tensor, "noise")


def rerandomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


def make_inpaint_folder():
    """sd_tiny with its U-Net widened to 9 input channels (latents, mask, masked latents)."""
    shutil.rmtree(INPAINT, ignore_errors=True)
    shutil.copytree(SD, INPAINT, ignore=shutil.ignore_patterns("io.*"))
    config = dict(UNet2DConditionModel.load_config(os.path.join(SD, "unet")))
    config["in_channels"] = 9
    unet = UNet2DConditionModel.from_config(config).eval()
    rerandomise(unet, 41)
    shutil.rmtree(os.path.join(INPAINT, "unet"))
    unet.save_pretrained(os.path.join(INPAINT, "unet"), safe_serialization=True)
    with open(os.path.join(INPAINT, "model_index.json")) as f:
        index = json.load(f)
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    with open(os.path.join(INPAINT, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


def make_sd2_folder():
    """sd_tiny made SD 2.x-shaped: what SD 2.1 and SD-Turbo change, at the fixture's size."""
    from transformers import CLIPTextConfig, CLIPTextModel

    shutil.rmtree(SD2, ignore_errors=True)
    shutil.copytree(SD, SD2, ignore=shutil.ignore_patterns("io.*"))
    config = dict(UNet2DConditionModel.load_config(os.path.join(SD, "unet")))
    config.update(use_linear_projection=True, attention_head_dim=[2, 4], upcast_attention=True)
    unet = UNet2DConditionModel.from_config(config).eval()
    rerandomise(unet, 51)
    shutil.rmtree(os.path.join(SD2, "unet"))
    unet.save_pretrained(os.path.join(SD2, "unet"), safe_serialization=True)
    te_config = CLIPTextConfig.from_pretrained(os.path.join(SD, "text_encoder"))
    te_config.hidden_act = "gelu"
    text_encoder = CLIPTextModel(te_config).eval()
    rerandomise(text_encoder, 52)
    shutil.rmtree(os.path.join(SD2, "text_encoder"))
    text_encoder.save_pretrained(os.path.join(SD2, "text_encoder"), safe_serialization=True)
    tok = os.path.join(SD2, "tokenizer", "tokenizer_config.json")
    with open(tok) as f:
        t = json.load(f)
    t["pad_token"] = "!"
    with open(tok, "w") as f:
        json.dump(t, f, indent=2)
    sched = os.path.join(SD2, "scheduler", "scheduler_config.json")
    with open(sched) as f:
        c = json.load(f)
    c["prediction_type"] = "v_prediction"
    with open(sched, "w") as f:
        json.dump(c, f, indent=2)


def inputs():
    """A smooth 16x16 image in [0, 1] and a mask with a repainted rectangle (1) and values
    either side of 0.5 to exercise the binarization."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    image = torch.stack([0.5 + 0.4 * torch.sin(6 * x), 0.5 + 0.4 * torch.cos(5 * y), x * y])[None]
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 6:14] = 1.0
    mask[..., 0, 0:4] = torch.tensor([0.3, 0.49, 0.5, 0.7])
    return image, mask


def main():
    make_inpaint_folder()
    make_sd2_folder()
    image01, mask = inputs()
    tensors = {"image": (image01 * 2 - 1).contiguous(), "mask": mask[0, 0].contiguous()}
    cases = []
    prompt, negative = "a red apple", "blurry"

    def schedulers(pipe):
        return {
            "ddim": DDIMScheduler.from_config(pipe.scheduler.config),
            "dpm++": DPMSolverMultistepScheduler.from_config(pipe.scheduler.config),
            "euler": EulerDiscreteScheduler.from_config(pipe.scheduler.config),
            # SD-Turbo's scheduler: Euler with trailing spacing.
            "euler-trailing": EulerDiscreteScheduler.from_config(
                pipe.scheduler.config, timestep_spacing="trailing"
            ),
        }

    def call(pipe, steps, strength, guidance, masked, latents=None, image=True):
        kw = dict(mask_image=mask) if masked else {}
        if image:
            kw.update(image=image01, strength=strength)
        if latents is not None:
            kw.update(latents=latents.clone())
        return pipe(
            prompt, negative_prompt=negative, num_inference_steps=steps,
            guidance_scale=guidance, output_type="np",
            generator=torch.Generator().manual_seed(5), **kw,
        ).images

    def sensitivity(out, again):
        return float(abs(again - out).max() / abs(out).max())

    def run(name, pipe_cls, folder, scheduler, steps, strength, guidance, masked):
        pipe = pipe_cls.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = schedulers(pipe)[scheduler]
        text_only = pipe_cls is StableDiffusionPipeline
        draws.clear()
        if text_only:
            noise = [torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(31 + steps))]
            out = call(pipe, steps, strength, guidance, masked, latents=noise[0], image=False)
            posterior = []
        else:
            out = call(pipe, steps, strength, guidance, masked)
            posterior = [t for k, t in draws if k == "posterior"]
            noise = [t for k, t in draws if k == "noise"]
        assert len(noise) == 1, [k for k, _ in draws]
        # The same run from noise perturbed by 1e-6 (diffusers accepts `latents=` only for
        # text-to-image; the others get the perturbation through their generator's draws).
        bumped = noise[0] + 1e-6 * torch.randn(noise[0].shape, generator=torch.Generator().manual_seed(9))
        if text_only:
            again = call(pipe, steps, strength, guidance, masked, latents=bumped, image=False)
        else:
            queue = [t for _, t in draws]
            queue[[k for k, _ in draws].index("noise")] = bumped
            replay = iter(queue)
            saved = (vae_module.randn_tensor, img2img_module.randn_tensor, inpaint_module.randn_tensor)
            vae_module.randn_tensor = img2img_module.randn_tensor = inpaint_module.randn_tensor = (
                lambda *a, **k: next(replay).clone()
            )
            try:
                again = call(pipe, steps, strength, guidance, masked)
            finally:
                vae_module.randn_tensor, img2img_module.randn_tensor, inpaint_module.randn_tensor = saved
        case = {
            "name": name, "folder": os.path.basename(folder), "scheduler": scheduler,
            "steps": steps, "strength": strength, "guidance_scale": guidance,
            "prompt": prompt, "negative_prompt": negative, "mask": masked,
            "image": not text_only,
            "sensitivity_1e-6": sensitivity(out, again),
            "posterior": [f"{name}.posterior{i}" for i in range(len(posterior))],
        }
        for i, t in enumerate(posterior):
            tensors[f"{name}.posterior{i}"] = t.contiguous()
        tensors[f"{name}.noise"] = noise[0].contiguous()
        tensors[f"{name}.out"] = torch.from_numpy(out).contiguous()
        cases.append(case)
        print(name, "draws:", [k for k, _ in draws], "out", tuple(out.shape), "sensitivity", case["sensitivity_1e-6"])

    run("txt2img_ddim20", StableDiffusionPipeline, SD, "ddim", 20, 1.0, 7.5, False)
    run("txt2img_euler4", StableDiffusionPipeline, SD, "euler", 4, 1.0, 7.5, False)
    run("txt2img_turbo1", StableDiffusionPipeline, SD, "euler-trailing", 1, 1.0, 0.0, False)
    # SD 2.x's shape: linear projections, upcast attention, gelu CLIP, `!` padding, v-prediction.
    run("sd2_ddim10", StableDiffusionPipeline, SD2, "ddim", 10, 1.0, 7.5, False)
    run("sd2_euler4", StableDiffusionPipeline, SD2, "euler", 4, 1.0, 7.5, False)
    run("img2img_ddim", StableDiffusionImg2ImgPipeline, SD, "ddim", 4, 0.75, 7.5, False)
    # DPM-Solver++ started part-way (set_begin_index) with a fresh history.
    run("img2img_dpm", StableDiffusionImg2ImgPipeline, SD, "dpm++", 6, 0.5, 7.5, False)
    # Mask blending with the ordinary U-Net: from pure noise, and part-way.
    run("inpaint_blend", StableDiffusionInpaintPipeline, SD, "ddim", 4, 1.0, 7.5, True)
    run("inpaint_blend_half", StableDiffusionInpaintPipeline, SD, "ddim", 4, 0.5, 1.0, True)
    # The 9-channel inpainting U-Net.
    run("inpaint_unet", StableDiffusionInpaintPipeline, INPAINT, "ddim", 4, 1.0, 7.5, True)
    save_file(tensors, os.path.join(ROOT, "sd_runs.safetensors"))
    with open(os.path.join(ROOT, "sd_runs.json"), "w") as f:
        json.dump(cases, f, indent=1)


if __name__ == "__main__":
    main()
