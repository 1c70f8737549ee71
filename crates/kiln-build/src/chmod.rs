//! `--chmod` for COPY/ADD: parsing octal (`755`, `0644`, up to `07777`) and
//! symbolic (`u+x,g-w`, `a=rX`, `go=u`) modes, and applying them to a file's
//! or directory's mode the way chmod(1) does.
//!
//! Symbolic clauses are hand-written here (no maintained crate implements
//! chmod(1) symbolic modes): the grammar is small and its rules are pinned by
//! the tests below. A clause without a `who` applies to everyone, with no
//! umask, as Docker's builder does.

/// Errors of `--chmod` parsing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChmodError {
    #[error("invalid chmod parameter: '{0}'. it should be octal string and between 0 and 07777")]
    OctalOutOfRange(String),
    #[error("invalid chmod parameter: '{spec}': {reason}")]
    Invalid { spec: String, reason: String },
}

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An absolute mode, at most `0o7777`.
    Octal(u32),
    /// Comma-separated symbolic clauses, applied in order.
    Symbolic(Vec<Clause>),
}

/// One symbolic clause: `who` letters and one or more actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bit mask of the classes the clause touches (`u` 0o4700, `g` 0o2070,
    /// `o` 0o1007); all three when no `who` was written.
    pub who: u32,
    pub actions: Vec<Action>,
}

/// `+`, `-` or `=` with the permissions it sets or clears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub op: Op,
    pub perms: Perms,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
    Set,
}

/// What an action grants: letters from `rwxXst`, or a copy of one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perms {
    /// `r`, `w`, `x`, `s`, `t` as mode bits (spread over all classes); `big_x`
    /// is `X` (execute when a directory or already executable by anyone).
    Bits { bits: u32, big_x: bool },
    /// `u`, `g` or `o`: the current permissions of that class.
    CopyOf(char),
}

const WHO_U: u32 = 0o4700;
const WHO_G: u32 = 0o2070;
const WHO_O: u32 = 0o1007;

/// Parses a `--chmod` value: octal when it is all digits, symbolic otherwise.
pub fn parse_chmod(s: &str) -> Result<Chmod, ChmodError> {
    if s.is_empty() {
        return Err(ChmodError::Invalid {
            spec: s.to_string(),
            reason: "empty mode".to_string(),
        });
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match u32::from_str_radix(s, 8) {
            Ok(v) if v <= 0o7777 => Ok(Chmod::Octal(v)),
            _ => Err(ChmodError::OctalOutOfRange(s.to_string())),
        };
    }
    let invalid = |reason: &str| ChmodError::Invalid {
        spec: s.to_string(),
        reason: reason.to_string(),
    };
    let mut clauses = Vec::new();
    for part in s.split(',') {
        let chars: Vec<char> = part.chars().collect();
        let mut i = 0;
        let mut who = 0;
        while let Some(&c) = chars.get(i) {
            match c {
                'u' => who |= WHO_U,
                'g' => who |= WHO_G,
                'o' => who |= WHO_O,
                'a' => who |= WHO_U | WHO_G | WHO_O,
                _ => break,
            }
            i += 1;
        }
        if who == 0 {
            who = WHO_U | WHO_G | WHO_O;
        }
        let mut actions = Vec::new();
        while let Some(&c) = chars.get(i) {
            let op = match c {
                '+' => Op::Add,
                '-' => Op::Remove,
                '=' => Op::Set,
                _ => return Err(invalid(&format!("unexpected '{c}' in clause '{part}'"))),
            };
            i += 1;
            let perms = match chars.get(i) {
                Some(&c @ ('u' | 'g' | 'o')) => {
                    i += 1;
                    Perms::CopyOf(c)
                }
                _ => {
                    let mut bits = 0;
                    let mut big_x = false;
                    while let Some(&c) = chars.get(i) {
                        match c {
                            'r' => bits |= 0o444,
                            'w' => bits |= 0o222,
                            'x' => bits |= 0o111,
                            'X' => big_x = true,
                            's' => bits |= 0o6000,
                            't' => bits |= 0o1000,
                            _ => break,
                        }
                        i += 1;
                    }
                    Perms::Bits { bits, big_x }
                }
            };
            actions.push(Action { op, perms });
        }
        if actions.is_empty() {
            return Err(invalid(&format!("clause '{part}' has no operator")));
        }
        clauses.push(Clause { who, actions });
    }
    Ok(Chmod::Symbolic(clauses))
}

impl Chmod {
    /// The new permission bits (`0o7777` part) for an entry whose current
    /// mode is `mode`; file-type bits of `mode` are kept.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let kind = mode & !0o7777;
        match self {
            Chmod::Octal(v) => kind | (v & 0o7777),
            Chmod::Symbolic(clauses) => {
                let mut m = mode & 0o7777;
                for clause in clauses {
                    for action in &clause.actions {
                        let granted = match action.perms {
                            Perms::Bits { bits, big_x } => {
                                let x = if big_x && (is_dir || m & 0o111 != 0) {
                                    0o111
                                } else {
                                    0
                                };
                                bits | x
                            }
                            Perms::CopyOf(c) => {
                                let class = match c {
                                    'u' => (m >> 6) & 7,
                                    'g' => (m >> 3) & 7,
                                    _ => m & 7,
                                };
                                class * 0o111
                            }
                        };
                        let bits = granted & clause.who;
                        match action.op {
                            Op::Add => m |= bits,
                            Op::Remove => m &= !bits,
                            Op::Set => m = (m & !clause.who) | bits,
                        }
                    }
                }
                kind | m
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(s: &str, mode: u32, dir: bool) -> u32 {
        match parse_chmod(s) {
            Ok(c) => c.apply(mode, dir),
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn octal() {
        assert_eq!(parse_chmod("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(parse_chmod("0644"), Ok(Chmod::Octal(0o644)));
        assert_eq!(parse_chmod("4755"), Ok(Chmod::Octal(0o4755)));
        assert_eq!(sym("0640", 0o100755, false), 0o100640);
        assert_eq!(
            parse_chmod("17777"),
            Err(ChmodError::OctalOutOfRange("17777".into()))
        );
        assert!(matches!(
            parse_chmod("789"),
            Err(ChmodError::OctalOutOfRange(_))
        ));
    }

    #[test]
    fn symbolic() {
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("u+x,g-w", 0o664, false), 0o744);
        assert_eq!(sym("a=rX", 0o600, false), 0o444);
        assert_eq!(sym("a=rX", 0o700, false), 0o555);
        assert_eq!(sym("a=rX", 0o600, true), 0o555);
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("go=u", 0o640, false), 0o666);
        assert_eq!(sym("o-rwx", 0o777, true), 0o770);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g+s", 0o755, true), 0o2755);
        assert_eq!(sym("+t", 0o777, true), 0o1777);
        assert_eq!(sym("u=rw,go=r", 0o4777, false), 0o644);
        assert_eq!(sym("a-w+x", 0o644, false), 0o555);
    }

    #[test]
    fn symbolic_errors() {
        assert!(parse_chmod("").is_err());
        assert!(parse_chmod("u").is_err());
        assert!(parse_chmod("u+q").is_err());
        assert!(parse_chmod("z+x").is_err());
        let err = parse_chmod("u+x,,g+w");
        assert!(err.is_err(), "{err:?}");
    }
}
