#!/usr/bin/env python3
"""Build the class-conditional emoji training set for the wasm-diffusion DDPM.

Source data
-----------
The images come from the npm package ``emoji-datasource-google`` (pinned in
``tools/package.json``; install with ``npm install --prefix tools``).  We read:

* ``emoji.json`` - metadata (MIT licence, (c) Cal Henderson / iamcal emoji-data):
  ``sheet_x``, ``sheet_y``, ``category``, ``has_img_google``, ``short_name``.
* ``img/google/sheets-clean/<size>.png`` - sprite sheets of the Google
  **Noto Color Emoji** artwork, licensed under the **Apache License 2.0**
  (https://github.com/googlefonts/noto-emoji, see its LICENSE).  The "clean"
  sheets contain only Google artwork (no fallbacks from other vendors), which
  keeps the licensing simple: the trained model and any samples derived from
  it are derived from Apache-2.0 Noto artwork only.

Sheet layout: every cell is ``size + 2`` pixels (1 px transparent border), so
the emoji at ``(sheet_x, sheet_y)`` starts at
``x = sheet_x * (size + 2) + 1``, ``y = sheet_y * (size + 2) + 1``.

Selection and labels
--------------------
Only the base emoji (no skin-tone variations) with ``has_img_google`` are
kept; the categories ``Flags`` and ``Component`` are dropped.  The remaining 8
categories become class ids 0..7 in the fixed order of ``CLASSES`` below.
Class id 8 (``NULL_CLASS``) is reserved for the unconditional / null class used
by classifier-free guidance and never appears in the data.

Each emoji is alpha-composited onto a white background and stored as RGB
uint8.  Output: ``.npz`` with ``images`` uint8 [N, S, S, 3], ``labels`` int64
[N], ``names`` (short names, unicode strings), ``classes`` (class names).

Usage::

    npm install --prefix tools
    python tools/emoji_dataset.py --out ~/.cache/wasm-diffusion/emoji32.npz \
        --size 32 --contact /tmp/emoji_contact.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import numpy as np
from PIL import Image

CLASSES = [
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
]
NULL_CLASS = len(CLASSES)  # 8
DROPPED = {"Flags", "Component"}
SHEET_SIZES = (16, 20, 32, 64)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PKG = os.path.join(HERE, "node_modules", "emoji-datasource-google")


def load_sheet(pkg: str, size: int, variant: str) -> tuple[Image.Image, int]:
    """Return (sheet RGBA image, sheet cell size). For sizes without a sheet,
    the 64 px sheet is used and crops are resized afterwards."""
    sheet_px = size if size in SHEET_SIZES else 64
    path = os.path.join(pkg, "img", "google", variant, f"{sheet_px}.png")
    if not os.path.exists(path):
        sys.exit(f"missing {path}; run `npm install --prefix tools` first")
    return Image.open(path).convert("RGBA"), sheet_px


def selected_entries(pkg: str) -> list[dict]:
    """The emoji.json entries that become images, in dataset order (by class, then the
    dataset's sort_order). tools/train_text_emoji.py builds its captions from the same list."""
    with open(os.path.join(pkg, "emoji.json"), encoding="utf-8") as f:
        meta = json.load(f)
    entries = [e for e in meta
               if e.get("has_img_google") and e["category"] not in DROPPED]
    unknown = {e["category"] for e in entries} - set(CLASSES)
    if unknown:
        sys.exit(f"unexpected categories in emoji.json: {sorted(unknown)}")
    entries.sort(key=lambda e: (CLASSES.index(e["category"]), e.get("sort_order", 0)))
    return entries


def build(pkg: str, size: int, variant: str = "sheets-clean"):
    entries = selected_entries(pkg)
    sheet, sheet_px = load_sheet(pkg, size, variant)
    cell = sheet_px + 2
    ncols = sheet.width // cell
    nrows = sheet.height // cell
    assert sheet.width == ncols * cell and sheet.height == nrows * cell, (
        f"sheet {sheet.size} is not a multiple of cell size {cell}")

    white = Image.new("RGBA", (sheet_px, sheet_px), (255, 255, 255, 255))
    images, labels, names = [], [], []
    for e in entries:
        sx, sy = e["sheet_x"], e["sheet_y"]
        assert 0 <= sx < ncols and 0 <= sy < nrows, e["short_name"]
        x, y = sx * cell + 1, sy * cell + 1
        crop = sheet.crop((x, y, x + sheet_px, y + sheet_px))
        rgb = Image.alpha_composite(white, crop).convert("RGB")
        if sheet_px != size:
            rgb = rgb.resize((size, size), Image.LANCZOS)
        images.append(np.asarray(rgb, dtype=np.uint8))
        labels.append(CLASSES.index(e["category"]))
        names.append(e["short_name"])
    return (np.stack(images), np.asarray(labels, dtype=np.int64),
            np.asarray(names))


def contact_sheet(images, labels, per_class: int, scale: int) -> Image.Image:
    s = images.shape[1]
    grid = np.full((len(CLASSES) * s, per_class * s, 3), 128, np.uint8)
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(labels == c)
        # spread the picks over the whole class, not just its first members
        pick = idx[np.linspace(0, len(idx) - 1, min(per_class, len(idx))).astype(int)]
        for j, i in enumerate(pick):
            grid[c * s:(c + 1) * s, j * s:(j + 1) * s] = images[i]
    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="~/.cache/wasm-diffusion/emoji32.npz")
    ap.add_argument("--size", type=int, default=32,
                    help="output resolution (16/20/32/64 crop the matching sheet; "
                         "other sizes are resized from the 64 px sheet)")
    ap.add_argument("--pkg", default=DEFAULT_PKG,
                    help="path to the installed emoji-datasource-google package")
    ap.add_argument("--variant", default="sheets-clean",
                    choices=["sheets-clean", "sheets"],
                    help="sheets-clean = Google/Noto artwork only (default)")
    ap.add_argument("--contact", default="/tmp/emoji_contact.png",
                    help="write a contact sheet PNG here ('' to skip)")
    ap.add_argument("--per-class", type=int, default=20)
    args = ap.parse_args()

    images, labels, names = build(args.pkg, args.size, args.variant)
    out = os.path.expanduser(args.out)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp.npz"
    np.savez_compressed(tmp, images=images, labels=labels, names=names,
                        classes=np.asarray(CLASSES))
    os.replace(tmp, out)

    counts = Counter(labels.tolist())
    for c, name in enumerate(CLASSES):
        print(f"{c} {name:<18} {counts.get(c, 0):5d}")
    print(f"total N={len(labels)}  images {images.shape} {images.dtype} -> {out}")

    if args.contact:
        contact_sheet(images, labels, args.per_class, 2).save(args.contact)
        print(f"contact sheet -> {args.contact}")


if __name__ == "__main__":
    main()
