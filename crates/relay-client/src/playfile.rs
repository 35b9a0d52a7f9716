//! The playfile grammar of `relay client file` (spec relay-core §5.3): one command per line.
//!
//! | line | meaning |
//! |---|---|
//! | `# text`, `#- text` | silent comment |
//! | `#+ text` | comment echoed to the log |
//! | `[0.1s] msg` | send `msg` after a delay (Go duration) |
//! | `[2s]` | wait |
//! | `[5]`, `[]` | no delay: as in the reference, a one-character duration is not parsed |
//! | `<'REGEXP',COUNT,TIMEOUT> msg` | wait until COUNT received messages match REGEXP, or TIMEOUT, then send |
//! | `\|+> re`, `\|accept> re`, `\|-> re`, `\|deny> re`, `\|reset>` | log filter |
//! | anything else | send the whole line now |
//!
//! Error texts follow the reference so existing scripts' checks read the same. Where the
//! reference misparsed (B18), this parser differs; each difference is listed in
//! `docs/COMPATIBILITY.md` (relay-client section): blank lines are ignored rather than sent, `\'` escapes a quote in a condition's regexp, and the condition
//! ends at the first `>` after its arguments (the reference split at the last `>`).

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

use relay_common::goduration;

/// One parsed playfile line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A comment; `echo` comments are written to the log.
    Comment {
        /// The comment text after the `#`, `#-` or `#+` marker.
        msg: String,
        /// True for `#+` comments, which are echoed into the log.
        echo: bool,
    },
    /// Pause the script.
    Wait(Duration),
    /// Send a text message after `delay`, and after `condition` is met when there is one.
    Send {
        /// The text message to send.
        msg: String,
        /// How long to wait before sending (zero when the line has no `[delay]`).
        delay: Duration,
        /// A condition to wait for after the delay; `None` sends without waiting.
        condition: Option<Condition>,
    },
    /// Change the log filter.
    Filter(FilterAction),
    /// An empty or whitespace-only line: nothing to do.
    Blank,
    /// A line that could not be parsed.
    Error(String),
}

/// Wait for `count` received messages matching `pattern`, or for `timeout`.
#[derive(Debug, Clone)]
pub struct Condition {
    /// The regular expression a received message (its text or base64 form) must match.
    pub pattern: Regex,
    /// How many matching messages are needed.
    pub count: usize,
    /// The longest wait; when it passes, the message is sent anyway.
    pub timeout: Duration,
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.pattern.as_str() == other.pattern.as_str()
            && self.count == other.count
            && self.timeout == other.timeout
    }
}

/// A change to the log filter.
#[derive(Debug, Clone)]
pub enum FilterAction {
    /// Log only messages that match at least one accept pattern.
    Accept(Regex),
    /// Never log messages that match a deny pattern.
    Deny(Regex),
    /// Log everything again.
    Reset,
}

impl PartialEq for FilterAction {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FilterAction::Accept(a), FilterAction::Accept(b))
            | (FilterAction::Deny(a), FilterAction::Deny(b)) => a.as_str() == b.as_str(),
            (FilterAction::Reset, FilterAction::Reset) => true,
            _ => false,
        }
    }
}

/// A playfile error with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The 1-based number of the line that failed to parse.
    pub line: usize,
    /// What is wrong with that line.
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A parsed playfile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Playfile {
    /// Every line of the file in order, including comments, blanks and (with force) errors.
    pub lines: Vec<Line>,
}

impl Playfile {
    /// Parse a whole file. Lines end at `\n`; a trailing `\r` is dropped.
    pub fn parse(text: &str) -> Playfile {
        let lines = text
            .lines()
            .map(|line| parse_line(line.strip_suffix('\r').unwrap_or(line)))
            .collect();
        Playfile { lines }
    }

    /// Every error line, with its line number.
    pub fn errors(&self) -> Vec<LineError> {
        self.lines
            .iter()
            .enumerate()
            .filter_map(|(index, line)| match line {
                Line::Error(message) => Some(LineError {
                    line: index + 1,
                    message: message.clone(),
                }),
                _ => None,
            })
            .collect()
    }
}

#[allow(clippy::expect_used)] // constant patterns, checked by the tests
fn pattern(source: &str) -> Regex {
    Regex::new(source).expect("constant regex")
}

static COMMENT: LazyLock<Regex> = LazyLock::new(|| pattern(r"^\s*#+([+-]*)\s*(.*)"));
static DELAY: LazyLock<Regex> = LazyLock::new(|| pattern(r"^\s*\[\s*([a-zA-Z0-9.µμ]*)\s*]\s*(.*)"));
static CONDITION_START: LazyLock<Regex> = LazyLock::new(|| pattern(r"^\s*<.*>"));
static CONDITION_ARGS: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"^\s*'((?:[^'\\]|\\.)*)'\s*,\s*([0-9]*)\s*,\s*([0-9hmnsuµμ.]*)\s*"));
static FILTER: LazyLock<Regex> = LazyLock::new(|| pattern(r"^\s*\|\s*([-+a-zA-Z]+)\s*>\s*(.*)"));

/// Parse one line (without its line ending).
pub fn parse_line(line: &str) -> Line {
    if line.trim().is_empty() {
        return Line::Blank;
    }
    if let Some(captures) = COMMENT.captures(line) {
        let group = |i| captures.get(i).map_or("", |m| m.as_str());
        return Line::Comment {
            msg: group(2).to_string(),
            echo: group(1) == "+",
        };
    }
    if let Some(captures) = DELAY.captures(line) {
        let group = |i| captures.get(i).map_or("", |m| m.as_str());
        // As the reference (B18): a duration of at most one byte is not parsed and means
        // zero, so v0.6.2 playfiles with `[5]` play unchanged; `[10]` is still an error.
        let delay = if group(1).len() <= 1 {
            Duration::ZERO
        } else {
            match goduration::parse(group(1)) {
                Ok(delay) => delay,
                Err(_) => return Line::Error(format!("unknown delay time format: {line}")),
            }
        };
        return match group(2) {
            "" => Line::Wait(delay),
            msg => Line::Send {
                msg: msg.to_string(),
                delay,
                condition: None,
            },
        };
    }
    if CONDITION_START.is_match(line) {
        return parse_condition(line);
    }
    if let Some(captures) = FILTER.captures(line) {
        let group = |i| captures.get(i).map_or("", |m| m.as_str());
        let verb = group(1);
        let source = group(2);
        let compile = || {
            Regex::new(source).map_err(|e| {
                format!(
                    "malformed filter command; last argument {source} should be regexp pattern, but did not compile because {}. Line was {line}",
                    regex_error_text(&e)
                )
            })
        };
        return match verb.to_ascii_lowercase().as_str() {
            "-" | "d" | "deny" => compile().map_or_else(Line::Error, |re| Line::Filter(FilterAction::Deny(re))),
            "+" | "a" | "accept" => compile().map_or_else(Line::Error, |re| Line::Filter(FilterAction::Accept(re))),
            "r" | "reset" => Line::Filter(FilterAction::Reset),
            _ => Line::Error(format!(
                "malformed filter command; first argument not one of [+,-,a,d,r,accept,deny,reset], but was {verb}"
            )),
        };
    }
    Line::Send {
        msg: line.to_string(),
        delay: Duration::ZERO,
        condition: None,
    }
}

/// `<'REGEXP',COUNT,TIMEOUT> message`. The arguments are read first and the condition ends
/// at the next `>`, so a `>` inside the regexp or in the message is harmless.
fn parse_condition(line: &str) -> Line {
    let malformed = || Line::Error(format!("malformed condition command: {line}"));
    let Some(open) = line.find('<') else {
        return malformed();
    };
    let inside_start = open + 1;
    let Some(args) = CONDITION_ARGS.captures(&line[inside_start..]) else {
        return malformed();
    };
    let args_end = inside_start + args.get(0).map_or(0, |m| m.end());
    let Some(close) = line[args_end..].find('>').map(|i| args_end + i) else {
        return malformed();
    };
    let inside = &line[inside_start..close];
    let msg = line[close + 1..].trim_start();
    let group = |i| args.get(i).map_or("", |m| m.as_str());
    // The reference printed its regex match groups as a Go slice: `[whole inside message]`.
    let groups = format!("[{line} {inside} {msg}]");
    let source = group(1).replace("\\'", "'");
    let pattern = match Regex::new(&source) {
        Ok(pattern) => pattern,
        Err(e) => {
            return Line::Error(format!(
                "malformed condition command {groups}; first argument {source} should be regexp pattern, but did not compile because {}. Line was {line}",
                regex_error_text(&e)
            ))
        }
    };
    let Ok(count) = group(2).parse::<usize>() else {
        return Line::Error(format!(
            "malformed condition command {groups}; second argument {} should be integer, count of messages to await. Line was: {line}",
            group(2)
        ));
    };
    let timeout = match goduration::parse(group(3)) {
        Ok(timeout) => timeout,
        Err(e) => {
            return Line::Error(format!(
                "malformed condition command {groups}; third argument {} should be timeout duration in format like 10s or 1m. Yours could not be parsed because {e}. Line was was {line}",
                group(3)
            ))
        }
    };
    // An incomplete condition (empty pattern, zero count or zero timeout) sends at once.
    let condition = (!source.is_empty() && count > 0 && !timeout.is_zero()).then_some(Condition {
        pattern,
        count,
        timeout,
    });
    Line::Send {
        msg: msg.to_string(),
        delay: Duration::ZERO,
        condition,
    }
}

/// The one-line reason from a regex error (its Display spans several lines).
fn regex_error_text(error: &regex::Error) -> String {
    let text = error.to_string();
    let reason = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.lines().last().unwrap_or("").trim().to_string());
    format!("error parsing regexp: {reason}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn re(source: &str) -> Regex {
        Regex::new(source).unwrap()
    }

    fn send(msg: &str) -> Line {
        Line::Send {
            msg: msg.into(),
            delay: Duration::ZERO,
            condition: None,
        }
    }

    fn delayed(msg: &str, delay: Duration) -> Line {
        Line::Send {
            msg: msg.into(),
            delay,
            condition: None,
        }
    }

    /// The reference's TestParseByLine, line by line, plus the other examples of spec §5.3.
    /// Differences from the reference are marked B18.
    #[test]
    fn parses_every_example_line() {
        let ms = Duration::from_millis;
        let cases: Vec<(&str, Line)> = vec![
            // TestParseByLine
            (r#"{"some":"msg"}"#, send(r#"{"some":"msg"}"#)),
            ("# Non echo comment", Line::Comment { msg: "Non echo comment".into(), echo: false }),
            ("#- non echo comment", Line::Comment { msg: "non echo comment".into(), echo: false }),
            ("#+ echo comment", Line::Comment { msg: "echo comment".into(), echo: true }),
            (r#"[0.1s] {"an":"other"}"#, delayed(r#"{"an":"other"}"#, ms(100))),
            (r#"[] {"an":"other"}"#, send(r#"{"an":"other"}"#)),
            (
                r#"<'^foo\s*',5,0.3h1.5m0.1s> {"send":"foos"}"#,
                Line::Send {
                    msg: r#"{"send":"foos"}"#.into(),
                    delay: Duration::ZERO,
                    condition: Some(Condition { pattern: re(r"^foo\s*"), count: 5, timeout: ms((19 * 60 + 30) * 1000 + 100) }),
                },
            ),
            (r#"[0.1] {"an":"other"}"#, Line::Error(r#"unknown delay time format: [0.1] {"an":"other"}"#.into())),
            (
                r#"<'^foo\s*',,10s> {"send":"foos"}"#,
                Line::Error(r#"malformed condition command [<'^foo\s*',,10s> {"send":"foos"} '^foo\s*',,10s {"send":"foos"}]; second argument  should be integer, count of messages to await. Line was: <'^foo\s*',,10s> {"send":"foos"}"#.into()),
            ),
            (
                r#"<'^foo\s*',5,> {"send":"foos"}"#,
                Line::Error(r#"malformed condition command [<'^foo\s*',5,> {"send":"foos"} '^foo\s*',5, {"send":"foos"}]; third argument  should be timeout duration in format like 10s or 1m. Yours could not be parsed because time: invalid duration "". Line was was <'^foo\s*',5,> {"send":"foos"}"#.into()),
            ),
            ("|+> [a-h]", Line::Filter(FilterAction::Accept(re("[a-h]")))),
            ("|accept> [R-Z]", Line::Filter(FilterAction::Accept(re("[R-Z]")))),
            ("|->[0-9]", Line::Filter(FilterAction::Deny(re("[0-9]")))),
            ("|deny>  [#!&%]", Line::Filter(FilterAction::Deny(re("[#!&%]")))),
            ("|reset>", Line::Filter(FilterAction::Reset)),
            ("|A> [a-h]", Line::Filter(FilterAction::Accept(re("[a-h]")))),
            ("|D> [0-9]", Line::Filter(FilterAction::Deny(re("[0-9]")))),
            ("|r> ", Line::Filter(FilterAction::Reset)),
            ("|X>", Line::Error("malformed filter command; first argument not one of [+,-,a,d,r,accept,deny,reset], but was X".into())),
            (
                r"|a> ^\/(?!\/)(.*?)",
                Line::Error(r"malformed filter command; last argument ^\/(?!\/)(.*?) should be regexp pattern, but did not compile because error parsing regexp: look-around, including look-ahead and look-behind, is not supported. Line was |a> ^\/(?!\/)(.*?)".into()),
            ),
            // Other §5.3 examples.
            ("##", Line::Comment { msg: "".into(), echo: false }),
            ("#+- not echoed", Line::Comment { msg: "not echoed".into(), echo: false }),
            ("   #+ indented echo", Line::Comment { msg: "indented echo".into(), echo: true }),
            (r#"[0.1s] {"a":1}"#, delayed(r#"{"a":1}"#, ms(100))),
            ("[ 10ms ] x", delayed("x", ms(10))),
            ("[] # sent literally", send("# sent literally")),
            ("[2s]", Line::Wait(Duration::from_secs(2))),
            ("[]", Line::Wait(Duration::ZERO)),
            ("[0]", Line::Wait(Duration::ZERO)),
            ("[8760h]", Line::Wait(Duration::from_secs(8760 * 3600))),
            ("[1ms]a", delayed("a", ms(1))),
            // As the reference: a one-character duration is not parsed and means zero.
            ("[5]", Line::Wait(Duration::ZERO)),
            ("[10]", Line::Error("unknown delay time format: [10]".into())),
            ("[0.1]", Line::Error("unknown delay time format: [0.1]".into())),
            (
                "<'x',3,10> m",
                Line::Error(r#"malformed condition command [<'x',3,10> m 'x',3,10 m]; third argument 10 should be timeout duration in format like 10s or 1m. Yours could not be parsed because time: missing unit in duration "10". Line was was <'x',3,10> m"#.into()),
            ),
            (
                "<'(unclosed',1,1s> m",
                Line::Error("malformed condition command [<'(unclosed',1,1s> m '(unclosed',1,1s m]; first argument (unclosed should be regexp pattern, but did not compile because error parsing regexp: unclosed group. Line was <'(unclosed',1,1s> m".into()),
            ),
            ("<no quotes> m", Line::Error("malformed condition command: <no quotes> m".into())),
            // COUNT 0 or TIMEOUT 0s: incomplete condition, sent at once.
            ("<'x',0,1s> now", send("now")),
            ("<'x',2,0s> now", send("now")),
            // Junk after the timeout inside <> is ignored, as in the reference.
            ("<'x',2,1s junk> m", Line::Send { msg: "m".into(), delay: Duration::ZERO, condition: Some(Condition { pattern: re("x"), count: 2, timeout: Duration::from_secs(1) }) }),
            // B18: `\'` now escapes a quote in the regexp.
            (r"<'it\'s',1,1s> m", Line::Send { msg: "m".into(), delay: Duration::ZERO, condition: Some(Condition { pattern: re("it's"), count: 1, timeout: Duration::from_secs(1) }) }),
            // B18: the condition ends at the first `>` after its arguments.
            ("<'a>b',1,2s> x > y", Line::Send { msg: "x > y".into(), delay: Duration::ZERO, condition: Some(Condition { pattern: re("a>b"), count: 1, timeout: Duration::from_secs(2) }) }),
            // A leading delay wins; the condition becomes part of the message.
            ("[1s] <'x',1,1s> m", delayed("<'x',1,1s> m", Duration::from_secs(1))),
            // Filters keep trailing spaces in the pattern; an empty pattern matches all.
            ("| + > 35 ", Line::Filter(FilterAction::Accept(re("35 ")))),
            ("|+>", Line::Filter(FilterAction::Accept(re("")))),
            ("  | RESET > asdf", Line::Filter(FilterAction::Reset)),
            ("|bogus> x", Line::Error("malformed filter command; first argument not one of [+,-,a,d,r,accept,deny,reset], but was bogus".into())),
            // Plain lines are sent verbatim, leading whitespace included.
            ("  indented", send("  indented")),
            // B18: blank lines are ignored rather than sent as empty messages.
            ("", Line::Blank),
            ("   \t", Line::Blank),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(line), expected, "line {line:?}");
        }
    }

    /// A v0.6.2 playfile written with the reference's own example lines (spec §5.3) and the
    /// one-character `[5]` delay form plays as it did: the reference parsed the duration only
    /// when it was longer than one character, so `[5]` (and `[s]`) meant zero delay, while
    /// `[10]` and `[0.1]` stay errors as they were there.
    #[test]
    fn a_v062_playfile_with_one_character_delays_plays_as_before() {
        let ms = Duration::from_millis;
        let playfile = Playfile::parse(
            "#+ echo comment\n\
             [0.1s] {\"a\":1}\n\
             [ 10ms ] x\n\
             [] # sent literally\n\
             [2s]\n\
             [5]\n\
             [5] {\"set\":\"mode\",\"to\":\"stop\"}\n\
             [ 5 ] y\n\
             [s] z\n\
             [0]\n",
        );
        assert_eq!(playfile.errors(), vec![]);
        assert_eq!(
            playfile.lines,
            vec![
                Line::Comment {
                    msg: "echo comment".into(),
                    echo: true
                },
                delayed(r#"{"a":1}"#, ms(100)),
                delayed("x", ms(10)),
                send("# sent literally"),
                Line::Wait(Duration::from_secs(2)),
                Line::Wait(Duration::ZERO),
                send(r#"{"set":"mode","to":"stop"}"#),
                send("y"),
                send("z"),
                Line::Wait(Duration::ZERO),
            ]
        );
        for line in ["[10]", "[0.1]", "[10] x"] {
            assert_eq!(
                parse_line(line),
                Line::Error(format!("unknown delay time format: {line}")),
                "{line}"
            );
        }
    }

    #[test]
    fn a_file_reports_each_error_with_its_line_number() {
        let playfile = Playfile::parse("hello\r\n[10]\n\n#+ ok\n|X>\n[1s]\n");
        assert_eq!(playfile.lines.len(), 6);
        assert_eq!(playfile.lines[0], send("hello"));
        assert_eq!(
            playfile.errors(),
            vec![
                LineError { line: 2, message: "unknown delay time format: [10]".into() },
                LineError {
                    line: 5,
                    message:
                        "malformed filter command; first argument not one of [+,-,a,d,r,accept,deny,reset], but was X"
                            .into()
                },
            ]
        );
        assert_eq!(
            playfile.errors()[0].to_string(),
            "line 2: unknown delay time format: [10]"
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(line in "\\PC*") {
            let _ = parse_line(&line);
        }

        #[test]
        fn parsing_structured_lines_never_panics(
            line in r#"\s{0,2}[<\[|#]{0,2}[\s'\\,.0-9a-z+\-|>\]#µ]{0,40}"#
        ) {
            let _ = parse_line(&line);
        }
    }
}
