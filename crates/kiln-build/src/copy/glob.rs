//! Source globs and `--exclude` patterns for COPY/ADD.
//!
//! Source wildcards follow Go's `filepath.Match` on one path component at a
//! time (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes), as Docker's builder does;
//! that exact dialect is what users' Dockerfiles rely on, so it is written
//! here rather than taken from a glob crate with different rules.
//!
//! `--exclude` uses Docker's path patterns (`**` across directories, `!`
//! exceptions, the last matching pattern wins, a pattern matching a parent
//! directory matches everything below it). This is a small local
//! implementation until `kiln_dockerfile::pattern` provides the shared one.

/// True when `s` contains an unescaped `*`, `?` or `[`.
pub fn has_wildcards(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Removes `\` escapes from a component without wildcards.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Go `filepath.Match` of a pattern against a single name (no `/` handling
/// needed: both are one component). A malformed pattern matches nothing.
pub fn match_component(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_here(&p, &n, false).unwrap_or(false)
}

/// Matches `p` against `n`; with `slash_stops`, `*` and `?` do not match '/'.
fn match_here(p: &[char], n: &[char], slash_stops: bool) -> Option<bool> {
    let (mut pi, mut ni) = (0usize, 0usize);
    // Backtracking point for the last `*`: (pattern index after it, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if let Some(&pc) = p.get(pi) {
            match pc {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    if let Some(&c) = n.get(ni) {
                        if !(slash_stops && c == '/') {
                            pi += 1;
                            ni += 1;
                            continue;
                        }
                    }
                }
                '[' => {
                    let (matched, next) = match_class(p, pi, n.get(ni).copied())?;
                    if matched {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' => {
                    let lit = *p.get(pi + 1)?;
                    if n.get(ni) == Some(&lit) {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                }
                c => {
                    if n.get(ni) == Some(&c) {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
            }
        } else if ni == n.len() {
            return Some(true);
        }
        // Mismatch: let the last `*` swallow one more character.
        match star {
            Some((sp, sn)) if sn < n.len() && !(slash_stops && n.get(sn) == Some(&'/')) => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => {
                // Validate the rest of the pattern so a malformed one is an error.
                return if validate(&p[pi.min(p.len())..]) {
                    Some(false)
                } else {
                    None
                };
            }
        }
    }
}

fn validate(p: &[char]) -> bool {
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        match c {
            '\\' => {
                if p.get(i + 1).is_none() {
                    return false;
                }
                i += 2;
            }
            '[' => match match_class(p, i, Some('\0')) {
                Some((_, next)) => i = next,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

/// Matches a `[...]` class starting at `p[start]` against `c`; returns
/// (matched, index after the class), `None` if malformed.
fn match_class(p: &[char], start: usize, c: Option<char>) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|c| *c != ']') {
            i += 1;
            hi = *p.get(i)?;
            if hi == '\\' {
                i += 1;
                hi = *p.get(i)?;
            }
            i += 1;
        }
        if let Some(c) = c {
            if lo <= c && c <= hi {
                matched = true;
            }
        }
    }
    Some((c.is_some() && matched != negated, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match() {
        assert!(match_component("*.go", "main.go"));
        assert!(!match_component("*.go", "main.rs"));
        assert!(match_component("fo?", "foo"));
        assert!(!match_component("fo?", "fooo"));
        assert!(match_component("arr[[]0].txt", "arr[0].txt"));
        assert!(match_component("[a-c]x", "bx"));
        assert!(!match_component("[^a-c]x", "bx"));
        assert!(match_component("[^a-c]x", "dx"));
        assert!(match_component("a\\*b", "a*b"));
        assert!(!match_component("a\\*b", "axb"));
        assert!(match_component("*", ""));
        assert!(match_component("b*", "bat"));
        assert!(!match_component("[", "["));
        assert!(!match_component("a[", "a"));
        assert!(match_component("*a*b", "xxaxxb"));
    }

    #[test]
    fn wildcard_detection() {
        assert!(has_wildcards("a/*.txt"));
        assert!(has_wildcards("arr[[]0]"));
        assert!(!has_wildcards("a\\*b"));
        assert!(!has_wildcards("plain/path"));
        assert_eq!(unescape("a\\*b"), "a*b");
    }
}
