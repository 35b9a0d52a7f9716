//! The one boolean value parser of the binary: Go's `strconv.ParseBool` set, which the
//! reference reads its environment with (`1`, `t`, `T`, `TRUE`, `true`, `True` and `0`,
//! `f`, `F`, `FALSE`, `false`, `False`). Every boolean flag and variable uses [`GoBool`];
//! a bad value is refused with the variable's name and the binary exits 1 (`main.rs`).

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use std::ffi::OsStr;

/// The spellings of true, as Go's `strconv.ParseBool` accepts them.
const TRUE_WORDS: [&str; 6] = ["1", "t", "T", "TRUE", "true", "True"];
/// The spellings of false, as Go's `strconv.ParseBool` accepts them.
const FALSE_WORDS: [&str; 6] = ["0", "f", "F", "FALSE", "false", "False"];

/// `text` as Go's `strconv.ParseBool` reads it, or `None` outside its set.
pub fn parse_bool(text: &str) -> Option<bool> {
    if TRUE_WORDS.contains(&text) {
        Some(true)
    } else if FALSE_WORDS.contains(&text) {
        Some(false)
    } else {
        None
    }
}

/// The clap value parser for every boolean setting: [`parse_bool`], with an error that
/// names the environment variable and the flag.
#[derive(Clone, Copy, Debug, Default)]
pub struct GoBool;

impl TypedValueParser for GoBool {
    type Value = bool;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<bool, clap::Error> {
        let text = value.to_string_lossy();
        parse_bool(&text).ok_or_else(|| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!(
                    "{}: {text:?} is not a boolean; use one of {} or {}\n",
                    arg.map_or_else(|| "a boolean setting".to_owned(), setting_name),
                    TRUE_WORDS.join(", "),
                    FALSE_WORDS.join(", "),
                ),
            )
        })
    }
}

/// `RELAY_X (--x)`: the variable's name first, as the reference names it, then the flag.
pub(crate) fn setting_name(arg: &clap::Arg) -> String {
    let flag = arg
        .get_long()
        .map_or_else(|| arg.get_id().to_string(), |l| format!("--{l}"));
    match arg.get_env() {
        Some(env) => format!("{} ({flag})", env.to_string_lossy()),
        None => flag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_parse_like_go() {
        for yes in ["1", "t", "T", "true", "TRUE", "True"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["0", "f", "F", "false", "FALSE", "False"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        for bad in ["maybe", "yes", "tRUE", " true", ""] {
            assert_eq!(parse_bool(bad), None, "{bad}");
        }
    }
}
