#!/usr/bin/env python3
"""Pictures and numbers for models/text-emoji/README.md, made with the project's own CLI.

    python tools/text_emoji_card.py --cli PATH/TO/wasm-diffusion \
        [--model models/text-emoji/text-emoji.int8.safetensors] [--export EXPORT_DIR]

Writes into models/text-emoji/:

  samples_int8.png   64 fixed prompts (8 per category, rows in CLASSES order; in each row the
                     first 6 are training phrasings, the last 2 held-out phrasings); prompt i
                     (row-major) gets seed --seed + i; DDIM --steps, guidance --guidance
  guidance.png       4 prompts (rows; row r gets seed --seed + r) at guidance 1, 2, 3, 5, 8
                     (columns)
  prompts.json       the 64 prompts in grid order, each marked trained / held-out
  loss_unet.png, loss_vae.png, train_info.json   copied from the export

Every prompt's status is checked against the captions tools/train_text_emoji.py trains on.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import emoji_dataset  # noqa: E402
import train_text_emoji as tte  # noqa: E402

# 8 per category (emoji_dataset.CLASSES order): 6 training captions, then 2 held-out phrasings.
PROMPTS = [
    ["grinning face", "face with tears of joy", "an emoji of smiling face with heart-shaped eyes",
     "winking face emoji", "heart", "pile of poo", "a picture of ghost", "skull icon"],
    ["thumbs up sign", "waving hand sign", "an emoji of baby", "father christmas",
     "flexed biceps emoji", "eyes", "a picture of man", "ok hand sign icon"],
    ["dog face", "cat face", "an emoji of frog face", "penguin emoji", "sunflower", "octopus",
     "a picture of evergreen tree", "snake icon"],
    ["red apple", "banana", "an emoji of slice of pizza", "hamburger emoji", "birthday cake",
     "carrot", "a picture of grapes", "doughnut icon"],
    ["house building", "rocket", "an emoji of automobile", "airplane emoji", "rainbow",
     "snowflake", "a picture of sun with face", "volcano icon"],
    ["soccer ball", "trophy", "an emoji of video game", "christmas tree emoji", "balloon",
     "guitar", "a picture of basketball and hoop", "bowling icon"],
    ["electric light bulb", "mobile phone", "an emoji of books", "key emoji", "hammer",
     "crown", "a picture of gem stone", "lipstick icon"],
    ["heavy check mark", "cross mark", "an emoji of warning sign", "no entry emoji",
     "peace symbol", "yin yang", "a picture of black question mark ornament",
     "heavy plus sign icon"],
]
SWEEP_PROMPTS = ["red apple", "cat face", "rocket", "a picture of grinning face"]
SWEEP_GUIDANCE = [1.0, 2.0, 3.0, 5.0, 8.0]


def status_of_prompts():
    entries = emoji_dataset.selected_entries(emoji_dataset.DEFAULT_PKG)
    trained, held = set(), set()
    for e in entries:
        t, h = tte.captions_for(e)
        trained.update(t)
        held.update(h)
    out = []
    for c, row in enumerate(PROMPTS):
        for j, p in enumerate(row):
            want = "trained" if j < 6 else "held-out"
            got = "trained" if p in trained else "held-out" if p in held else "unknown"
            if got != want:
                sys.exit(f"prompt {p!r}: expected a {want} caption, found {got}")
            out.append({"category": emoji_dataset.CLASSES[c], "prompt": p, "caption": got})
    return out


def sample(cli, model, prompt, seed, steps, guidance, out):
    cmd = [cli, "sample", model, "--prompt", prompt, "--seed", str(seed), "--steps", str(steps),
           "--guidance", str(guidance), "-o", out]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}\n{r.stderr}")
    return np.asarray(Image.open(out).convert("RGB"))


def grid(rows, scale=2, gap=2):
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    g = np.full((len(rows) * (h + gap) - gap, ncol * (w + gap) - gap, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, im in enumerate(r):
            g[i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = im
    img = Image.fromarray(g)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cli", required=True)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "text-emoji", "text-emoji.int8.safetensors"))
    ap.add_argument("--export", default="~/.cache/wasm-diffusion/train-text-emoji/export")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = os.path.join(REPO, "models", "text-emoji")
    export = os.path.expanduser(args.export)
    prompts = status_of_prompts()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for c, row in enumerate(PROMPTS):
            rows.append([sample(args.cli, args.model, p, args.seed + 8 * c + j, args.steps,
                                args.guidance,
                                os.path.join(tmp, f"{c}_{j}.png")) for j, p in enumerate(row)])
            print(f"row {c}: {' | '.join(row)}", flush=True)
        grid(rows).save(os.path.join(out, "samples_int8.png"))
        sweep = [[sample(args.cli, args.model, p, args.seed + i, args.steps, g,
                         os.path.join(tmp, f"s{i}_{g}.png")) for g in SWEEP_GUIDANCE]
                 for i, p in enumerate(SWEEP_PROMPTS)]
        grid(sweep).save(os.path.join(out, "guidance.png"))
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump({"seed": f"{args.seed} + index (row-major)", "steps": args.steps, "guidance": args.guidance,
                   "scheduler": "ddim", "prompts": prompts,
                   "guidance_sweep": {"prompts": SWEEP_PROMPTS, "guidance": SWEEP_GUIDANCE}},
                  f, indent=1)
        f.write("\n")
    for name in ("loss_unet.png", "loss_vae.png", "train_info.json"):
        shutil.copy(os.path.join(export, name), os.path.join(out, name))
    print(f"wrote {out}/samples_int8.png, guidance.png, prompts.json, loss curves, train_info.json")


if __name__ == "__main__":
    main()
