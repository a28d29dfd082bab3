//! The fragment format: one pinned option per line, each with its reason.
//!
//! ```text
//! # comments and blank lines are ignored
//! CONFIG_USER_NS=y  # each container gets its own user namespace (SPEC U1)
//! CONFIG_OVERLAY_FS=y|m:overlay  min-version=5.19  # image layers; idmapped lower layers need 5.19
//! CONFIG_NFT_NAT=y|m:nft_nat,nft_chain_nat  # modules are listed when one option builds several
//! # CONFIG_DEVMEM is not set  # raw physical memory access
//! CONFIG_DEFAULT_MMAP_MIN_ADDR>=65536  # NULL-dereference exploits
//! CONFIG_DRM_HYPERV=y|m:hyperv_drm || CONFIG_FB_HYPERV=y|m:hyperv_fb  # either console driver
//! CONFIG_HYPERV_VMBUS=y|m:hv_vmbus  if-known  # symbol exists only on newer kernels
//! @min-version 5.12  # a kernel feature without its own option
//! ```
//!
//! Wanted values: `=y` built in; `=y|m:MODULES` built in or a module the image loads at boot;
//! `=n` (or the kconfig form `# CONFIG_X is not set`) must not be set; `="text"`, `=N`, `=0xN`
//! exact values; `>=N` numeric minimum. Annotations between the value and the reason:
//! `min-version=X.Y[.Z]` (the feature needs that kernel) and `if-known` (the pin applies only
//! when the kernel's config mentions the symbol at all, for symbols newer kernels introduced).

use std::fmt;

use serde::Serialize;

use crate::error::PinError;
use crate::kconfig::not_set_symbol;
use crate::version::KernelVersion;

/// What one option must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Want {
    /// `=y`
    BuiltIn,
    /// `=y|m:MODULES`: built in, or built as these modules and loaded at boot
    BuiltInOrModule(Vec<String>),
    /// `=n` / `# CONFIG_X is not set`: absent or not set
    Unset,
    /// `="text"`
    Str(String),
    /// `=N` or `=0xN`, compared numerically
    Equals(i128),
    /// `>=N`
    AtLeast(i128),
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Want::BuiltIn => f.write_str("y"),
            Want::BuiltInOrModule(mods) => write!(f, "y|m:{}", mods.join(",")),
            Want::Unset => f.write_str("unset"),
            Want::Str(s) => write!(f, "{s:?}"),
            Want::Equals(n) => write!(f, "{n}"),
            Want::AtLeast(n) => write!(f, ">={n}"),
        }
    }
}

/// One `CONFIG_X<op>value` term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Term {
    /// Symbol name without `CONFIG_`.
    pub option: String,
    pub want: Want,
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.want {
            Want::AtLeast(n) => write!(f, "CONFIG_{}>={n}", self.option),
            Want::Unset => write!(f, "CONFIG_{}=n", self.option),
            want => write!(f, "CONFIG_{}={want}", self.option),
        }
    }
}

/// One pinned line: one term, or alternatives joined by `||` (any one satisfies it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub terms: Vec<Term>,
    pub min_version: Option<KernelVersion>,
    pub if_known: bool,
    pub reason: String,
    /// Fragment name (`container`, `hardening`, ...).
    pub fragment: String,
    pub line: usize,
}

impl Requirement {
    /// The row name: `CONFIG_A` or `CONFIG_A || CONFIG_B`.
    pub fn option_label(&self) -> String {
        self.terms
            .iter()
            .map(|t| format!("CONFIG_{}", t.option))
            .collect::<Vec<_>>()
            .join(" || ")
    }

    /// The wanted column: `y`, `y|m:overlay`, `y|m:hyperv_drm || y|m:hyperv_fb`.
    pub fn wanted_label(&self) -> String {
        self.terms
            .iter()
            .map(|t| t.want.to_string())
            .collect::<Vec<_>>()
            .join(" || ")
    }

    pub fn mentions(&self, option: &str) -> bool {
        self.terms.iter().any(|t| t.option == option)
    }
}

/// `@min-version X.Y  # reason`: a kernel feature without an option of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionPin {
    pub min: KernelVersion,
    pub reason: String,
    pub fragment: String,
    pub line: usize,
}

/// A parsed fragment file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fragment {
    pub name: String,
    pub requirements: Vec<Requirement>,
    pub version_pins: Vec<VersionPin>,
}

impl Fragment {
    /// Parses fragment text. `name` is the fragment's name (`container`); `file` is what errors
    /// call the file (`fragments/container.config`).
    pub fn parse(name: &str, file: &str, text: &str) -> Result<Self, PinError> {
        let mut fragment = Fragment {
            name: name.to_string(),
            requirements: Vec::new(),
            version_pins: Vec::new(),
        };
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim_end();
            let mut cur = Cursor::new(line, file, line_no);
            cur.skip_ws();
            if cur.at_end() {
                continue;
            }
            if cur.rest().starts_with("@") {
                fragment
                    .version_pins
                    .push(parse_version_pin(&mut cur, name)?);
                continue;
            }
            if cur.rest().starts_with("# CONFIG_") || cur.rest().starts_with("#CONFIG_") {
                fragment
                    .requirements
                    .push(parse_not_set_line(&mut cur, name)?);
                continue;
            }
            if cur.rest().starts_with('#') {
                continue;
            }
            fragment
                .requirements
                .push(parse_requirement(&mut cur, name)?);
        }
        Ok(fragment)
    }
}

fn parse_version_pin(cur: &mut Cursor<'_>, fragment: &str) -> Result<VersionPin, PinError> {
    if !cur.eat("@min-version") {
        return Err(cur.error(
            "unknown directive",
            "the only directive is `@min-version X.Y  # reason`",
        ));
    }
    if !cur.skip_ws() {
        return Err(cur.error(
            "expected a version after @min-version",
            "write `@min-version X.Y  # reason`",
        ));
    }
    let min = cur.version()?;
    let reason = cur.reason()?;
    Ok(VersionPin {
        min,
        reason,
        fragment: fragment.to_string(),
        line: cur.line,
    })
}

fn parse_not_set_line(cur: &mut Cursor<'_>, fragment: &str) -> Result<Requirement, PinError> {
    let start = cur.pos;
    // Up to the reason's `#` (the second one on the line).
    let body_end = cur.s[start + 1..]
        .find('#')
        .map(|i| start + 1 + i)
        .unwrap_or(cur.s.len());
    let body = &cur.s[start..body_end];
    let head_len = body
        .find(" is not set")
        .map(|i| i + " is not set".len())
        .filter(|&len| body[len..].is_empty() || body[len..].starts_with(char::is_whitespace));
    let Some(symbol) = head_len.and_then(|len| not_set_symbol(&body[..len])) else {
        return Err(cur.error(
            "a comment starting with `# CONFIG_` must be a `# CONFIG_NAME is not set` pin",
            "write exactly `# CONFIG_NAME is not set  # reason`, or reword the comment so it \
             does not start with `# CONFIG_`",
        ));
    };
    cur.pos = start + head_len.unwrap_or(0);
    let term = Term {
        option: symbol.to_string(),
        want: Want::Unset,
    };
    finish_requirement(cur, fragment, vec![term])
}

fn parse_requirement(cur: &mut Cursor<'_>, fragment: &str) -> Result<Requirement, PinError> {
    let mut terms = vec![cur.term()?];
    loop {
        let save = cur.pos;
        cur.skip_ws();
        if cur.eat("||") {
            cur.skip_ws();
            terms.push(cur.term()?);
        } else {
            cur.pos = save;
            break;
        }
    }
    finish_requirement(cur, fragment, terms)
}

fn finish_requirement(
    cur: &mut Cursor<'_>,
    fragment: &str,
    terms: Vec<Term>,
) -> Result<Requirement, PinError> {
    let mut min_version = None;
    let mut if_known = false;
    loop {
        let had_ws = cur.skip_ws();
        if cur.at_end() || cur.rest().starts_with('#') {
            break;
        }
        if !had_ws {
            return Err(cur.error(
                &format!("unexpected `{}` after the value", cur.word()),
                "separate annotations and the `# reason` from the value with spaces",
            ));
        }
        if cur.eat("min-version=") {
            min_version = Some(cur.version()?);
        } else if cur.eat_word("if-known") {
            if_known = true;
        } else {
            return Err(cur.error(
                &format!("unknown annotation `{}`", cur.word()),
                "known annotations are `min-version=X.Y` and `if-known`; the reason goes after `#`",
            ));
        }
    }
    let reason = cur.reason()?;
    Ok(Requirement {
        terms,
        min_version,
        if_known,
        reason,
        fragment: fragment.to_string(),
        line: cur.line,
    })
}

/// A position in one line of a pin file, for parsing with exact columns in errors.
pub(crate) struct Cursor<'a> {
    pub s: &'a str,
    pub pos: usize,
    pub file: &'a str,
    pub line: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(s: &'a str, file: &'a str, line: usize) -> Self {
        Cursor {
            s,
            pos: 0,
            file,
            line,
        }
    }

    pub fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    /// Skips blanks; tells whether there were any.
    pub fn skip_ws(&mut self) -> bool {
        let n = self.rest().len() - self.rest().trim_start().len();
        self.pos += n;
        n > 0
    }

    pub fn eat(&mut self, token: &str) -> bool {
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    /// Eats `token` only when a blank, `#` or the end follows it.
    pub fn eat_word(&mut self, token: &str) -> bool {
        if let Some(after) = self.rest().strip_prefix(token) {
            if after.is_empty() || after.starts_with(char::is_whitespace) || after.starts_with('#')
            {
                self.pos += token.len();
                return true;
            }
        }
        false
    }

    /// The next blank-delimited word, for messages.
    pub fn word(&self) -> &'a str {
        let rest = self.rest();
        &rest[..rest.find(char::is_whitespace).unwrap_or(rest.len())]
    }

    pub fn error(&self, message: &str, fix: &str) -> PinError {
        self.error_at(self.pos, message, fix)
    }

    pub fn error_at(&self, pos: usize, message: &str, fix: &str) -> PinError {
        PinError::Syntax {
            file: self.file.to_string(),
            line: self.line,
            column: self.s[..pos.min(self.s.len())].chars().count() + 1,
            message: message.to_string(),
            fix: fix.to_string(),
        }
    }

    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let n = rest.find(|c: char| !pred(c)).unwrap_or(rest.len());
        self.pos += n;
        &rest[..n]
    }

    /// `# reason` up to the end of the line; required and non-empty.
    pub fn reason(&mut self) -> Result<String, PinError> {
        self.skip_ws();
        if !self.eat("#") {
            return Err(self.error(
                "missing reason",
                "end the line with `  # why the VM needs this`; every pin carries its reason",
            ));
        }
        let reason = self.rest().trim();
        if reason.is_empty() {
            return Err(self.error(
                "empty reason after `#`",
                "say why the VM needs this after the `#`",
            ));
        }
        self.pos = self.s.len();
        Ok(reason.to_string())
    }

    pub fn version(&mut self) -> Result<KernelVersion, PinError> {
        let start = self.pos;
        let text = self.take_while(|c| c.is_ascii_digit() || c == '.');
        text.parse().map_err(|message: String| {
            self.error_at(
                start,
                &message,
                "write the version as X.Y or X.Y.Z, e.g. 5.19",
            )
        })
    }

    /// `CONFIG_NAME` followed by `=value` or `>=number`.
    pub fn term(&mut self) -> Result<Term, PinError> {
        if !self.eat("CONFIG_") {
            return Err(self.error(
                &format!("expected `CONFIG_NAME=value`, found `{}`", self.word()),
                "start the line with the option, e.g. `CONFIG_USER_NS=y  # reason`, or make it \
                 a comment with `#`",
            ));
        }
        let option = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if option.is_empty() {
            return Err(self.error(
                "missing symbol name after `CONFIG_`",
                "write the full option, e.g. `CONFIG_USER_NS=y`",
            ));
        }
        let option = option.to_string();
        let want = if self.eat(">=") {
            Want::AtLeast(self.number(&option)?)
        } else if self.eat("=") {
            self.want(&option)?
        } else {
            return Err(self.error(
                &format!("expected `=` or `>=` after CONFIG_{option}"),
                "write `CONFIG_NAME=y`, `=y|m:MODULE`, `=n`, `=\"text\"`, `=N` or `>=N`",
            ));
        };
        Ok(Term { option, want })
    }

    fn want(&mut self, option: &str) -> Result<Want, PinError> {
        let start = self.pos;
        if self.eat("y|m") {
            if !self.eat(":") {
                return Err(self.error(
                    &format!("CONFIG_{option}=y|m has no module name"),
                    &format!(
                        "write `CONFIG_{option}=y|m:MODULE` with the module name the image \
                         definition's kernel.modules list uses (as in /sys/module)"
                    ),
                ));
            }
            return Ok(Want::BuiltInOrModule(self.modules(option)?));
        }
        if self.eat_value_word("y") {
            return Ok(Want::BuiltIn);
        }
        if self.eat_value_word("n") {
            return Ok(Want::Unset);
        }
        if self.rest().starts_with('m') {
            return Err(self.error(
                &format!("CONFIG_{option}=m: a pin cannot demand a module"),
                &format!(
                    "write `CONFIG_{option}=y|m:MODULE` (module allowed when loaded at boot) or \
                     `CONFIG_{option}=y`"
                ),
            ));
        }
        if self.rest().starts_with('"') {
            return self.string().map(Want::Str);
        }
        if self
            .rest()
            .starts_with(|c: char| c.is_ascii_digit() || c == '-')
        {
            return Ok(Want::Equals(self.number(option)?));
        }
        self.pos = start;
        Err(self.error(
            &format!("bad value `{}` for CONFIG_{option}", self.word()),
            "use y, y|m:MODULE, n, \"text\", a number or 0xHEX",
        ))
    }

    /// `y`/`n` as a whole value (followed by a blank, `||`, `#` or the end).
    fn eat_value_word(&mut self, word: &str) -> bool {
        let rest = self.rest();
        if let Some(after) = rest.strip_prefix(word) {
            if after.is_empty()
                || after.starts_with(char::is_whitespace)
                || after.starts_with("||")
                || after.starts_with('#')
            {
                self.pos += word.len();
                return true;
            }
        }
        false
    }

    fn modules(&mut self, option: &str) -> Result<Vec<String>, PinError> {
        let mut modules = Vec::new();
        loop {
            let start = self.pos;
            let name = self.take_while(|c| !c.is_whitespace() && c != ',');
            if name.is_empty() {
                return Err(self.error_at(
                    start,
                    &format!("CONFIG_{option}: empty module name"),
                    "write `y|m:MODULE[,MODULE...]` with no blanks inside the list",
                ));
            }
            if let Some(stem) = name
                .strip_suffix(".ko")
                .or_else(|| name.strip_suffix(".ko.xz"))
                .or_else(|| name.strip_suffix(".ko.zst"))
            {
                return Err(self.error_at(
                    start,
                    &format!("CONFIG_{option}: `{name}` is a file name, not a module name"),
                    &format!("write the bare module name `{stem}`"),
                ));
            }
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(self.error_at(
                    start,
                    &format!("CONFIG_{option}: `{name}` is not a module name"),
                    "module names use letters, digits, `_` and `-` only (as in /sys/module)",
                ));
            }
            modules.push(normalize_module(name));
            if !self.eat(",") {
                break;
            }
        }
        Ok(modules)
    }

    fn number(&mut self, option: &str) -> Result<i128, PinError> {
        let start = self.pos;
        let token = self.take_while(|c| c.is_ascii_alphanumeric() || c == '-');
        let parsed = if let Some(hex) = token
            .strip_prefix("0x")
            .or_else(|| token.strip_prefix("0X"))
        {
            i128::from_str_radix(hex, 16).ok()
        } else {
            token.parse::<i128>().ok()
        };
        parsed.ok_or_else(|| {
            self.error_at(
                start,
                &format!("CONFIG_{option}: `{token}` is not a number"),
                "write a decimal number or 0xHEX",
            )
        })
    }

    fn string(&mut self) -> Result<String, PinError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, e)) = chars.next() {
                        out.push(e);
                    }
                }
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                _ => out.push(c),
            }
        }
        Err(self.error_at(
            start,
            "unterminated string",
            "close the string with `\"` before the `# reason`",
        ))
    }
}

/// Module names compare with `-` and `_` equal, as modprobe and /sys/module treat them.
pub fn normalize_module(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Fragment, PinError> {
        Fragment::parse("t", "fragments/t.config", text)
    }

    fn syntax(text: &str) -> (usize, usize, String, String) {
        match parse(text) {
            Err(PinError::Syntax {
                line,
                column,
                message,
                fix,
                ..
            }) => (line, column, message, fix),
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_every_form() {
        let f = parse(
            "# header comment\n\
             \n\
             CONFIG_USER_NS=y  # user namespaces (SPEC U1)\n\
             CONFIG_OVERLAY_FS=y|m:overlay  min-version=5.19  # layers\n\
             CONFIG_NFT_NAT=y|m:nft_nat,nft-chain-nat  # nat\n\
             # CONFIG_DEVMEM is not set  # raw memory\n\
             CONFIG_DEFAULT_MMAP_MIN_ADDR>=65536  # null deref\n\
             CONFIG_PANIC_TIMEOUT=-1  # reboot\n\
             CONFIG_SYSRQ_DEFAULT=0x0  # sysrq\n\
             CONFIG_LSM=\"lockdown,yama\"  # order\n\
             CONFIG_DRM_HYPERV=y|m:hyperv_drm || CONFIG_FB_HYPERV=y|m:hyperv_fb  # console\n\
             CONFIG_MODULE_SIG_FORCE=y || CONFIG_MODULES=n  # signed\n\
             CONFIG_HYPERV_VMBUS=y|m:hv_vmbus  if-known  # vmbus\n\
             @min-version 5.12  # mount_setattr\n",
        )
        .unwrap();
        let r = &f.requirements;
        assert_eq!(r.len(), 11);
        assert_eq!(r[0].terms[0].option, "USER_NS");
        assert_eq!(r[0].terms[0].want, Want::BuiltIn);
        assert_eq!(r[0].reason, "user namespaces (SPEC U1)");
        assert_eq!(r[0].line, 3);
        assert_eq!(
            r[1].terms[0].want,
            Want::BuiltInOrModule(vec!["overlay".into()])
        );
        assert_eq!(r[1].min_version, Some(KernelVersion::new(5, 19, 0)));
        assert_eq!(
            r[2].terms[0].want,
            Want::BuiltInOrModule(vec!["nft_nat".into(), "nft_chain_nat".into()])
        );
        assert_eq!(r[3].terms[0].want, Want::Unset);
        assert_eq!(r[3].reason, "raw memory");
        assert_eq!(r[4].terms[0].want, Want::AtLeast(65536));
        assert_eq!(r[5].terms[0].want, Want::Equals(-1));
        assert_eq!(r[6].terms[0].want, Want::Equals(0));
        assert_eq!(r[7].terms[0].want, Want::Str("lockdown,yama".into()));
        assert_eq!(r[8].terms.len(), 2);
        assert_eq!(r[8].option_label(), "CONFIG_DRM_HYPERV || CONFIG_FB_HYPERV");
        assert_eq!(r[9].terms[1].want, Want::Unset);
        assert!(r[10].if_known);
        assert_eq!(f.version_pins.len(), 1);
        assert_eq!(f.version_pins[0].min, KernelVersion::new(5, 12, 0));
    }

    #[test]
    fn missing_reason_is_an_error_with_position_and_fix() {
        let (line, col, msg, fix) = syntax("CONFIG_A=y  # ok\nCONFIG_USER_NS=y\n");
        assert_eq!((line, col), (2, 17));
        assert_eq!(msg, "missing reason");
        assert!(fix.contains("# why"), "{fix}");
        let (_, _, msg, _) = syntax("CONFIG_USER_NS=y  #   \n");
        assert!(msg.contains("empty reason"), "{msg}");
        let (_, _, msg, _) = syntax("# CONFIG_DEVMEM is not set\n");
        assert_eq!(msg, "missing reason");
        let (_, _, msg, _) = syntax("@min-version 5.19\n");
        assert_eq!(msg, "missing reason");
        let err = parse("CONFIG_USER_NS=y\n").unwrap_err().to_string();
        assert!(
            err.starts_with("fragments/t.config:1:17: missing reason; fix:"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let (_, col, msg, _) = syntax("CONFIG_A=yes  # r\n");
        assert_eq!(col, 10);
        assert!(msg.contains("bad value `yes`"), "{msg}");
        let (_, _, msg, fix) = syntax("CONFIG_A=m  # r\n");
        assert!(msg.contains("cannot demand a module"), "{msg}");
        assert!(fix.contains("y|m:MODULE"), "{fix}");
        let (_, _, msg, _) = syntax("CONFIG_A>=y  # r\n");
        assert!(msg.contains("not a number"), "{msg}");
        let (_, _, msg, _) = syntax("CONFIG_A  # r\n");
        assert!(msg.contains("expected `=`"), "{msg}");
        let (_, _, msg, _) = syntax("USER_NS=y  # r\n");
        assert!(msg.contains("expected `CONFIG_NAME=value`"), "{msg}");
        let (_, _, msg, _) = syntax("CONFIG_A=\"x  # r\n");
        assert!(msg.contains("unterminated"), "{msg}");
        let (_, _, msg, _) = syntax("CONFIG_A=y min-version=5  # r\n");
        assert!(msg.contains("not a kernel version"), "{msg}");
        let (_, _, msg, fix) = syntax("CONFIG_A=y  optional  # r\n");
        assert!(msg.contains("unknown annotation `optional`"), "{msg}");
        assert!(fix.contains("min-version"), "{fix}");
        let (_, _, msg, _) = syntax("# CONFIG_DEVMEM is not sett  # r\n");
        assert!(msg.contains("is not set"), "{msg}");
    }

    #[test]
    fn bad_module_suffixes_are_errors() {
        let (_, col, msg, fix) = syntax("CONFIG_OVERLAY_FS=y|m  # r\n");
        assert_eq!(col, 22);
        assert!(msg.contains("no module name"), "{msg}");
        assert!(fix.contains("CONFIG_OVERLAY_FS=y|m:MODULE"), "{fix}");
        let (_, _, msg, _) = syntax("CONFIG_OVERLAY_FS=y|m:  # r\n");
        assert!(msg.contains("empty module name"), "{msg}");
        let (_, col, msg, fix) = syntax("CONFIG_OVERLAY_FS=y|m:overlay.ko  # r\n");
        assert_eq!(col, 23);
        assert!(msg.contains("file name"), "{msg}");
        assert!(fix.contains("`overlay`"), "{fix}");
        let (_, _, msg, _) = syntax("CONFIG_OVERLAY_FS=y|m:over/lay  # r\n");
        assert!(msg.contains("not a module name"), "{msg}");
        let (_, _, msg, _) = syntax("CONFIG_A=y|m:a,  # r\n");
        assert!(msg.contains("empty module name"), "{msg}");
    }
}
