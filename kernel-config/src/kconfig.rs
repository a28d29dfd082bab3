//! Reading a kernel's `.config` (as written by kconfig) from text, a file, a gzip stream such
//! as `/proc/config.gz`, or a source tree.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::Serialize;

use crate::error::ConfigError;
use crate::version::KernelVersion;

/// A full kernel config is ~250 KB; anything far larger is not a config (or is a gzip bomb).
const MAX_CONFIG_BYTES: u64 = 64 * 1024 * 1024;

/// The value of one symbol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Value {
    /// `=y`
    Yes,
    /// `=m`
    Module,
    /// `# CONFIG_X is not set` or `=n`
    NotSet,
    /// `="..."`, unescaped
    Str(String),
    /// `=123`, `=-1`
    Num(i64),
    /// `=0x1b6`; the original spelling is kept for display
    Hex { value: u64, text: String },
}

impl Value {
    /// The numeric value of `Num` and `Hex`, for `>=` pins.
    pub fn as_number(&self) -> Option<i128> {
        match self {
            Value::Num(n) => Some(i128::from(*n)),
            Value::Hex { value, .. } => Some(i128::from(*value)),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::NotSet => f.write_str("not set"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Num(n) => write!(f, "{n}"),
            Value::Hex { text, .. } => f.write_str(text),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Value,
    line: usize,
}

/// A parsed kernel config. Symbol names are stored without the `CONFIG_` prefix.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    origin: String,
    entries: BTreeMap<String, Entry>,
    version: Option<KernelVersion>,
    arch: Option<String>,
    release: Option<String>,
    warnings: Vec<String>,
}

impl KernelConfig {
    /// Parses kconfig text. `origin` names the source in errors and reports (a path,
    /// `linux-image-....deb:/boot/config-...`, `/proc/config.gz`).
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut config = KernelConfig {
            origin: origin.to_string(),
            entries: BTreeMap::new(),
            version: None,
            arch: None,
            release: None,
            warnings: Vec::new(),
        };
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim_end();
            if line.trim_start().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(name) = not_set_symbol(line) {
                    config.insert(name.to_string(), Value::NotSet, line_no);
                } else if config.version.is_none() {
                    if let Some((arch, version)) = header_version(comment) {
                        config.arch = Some(arch.to_string());
                        config.version = KernelVersion::from_release(version);
                    }
                }
                continue;
            }
            let malformed = |column: usize, message: String| ConfigError::Malformed {
                origin: origin.to_string(),
                line: line_no,
                column,
                text: line.to_string(),
                message,
            };
            let indent = line.len() - line.trim_start().len();
            let body = &line[indent..];
            let Some(after_prefix) = body.strip_prefix("CONFIG_") else {
                return Err(malformed(
                    indent + 1,
                    "expected `CONFIG_NAME=value`, `# CONFIG_NAME is not set`, a `#` comment \
                     or a blank line"
                        .to_string(),
                ));
            };
            let name_len = symbol_len(after_prefix);
            if name_len == 0 {
                return Err(malformed(
                    indent + 8,
                    "missing symbol name after `CONFIG_`".to_string(),
                ));
            }
            let name = &after_prefix[..name_len];
            let rest = &after_prefix[name_len..];
            let Some(value_text) = rest.strip_prefix('=') else {
                return Err(malformed(
                    indent + 8 + name_len,
                    format!("expected `=` after CONFIG_{name}"),
                ));
            };
            let value_column = indent + 8 + name_len + 1;
            let value = parse_value(value_text).map_err(|(offset, message)| {
                malformed(value_column + offset, format!("CONFIG_{name}: {message}"))
            })?;
            config.insert(name.to_string(), value, line_no);
        }
        Ok(config)
    }

    /// Parses bytes that are either kconfig text or gzip-compressed kconfig text (detected by
    /// the gzip magic, as `/proc/config.gz` is).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, ConfigError> {
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            GzDecoder::new(bytes)
                .take(MAX_CONFIG_BYTES + 1)
                .read_to_end(&mut out)
                .map_err(|source| ConfigError::Gzip {
                    origin: origin.to_string(),
                    source,
                })?;
            if out.len() as u64 > MAX_CONFIG_BYTES {
                return Err(ConfigError::TooLarge {
                    origin: origin.to_string(),
                    limit: MAX_CONFIG_BYTES,
                });
            }
            out
        } else {
            bytes.to_vec()
        };
        let text = String::from_utf8(text).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError::NotUtf8 {
                origin: origin.to_string(),
                line: valid.iter().filter(|&&b| b == b'\n').count() + 1,
            }
        })?;
        Self::parse(&text, origin)
    }

    /// Reads a config file (plain or gzip), or a kernel source/build tree (its `.config`).
    /// A file named `config-RELEASE` (as in `/boot`) records RELEASE as the kernel release.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let file: PathBuf = if path.is_dir() {
            let dot_config = path.join(".config");
            if !dot_config.is_file() {
                return Err(ConfigError::NoDotConfig {
                    dir: path.to_path_buf(),
                });
            }
            dot_config
        } else {
            path.to_path_buf()
        };
        let meta = std::fs::metadata(&file).map_err(|source| ConfigError::Io {
            path: file.clone(),
            source,
        })?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                origin: file.display().to_string(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        let bytes = std::fs::read(&file).map_err(|source| ConfigError::Io {
            path: file.clone(),
            source,
        })?;
        let mut config = Self::from_bytes(&bytes, &file.display().to_string())?;
        if let Some(release) = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("config-"))
            .filter(|r| KernelVersion::from_release(r).is_some())
        {
            config.release = Some(release.to_string());
        }
        Ok(config)
    }

    /// Records the kernel release (`uname -r` form) this config belongs to.
    pub fn with_release(mut self, release: &str) -> Self {
        self.release = Some(release.to_string());
        self
    }

    /// The value of a symbol, with or without the `CONFIG_` prefix. `None` when the config
    /// does not mention the symbol at all (not even as `is not set`).
    pub fn get(&self, name: &str) -> Option<&Value> {
        let name = name.strip_prefix("CONFIG_").unwrap_or(name);
        self.entries.get(name).map(|e| &e.value)
    }

    /// The line a symbol was (last) set on.
    pub fn line_of(&self, name: &str) -> Option<usize> {
        let name = name.strip_prefix("CONFIG_").unwrap_or(name);
        self.entries.get(name).map(|e| e.line)
    }

    /// Sets a symbol, as a later line would. Meant for deriving variants of a config.
    pub fn set(&mut self, name: &str, value: Value) {
        let name = name.strip_prefix("CONFIG_").unwrap_or(name);
        self.entries
            .insert(name.to_string(), Entry { value, line: 0 });
    }

    /// Drops a symbol entirely, as if the config never mentioned it.
    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let name = name.strip_prefix("CONFIG_").unwrap_or(name);
        self.entries.remove(name).map(|e| e.value)
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// From the `# Linux/ARCH X.Y.Z Kernel Configuration` header, when present.
    pub fn version(&self) -> Option<KernelVersion> {
        self.version
    }

    pub fn arch(&self) -> Option<&str> {
        self.arch.as_deref()
    }

    pub fn release(&self) -> Option<&str> {
        self.release.as_deref()
    }

    /// Non-fatal findings, e.g. a symbol set twice.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn insert(&mut self, name: String, value: Value, line: usize) {
        if let Some(previous) = self.entries.get(&name) {
            self.warnings.push(format!(
                "{}:{line}: CONFIG_{name} is set again (first at line {}, as {}); the later \
                 value {value} wins, as in kconfig",
                self.origin, previous.line, previous.value
            ));
        }
        self.entries.insert(name, Entry { value, line });
    }
}

fn symbol_len(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

/// `# CONFIG_FOO is not set` (exactly as kconfig writes it, trailing blanks allowed).
pub(crate) fn not_set_symbol(line: &str) -> Option<&str> {
    let rest = line.trim_end().strip_prefix("# CONFIG_")?;
    let len = symbol_len(rest);
    if len == 0 || &rest[len..] != " is not set" {
        return None;
    }
    Some(&rest[..len])
}

/// `# Linux/x86 6.12.107 Kernel Configuration` -> ("x86", "6.12.107")
fn header_version(comment: &str) -> Option<(&str, &str)> {
    let rest = comment.trim().strip_prefix("Linux/")?;
    let mut words = rest.split_whitespace();
    let arch = words.next()?;
    let version = words.next()?;
    if words.next()? != "Kernel" || words.next()? != "Configuration" {
        return None;
    }
    Some((arch, version))
}

/// Parses what follows `=`. Errors carry the 0-based byte offset into `text`.
fn parse_value(text: &str) -> Result<Value, (usize, String)> {
    const EXPECTED: &str = "value must be y, m, n, a \"quoted string\", a decimal number or a \
                            0x hex number";
    if text.is_empty() {
        return Err((0, format!("empty value; {EXPECTED}")));
    }
    if let Some(inner) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => return Err((i + 1, "string ends with a lone `\\`".to_string())),
                },
                '"' => {
                    let after = &inner[i + 1..];
                    if !after.trim().is_empty() {
                        return Err((
                            i + 2 + (after.len() - after.trim_start().len()),
                            format!("unexpected `{}` after the closing quote", after.trim()),
                        ));
                    }
                    return Ok(Value::Str(out));
                }
                _ => out.push(c),
            }
        }
        return Err((0, "unterminated string: add the closing `\"`".to_string()));
    }
    let token_len = text.find(char::is_whitespace).unwrap_or(text.len());
    let (token, after) = text.split_at(token_len);
    if !after.trim().is_empty() {
        return Err((
            token_len + (after.len() - after.trim_start().len()),
            format!(
                "unexpected `{}` after the value (kconfig files have no trailing comments)",
                after.trim()
            ),
        ));
    }
    match token {
        "y" => return Ok(Value::Yes),
        "m" => return Ok(Value::Module),
        "n" => return Ok(Value::NotSet),
        _ => {}
    }
    if let Some(hex) = token
        .strip_prefix("0x")
        .or_else(|| token.strip_prefix("0X"))
    {
        return u64::from_str_radix(hex, 16)
            .map(|value| Value::Hex {
                value,
                text: token.to_string(),
            })
            .map_err(|_| (0, format!("`{token}` is not a hex number; {EXPECTED}")));
    }
    let digits = token.strip_prefix('-').unwrap_or(token);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return token
            .parse()
            .map(Value::Num)
            .map_err(|_| (0, format!("`{token}` does not fit a 64-bit number")));
    }
    Err((0, format!("`{token}`: {EXPECTED}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SAMPLE: &str = "\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.12.107 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT=\"x86_64-linux-gnu-gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0\"
CONFIG_USER_NS=y
CONFIG_OVERLAY_FS=m
# CONFIG_DEVMEM is not set
CONFIG_PANIC_TIMEOUT=0
CONFIG_ILLEGAL=-1
CONFIG_MAGIC_SYSRQ_DEFAULT_ENABLE=0x01b6
CONFIG_LSM=\"landlock,lockdown,yama\"
CONFIG_ESCAPED=\"a \\\"quoted\\\" \\\\ word\"

# a comment that mentions CONFIG_FOO in passing
";

    #[test]
    fn parses_every_value_kind() {
        let c = KernelConfig::parse(SAMPLE, "sample").unwrap();
        assert_eq!(c.version(), Some(KernelVersion::new(6, 12, 107)));
        assert_eq!(c.arch(), Some("x86"));
        assert_eq!(c.get("USER_NS"), Some(&Value::Yes));
        assert_eq!(c.get("CONFIG_OVERLAY_FS"), Some(&Value::Module));
        assert_eq!(c.get("DEVMEM"), Some(&Value::NotSet));
        assert_eq!(c.get("PANIC_TIMEOUT"), Some(&Value::Num(0)));
        assert_eq!(c.get("ILLEGAL"), Some(&Value::Num(-1)));
        assert_eq!(
            c.get("MAGIC_SYSRQ_DEFAULT_ENABLE")
                .and_then(Value::as_number),
            Some(0x1b6)
        );
        assert_eq!(
            c.get("LSM"),
            Some(&Value::Str("landlock,lockdown,yama".into()))
        );
        assert_eq!(
            c.get("ESCAPED"),
            Some(&Value::Str("a \"quoted\" \\ word".into()))
        );
        assert_eq!(c.get("FOO"), None, "comments are not settings");
        assert_eq!(c.line_of("USER_NS"), Some(6));
        assert!(c.warnings().is_empty());
    }

    #[test]
    fn duplicate_keys_last_wins_with_warning() {
        let c = KernelConfig::parse(
            "CONFIG_KEXEC=y\n# CONFIG_KEXEC is not set\nCONFIG_A=y\n",
            "dup",
        )
        .unwrap();
        assert_eq!(c.get("KEXEC"), Some(&Value::NotSet));
        assert_eq!(c.warnings().len(), 1);
        let w = &c.warnings()[0];
        assert!(
            w.contains("dup:2") && w.contains("CONFIG_KEXEC") && w.contains("line 1"),
            "{w}"
        );
    }

    fn malformed(text: &str) -> (usize, usize, String) {
        match KernelConfig::parse(text, "bad.config") {
            Err(ConfigError::Malformed {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected a malformed-line error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn malformed_lines_name_line_and_column() {
        let (line, col, msg) = malformed("CONFIG_A=y\nCONFIG_B=maybe\n");
        assert_eq!((line, col), (2, 10));
        assert!(msg.contains("CONFIG_B") && msg.contains("maybe"), "{msg}");

        let (line, col, _) = malformed("CONFIG_A=y\n\nUSER_NS=y\n");
        assert_eq!((line, col), (3, 1));

        let (_, _, msg) = malformed("CONFIG_A\n");
        assert!(msg.contains("expected `=`"), "{msg}");

        let (_, _, msg) = malformed("CONFIG_A=\"open\n");
        assert!(msg.contains("unterminated"), "{msg}");

        let (_, col, msg) = malformed("CONFIG_A=y # trailing\n");
        assert_eq!(col, 12);
        assert!(msg.contains("trailing"), "{msg}");

        let (_, _, msg) = malformed("CONFIG_A=\n");
        assert!(msg.contains("empty value"), "{msg}");

        let (_, _, msg) = malformed("CONFIG_A=0xZZ\n");
        assert!(msg.contains("hex"), "{msg}");

        let err = KernelConfig::parse("CONFIG_A=y\nCONFIG_B=q\n", "x.config").unwrap_err();
        assert!(err.to_string().starts_with("x.config:2:10:"), "{err}");
    }

    #[test]
    fn not_set_must_be_exact() {
        assert_eq!(not_set_symbol("# CONFIG_DEVMEM is not set"), Some("DEVMEM"));
        assert_eq!(
            not_set_symbol("# CONFIG_DEVMEM is not set  "),
            Some("DEVMEM")
        );
        assert_eq!(not_set_symbol("# CONFIG_DEVMEM is not sett"), None);
        assert_eq!(not_set_symbol("#CONFIG_DEVMEM is not set"), None);
    }

    #[test]
    fn reads_gzip_by_magic_and_release_from_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let gz_path = dir.path().join("config.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(SAMPLE.as_bytes()).unwrap();
        std::fs::write(&gz_path, enc.finish().unwrap()).unwrap();
        let c = KernelConfig::from_path(&gz_path).unwrap();
        assert_eq!(c.get("USER_NS"), Some(&Value::Yes));
        assert_eq!(c.release(), None);

        let boot = dir.path().join("config-6.12.107+deb12-cloud-amd64");
        std::fs::write(&boot, SAMPLE).unwrap();
        let c = KernelConfig::from_path(&boot).unwrap();
        assert_eq!(c.release(), Some("6.12.107+deb12-cloud-amd64"));

        let corrupt = dir.path().join("broken.gz");
        std::fs::write(&corrupt, [0x1f, 0x8b, 0x08, 0x00, 0x01]).unwrap();
        assert!(matches!(
            KernelConfig::from_path(&corrupt),
            Err(ConfigError::Gzip { .. })
        ));
    }

    #[test]
    fn reads_source_tree_dot_config() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            KernelConfig::from_path(dir.path()),
            Err(ConfigError::NoDotConfig { .. })
        ));
        std::fs::write(dir.path().join(".config"), SAMPLE).unwrap();
        let c = KernelConfig::from_path(dir.path()).unwrap();
        assert_eq!(c.get("OVERLAY_FS"), Some(&Value::Module));
        assert!(c.origin().ends_with(".config"));
    }

    #[test]
    fn rejects_non_utf8_with_line() {
        let err = KernelConfig::from_bytes(b"CONFIG_A=y\nCONFIG_B=\"\xff\"\n", "bin").unwrap_err();
        assert!(
            matches!(err, ConfigError::NotUtf8 { line: 2, .. }),
            "{err:?}"
        );
    }
}
