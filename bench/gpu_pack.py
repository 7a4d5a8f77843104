#!/usr/bin/env python3
"""Packs bench/gpu.sh's staged archives into parts that each travel in one device call.

    python3 bench/gpu_pack.py STAGE TREE_BYTES LIMIT_MIB NODE CLI CLI_MTIME

STAGE/c/ holds one archive per component. A device call carries at most LIMIT_MIB including the
tree (TREE_BYTES: tracked and untracked, not ignored files), so each part gets the room left
beside the tree, less 256 KiB for the tree to grow by a few commits. The native half's archives
(cli, py, vulkan) go into the LAST part, which the call that runs the benchmark carries, so the
native half runs even if the machine went cold between calls; the rest are packed first-fit,
largest first, into the parts before it. Moves the archives into STAGE/part1..N, writes a
MANIFEST.json into each and removes STAGE/c.
"""

import json
import os
import subprocess
import sys
import time

NATIVE = ["cli.tar.xz", "py.tar.xz", "vulkan.tar"]


def main():
    stage, tree, limit, node, cli, cli_mtime = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6])
    c = os.path.join(stage, "c")
    sizes = {f: os.path.getsize(os.path.join(c, f)) for f in os.listdir(c)}
    room = limit * 2**20 - tree - 2**18
    mib = lambda b: f"{b / 2**20:.2f} MiB"  # noqa: E731
    if sum(sizes[f] for f in NATIVE) > room:
        sys.exit(f"gpu_pack: the native half's archives ({mib(sum(sizes[f] for f in NATIVE))}) do not fit beside the tree ({mib(tree)})")
    last = list(NATIVE)
    rest = []
    for f in sorted((f for f in sizes if f not in NATIVE), key=lambda f: -sizes[f]):
        if sizes[f] > room:
            sys.exit(f"gpu_pack: {f} ({mib(sizes[f])}) does not fit in one call beside the tree ({mib(tree)})")
        for p in [last] + rest:
            if sum(sizes[g] for g in p) + sizes[f] <= room:
                p.append(f)
                break
        else:
            rest.append([f])
    order = rest + [last]
    for i, p in enumerate(order, 1):
        d = os.path.join(stage, f"part{i}")
        os.makedirs(d)
        for f in p:
            os.rename(os.path.join(c, f), os.path.join(d, f))
    os.rmdir(c)
    git = lambda *a: subprocess.run(["git", *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    version = lambda exe: subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    manifest = {
        "staged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "node": version(node), "cli": version(cli),
        "cli_built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cli_mtime)),
        "tree_bytes": tree, "room_bytes": room, "parts": {f"part{i}": {f: sizes[f] for f in p} for i, p in enumerate(order, 1)},
    }
    for i in range(1, len(order) + 1):
        with open(os.path.join(stage, f"part{i}", "MANIFEST.json"), "w") as f:
            json.dump(manifest, f, indent=1)
    print(f"gpu_pack: {len(order)} part(s), room per call {mib(room)}", file=sys.stderr)


if __name__ == "__main__":
    main()
