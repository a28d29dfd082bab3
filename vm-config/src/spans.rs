//! Positions of keys and values in a JSON text that serde_json already accepted.
//!
//! serde_json reports line/column for syntax errors but forgets positions once it has built a
//! `Value`. Type errors ("expected a boolean") need the position too, so this second, tiny pass
//! walks the same text and records where each dotted path starts. It can trust the input to be
//! valid JSON, which keeps it short.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Spans {
    /// Path -> position of the value (for the root, the path is "").
    values: HashMap<String, Pos>,
    /// Path -> position of the key naming it (object members only).
    keys: HashMap<String, Pos>,
    /// Paths that appear more than once in the same object, with the later key's position.
    pub duplicates: Vec<(String, Pos)>,
}

impl Spans {
    pub fn scan(text: &str) -> Spans {
        let mut s = Scanner {
            chars: text.chars().collect(),
            i: 0,
            line: 1,
            column: 1,
            spans: Spans::default(),
        };
        s.ws();
        s.value(String::new());
        s.spans
    }

    /// Where the value at `path` starts; falls back to the nearest ancestor so an error always
    /// has a location even for a path the scanner could not see (e.g. a missing member).
    pub fn value(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.values.get(p) {
                return *pos;
            }
            match parent(p) {
                Some(up) => p = up,
                None => return Pos { line: 1, column: 1 },
            }
        }
    }

    /// Where the key of the member at `path` starts (unknown-key warnings point at the key).
    pub fn key(&self, path: &str) -> Pos {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
    }
}

fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

pub(crate) fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

pub(crate) fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

struct Scanner {
    chars: Vec<char>,
    i: usize,
    line: usize,
    column: usize,
    spans: Spans,
}

impl Scanner {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | '\n' | '\r')) {
            self.bump();
        }
    }

    fn value(&mut self, path: String) {
        self.spans.values.insert(path.clone(), self.pos());
        match self.peek() {
            Some('{') => self.object(&path),
            Some('[') => self.array(&path),
            Some('"') => {
                self.string();
            }
            _ => {
                while let Some(c) = self.peek() {
                    if matches!(c, ',' | '}' | ']' | ' ' | '\t' | '\n' | '\r') {
                        break;
                    }
                    self.bump();
                }
            }
        }
    }

    fn string(&mut self) -> String {
        let mut out = String::new();
        self.bump(); // opening quote
        while let Some(c) = self.bump() {
            match c {
                '"' => break,
                '\\' => {
                    // Keys with escapes are only compared against our own ASCII names, so the
                    // escape is kept verbatim rather than decoded.
                    out.push('\\');
                    if let Some(e) = self.bump() {
                        out.push(e);
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    fn object(&mut self, path: &str) {
        self.bump(); // {
        self.ws();
        let mut seen: Vec<String> = Vec::new();
        if self.peek() == Some('}') {
            self.bump();
            return;
        }
        loop {
            self.ws();
            let key_pos = self.pos();
            let key = self.string();
            let child = join(path, &key);
            if seen.contains(&key) {
                self.spans.duplicates.push((child.clone(), key_pos));
            }
            seen.push(key);
            // Later duplicates win in serde_json, so their positions win here too.
            self.spans.keys.insert(child.clone(), key_pos);
            self.ws();
            self.bump(); // :
            self.ws();
            self.value(child);
            self.ws();
            match self.bump() {
                Some(',') => continue,
                _ => break, // '}' (input is valid JSON)
            }
        }
    }

    fn array(&mut self, path: &str) {
        self.bump(); // [
        self.ws();
        if self.peek() == Some(']') {
            self.bump();
            return;
        }
        let mut i = 0;
        loop {
            self.ws();
            self.value(index(path, i));
            i += 1;
            self.ws();
            match self.bump() {
                Some(',') => continue,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_positions_of_nested_keys_values_and_array_items() {
        let text = "{\n  \"a\": {\"b\": [1, {\"c\": \"x\"}]},\n  \"é\": true\n}";
        let s = Spans::scan(text);
        assert_eq!(s.key("a"), Pos { line: 2, column: 3 });
        assert_eq!(s.value("a"), Pos { line: 2, column: 8 });
        assert_eq!(
            s.value("a.b"),
            Pos {
                line: 2,
                column: 14
            }
        );
        assert_eq!(
            s.value("a.b[0]"),
            Pos {
                line: 2,
                column: 15
            }
        );
        assert_eq!(
            s.value("a.b[1].c"),
            Pos {
                line: 2,
                column: 24
            }
        );
        assert_eq!(s.value("é"), Pos { line: 3, column: 8 });
    }

    #[test]
    fn unknown_paths_fall_back_to_the_nearest_ancestor() {
        let s = Spans::scan("{\"a\":\n {\"b\": 1}}");
        assert_eq!(s.value("a.missing"), Pos { line: 2, column: 2 });
        assert_eq!(s.value("zzz"), Pos { line: 1, column: 1 });
    }

    #[test]
    fn duplicate_keys_are_reported_with_the_later_position() {
        let s = Spans::scan("{\"a\": 1,\n \"a\": 2}");
        assert_eq!(
            s.duplicates,
            vec![("a".to_string(), Pos { line: 2, column: 2 })]
        );
        assert_eq!(s.key("a"), Pos { line: 2, column: 2 });
    }

    #[test]
    fn escaped_quotes_in_strings_do_not_end_the_string() {
        let s = Spans::scan(r#"{"a": "x\"}, {", "b": 2}"#);
        assert_eq!(s.value("b").column, 23);
    }
}
