//! YAML as Kubernetes reads it.
//!
//! Kubernetes (and so kubectl and Istio) parses YAML with the Go YAML scanner
//! (`go.yaml.in/yaml/v2`, a port of libyaml); Isthmus parses it with `serde_yaml_ng`,
//! whose scanner is libyaml itself. The two differ on plain scalars inside flow
//! collections: libyaml refuses a `:` followed by `,`, `[`, `]`, `{`, `}` or `?` there
//! ("found unexpected ':'"), while Go's `yaml_parser_scan_plain_scalar` ends a plain
//! scalar only at `: `, `:` at the end of a line, or a flow indicator, so the `:`
//! belongs to the scalar. That makes every IPv6 address ending in `::` valid for
//! kubectl inside `[...]`, e.g. `addresses: [1.2.3.4, 2001:db8::]`.
//!
//! [`kubernetes_compatible`] finds exactly those scalars and single-quotes them, which
//! gives libyaml the same string Go reads; documents without them are passed through
//! untouched (same bytes, same error positions). Known differences left as they are:
//! a scalar that *starts* with `:` in a flow collection (`[::1]`) is a value indicator
//! for both scanners, so both reject it; Go also ends a flow scalar at any `?`
//! (`[a?b]` is two nodes for Go), where libyaml keeps `a?b` whole.

use std::borrow::Cow;

/// What the scanner is looking at.
struct Scan<'a> {
    text: &'a [u8],
    at: usize,
    /// Byte ranges of flow plain scalars to single-quote.
    quote: Vec<(usize, usize)>,
    /// Deepest flow nesting seen.
    depth: usize,
}

/// `doc` with every flow plain scalar that Go's YAML scanner reads whole but libyaml
/// refuses single-quoted, and the deepest nesting of flow collections in it (outside
/// quoted strings, comments and block scalars).
pub fn kubernetes_compatible(doc: &str) -> (Cow<'_, str>, usize) {
    let mut s = Scan {
        text: doc.as_bytes(),
        at: 0,
        quote: Vec::new(),
        depth: 0,
    };
    s.block();
    if s.quote.is_empty() {
        return (Cow::Borrowed(doc), s.depth);
    }
    let mut out = String::with_capacity(doc.len() + 2 * s.quote.len());
    let mut last = 0;
    for (start, end) in s.quote {
        out.push_str(&doc[last..start]);
        out.push('\'');
        out.push_str(&doc[start..end].replace('\'', "''"));
        out.push('\'');
        last = end;
    }
    out.push_str(&doc[last..]);
    (Cow::Owned(out), s.depth)
}

fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn is_break(c: u8) -> bool {
    c == b'\n' || c == b'\r'
}

fn is_flow_indicator(c: u8) -> bool {
    matches!(c, b',' | b'[' | b']' | b'{' | b'}')
}

impl Scan<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.text.get(self.at + ahead).copied()
    }

    /// Whether the byte `ahead` is a blank, a line break or the end.
    fn blankz(&self, ahead: usize) -> bool {
        self.peek(ahead).is_none_or(|c| is_blank(c) || is_break(c))
    }

    fn skip_line(&mut self) {
        while self.peek(0).is_some_and(|c| !is_break(c)) {
            self.at += 1;
        }
    }

    /// Block context: tokens until the end, descending into flow collections.
    fn block(&mut self) {
        // A block scalar holds the lines indented deeper than its parent node: the key
        // before it on its line (`key: |`), else the sequence entry it is in (`- |`).
        let mut key_column = 0;
        let mut entry_column = 0;
        let mut after_key = false;
        let mut line_start = true;
        while let Some(c) = self.peek(0) {
            if line_start {
                let begin = self.at;
                while self.peek(0) == Some(b' ') {
                    self.at += 1;
                }
                entry_column = self.at - begin;
                while self.peek(0) == Some(b'-') && self.blankz(1) && self.peek(1).is_some() {
                    entry_column = self.at - begin;
                    self.at += 1;
                    while self.peek(0) == Some(b' ') {
                        self.at += 1;
                    }
                }
                key_column = self.at - begin;
                after_key = false;
                line_start = false;
                continue;
            }
            match c {
                b'\n' | b'\r' => {
                    self.at += 1;
                    line_start = c == b'\n';
                }
                b' ' | b'\t' => self.at += 1,
                b'#' => self.skip_line(),
                b'[' | b'{' => self.flow(),
                b'\'' | b'"' => self.quoted(c),
                b'|' | b'>' => self.block_scalar(if after_key { key_column } else { entry_column }),
                b':' if self.blankz(1) => {
                    after_key = true;
                    self.at += 1;
                }
                b'-' | b'?' if self.blankz(1) => self.at += 1,
                b'&' | b'!' | b'*' => self.word(),
                _ => self.block_plain(),
            }
        }
    }

    /// A plain scalar in block context: to `: `, ` #` or the end of the line.
    fn block_plain(&mut self) {
        while let Some(c) = self.peek(0) {
            if is_break(c) || (c == b':' && self.blankz(1)) {
                return;
            }
            if is_blank(c) && self.peek(1) == Some(b'#') {
                return;
            }
            self.at += 1;
        }
    }

    /// An anchor, tag or alias: to the next blank.
    fn word(&mut self) {
        while !self.blankz(0) && !self.peek(0).is_some_and(is_flow_indicator) {
            self.at += 1;
        }
    }

    /// A `'…'` or `"…"` scalar, possibly over several lines.
    fn quoted(&mut self, q: u8) {
        self.at += 1;
        while let Some(c) = self.peek(0) {
            self.at += 1;
            if q == b'"' && c == b'\\' {
                self.at += 1;
            } else if c == q {
                if q == b'\'' && self.peek(0) == Some(b'\'') {
                    self.at += 1;
                } else {
                    return;
                }
            }
        }
    }

    /// `|` or `>`: the rest of the line, then every line that is empty or indented
    /// deeper than `parent_column`.
    fn block_scalar(&mut self, parent_column: usize) {
        self.skip_line();
        loop {
            let Some(c) = self.peek(0) else { return };
            if !is_break(c) {
                return;
            }
            let next = self.at + 1 + usize::from(c == b'\r' && self.peek(1) == Some(b'\n'));
            let rest = &self.text[next..];
            let indent = rest.iter().take_while(|&&b| b == b' ').count();
            let blank_line = rest[indent..]
                .first()
                .is_none_or(|&b| is_break(b) || b == b'\t');
            if !blank_line && indent <= parent_column {
                return;
            }
            self.at = next;
            self.skip_line();
        }
    }

    /// A flow collection from its `[` or `{` to its matching close (or the end).
    fn flow(&mut self) {
        let mut level = 0usize;
        while let Some(c) = self.peek(0) {
            match c {
                b'[' | b'{' => {
                    level += 1;
                    self.depth = self.depth.max(level);
                    self.at += 1;
                }
                b']' | b'}' => {
                    self.at += 1;
                    level = level.saturating_sub(1);
                    if level == 0 {
                        return;
                    }
                }
                b',' | b' ' | b'\t' | b'\n' | b'\r' => self.at += 1,
                // At a token's start `#` opens a comment (yaml_parser_scan_to_next_token).
                b'#' => self.skip_line(),
                b'\'' | b'"' => self.quoted(c),
                // In flow context `?` and `:` at a token's start are indicators (Go's
                // yaml_parser_fetch_next_token), `-` followed by a blank too.
                b'?' | b':' => self.at += 1,
                b'-' if self.blankz(1) => self.at += 1,
                b'&' | b'!' | b'*' => self.word(),
                _ => self.flow_plain(),
            }
        }
    }

    /// A plain scalar in flow context, ended as Go's `yaml_parser_scan_plain_scalar`
    /// ends it: at `:` followed by a blank or the end, at `,` `?` `[` `]` `{` `}`, at a
    /// comment, or at a line break (a scalar folded over lines is left as it is).
    fn flow_plain(&mut self) {
        let start = self.at;
        let mut end = self.at;
        let mut refused = false;
        while let Some(c) = self.peek(0) {
            if is_break(c) {
                // Multi-line flow scalars are rare; leave them to the parser unchanged.
                return;
            }
            if is_blank(c) {
                // Blanks inside a scalar belong to it if more of it follows.
                let mut ahead = 1;
                while self.peek(ahead).is_some_and(is_blank) {
                    ahead += 1;
                }
                match self.peek(ahead) {
                    Some(b'#') | None => break,
                    Some(n) if is_break(n) || is_flow_indicator(n) || n == b'?' => break,
                    Some(b':') if self.blankz(ahead + 1) => break,
                    _ => {
                        self.at += ahead;
                        continue;
                    }
                }
            }
            if c == b':' && self.blankz(1) {
                break;
            }
            if is_flow_indicator(c) || c == b'?' {
                break;
            }
            // libyaml: "x:" followed by one of `,?[]{}` in flow context is an error.
            if c == b':'
                && self
                    .peek(1)
                    .is_some_and(|n| is_flow_indicator(n) || n == b'?')
            {
                refused = true;
            }
            self.at += 1;
            end = self.at;
        }
        if refused {
            self.quote.push((start, end));
        }
        if self.at == start {
            // Nothing consumed (cannot happen with the callers' checks); never loop.
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(doc: &str) -> Result<serde_yaml_ng::Value, String> {
        let (text, _) = kubernetes_compatible(doc);
        serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())
    }

    fn strings(doc: &str, key: &str) -> Vec<String> {
        let v = parse(doc).unwrap();
        v[key]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|x| match x {
                serde_yaml_ng::Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn ipv6_addresses_in_flow_sequences_parse_as_kubectl_reads_them() {
        assert_eq!(
            strings("addresses: [1.2.3.4, 2001:db8::]", "addresses"),
            ["1.2.3.4", "2001:db8::"]
        );
        assert_eq!(
            strings("addresses: [2001:db8::, 1.2.3.4]\n", "addresses"),
            ["2001:db8::", "1.2.3.4"]
        );
        assert_eq!(
            strings("addresses: [ 2001:db8::,fd00::]", "addresses"),
            ["2001:db8::", "fd00::"]
        );
        assert_eq!(
            strings("a: [2001:db8::/32, fe80::1%eth0, 2001:db8::1]", "a"),
            ["2001:db8::/32", "fe80::1%eth0", "2001:db8::1"]
        );
        // Over several lines, with comments.
        let doc = "a: [\n  2001:db8::,   # first\n  fd00::,# second\n]\n";
        assert_eq!(strings(doc, "a"), ["2001:db8::", "fd00::"]);
        // `::` at the end of a line is `:` + a value indicator for Go too.
        let v = parse("a: [\n  2001:db8::,\n  fd00::\n]\n").unwrap();
        assert!(v["a"][1].is_mapping());
    }

    #[test]
    fn flow_mappings_and_nesting() {
        let v = parse("a: {addr: 2001:db8::, other: [fd00::]}").unwrap();
        assert_eq!(v["a"]["addr"].as_str(), Some("2001:db8::"));
        assert_eq!(v["a"]["other"][0].as_str(), Some("fd00::"));
        // "a:" followed by `,` is one scalar for Go: a key without value here.
        let v = parse("m: {a:, b: c}").unwrap();
        assert!(v["m"]["a:"].is_null());
        assert_eq!(v["m"]["b"].as_str(), Some("c"));
        assert_eq!(strings("s: [a:, b]", "s"), ["a:", "b"]);
        // A pair in a flow sequence stays a pair.
        let v = parse("s: [a: b]").unwrap();
        assert_eq!(v["s"][0]["a"].as_str(), Some("b"));
    }

    #[test]
    fn quotes_inside_are_kept() {
        assert_eq!(strings("s: [it's:]", "s"), ["it's:"]);
    }

    #[test]
    fn documents_without_such_scalars_pass_through_unchanged() {
        for doc in [
            "a: [1.2.3.4, \"2001:db8::\", '::1']",
            "a: [http://x, 1:2:3, a:b]",
            "a: b\nc: [d, e]\n",
            "text: |\n  [2001:db8::, x]\n  more\nnext: 1\n",
            "- |\n  {a:, b}\n- x\n",
            "k: \"[a:, b]\"\n",
            "k: '[a:, b]'\n",
            "plain: see [a:, b] here\n",
            "c: x # [a:, b]\n",
        ] {
            let (out, _) = kubernetes_compatible(doc);
            assert!(
                matches!(out, Cow::Borrowed(_)),
                "{doc:?} was rewritten: {out}"
            );
        }
    }

    #[test]
    fn block_scalars_end_at_the_parent_indentation() {
        let doc = "spec:\n  text: >\n    folded [x\n  list: [2001:db8::]\n";
        let v = parse(doc).unwrap();
        assert_eq!(v["spec"]["list"][0].as_str(), Some("2001:db8::"));
        assert_eq!(v["spec"]["text"].as_str(), Some("folded [x\n"));
        let doc = "items:\n- name: a\n  script: |\n    x: [1\n  ips: [fd00::]\n";
        let v = parse(doc).unwrap();
        assert_eq!(v["items"][0]["ips"][0].as_str(), Some("fd00::"));
    }

    #[test]
    fn a_colon_before_a_blank_ends_the_scalar_for_both_scanners() {
        // `2001:db8:: ]` is the key `2001:db8:` of a pair for Go as for libyaml.
        let v = parse("a: [2001:db8:: ]").unwrap();
        assert!(v["a"][0].is_mapping());
    }

    #[test]
    fn what_both_scanners_reject_stays_rejected() {
        // A flow scalar cannot start with `:` for Go either.
        assert!(parse("a: [::1]").is_err());
        assert!(parse("a: [1, 2").is_err());
    }

    #[test]
    fn flow_depth_ignores_quoted_and_commented_brackets() {
        assert_eq!(kubernetes_compatible("a: [[[x]]]").1, 3);
        assert_eq!(kubernetes_compatible("a: \"[[[[\"\nb: [x] # [[[[\n").1, 1);
        assert_eq!(kubernetes_compatible("d: it's [x]\ne: [y]").1, 1);
        assert_eq!(kubernetes_compatible("t: |\n  [[[[\nu: 1").1, 0);
    }
}
