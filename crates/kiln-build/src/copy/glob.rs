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

/// One Docker path pattern.
#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned, `/`-separated, without the `!`.
    text: Vec<char>,
    exclusion: bool,
}

/// Docker-style pattern list (`--exclude`).
#[derive(Debug, Clone, Default)]
pub struct ExcludeSet {
    patterns: Vec<Pattern>,
}

impl ExcludeSet {
    pub fn new(patterns: &[String]) -> Self {
        let mut out = Vec::new();
        for raw in patterns {
            let raw = raw.trim();
            let (exclusion, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, raw),
            };
            let cleaned: Vec<&str> = body
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            if cleaned.is_empty() {
                continue;
            }
            out.push(Pattern {
                text: cleaned.join("/").chars().collect(),
                exclusion,
            });
        }
        ExcludeSet { patterns: out }
    }

    /// Whether `path` (relative, `/`-separated) is excluded: the last
    /// pattern matching it or one of its parent directories decides.
    pub fn excluded(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let mut result = false;
        for pat in &self.patterns {
            let mut hit = false;
            for end in (1..=comps.len()).rev() {
                let candidate: Vec<char> =
                    comps.get(..end).unwrap_or(&[]).join("/").chars().collect();
                if docker_match(&pat.text, &candidate) {
                    hit = true;
                    break;
                }
            }
            if hit {
                result = !pat.exclusion;
            }
        }
        result
    }
}

/// Docker pattern match: `**` spans directories (and `**/` may match
/// nothing), `*` and `?` stay within one component.
fn docker_match(p: &[char], n: &[char]) -> bool {
    if let Some(pos) = find_double_star(p) {
        let before = p.get(..pos).unwrap_or(&[]);
        let mut after = p.get(pos + 2..).unwrap_or(&[]);
        let slash_after = after.first() == Some(&'/');
        if slash_after {
            after = after.get(1..).unwrap_or(&[]);
        }
        // `before` must match a prefix of n ending at a component boundary
        // (or be empty); `**` then takes any run of characters.
        for split in 0..=n.len() {
            let head = n.get(..split).unwrap_or(&[]);
            if !before.is_empty() && match_here(before, head, true) != Some(true) {
                continue;
            }
            let tail = n.get(split..).unwrap_or(&[]);
            for skip in 0..=tail.len() {
                let rest = tail.get(skip..).unwrap_or(&[]);
                if slash_after {
                    // `**/x`: rest must start a component.
                    let at_boundary = skip == 0 || tail.get(skip - 1) == Some(&'/');
                    if !at_boundary {
                        continue;
                    }
                }
                if docker_match(after, rest) {
                    return true;
                }
            }
        }
        return false;
    }
    match_here(p, n, true) == Some(true)
}

fn find_double_star(p: &[char]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < p.len() {
        match (p.get(i), p.get(i + 1)) {
            (Some('\\'), _) => i += 2,
            (Some('*'), Some('*')) => return Some(i),
            _ => i += 1,
        }
    }
    None
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

    #[test]
    fn docker_patterns() {
        let s = ExcludeSet::new(&["*.md".into(), "!README.md".into(), "build/**".into()]);
        assert!(s.excluded("notes.md"));
        assert!(!s.excluded("README.md"));
        assert!(!s.excluded("docs/notes.md"));
        assert!(s.excluded("build/a/b.o"));
        assert!(!s.excluded("src/main.rs"));
        let s = ExcludeSet::new(&["**/*.log".into()]);
        assert!(s.excluded("a.log"));
        assert!(s.excluded("x/y/a.log"));
        assert!(!s.excluded("x/y/a.txt"));
        let s = ExcludeSet::new(&["vendor".into()]);
        assert!(s.excluded("vendor"));
        assert!(s.excluded("vendor/lib/x.go"));
        assert!(!s.excluded("src/vendor"));
        let s = ExcludeSet::new(&["a/**/z".into()]);
        assert!(s.excluded("a/z"));
        assert!(s.excluded("a/b/c/z"));
        assert!(!s.excluded("b/z"));
    }
}
