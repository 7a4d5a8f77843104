#!/usr/bin/env python3
"""Generate the CLIP tokenizer fixtures (tests/fixtures/clip_tokenizer/) from Hugging Face transformers.

What it makes (see tests/fixtures/README.md):

  vocab.json    the CLIP vocabulary (49408 tokens), derived from OpenAI's bpe_simple_vocab_16e6.txt.gz
                exactly as openai/clip-vit-large-patch14's tokenizer files are
  merges.txt    "#version: 0.2" and the 48894 merges (49152 - 256 - 2) in rank order
  prompts.json  for every prompt, what transformers' tokenizers return

Two transformers tokenizers are recorded, because Stable Diffusion pipelines load `CLIPTokenizer`
and that class changed in transformers 5:

  "slow"   transformers 4.x `CLIPTokenizer` (tokenization_clip.py, pure Python) without ftfy: its
           BasicTokenizer path (control characters dropped, CJK characters split, NFC, per-word
           lower-casing) and a case-insensitive pre-tokenisation regex.
  "fast"   transformers 5.x `CLIPTokenizer` (the tokenizers backend): NFC, whitespace runs -> " ",
           lower-casing, the same regex (case-sensitive), then byte-level BPE. transformers 4.x
           `CLIPTokenizerFast` is also run, and each prompt records whether it agrees with "fast".

For each tokenizer and prompt: `ids` = tokenizer(text, padding="max_length", max_length=77,
truncation=True).input_ids (Stable Diffusion's call), `untruncated` = tokenizer(text).input_ids,
`truncated` = len(untruncated) > 77.

How to run (from the repository root). It needs two Python environments: this one with
transformers 5.x, and another with transformers 4.x given by --transformers4-python. Neither may
have ftfy installed (Stable Diffusion setups usually lack it, and the slow tokenizer changes
behaviour with it). The vocabulary comes from the open_clip_torch wheel, which ships
bpe_simple_vocab_16e6.txt.gz (`pip download open_clip_torch --no-deps`):

    python tools/make_tokenizer_fixtures.py --open-clip-wheel open_clip_torch-3.3.0-py3-none-any.whl \\
        --transformers4-python /path/to/venv-transformers4/bin/python

The prompts are generated from a fixed seed and a hand-written list, so a second run writes
identical bytes (given the same library versions, which prompts.json records).
"""

import argparse
import gzip
import io
import json
import os
import random
import subprocess
import sys
import unicodedata
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "clip_tokenizer")
MAX_LENGTH = 77
SEED = 20240531
# The number of merges the CLIP tokenizer uses: 49152 BPE tokens minus 256 bytes and 2 specials.
N_MERGES = 49152 - 256 - 2
BPE_GZ = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# sha256 of OpenAI CLIP's bpe_simple_vocab_16e6.txt.gz; open_clip ships the same file.
BPE_GZ_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


# ---------------------------------------------------------------------------------------------
# 1. The vocabulary files
# ---------------------------------------------------------------------------------------------


def bytes_to_unicode():
    """GPT-2's byte -> printable character table, in the order CLIP's vocabulary lists it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def derive_vocab(wheel_path):
    """OpenAI's SimpleTokenizer vocabulary, as transformers' CLIP vocab.json / merges.txt hold it."""
    import hashlib

    with zipfile.ZipFile(wheel_path) as z:
        gz = z.read(BPE_GZ)
    digest = hashlib.sha256(gz).hexdigest()
    if digest != BPE_GZ_SHA256:
        sys.exit(f"{BPE_GZ}: expected sha256 {BPE_GZ_SHA256}, found {digest}")
    lines = gzip.GzipFile(fileobj=io.BytesIO(gz)).read().decode("utf-8").split("\n")
    # Line 0 is a header; the tokenizer uses exactly the next N_MERGES lines.
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    assert len(merges) == N_MERGES and all(len(m) == 2 for m in merges)
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == 49408 == len(set(tokens))
    vocab = {t: i for i, t in enumerate(tokens)}
    # Known ids of openai/clip-vit-large-patch14's vocab.json.
    for tok, i in [("!", 0), ("a</w>", 320), ("photo</w>", 1125), ("of</w>", 539), ("cat</w>", 2368),
                   ("<|startoftext|>", 49406), ("<|endoftext|>", 49407)]:
        assert vocab[tok] == i, (tok, vocab[tok], i)
    return vocab, merges


def write_vocab(vocab, merges):
    os.makedirs(OUT, exist_ok=True)
    # Compact JSON in id order (the hub file is indented; the parsed content is identical).
    with open(os.path.join(OUT, "vocab.json"), "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(vocab, ensure_ascii=False, separators=(",", ":")) + "\n")
    # The layout transformers' save_vocabulary writes.
    with open(os.path.join(OUT, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


# ---------------------------------------------------------------------------------------------
# 2. The prompts
# ---------------------------------------------------------------------------------------------

HAND = [
    # Empty and blank.
    "", " ", "     ", "\t", "\n", "\r\n", " \t \n ", "\u3000", "\u00a0\u00a0",
    # Plain Stable Diffusion prompts.
    "a photo of a cat",
    "a photograph of an astronaut riding a horse",
    "A high tech solarpunk utopia in the Amazon rainforest",
    "portrait of a young woman, highly detailed, digital painting, artstation, concept art, smooth, sharp focus, illustration, art by greg rutkowski and alphonse mucha",
    "masterpiece, best quality, (ultra-detailed:1.2), [cat|dog], {blue eyes}, <lora:foo:0.8>",
    "low quality, blurry, watermark, text, signature, jpeg artifacts, deformed, extra fingers",
    "cyberpunk city at night, neon lights, rain, 8k, octane render, trending on artstation",
    "Pikachu commitng tax fraud, paperwork, exhausted, cute, really cute, cozy, by steve hanks, by lisa yuskavage",
    # Case.
    "A PHOTO OF A CAT", "a PhOtO oF a CaT", "NASA JPEG HDR 4K UHD", "McDonald's iPhone eBay",
    # Contractions and apostrophes.
    "it's", "IT'S", "don't", "DON'T", "they're", "we've", "I'm", "you'll", "he'd",
    "it'S", "THEY'RE", "WE'VE", "I'M", "YOU'LL", "HE'D", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d",
    "''s", "' s", "'ss", "'sa", "rock'n'roll", "o'clock", "'tis the season", "the dog's bone's",
    "it\u2019s", "it\u2018s\u2019", "it`s", "it'\u017f", "IT'\u017f", "'\u212a",
    # Punctuation.
    "!!!", "?!?!", "...", "hello, world!", "a-b_c.d/e\\f", "(((very))) [[[much]]]", "#hashtag @user",
    "https://example.com/path?q=1&x=y#frag", "user@example.com", "<html><body></body></html>",
    "&amp; &lt; &gt; &quot;", "~`^*+=|", "\"quoted\" 'single'", "\u00ab guillemets \u00bb",
    "\u201csmart quotes\u201d", "em\u2014dash en\u2013dash", "\u2026ellipsis", "\u00bfqu\u00e9?", "\u00a1hola!",
    # Numbers.
    "1", "42", "1920x1080", "3.14159", "1,000,000", "-273.15", "2024-05-31", "v1.5", "sd-xl 1.0",
    "0123456789", "1st 2nd 3rd 4th", "100%", "$9.99", "\u00bd \u00be \u2153", "x\u00b2 + y\u00b3",
    "\u2160 \u2161 \u216b", "\u0663\u0664\u0665", "\u0967\u0968\u0969", "\uff11\uff12\uff13",
    # Accents and composition.
    "caf\u00e9", "cafe\u0301", "na\u00efve", "nai\u0308ve", "Z\u00fcrich", "S\u00e3o Paulo", "\u00d1and\u00fa",
    "CAF\u00c9", "\u00c5ngstr\u00f6m", "\u212bngstr\u00f6m", "\u212a kelvin", "\u2126 ohm",
    "stra\u00dfe STRASSE \u1e9e", "\ufb01sh \ufb02ow", "\u0130stanbul \u0131", "\u00c9\u00c8\u00ca\u00cb",
    "\u1100\u1161\u11a8", "\u0041\u030a", "a\u0345", "\u0345", "\u1fb3 \u1fbc",
    # Greek and Cyrillic case.
    "\u039f\u0394\u039f\u03a3 \u039f\u0394\u039f\u03a3.", "\u03a3", "\u03a3\u03a3", "\u03b1\u03a3", "\u0391\u03a3 \u03b2",
    "\u041c\u041e\u0421\u041a\u0412\u0410 \u043c\u043e\u0441\u043a\u0432\u0430", "\u0423\u043a\u0440\u0430\u0457\u043d\u0430",
    # CJK.
    "\u4e2d\u6587\u5b57\u7b26", "\u4e00\u53ea\u732b", "\u732b cat \u72d7", "a\u732bb",
    "\u65e5\u672c\u8a9e\u306e\u6587\u7ae0", "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca", "\uff71\uff72\uff73",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5", "\u3400\u4dbf", "\U00020000\U0002a6df", "\uf900\ufa6a", "\U0002f800",
    "\uff21\uff22\uff23 \uff41\uff42\uff43", "\u3001\u3002\u300c\u300d", "\u2f00\u2e80",
    # Other scripts.
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629", "\u05e2\u05d1\u05e8\u05d9\u05ea", "\u0939\u093f\u0928\u094d\u0926\u0940",
    "\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22", "\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8",
    "\U0001d400\U0001d401 \U0001d5ba", "\u24b6\u24b7 \u24d0",
    # Emoji.
    "\U0001f600", "a cat \U0001f431 in space \U0001f680", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f44d\U0001f3fd", "\U0001f1ef\U0001f1f5", "1\ufe0f\u20e3", "\u2764\ufe0f", "\U0001f525\U0001f525\U0001f525",
    "\U0001f3f3\ufe0f\u200d\U0001f308", "emoji\U0001f600text",
    # Whitespace.
    "a  b", "a\tb", "a\nb", "a\r\nb", "  leading", "trailing  ", "a\u00a0b", "a\u2002b", "a\u3000b",
    "a\u2028b", "a\u2029b", "a\u0085b", "a\u000bb", "a\u000cb", "a\u001cb", "a\u200bb", "a\u2060b",
    "many     spaces\t\t\tand\n\n\nlines",
    # Control, format and replacement characters.
    "a\x00b", "a\x07b", "\x1b[31mred\x1b[0m", "a\x7fb", "a\u00adb", "a\u200db", "\ufeffbom", "a\u200fb",
    "a\ufffdb", "\ufffd", "\ue000private", "a\u0378b", "\U000f0000", "\x00", "\x01\x02\x03",
    # Special tokens in the text.
    "<|startoftext|>", "<|endoftext|>", "a<|endoftext|>b", "a <|endoftext|> b", "<|startoftext|>a cat<|endoftext|>",
    "<|ENDOFTEXT|>", "<|EndOfText|> x", "<|startoftext|><|startoftext|>", "<|endoftext", "|endoftext|>",
    "< |endoftext| >", "<|endoftext|><|endoftext|><|endoftext|>", "x<|endoftext|>", "\u017f<|endoftext|>",
    "<|\u017ftartoftext|>", "<|STARTOFTEXT|>", "x'<|endoftext|>s", "!'s", "\u3000<|endoftext|>\u3000",
    "e<|endoftext|>\u0301", "<|endoftext|>" + "\u0345",
    # Words BPE splits into many pieces.
    "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "abababababababababababab", "zzzzqqqqxxxxjjjj",
    "ThisIsCamelCaseTextWithoutSpaces", "snake_case_identifier_name", "x" * 300,
]


def long_prompts(rng):
    """Prompts around and past 77 tokens, including the exact truncation boundary."""
    words = ["cat", "dog", "red", "blue", "photo", "of", "a", "the", "and", "city", "night", "light"]
    out = []
    # "cat " * n tokenizes to n tokens: n = 74, 75, 76, 77 lands on both sides of 77 with specials.
    for n in (74, 75, 76, 77, 100, 200):
        out.append(" ".join(["cat"] * n))
    out.append(", ".join(rng.choice(words) for _ in range(120)))
    out.append("highly detailed " * 40)
    out.append(" ".join(str(i) for i in range(100)))
    out.append("!" * 500)
    out.append("\U0001f600" * 40)
    out.append("\u4e2d" * 50)
    out.append("<|endoftext|>" * 80)
    return out


WORDS = ("a photo painting portrait landscape of the an with in on at by and cat dog horse astronaut city "
         "forest mountain river ocean sunset night neon cyberpunk steampunk fantasy castle dragon robot "
         "woman man child old young beautiful detailed realistic cinematic lighting volumetric fog 4k 8k "
         "hdr octane unreal engine artstation trending greg rutkowski mucha studio ghibli watercolor oil "
         "sketch anime manga pixel art low poly isometric macro bokeh golden hour blue red green purple").split()

# Characters drawn into random prompts, one pool per class. All are assigned in Unicode 14 (the
# database of the Python used here), so every engine agrees on their categories.
POOLS = {
    "ascii_punct": "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "latin_accents": "\u00e0\u00e1\u00e2\u00e4\u00e7\u00e8\u00e9\u00ea\u00eb\u00ee\u00ef\u00f1\u00f3\u00f6\u00fa\u00fc"
                     "\u00c0\u00c9\u00d6\u00dc\u00df\u0142\u0153\u0107\u0161\u017e",
    "combining": "\u0300\u0301\u0302\u0303\u0308\u030a\u0327",
    "cjk": "\u4e00\u4e2d\u6587\u732b\u72d7\u5c71\u6c34\u706b\u65e5\u6708\u3042\u3044\u30a2\u30a4\uac00\ud55c",
    "greek_cyrillic": "\u03b1\u03b2\u03b3\u0394\u03a3\u03c3\u03c2\u0416\u0436\u044f\u042f",
    "digits": "0123456789\u0660\u0966\u00b2\u00bd\u2167\uff10",
    "emoji": "\U0001f600\U0001f431\U0001f680\u2764\U0001f525\u2728\U0001f308\U0001f3a8\U0001f44d\U0001f3fd\u200d\ufe0f",
    "whitespace": " \t\n\r\u00a0\u2003\u3000\u2028",
    "control": "\x00\x01\x08\x1b\x1f\x7f\x85\u200b\u200e\ufeff\ufffd",
    "symbols": "\u00a9\u00ae\u2122\u00b0\u00b1\u00d7\u00f7\u2190\u2192\u221e\u2211\u263a\u2605\u266a\u20ac\u00a3\u00a5",
    "apostrophe": "'\u2019",
}


def random_prompts(rng, n):
    out = []
    classes = sorted(POOLS)
    for i in range(n):
        parts = []
        for _ in range(rng.randint(1, 14)):
            r = rng.random()
            if r < 0.55:
                w = rng.choice(WORDS)
                case = rng.random()
                if case < 0.15:
                    w = w.upper()
                elif case < 0.3:
                    w = w.capitalize()
                elif case < 0.35:
                    w = "".join(c.upper() if rng.random() < 0.5 else c for c in w)
                if rng.random() < 0.1:
                    w += rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL"])
                parts.append(w)
            else:
                pool = POOLS[rng.choice(classes)]
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 4))))
            parts.append(rng.choice([" ", " ", " ", ", ", "  ", "", "\t", "\n", ". "]))
        out.append("".join(parts))
    # A few long random prompts (truncation with mixed content).
    for i in range(12):
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(60, 140))))
    return out


def all_prompts():
    rng = random.Random(SEED)
    prompts = list(HAND) + long_prompts(rng) + random_prompts(rng, 260)
    seen, unique = set(), []
    for p in prompts:
        if p not in seen:
            seen.add(p)
            unique.append(p)
    for p in unique:
        for c in p:
            # Deliberately unassigned code points only where a hand prompt asks for them.
            if unicodedata.category(c) == "Cn":
                assert c in "\u0378", f"unassigned U+{ord(c):04X} in {p!r}"
    return unique


# ---------------------------------------------------------------------------------------------
# 3. Running transformers
# ---------------------------------------------------------------------------------------------


def encode_all(tok, prompts):
    out = []
    for p in prompts:
        ids = tok(p, padding="max_length", max_length=MAX_LENGTH, truncation=True).input_ids
        untruncated = tok(p).input_ids
        out.append({"ids": ids, "untruncated": untruncated, "truncated": len(untruncated) > MAX_LENGTH})
    return out


def check_no_ftfy():
    try:
        import ftfy  # noqa: F401
    except ImportError:
        return
    sys.exit("ftfy is installed: uninstall it (the fixtures record the path transformers takes without it)")


def worker():
    """Under transformers 4.x: encode stdin's prompts with CLIPTokenizer and CLIPTokenizerFast."""
    check_no_ftfy()
    import transformers
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    job = json.load(sys.stdin)
    if not transformers.__version__.startswith("4."):
        sys.exit(f"--transformers4-python: expected transformers 4.x, found {transformers.__version__}")
    slow = CLIPTokenizer(job["vocab"], job["merges"])
    assert slow.fix_text is None, "the slow tokenizer must take its BasicTokenizer path"
    fast4 = CLIPTokenizerFast(vocab_file=job["vocab"], merges_file=job["merges"])
    result = {
        "versions": {"transformers": transformers.__version__, "tokenizers": __import__("tokenizers").__version__,
                     "regex": __import__("regex").__version__, "python": sys.version.split()[0],
                     "unicodedata": unicodedata.unidata_version},
        "pad_token": slow.pad_token,
        "slow": encode_all(slow, job["prompts"]),
        "fast4": encode_all(fast4, job["prompts"]),
    }
    json.dump(result, sys.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--open-clip-wheel", required=True, help="open_clip_torch wheel (ships the BPE file)")
    ap.add_argument("--transformers4-python", required=True, help="a Python interpreter with transformers 4.x")
    args = ap.parse_args()
    check_no_ftfy()
    import tokenizers
    import transformers
    from transformers import CLIPTokenizer

    if not transformers.__version__.startswith("5."):
        sys.exit(f"expected transformers 5.x in this interpreter, found {transformers.__version__}")

    vocab, merges = derive_vocab(args.open_clip_wheel)
    write_vocab(vocab, merges)
    vocab_path, merges_path = os.path.join(OUT, "vocab.json"), os.path.join(OUT, "merges.txt")
    prompts = all_prompts()

    fast = CLIPTokenizer.from_pretrained(OUT)
    assert type(fast).__name__ == "CLIPTokenizer" and fast.pad_token == "<|endoftext|>"
    fast_out = encode_all(fast, prompts)

    job = json.dumps({"vocab": vocab_path, "merges": merges_path, "prompts": prompts})
    run = subprocess.run([args.transformers4_python, os.path.abspath(__file__), "--worker"], input=job,
                         capture_output=True, text=True, check=True)
    v4 = json.loads(run.stdout)
    assert v4["pad_token"] == fast.pad_token

    records = []
    for p, s, f, f4 in zip(prompts, v4["slow"], fast_out, v4["fast4"]):
        records.append({"text": p, "slow": s, "fast": f, "fast4_agrees": f4 == f})
    doc = {
        "generator": "tools/make_tokenizer_fixtures.py",
        "seed": SEED,
        "max_length": MAX_LENGTH,
        "pad_token": fast.pad_token,
        "pad_token_id": fast.pad_token_id,
        "versions": {
            "slow": v4["versions"],
            "fast": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                     "python": sys.version.split()[0]},
        },
        "prompts": records,
    }
    # One prompt per line: compact, and a diff shows which prompts changed.
    with open(os.path.join(OUT, "prompts.json"), "w", encoding="utf-8", newline="\n") as f:
        head = {k: v for k, v in doc.items() if k != "prompts"}
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "prompts": [\n')
        f.write(",\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in records))
        f.write("\n]}\n")
    json.load(open(os.path.join(OUT, "prompts.json"), encoding="utf-8"))  # round-trips

    n = len(records)
    differ = sum(r["slow"] != r["fast"] for r in records)
    f4_differ = sum(not r["fast4_agrees"] for r in records)
    trunc = sum(r["slow"]["truncated"] for r in records)
    print(f"{n} prompts ({trunc} truncated); slow and fast differ on {differ}; "
          f"transformers 4 CLIPTokenizerFast differs from fast on {f4_differ}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        worker()
    else:
        main()
