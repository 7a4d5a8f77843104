//! The CLIP tokenizer against transformers, token for token: every prompt of
//! tests/fixtures/clip_tokenizer/prompts.json (made by tools/make_tokenizer_fixtures.py) with the
//! real CLIP vocabulary, for both flavors: transformers 4.x's `CLIPTokenizer` without ftfy
//! ("slow") and transformers 5.x's ("fast"). Then malformed vocab.json / merges.txt inputs.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use wasm_diffusion::text::{ClipTokenizer, Flavor, MAX_LENGTH};
use wasm_diffusion::ErrorKind;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip_tokenizer")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

struct Files {
    vocab: String,
    merges: String,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| Files {
        vocab: fixture("vocab.json"),
        merges: fixture("merges.txt"),
    })
}

fn tokenizer() -> &'static ClipTokenizer {
    static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| {
        let f = files();
        ClipTokenizer::from_files(&f.vocab, &f.merges).expect("the CLIP vocabulary loads")
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an id list")
        .iter()
        .map(|i| i.as_u64().expect("an id") as u32)
        .collect()
}

/// Where two id lists first differ, with a few ids of context, for a readable failure.
fn first_difference(expected: &[u32], found: &[u32]) -> String {
    let at = expected
        .iter()
        .zip(found)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(found.len()));
    let window = |v: &[u32]| format!("{:?}", &v[at.saturating_sub(2)..(at + 4).min(v.len())]);
    format!(
        "first difference at index {at} (lengths {} / {}): expected ...{}..., found ...{}...",
        expected.len(),
        found.len(),
        window(expected),
        window(found)
    )
}

fn check_flavor(flavor: Flavor, key: &str) {
    let f: Value = serde_json::from_str(&fixture("prompts.json")).expect("prompts.json parses");
    assert_eq!(f["max_length"], MAX_LENGTH);
    let t = tokenizer().clone().with_flavor(flavor);
    assert_eq!(f["pad_token_id"], t.pad_id(), "pad token");
    let prompts = f["prompts"].as_array().expect("prompts");
    assert!(
        prompts.len() >= 300,
        "expected >= 300 prompts, found {}",
        prompts.len()
    );

    let mut failures = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let text = p["text"].as_str().expect("text");
        let r = &p[key];
        let (want_ids, want_untruncated) = (ids(&r["ids"]), ids(&r["untruncated"]));
        let want_truncated = r["truncated"].as_bool().expect("truncated");

        let untruncated = t.encode(text);
        let padded = t
            .encode_padded(text, MAX_LENGTH)
            .expect("max_len 77 is valid");
        let what = if untruncated != want_untruncated {
            Some(format!(
                "encode: {}",
                first_difference(&want_untruncated, &untruncated)
            ))
        } else if padded.ids != want_ids {
            Some(format!(
                "encode_padded ids: {}",
                first_difference(&want_ids, &padded.ids)
            ))
        } else if padded.truncated != want_truncated {
            Some(format!(
                "truncated: expected {want_truncated}, found {}",
                padded.truncated
            ))
        } else if padded.length != want_untruncated.len().min(MAX_LENGTH) {
            Some(format!("length: found {}", padded.length))
        } else {
            None
        };
        if let Some(what) = what {
            failures.push(format!("prompt {i} {text:?}: {what}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{key} ({flavor:?}): {} of {} prompts differ from transformers; the first:\n{}",
        failures.len(),
        prompts.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

#[test]
fn slow_matches_transformers_4_without_ftfy() {
    check_flavor(Flavor::Slow, "slow");
}

#[test]
fn fast_matches_transformers_5() {
    check_flavor(Flavor::Fast, "fast");
}

#[test]
fn default_is_slow_and_pads_with_endoftext() {
    let t = tokenizer();
    assert_eq!(t.flavor(), Flavor::Slow);
    assert_eq!(
        (t.start_id(), t.end_id(), t.pad_id()),
        (49406, 49407, 49407)
    );
    assert_eq!(
        t.encode("a photo of a cat"),
        [49406, 320, 1125, 539, 320, 2368, 49407]
    );
    // Stable Diffusion 2.x pads with "!".
    let sd2 = t.clone().with_pad_token("!").unwrap();
    let e = sd2.encode_padded("a cat", MAX_LENGTH).unwrap();
    assert_eq!((e.length, e.ids[3], e.ids[4], e.ids[76]), (4, 49407, 0, 0));
    let err = t.clone().with_pad_token("<pad>").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("\"<pad>\""), "{}", err.message);
}

#[test]
fn bad_max_len_is_an_error() {
    for max_len in [0, 1, usize::MAX] {
        let err = tokenizer().encode_padded("a cat", max_len).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(
            err.message.contains(&format!("found {max_len}")),
            "{}",
            err.message
        );
    }
}

/// A word of 100k letters: the BPE is O(n log n), so this takes milliseconds (transformers'
/// rescanning BPE takes minutes on it).
#[test]
fn long_words_stay_fast() {
    let mut x = 12345u32;
    let word: String = (0..100_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            char::from(b'a' + ((x >> 16) % 26) as u8)
        })
        .collect();
    let start = std::time::Instant::now();
    for flavor in [Flavor::Slow, Flavor::Fast] {
        let ids = tokenizer().clone().with_flavor(flavor).encode(&word);
        assert!(ids.len() > 10_000);
    }
    assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
}

/// (vocab.json, merges.txt) -> the error's message must contain `expect`.
fn load_error(vocab: &str, merges: &str, expect: &str) {
    let err = ClipTokenizer::from_files(vocab, merges).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Format, "{}", err.message);
    assert!(
        err.message.contains(expect),
        "expected the message to contain {expect:?}, found {:?}",
        err.message
    );
}

fn vocab_without(token: &str) -> String {
    let mut v: Value = serde_json::from_str(&files().vocab).unwrap();
    v.as_object_mut()
        .unwrap()
        .remove(token)
        .expect("token present");
    v.to_string()
}

#[test]
fn malformed_vocab_is_a_format_error() {
    let merges = &files().merges;
    load_error(
        "",
        merges,
        "vocab.json: expected a JSON object of token -> id",
    );
    load_error("[1, 2]", merges, "found: invalid type: sequence");
    load_error(r#"{"a": -1}"#, merges, "found: invalid value: integer `-1`");
    load_error(r#"{"a": "x"}"#, merges, "found: invalid type: string \"x\"");
    load_error(
        r#"{"a": 0, "b": 0}"#,
        merges,
        "expected one token per id, found id 0 for both \"a\" and \"b\"",
    );
    load_error(
        &vocab_without("<|endoftext|>"),
        merges,
        "vocab.json: expected the special token \"<|endoftext|>\", found no such token",
    );
    load_error(
        &vocab_without("Ā</w>"),
        merges,
        "vocab.json: expected the byte token \"Ā</w>\", found no such token",
    );
    // The merges are checked before the special tokens: a vocab lacking a merge result.
    load_error(
        &vocab_without("photo</w>"),
        merges,
        "expected \"photo</w>\" in vocab.json, found no such token",
    );
}

#[test]
fn malformed_merges_are_a_format_error() {
    let vocab = &files().vocab;
    load_error(
        vocab,
        "",
        "merges.txt: expected a first line \"#version: 0.2\", found \"\"",
    );
    // vocab.json passed as merges.txt: the message shows 40 characters of it, not a megabyte.
    load_error(
        vocab,
        vocab,
        "merges.txt: expected a first line \"#version: 0.2\", found \"{\\\"!\\\":0,",
    );
    load_error(
        vocab,
        "#version: 0.2\ni n\nt h e\n",
        "merges.txt line 3: expected two tokens separated by a space, found \"t h e\"",
    );
    load_error(
        vocab,
        "#version: 0.2\ni n\nin zzzzunknown\n",
        "merges.txt line 3: expected \"zzzzunknown\" in vocab.json",
    );
    load_error(
        vocab,
        "#version: 0.2\nq z\n",
        "merges.txt line 2: expected \"qz\" in vocab.json, found no such token",
    );
    let too_many = format!("{}i n\n", files().merges);
    load_error(vocab, &too_many, "expected at most 48894 merges");
    load_error(vocab, &too_many, "found 48895");
    // A short but well-formed merges file loads (as it would in transformers).
    ClipTokenizer::from_files(vocab, "#version: 0.2\r\ni n\r\n\r\n").unwrap();
}
