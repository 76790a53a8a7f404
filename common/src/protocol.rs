//! The netlabs line protocol: what a client may send and what a server answers.
//!
//! Every lab speaks the same tiny text protocol so that the *only* thing that changes from lab to
//! lab is the server model. A request is one line of UTF-8 ended by `\n` (a `\r` before it is
//! ignored, so `nc -C` and telnet work too), at most [`MAX_LINE`] bytes long. Every line a server
//! sends starts with `HELLO`, `OK`, `ERR`, `MSG` or `BYE`, so a client can always tell a reply to
//! its own request from a chat message (`MSG`) that another client caused.
//!
//! This module only *parses* and *formats*. It does no I/O, so it is easy to unit-test and the
//! same code serves the blocking labs and the event loop of lab04.

use std::fmt;

/// The longest request line, in bytes, not counting the `\n` (or `\r\n`) that ends it.
pub const MAX_LINE: usize = 4096;

/// The longest `SLEEP`, in milliseconds.
pub const MAX_SLEEP_MS: u64 = 10_000;

/// The five server models of netlabs, one per lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// lab01: 단일 접속 (iterative) server.
    Iterative,
    /// lab02: 다중 접속, a forked child process per client.
    Fork,
    /// lab03: 다중 접속, a thread per client.
    Thread,
    /// lab04: 다중 접속 by I/O multiplexing: one process, one thread, every client.
    Multiplex,
    /// lab05: forked children that share data through IPC.
    Ipc,
}

impl Model {
    /// The word the server puts in `HELLO` and `WHO` replies.
    pub fn word(self) -> &'static str {
        match self {
            Model::Iterative => "iterative",
            Model::Fork => "fork",
            Model::Thread => "thread",
            Model::Multiplex => "multiplex",
            Model::Ipc => "ipc",
        }
    }

    /// The port the lab's server listens on when `--port` is not given.
    pub fn default_port(self) -> u16 {
        match self {
            Model::Iterative => 7001,
            Model::Fork => 7002,
            Model::Thread => 7003,
            Model::Multiplex => 7004,
            Model::Ipc => 7005,
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// One request, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `ECHO <text>`: answer `OK <text>`.
    Echo(String),
    /// `WHO`: say which process and thread serve this client.
    Who,
    /// `INCR`: add one to the server's counter and return it.
    Incr,
    /// `SLEEP <ms>`: block whatever serves this client, like a slow disk or a long computation.
    Sleep(u64),
    /// `SAY <text>`: send `MSG <id> <text>` to every other client, where the model can share.
    Say(String),
    /// `QUIT`: say goodbye and close.
    Quit,
    /// `PANIC`: crash whatever serves this client (only with `--allow-panic`).
    Panic,
}

/// Why a line is not a valid request. The `Display` text is what follows `ERR ` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The line was longer than [`MAX_LINE`] bytes.
    #[error("line too long")]
    LineTooLong,
    /// The line was not valid UTF-8.
    #[error("invalid utf-8")]
    InvalidUtf8,
    /// The line was empty (or only spaces).
    #[error("empty line; try ECHO, WHO, INCR, SLEEP, SAY or QUIT")]
    Empty,
    /// The first word is not a verb we know.
    #[error("unknown command {0:?}; try ECHO, WHO, INCR, SLEEP, SAY or QUIT")]
    UnknownVerb(String),
    /// A verb that takes no argument was given one.
    #[error("{0} takes no argument")]
    UnexpectedArgument(&'static str),
    /// `SLEEP` without a number of milliseconds, or with a bad one.
    #[error("SLEEP needs a whole number of milliseconds from 0 to {MAX_SLEEP_MS}")]
    BadSleep,
}

/// Turns one received line (without its `\n`) into text: drops a trailing `\r` and checks UTF-8.
pub fn decode_line(line: &[u8]) -> Result<&str, RequestError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(RequestError::LineTooLong);
    }
    std::str::from_utf8(line).map_err(|_| RequestError::InvalidUtf8)
}

/// Parses a decoded line into a [`Request`]. Verbs are case-insensitive; the text of `ECHO` and
/// `SAY` is everything after the single space that follows the verb, kept exactly as sent.
pub fn parse_request(line: &str) -> Result<Request, RequestError> {
    let (verb, rest) = match line.split_once(' ') {
        Some((verb, rest)) => (verb, Some(rest)),
        None => (line, None),
    };
    if verb.trim().is_empty() && rest.is_none_or(|r| r.trim().is_empty()) {
        return Err(RequestError::Empty);
    }
    let no_argument = |request: Request, name: &'static str| match rest {
        Some(r) if !r.trim().is_empty() => Err(RequestError::UnexpectedArgument(name)),
        _ => Ok(request),
    };
    match verb.to_ascii_uppercase().as_str() {
        "ECHO" => Ok(Request::Echo(rest.unwrap_or("").to_string())),
        "SAY" => Ok(Request::Say(rest.unwrap_or("").to_string())),
        "WHO" => no_argument(Request::Who, "WHO"),
        "INCR" => no_argument(Request::Incr, "INCR"),
        "QUIT" => no_argument(Request::Quit, "QUIT"),
        "PANIC" => no_argument(Request::Panic, "PANIC"),
        "SLEEP" => {
            let ms: u64 = rest
                .map(str::trim)
                .and_then(|r| r.parse().ok())
                .ok_or(RequestError::BadSleep)?;
            if ms > MAX_SLEEP_MS {
                return Err(RequestError::BadSleep);
            }
            Ok(Request::Sleep(ms))
        }
        _ => Err(RequestError::UnknownVerb(shorten(verb, 32))),
    }
}

/// Decodes and parses in one step: what a server does with every complete line it receives.
pub fn parse_line(line: &[u8]) -> Result<Request, RequestError> {
    parse_request(decode_line(line)?)
}

/// Cuts `s` to at most `max` characters for an error message, so an attacker cannot make the
/// server echo a huge "unknown verb" back.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

// ---- What servers send. Each function returns one line *without* its `\n`. ----

/// `HELLO <model> pid=<pid> tid=<tid>`: the greeting, sent once the connection is being served.
pub fn hello(model: Model, pid: u32, tid: u32) -> String {
    format!("HELLO {model} pid={pid} tid={tid}")
}

/// `OK <text>`, or `OK` alone for empty text.
pub fn ok(text: &str) -> String {
    if text.is_empty() {
        "OK".to_string()
    } else {
        format!("OK {text}")
    }
}

/// `ERR <reason>`.
pub fn err(reason: impl fmt::Display) -> String {
    format!("ERR {reason}")
}

/// `MSG <from> <text>`: a chat line from client `from`, delivered to everyone else.
pub fn msg(from: u64, text: &str) -> String {
    format!("MSG {from} {text}")
}

/// `OK model=<model> pid=<pid> tid=<tid> client=<id>`: the answer to `WHO`.
pub fn who(model: Model, pid: u32, tid: u32, client: u64) -> String {
    format!("OK model={model} pid={pid} tid={tid} client={client}")
}

/// `BYE`: the server is going away (or `BYE <reason>`).
pub fn bye(reason: &str) -> String {
    if reason.is_empty() {
        "BYE".to_string()
    } else {
        format!("BYE {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse_request("who"), Ok(Request::Who));
        assert_eq!(parse_request("Incr"), Ok(Request::Incr));
        assert_eq!(parse_request("qUiT"), Ok(Request::Quit));
        assert_eq!(parse_request("panic"), Ok(Request::Panic));
    }

    #[test]
    fn echo_keeps_its_text_exactly() {
        assert_eq!(
            parse_request("ECHO hi  there "),
            Ok(Request::Echo("hi  there ".into()))
        );
        assert_eq!(parse_request("echo"), Ok(Request::Echo(String::new())));
        assert_eq!(parse_request("ECHO "), Ok(Request::Echo(String::new())));
        assert_eq!(
            parse_request("ECHO 안녕하세요"),
            Ok(Request::Echo("안녕하세요".into()))
        );
        assert_eq!(parse_request("SAY hi"), Ok(Request::Say("hi".into())));
    }

    #[test]
    fn sleep_takes_a_bounded_number() {
        assert_eq!(parse_request("SLEEP 0"), Ok(Request::Sleep(0)));
        assert_eq!(parse_request("sleep 1500"), Ok(Request::Sleep(1500)));
        assert_eq!(parse_request("SLEEP 10000"), Ok(Request::Sleep(10_000)));
        assert_eq!(parse_request("SLEEP 10001"), Err(RequestError::BadSleep));
        assert_eq!(parse_request("SLEEP -1"), Err(RequestError::BadSleep));
        assert_eq!(parse_request("SLEEP"), Err(RequestError::BadSleep));
        assert_eq!(parse_request("SLEEP soon"), Err(RequestError::BadSleep));
        assert_eq!(
            parse_request("SLEEP 99999999999999999999999"),
            Err(RequestError::BadSleep)
        );
    }

    #[test]
    fn bad_requests_get_a_reason() {
        assert_eq!(parse_request(""), Err(RequestError::Empty));
        assert_eq!(parse_request("   "), Err(RequestError::Empty));
        assert_eq!(
            parse_request("FLY"),
            Err(RequestError::UnknownVerb("FLY".into()))
        );
        assert_eq!(
            parse_request("WHO me"),
            Err(RequestError::UnexpectedArgument("WHO"))
        );
        assert_eq!(parse_request("WHO "), Ok(Request::Who));
        let long = "X".repeat(100);
        let reason = parse_request(&long).unwrap_err().to_string();
        assert!(reason.len() < 100, "an unknown verb is cut short: {reason}");
    }

    #[test]
    fn decode_handles_cr_utf8_and_length() {
        assert_eq!(decode_line(b"WHO\r"), Ok("WHO"));
        assert_eq!(decode_line(b"WHO"), Ok("WHO"));
        assert_eq!(decode_line(b"\xff\xfe"), Err(RequestError::InvalidUtf8));
        let max = vec![b'a'; MAX_LINE];
        assert!(decode_line(&max).is_ok());
        let mut max_cr = max.clone();
        max_cr.push(b'\r');
        assert!(decode_line(&max_cr).is_ok(), "the \\r does not count");
        let over = vec![b'a'; MAX_LINE + 1];
        assert_eq!(decode_line(&over), Err(RequestError::LineTooLong));
    }

    #[test]
    fn replies_have_their_contract_form() {
        assert_eq!(ok(""), "OK");
        assert_eq!(ok("hi"), "OK hi");
        assert_eq!(err(RequestError::LineTooLong), "ERR line too long");
        assert_eq!(err(RequestError::InvalidUtf8), "ERR invalid utf-8");
        assert_eq!(msg(3, "hi all"), "MSG 3 hi all");
        assert_eq!(hello(Model::Fork, 10, 11), "HELLO fork pid=10 tid=11");
        assert_eq!(
            who(Model::Ipc, 10, 11, 2),
            "OK model=ipc pid=10 tid=11 client=2"
        );
        assert_eq!(bye(""), "BYE");
        assert_eq!(bye("idle"), "BYE idle");
    }

    #[test]
    fn every_model_has_its_contract_port_and_binary() {
        let all = [
            Model::Iterative,
            Model::Fork,
            Model::Thread,
            Model::Multiplex,
            Model::Ipc,
        ];
        let ports: Vec<u16> = all.iter().map(|m| m.default_port()).collect();
        assert_eq!(ports, [7001, 7002, 7003, 7004, 7005]);
        assert_eq!(Model::Thread.to_string(), "thread");
    }
}
