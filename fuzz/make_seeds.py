#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets (see tests/common/fuzz_harness.rs for the formats).

    python3 fuzz/make_seeds.py SEEDS_DIR [MODEL_FILE ...]

SEEDS_DIR/metadata/: the unet and scheduler configs of the fixtures, the shipped model and
tests/fixtures/configs, as mode 0 / mode 1 inputs, and the shipped files' whole metadata as
mode 2 inputs. SEEDS_DIR/model_file/: each MODEL_FILE given. Keep those under the target's
-max_len (24576): the committed corpus started from 1-block models of 2k-3k parameters in f32,
f16, int8 and int4 (9-24 kB; written by the harness's `synthesize`), not the 50-450 kB converted
fixtures, so that it stays a few MB. Run from the repository root; the seeds only start the
fuzzer, the committed corpus is what it kept (fuzz/corpus/).
"""
import glob
import json
import os
import re
import struct
import sys

# The segment layout is the Rust harness's (tests/common/fuzz_harness.rs): read from it, so the
# two cannot drift apart.
HARNESS = open("tests/common/fuzz_harness.rs").read()
SEP = bytes([int(re.search(r"pub const SEPARATOR: u8 = 0x([0-9A-Fa-f]+);", HARNESS).group(1), 16)])
ABSENT = bytes([int(re.search(r"pub const ABSENT: u8 = 0x([0-9A-Fa-f]+);", HARNESS).group(1), 16)])
META_KEYS = re.findall(r'"(\w+)"', re.search(r"pub const META_KEYS: \[&str; \d+\] = \[(.*?)\];", HARNESS, re.S).group(1))
SHIPPED = sorted(glob.glob("models/*/*.safetensors"))


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(n)
    return n, raw, json.loads(raw)


def main():
    out = sys.argv[1]
    meta_dir = os.path.join(out, "metadata")
    file_dir = os.path.join(out, "model_file")
    os.makedirs(meta_dir, exist_ok=True)
    os.makedirs(file_dir, exist_ok=True)
    seeds = {}

    def seed(name, data):
        seeds[os.path.join(meta_dir, name)] = data

    for path in sorted(glob.glob("tests/fixtures/unets/*/config.json")) + sorted(
        glob.glob("tests/fixtures/configs/*.json")
    ):
        tag = path.replace("/", "_")
        seed(f"unet_{tag}", b"\x00" + open(path, "rb").read())
    for path in sorted(glob.glob("tests/fixtures/unets/*/scheduler_config.json")):
        seed("sched_" + path.replace("/", "_"), b"\x01" + open(path, "rb").read())
    # diffusers' DPM-Solver++ and DDIM configs as save_config writes them (bare -Infinity).
    seed(
        "sched_dpm_diffusers",
        b'\x01{"_class_name":"DPMSolverMultistepScheduler","algorithm_type":"dpmsolver++",'
        b'"beta_end":0.012,"beta_schedule":"scaled_linear","beta_start":0.00085,'
        b'"lambda_min_clipped":-Infinity,"lower_order_final":true,"num_train_timesteps":1000,'
        b'"prediction_type":"epsilon","solver_order":2,"solver_type":"midpoint",'
        b'"steps_offset":1,"timestep_spacing":"linspace","variance_type":null}',
    )
    seed(
        "sched_ddim_trailing",
        b'\x01{"_class_name":"DDIMScheduler","beta_schedule":"squaredcos_cap_v2",'
        b'"clip_sample":false,"set_alpha_to_one":false,"timestep_spacing":"trailing",'
        b'"prediction_type":"v_prediction","num_train_timesteps":4000}',
    )
    seed("meta_defaults", b"\x02")
    for path in SHIPPED:
        _, _, h = header(path)
        m = h["__metadata__"]
        tag = os.path.basename(path)
        seed(f"unet_{tag}", b"\x00" + m["unet_config"].encode())
        seed(f"sched_{tag}", b"\x01" + m["scheduler_config"].encode())
        segs = [m[k].encode() if k in m else ABSENT for k in META_KEYS]
        seed(f"meta_{tag}", b"\x02" + SEP.join(segs))

    for path in sys.argv[2:]:
        seeds[os.path.join(file_dir, os.path.basename(path))] = open(path, "rb").read()

    for p, data in seeds.items():
        with open(p, "wb") as f:
            f.write(data)
    print(f"wrote {len(seeds)} seeds under {out}")


if __name__ == "__main__":
    main()
