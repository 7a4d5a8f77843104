//! CLIP's byte-level BPE tokenizer; mirrors transformers' `models/clip/tokenization_clip.py`.
//!
//! Stable Diffusion pipelines load `CLIPTokenizer`, and that class changed in transformers 5, so
//! both are mirrored, token for token ([`Flavor`]):
//!
//! * [`Flavor::Slow`] (the default): transformers 4.x `CLIPTokenizer`, the pure-Python one,
//!   without ftfy installed, as Stable Diffusion setups usually run it. Text goes through
//!   BERT's `BasicTokenizer`: control characters dropped, whitespace to spaces, a space around
//!   every CJK ideograph, NFC, split on whitespace, each word lower-cased.
//! * [`Flavor::Fast`]: transformers 5.x `CLIPTokenizer` (the tokenizers backend): NFC, runs of
//!   whitespace to one space, lower-casing character by character; nothing is dropped.
//!
//! Then both split the text with CLIP's regex, map each piece's UTF-8 bytes to GPT-2's printable
//! characters and apply the BPE merges by rank, the last symbol carrying `</w>`. Text equal to
//! `<|startoftext|>` or `<|endoftext|>` becomes that special token wherever it stands.
//!
//! `tests/clip_tokenizer.rs` checks both against transformers on the prompts of
//! `tests/fixtures/clip_tokenizer/prompts.json` (made by `tools/make_tokenizer_fixtures.py`).
//!
//! Character classes, case and NFC come from the Unicode tables of `regex` (16.0), std (17.0)
//! and `unicode-normalization` (18.0); the references use their Python's (14.0 for 3.11) and,
//! for the backend's NFC, tables older than Unicode 11. Characters whose properties differ
//! between those versions can tokenize differently: U+0295 is cased in 14.0 but not in 16.0,
//! which decides a following sigma's final form; combining marks added since Unicode 11 are
//! reordered by NFC here but not by the backend. The fixtures hold Unicode 14 characters only.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// The context length of every Stable Diffusion text encoder (`tokenizer.model_max_length`).
pub const MAX_LENGTH: usize = 77;

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";
const END_OF_WORD: &str = "</w>";
/// The merges transformers 4.x reads from `merges.txt`: CLIP's 49152 BPE tokens less the 256
/// bytes and the 2 special tokens. It silently ignores any further lines, so they are refused.
const MAX_MERGES: usize = 49152 - 256 - 2;
/// The longest padded output [`ClipTokenizer::encode_padded`] makes. CLIP's context is 77;
/// the bound keeps a wrong `max_len` from a caller from allocating gigabytes.
pub const MAX_PADDED_LENGTH: usize = 1 << 16;

/// Which transformers tokenizer to reproduce. They agree on ordinary prompts; they differ on
/// control characters, CJK ideographs, a word-final capital sigma and special-token text written
/// in another case (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// transformers 4.x `CLIPTokenizer` without ftfy (its `BasicTokenizer` path).
    #[default]
    Slow,
    /// transformers 5.x `CLIPTokenizer` (the tokenizers backend).
    Fast,
}

/// Ids as a Stable Diffusion pipeline asks for them:
/// `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// `<|startoftext|>`, at most `max_len - 2` text tokens, `<|endoftext|>`, then padding:
    /// always `max_len` ids.
    pub ids: Vec<u32>,
    /// Whether text tokens were cut off to fit (the pipelines' "truncated" warning).
    pub truncated: bool,
    /// How many of `ids` come before the padding; `ids[length - 1]` is `<|endoftext|>`.
    pub length: usize,
}

/// A BPE merge: its priority (the line in `merges.txt`, lower first) and the token it makes.
#[derive(Debug, Clone, Copy)]
struct Merge {
    rank: u32,
    id: u32,
}

/// The CLIP tokenizer of a `vocab.json` and `merges.txt`, as transformers builds it from them.
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    flavor: Flavor,
    vocab: HashMap<String, u32>,
    merges: HashMap<(u32, u32), Merge>,
    /// The id of each byte's GPT-2 character, alone and as a word's last symbol (with `</w>`).
    byte_ids: [u32; 256],
    byte_end_ids: [u32; 256],
    start_id: u32,
    end_id: u32,
    pad_id: u32,
    patterns: Patterns,
}

/// The regexes of both flavors, compiled once.
#[derive(Debug, Clone)]
struct Patterns {
    /// `BasicTokenizer._clean_text`: the characters it drops, and those it turns into a space.
    control: Regex,
    whitespace: Regex,
    /// tokenization_clip.py's `self.pat`, compiled with `regex.IGNORECASE` there. Only the
    /// literal alternatives fold case here: under IGNORECASE Python's `regex` puts U+0345
    /// (COMBINING GREEK YPOGEGRAMMENI, which folds to a letter) in neither `[\p{L}]` nor
    /// `[^\s\p{L}\p{N}]`, so it is matched by nothing and dropped; the explicit exclusion below
    /// reproduces that, where Rust's case-folded classes would make it a letter.
    slow_split: Regex,
    /// The same regex, case-sensitive, as the tokenizers backend's `Split` pre-tokenizer runs it.
    fast_split: Regex,
    /// The backend's `ByteLevel` pre-tokenizer then splits each piece with GPT-2's regex. The
    /// pieces hold no whitespace, so its whitespace alternatives are left out; in practice it
    /// only splits `<|endoftext|>` text that was not written exactly (and so is not the special
    /// token) into `<|`, `endoftext`, `|>`.
    byte_level: Regex,
    /// The backend normalizer's `Replace(Regex(r"\s+"), " ")`.
    whitespace_run: Regex,
}

impl Patterns {
    fn new() -> Result<Self> {
        let compile = |pattern: &str| {
            Regex::new(pattern).map_err(|e| {
                Error::unsupported(format!(
                    "expected the tokenizer regex {pattern:?} to compile (the regex crate's \
                     Unicode tables), found: {e}"
                ))
            })
        };
        Ok(Self {
            control: compile(r"[\p{C}\x{FFFD}--[\t\n\r]]")?,
            whitespace: compile(r"[ \t\n\r\p{Zs}]")?,
            slow_split: compile(
                r"(?i:<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d)|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}\x{345}]+",
            )?,
            fast_split: compile(
                r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
            )?,
            byte_level: compile(r"'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+")?,
            whitespace_run: compile(r"\s+")?,
        })
    }
}

impl ClipTokenizer {
    /// Builds the tokenizer from the text of `vocab.json` (token -> id) and `merges.txt`
    /// (a `#version` line, then one `left right` merge per line, highest priority first), as
    /// `CLIPTokenizer(vocab_file, merges_file)` does, with [`Flavor::Slow`]. The padding token
    /// is `<|endoftext|>`, CLIPTokenizer's default (see [`Self::with_pad_token`]).
    ///
    /// Refuses files transformers would accept but tokenize with silent `<|endoftext|>`s or
    /// dropped lines: every byte token and every merge's parts and result must be in the vocab.
    pub fn from_files(vocab_json: &str, merges_txt: &str) -> Result<Self> {
        let vocab = parse_vocab(vocab_json)?;
        let merges = parse_merges(merges_txt, &vocab)?;
        let require = |what: &str, token: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                Error::format(format!(
                    "vocab.json: expected the {what} {token:?}, found no such token"
                ))
            })
        };
        let start_id = require("special token", START_OF_TEXT)?;
        let end_id = require("special token", END_OF_TEXT)?;
        let mut byte_ids = [0; 256];
        let mut byte_end_ids = [0; 256];
        for (byte, c) in byte_chars().into_iter().enumerate() {
            let mut token = c.to_string();
            byte_ids[byte] = require("byte token", &token)?;
            token.push_str(END_OF_WORD);
            byte_end_ids[byte] = require("byte token", &token)?;
        }
        Ok(Self {
            flavor: Flavor::Slow,
            vocab,
            merges,
            byte_ids,
            byte_end_ids,
            start_id,
            end_id,
            pad_id: end_id,
            patterns: Patterns::new()?,
        })
    }

    /// The same tokenizer reproducing another transformers tokenizer.
    pub fn with_flavor(mut self, flavor: Flavor) -> Self {
        self.flavor = flavor;
        self
    }

    /// Pads with `token` instead of `<|endoftext|>`: Stable Diffusion 2.x's tokenizer config
    /// sets `pad_token` to `"!"` (id 0).
    pub fn with_pad_token(mut self, token: &str) -> Result<Self> {
        self.pad_id = self.token_id(token).ok_or_else(|| {
            Error::invalid(format!(
                "expected a pad token from vocab.json, found {:?}, which it lacks",
                preview(token)
            ))
        })?;
        Ok(self)
    }

    /// The largest token id in the vocabulary.
    pub fn max_id(&self) -> u32 {
        self.vocab.values().copied().max().unwrap_or(0)
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// The id of a vocabulary token (`"a</w>"`, `"<|endoftext|>"`), if it has one.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    pub fn start_id(&self) -> u32 {
        self.start_id
    }

    pub fn end_id(&self) -> u32 {
        self.end_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// `tokenizer(text).input_ids`: `<|startoftext|>`, every text token, `<|endoftext|>`.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.start_id];
        self.tokenize_into(text, &mut ids);
        ids.push(self.end_id);
        ids
    }

    /// `tokenizer(text, padding="max_length", max_length=max_len, truncation=True)`, as Stable
    /// Diffusion pipelines call it with `max_len` = [`MAX_LENGTH`]: text tokens beyond
    /// `max_len - 2` are cut off, then the ids are padded to `max_len`.
    pub fn encode_padded(&self, text: &str, max_len: usize) -> Result<Encoded> {
        if !(2..=MAX_PADDED_LENGTH).contains(&max_len) {
            return Err(Error::invalid(format!(
                "expected max_len in 2..={MAX_PADDED_LENGTH} (room for <|startoftext|> and \
                 <|endoftext|>; CLIP's context is {MAX_LENGTH}), found {max_len}"
            )));
        }
        let mut ids = self.encode(text);
        let truncated = ids.len() > max_len;
        if truncated {
            ids.truncate(max_len - 1);
            ids.push(self.end_id);
        }
        let length = ids.len();
        ids.resize(max_len, self.pad_id);
        Ok(Encoded {
            ids,
            truncated,
            length,
        })
    }

    /// `tokenize` + `convert_tokens_to_ids`, without the start and end tokens.
    fn tokenize_into(&self, text: &str, ids: &mut Vec<u32>) {
        // 1. Special tokens, written exactly, are cut out first (transformers' added-tokens trie,
        //    the backend's AddedVocabulary); the text between them is tokenized on its own.
        for piece in split_special_tokens(text) {
            match piece {
                Piece::Special(token) => ids.push(self.special_id(token)),
                Piece::Text(text) => match self.flavor {
                    Flavor::Slow => self.tokenize_slow(text, ids),
                    Flavor::Fast => self.tokenize_fast(text, ids),
                },
            }
        }
    }

    fn special_id(&self, token: &str) -> u32 {
        if token == START_OF_TEXT {
            self.start_id
        } else {
            self.end_id
        }
    }

    /// transformers 4.x `CLIPTokenizer._tokenize` without ftfy.
    fn tokenize_slow(&self, text: &str, ids: &mut Vec<u32>) {
        let p = &self.patterns;
        // 2. BasicTokenizer.tokenize: _clean_text (drop NUL, U+FFFD and category C except
        //    \t\n\r; whitespace to " ", one per character), _tokenize_chinese_chars, NFC,
        //    whitespace_tokenize, lower() per word (Python's, with its final sigma, as Rust's
        //    str::to_lowercase), joined by single spaces.
        let text = p.control.replace_all(text, "");
        let text = p.whitespace.replace_all(&text, " ");
        let text = space_cjk(&text);
        let text: String = text.nfc().collect();
        let words: Vec<String> = text.split_whitespace().map(str::to_lowercase).collect();
        let text = words.join(" ");
        // 3. The regex; bytes -> GPT-2 characters -> BPE. The BPE cache is seeded with the
        //    special tokens, so text that reaches here as `<|endoftext|>` (e.g. written in
        //    capitals) still becomes the special token.
        for m in p.slow_split.find_iter(&text) {
            match m.as_str() {
                token @ (START_OF_TEXT | END_OF_TEXT) => ids.push(self.special_id(token)),
                token => self.bpe(token.as_bytes(), ids),
            }
        }
    }

    /// transformers 5.x `CLIPTokenizer`: the backend's normalizer, pre-tokenizers and model.
    fn tokenize_fast(&self, text: &str, ids: &mut Vec<u32>) {
        let p = &self.patterns;
        // 2. Normalizer: NFC, Replace(\s+, " "), Lowercase (char by char: no final sigma).
        let text: String = text.nfc().collect();
        let text = p.whitespace_run.replace_all(&text, " ");
        let text: String = text.chars().flat_map(char::to_lowercase).collect();
        // 3. Split (the matches are kept), ByteLevel's GPT-2 split, then BPE per piece.
        for piece in p.fast_split.find_iter(&text) {
            for word in p.byte_level.find_iter(piece.as_str()) {
                self.bpe(word.as_str().as_bytes(), ids);
            }
        }
    }

    /// CLIPTokenizer.bpe on a word's bytes (one symbol per byte, the last with `</w>`): merge the
    /// adjacent pair of lowest rank, every occurrence left to right, until no pair has a rank.
    ///
    /// Done with a heap instead of transformers' rescans, so a long word costs O(n log n), not
    /// O(n * merges used). All heap entries of one rank are taken together and applied left to
    /// right, as the rescan does: pairs that a merge creates wait for the next round even when
    /// they rank lower, which keeps the result equal for any merges file. (The backend's heap
    /// takes them at once; that agrees wherever each merge comes after the merges making its
    /// parts, as in all 48894 of CLIP's.)
    fn bpe(&self, word: &[u8], ids: &mut Vec<u32>) {
        const NONE: usize = usize::MAX;
        let n = word.len();
        let Some((&last, head)) = word.split_last() else {
            return;
        };
        let mut symbols: Vec<u32> = head.iter().map(|&b| self.byte_ids[b as usize]).collect();
        symbols.push(self.byte_end_ids[last as usize]);
        // A doubly linked list over the positions; a merged-away position is `alive == false`.
        let mut next: Vec<usize> = (1..=n).map(|i| if i < n { i } else { NONE }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i > 0 { i - 1 } else { NONE }).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let rank_at = |symbols: &[u32], left: usize, right: usize| {
            self.merges.get(&(symbols[left], symbols[right])).copied()
        };
        for i in 0..n.saturating_sub(1) {
            if let Some(m) = rank_at(&symbols, i, i + 1) {
                heap.push(Reverse((m.rank, i)));
            }
        }
        let mut round = Vec::new();
        while let Some(&Reverse((rank, _))) = heap.peek() {
            round.clear();
            while let Some(&Reverse((r, i))) = heap.peek() {
                if r != rank {
                    break;
                }
                heap.pop();
                round.push(i);
            }
            round.sort_unstable();
            round.dedup();
            for &i in &round {
                // An entry is stale when its left symbol was merged away or either changed.
                let j = next[i];
                if !alive[i] || j == NONE {
                    continue;
                }
                let Some(m) = rank_at(&symbols, i, j).filter(|m| m.rank == rank) else {
                    continue;
                };
                symbols[i] = m.id;
                alive[j] = false;
                next[i] = next[j];
                if next[i] != NONE {
                    prev[next[i]] = i;
                    if let Some(m) = rank_at(&symbols, i, next[i]) {
                        heap.push(Reverse((m.rank, i)));
                    }
                }
                if prev[i] != NONE {
                    if let Some(m) = rank_at(&symbols, prev[i], i) {
                        heap.push(Reverse((m.rank, prev[i])));
                    }
                }
            }
        }
        let mut i = 0;
        while i != NONE {
            ids.push(symbols[i]);
            i = next[i];
        }
    }
}

/// A stretch of text between special tokens, or a special token written exactly.
enum Piece<'a> {
    Text(&'a str),
    Special(&'a str),
}

/// Cuts `<|startoftext|>` and `<|endoftext|>` out of the text; empty stretches are left out,
/// as transformers skips them.
fn split_special_tokens(mut text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    loop {
        // Neither token is a prefix or an infix of the other: the first occurrence of either
        // is what a longest-match trie finds.
        let found = [START_OF_TEXT, END_OF_TEXT]
            .into_iter()
            .filter_map(|token| text.find(token).map(|at| (at, token)))
            .min();
        let Some((at, token)) = found else {
            break;
        };
        if at > 0 {
            pieces.push(Piece::Text(&text[..at]));
        }
        pieces.push(Piece::Special(&text[at..at + token.len()]));
        text = &text[at + token.len()..];
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// BasicTokenizer._tokenize_chinese_chars: a space on both sides of every CJK ideograph, so each
/// is a word of its own (the ranges of `_is_chinese_char`, which leave out kana and hangul).
fn space_cjk(text: &str) -> String {
    let is_cjk = |c: char| {
        matches!(c as u32,
            0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B820..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F)
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_cjk(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// GPT-2's `bytes_to_unicode`: each byte's printable stand-in. Printable Latin-1 bytes stand for
/// themselves; the other 68 take U+0100 onwards in byte order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut chars = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        chars[b as usize] = if printable(b) {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(0x100 + shifted - 1).unwrap_or('\0')
        };
    }
    chars
}

fn parse_vocab(vocab_json: &str) -> Result<HashMap<String, u32>> {
    let vocab: HashMap<String, u32> = serde_json::from_str(vocab_json).map_err(|e| {
        Error::format(format!(
            "vocab.json: expected a JSON object of token -> id (0..2^32), found: {e}"
        ))
    })?;
    // Ids stand for strings in the BPE below, so two tokens may not share one.
    let mut seen: HashMap<u32, &str> = HashMap::with_capacity(vocab.len());
    for (token, &id) in &vocab {
        if let Some(other) = seen.insert(id, token) {
            let (a, b) = if other < token.as_str() {
                (other, token.as_str())
            } else {
                (token.as_str(), other)
            };
            return Err(Error::format(format!(
                "vocab.json: expected one token per id, found id {id} for both {:?} and {:?}",
                preview(a),
                preview(b)
            )));
        }
    }
    Ok(vocab)
}

fn parse_merges(
    merges_txt: &str,
    vocab: &HashMap<String, u32>,
) -> Result<HashMap<(u32, u32), Merge>> {
    let mut lines = merges_txt.lines().enumerate();
    // transformers 4.x skips the first line unread; require it to be the header it skips.
    match lines.next() {
        Some((_, header)) if header.starts_with("#version") => {}
        other => {
            return Err(Error::format(format!(
                "merges.txt: expected a first line \"#version: 0.2\", found {:?}",
                preview(other.map_or("", |(_, line)| line))
            )))
        }
    }
    let mut merges = HashMap::new();
    let mut count = 0usize;
    for (index, line) in lines {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if parts.is_empty() {
            continue;
        }
        let line_no = index + 1;
        let [left, right] = parts[..] else {
            return Err(Error::format(format!(
                "merges.txt line {line_no}: expected two tokens separated by a space, found {:?}",
                preview(line)
            )));
        };
        count += 1;
        if count > MAX_MERGES {
            let total = count
                + merges_txt
                    .lines()
                    .skip(line_no)
                    .filter(|l| !l.trim().is_empty())
                    .count();
            return Err(Error::format(format!(
                "merges.txt: expected at most {MAX_MERGES} merges (CLIP's 49152 BPE tokens less 256 \
                 bytes and 2 special tokens; transformers 4.x ignores the rest), found {total}"
            )));
        }
        let id = |token: &str| {
            vocab.get(token).copied().ok_or_else(|| {
                Error::format(format!(
                    "merges.txt line {line_no}: expected {:?} in vocab.json, found no such token",
                    preview(token)
                ))
            })
        };
        let key = (id(left)?, id(right)?);
        let merged = id(&format!("{left}{right}"))?;
        // A repeated merge keeps its last rank, as dict(zip(merges, range(...))) does.
        merges.insert(
            key,
            Merge {
                rank: count as u32,
                id: merged,
            },
        );
    }
    Ok(merges)
}

/// At most 40 characters of a token or line, for error messages (a vocab.json passed as
/// merges.txt is one line of a megabyte).
fn preview(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vocabulary of the 512 byte tokens, the specials and the merges given.
    fn tiny(merges: &[(&str, &str)]) -> ClipTokenizer {
        let mut tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        tokens.extend(byte_chars().iter().map(|c| format!("{c}{END_OF_WORD}")));
        tokens.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.push(START_OF_TEXT.into());
        tokens.push(END_OF_TEXT.into());
        let vocab: HashMap<&str, usize> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut text = String::from("#version: 0.2\n");
        for (a, b) in merges {
            text.push_str(&format!("{a} {b}\n"));
        }
        let json = serde_json::to_string(&vocab).unwrap();
        ClipTokenizer::from_files(&json, &text).unwrap()
    }

    fn tokens(t: &ClipTokenizer, text: &str) -> Vec<String> {
        let names: HashMap<u32, &String> = t.vocab.iter().map(|(k, &v)| (v, k)).collect();
        let ids = t.encode(text);
        ids[1..ids.len() - 1]
            .iter()
            .map(|i| names[i].clone())
            .collect()
    }

    #[test]
    fn byte_chars_match_gpt2() {
        let chars = byte_chars();
        assert_eq!(chars[b'!' as usize], '!');
        assert_eq!(chars[0], '\u{100}');
        assert_eq!(chars[b' ' as usize], '\u{120}');
        assert_eq!(chars[0xAD], '\u{143}');
        let mut sorted = chars.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }

    #[test]
    fn bpe_merges_every_occurrence_of_the_best_pair_before_new_pairs() {
        // Overlapping occurrences merge left to right: a a a a a</w> -> aa aa a</w>.
        let t = tiny(&[("a", "a")]);
        assert_eq!(tokens(&t, "aaaaa"), ["aa", "aa", "a</w>"]);
        // (ab, a) ranks first but only exists once (a, b) has merged at 0; transformers' rescan
        // merges (a, b) at 2 as well before it looks again, so (ab, a) never fires. A plain
        // heap would take it at once and give aba b c</w>.
        let t = tiny(&[("ab", "a"), ("a", "b")]);
        assert_eq!(tokens(&t, "ababc"), ["ab", "ab", "c</w>"]);
    }

    #[test]
    fn padding_and_truncation() {
        let t = tiny(&[]);
        let e = t.encode_padded("ab", 6).unwrap();
        assert_eq!(e.length, 4);
        assert!(!e.truncated);
        assert_eq!(e.ids[4..], [t.end_id, t.end_id]);
        let e = t.encode_padded("abcdef", 4).unwrap();
        assert!(e.truncated);
        assert_eq!((e.ids.len(), e.length, e.ids[3]), (4, 4, t.end_id));
        assert!(t.encode_padded("a", 1).is_err());
        assert!(t.encode_padded("a", usize::MAX).is_err());
        let e = t.encode_padded("", 2).unwrap();
        assert_eq!(e.ids, [t.start_id, t.end_id]);
    }

    #[test]
    fn no_panic_on_odd_text() {
        let t = tiny(&[("a", "a")]);
        for text in [
            "",
            "\0",
            "\u{FFFD}",
            "<|endoftext|",
            "\u{345}",
            "\u{10FFFF}",
            "a\u{301}",
        ] {
            for flavor in [Flavor::Slow, Flavor::Fast] {
                let t = t.clone().with_flavor(flavor);
                let _ = t.encode(text);
                let _ = t.encode_padded(text, MAX_LENGTH).unwrap();
            }
        }
    }
}
