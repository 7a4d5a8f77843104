//! Reading diffusers config JSON (`config.json`, `scheduler_config.json`): what every config of
//! this crate shares. The configs themselves live beside what they configure
//! ([`crate::models::unets::UNet2DConfig`], [`crate::schedulers::SchedulerConfig`]).
//!
//! Field names and defaults are diffusers' constructor arguments, so a diffusers file
//! deserializes as it is; string options are enums ([`config_enum!`]) whose serde names are
//! diffusers' strings. Nothing falls back silently to a default: an unknown key, a wrong type
//! or an unsupported value is refused with a message naming the field, what was expected and
//! what was found.

use serde_json::Value;

use crate::error::{Error, Result};

pub(crate) fn check_keys(
    value: Value,
    known: &[String],
    what: &str,
) -> Result<serde_json::Map<String, Value>> {
    let obj = match value {
        Value::Object(obj) => obj,
        other => {
            return Err(Error::config(format!(
                "{what}: expected a JSON object, found {}",
                json_kind(&other)
            )))
        }
    };
    for key in obj.keys() {
        if key.starts_with('_') {
            continue; // diffusers bookkeeping: _class_name, _diffusers_version, _name_or_path
        }
        if !known.contains(key) {
            return Err(Error::unsupported(format!(
                "{what}: unknown option `{}` (expected one of: {})",
                shown(key),
                known.join(", ")
            )));
        }
    }
    Ok(obj)
}

/// A value as a message shows it: compact JSON, cut after [`SHOWN_CHARS`] characters.
fn shown_json(v: &Value) -> String {
    shown(&v.to_string())
}

/// Longest value quoted whole in an error message; longer ones are cut with `...`.
const SHOWN_CHARS: usize = 64;

/// `s` cut to [`SHOWN_CHARS`] characters, so a hostile megabyte string cannot flood a message.
pub(crate) fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((i, _)) => format!("{}... ({} bytes)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

/// JSON has no NaN or infinities, but Python's `json.dump` (hence diffusers' `save_config`)
/// writes the bare tokens `NaN`, `Infinity` and `-Infinity`. They are quoted here so the text
/// parses; a field that expects a number then names itself and the string it found, and
/// `lambda_min_clipped: -Infinity` (diffusers' default written out) reads as its default.
fn quote_non_finite(text: &str) -> std::borrow::Cow<'_, str> {
    const TOKENS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    let b = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let (mut i, mut in_string) = (0, false);
    while i < b.len() {
        match b[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            _ if !in_string => {
                let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
                if let Some(tok) = TOKENS
                    .iter()
                    .find(|t| boundary && b[i..].starts_with(t.as_bytes()))
                {
                    let o = out.get_or_insert_with(String::new);
                    o.push_str(&text[copied..i]);
                    o.push('"');
                    o.push_str(tok);
                    o.push('"');
                    i += tok.len();
                    copied = i;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
    match out {
        Some(mut o) => {
            o.push_str(&text[copied..]);
            std::borrow::Cow::Owned(o)
        }
        None => std::borrow::Cow::Borrowed(text),
    }
}

/// Parses a config's JSON text. A parse error names the top-level key whose value it is in,
/// when there is one (e.g. an array nested past serde_json's depth limit).
pub(crate) fn parse_config_json(text: &str, what: &str) -> Result<Value> {
    let text = quote_non_finite(text);
    serde_json::from_str(&text).map_err(|e| {
        let offset = text
            .split_inclusive('\n')
            .take(e.line().saturating_sub(1))
            .map(str::len)
            .sum::<usize>()
            + e.column();
        match key_at(&text, offset) {
            Some(key) => Error::config(format!(
                "{what} `{key}`: expected a JSON value, found a parse error: {e}"
            )),
            None => Error::config(format!("{what}: expected JSON, found a parse error: {e}")),
        }
    })
}

/// The key of the top-level object member that byte `offset` of `text` lies in, if any.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let b = text.as_bytes();
    let end = offset.min(b.len());
    let (mut depth, mut i, mut expect_key) = (0usize, 0usize, false);
    let mut key = None;
    while i < end {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expect_key {
                    key = text.get(start..i.min(b.len())).map(shown);
                    expect_key = false;
                }
            }
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    key
}

/// Deserializes a config object. serde's message for a bad field says what it expected and
/// found but not which field, so on failure the fields are tried one at a time (every field
/// has a default) to name the one at fault.
pub(crate) fn from_fields<T: serde::de::DeserializeOwned>(
    obj: serde_json::Map<String, Value>,
    what: &str,
) -> Result<T> {
    match serde_json::from_value(Value::Object(obj.clone())) {
        Ok(v) => Ok(v),
        Err(e) => {
            for (k, v) in obj {
                let one = Value::Object([(k.clone(), v.clone())].into_iter().collect());
                if let Err(e) = serde_json::from_value::<T>(one) {
                    if let Some(found) = unsupported_value(&e) {
                        return Err(Error::unsupported(format!(
                            "{}: {found}",
                            field_at_fault::<T>(&k, &v)
                        )));
                    }
                    return Err(Error::config(format!(
                        "{what} `{k}`: expected {}, found {}",
                        expected_type(&k, &e),
                        shown_json(&v)
                    )));
                }
            }
            Err(Error::config(format!(
                "{what}: a field has the wrong type: {e}"
            )))
        }
    }
}

/// Marks a [`config_enum!`] error: a value of the right type that this crate does not implement
/// (refused as unsupported, not as a malformed config).
const UNSUPPORTED: &str = "unsupported value: ";

/// The "expected ..., found ..." of a [`config_enum!`] error, if `e` is one.
fn unsupported_value(e: &serde_json::Error) -> Option<String> {
    let msg = e.to_string();
    let rest = msg.split_once(UNSUPPORTED)?.1;
    Some(rest.split(" at line ").next().unwrap_or(rest).to_string())
}

/// `key`, or `key[i]` for the first element of a list that is refused on its own.
fn field_at_fault<T: serde::de::DeserializeOwned>(key: &str, v: &Value) -> String {
    let Value::Array(items) = v else {
        return key.to_string();
    };
    items
        .iter()
        .position(|item| {
            let one = Value::Object(
                [(key.to_string(), Value::Array(vec![item.clone()]))]
                    .into_iter()
                    .collect(),
            );
            serde_json::from_value::<T>(one).is_err()
        })
        .map_or_else(|| key.to_string(), |i| format!("{key}[{i}]"))
}

/// "`a`", "`a` or `b`", "`a`, `b` or `c`".
pub(crate) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The error a [`config_enum!`] gives for a string that is none of its names.
pub(crate) fn unknown_name<E: serde::de::Error>(found: &str, names: &[&str]) -> E {
    E::custom(format!(
        "{UNSUPPORTED}expected {}, found `{}`",
        one_of(names),
        shown(found)
    ))
}

/// A config option that diffusers spells as a string: an enum whose serde names are diffusers'
/// strings (later names after `|` are accepted aliases). An unknown string is refused as
/// unsupported, naming the field, the accepted names and what was found.
macro_rules! config_enum {
    ($(#[$meta:meta])* pub enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $text:literal $(| $alias:literal)*),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// diffusers' names, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// diffusers' name of this value.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            /// The value diffusers names `s` (aliases included).
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($text $(| $alias)* => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::from_name(&s).ok_or_else(|| $crate::config::unknown_name(&s, Self::NAMES))
            }
        }
    };
}
pub(crate) use config_enum;

/// The keys a config struct knows: the fields of its serialized default.
pub(crate) fn known_keys<T: Default + serde::Serialize>() -> Vec<String> {
    match serde_json::to_value(T::default()) {
        Ok(Value::Object(obj)) => obj.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// What field `key` holds, in words, from serde's "..., expected X" (or a table, where serde's
/// wording would be about an element or an untagged enum).
fn expected_type(key: &str, e: &serde_json::Error) -> String {
    match key {
        "sample_size" => return "a positive integer or [height, width]".into(),
        "block_out_channels" => return "a list of positive integers".into(),
        "down_block_types" | "up_block_types" => return "a list of block type names".into(),
        "trained_betas" => return "null".into(),
        _ => {}
    }
    let msg = e.to_string();
    let tail = msg
        .rsplit_once(", expected ")
        .map_or("another type", |(_, t)| t);
    let tail = tail.split(" at line ").next().unwrap_or(tail);
    match tail {
        "usize" | "u32" | "u64" => "a non-negative integer".into(),
        "f64" | "f32" => "a number".into(),
        t => t.to_string(),
    }
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Refuses `v` outside 1 to `max`, naming the field.
pub(crate) fn in_range(name: &str, v: usize, max: usize) -> Result<()> {
    if v == 0 || v > max {
        Err(Error::config(format!(
            "{name}: expected 1 to {max}, found {v}"
        )))
    } else {
        Ok(())
    }
}

/// A diffusers model config's JSON text as `T`: the JSON parsed, its `_class_name` (when given)
/// checked to be `class`, every key known to `T`, every field of its type. `T::validate` is
/// the caller's.
pub(crate) fn parse_model_config<T: Default + serde::Serialize + serde::de::DeserializeOwned>(
    text: &str,
    class: &str,
) -> Result<T> {
    let what = format!("{class} config");
    let value = parse_config_json(text, &what)?;
    if let Some(name) = value.get("_class_name").and_then(Value::as_str) {
        if name != class {
            return Err(Error::unsupported(format!(
                "{what} `_class_name`: expected `{class}`, found `{}`",
                shown(name)
            )));
        }
    }
    let obj = check_keys(value, &known_keys::<T>(), &what)?;
    from_fields(obj, &what)
}
