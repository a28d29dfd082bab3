//! What a kernel is made of: the Kconfig symbols of the tree, the recipe (base config,
//! build fragments, pins) and the plan of values handed to kconfig.

use super::{io_err, KernelBuildError, BUILD_FRAGMENTS_DIR, GENERATED_DIR, OWN_KERNEL_FRAGMENT};
use eci_kernel_config::{Fragment, KernelConfig, Pins, Requirement, Target, Value, Want};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Type of a Kconfig symbol, as declared in `Kconfig*` files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymbolType {
    Bool,
    Tristate,
    String,
    Int,
    Hex,
}

/// Every symbol the tree defines for x86 (other architectures' Kconfig files are skipped, so
/// a symbol only arm64 has counts as unknown).
#[derive(Debug, Clone, Default)]
pub struct Symbols(BTreeMap<String, Option<SymbolType>>);

impl Symbols {
    pub fn scan(tree: &Path) -> Result<Symbols, KernelBuildError> {
        let mut symbols = Symbols::default();
        let mut stack = vec![tree.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                let file_type = entry.file_type().map_err(io_err(&path))?;
                if file_type.is_dir() {
                    let other_arch = dir == tree.join("arch") && name != "x86";
                    if !other_arch && !name.starts_with('.') {
                        stack.push(path);
                    }
                } else if file_type.is_file() && name.starts_with("Kconfig") {
                    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
                    symbols.add_kconfig(&text);
                }
            }
        }
        Ok(symbols)
    }

    /// Reads `config`/`menuconfig` entries and the type line that follows them.
    pub fn add_kconfig(&mut self, text: &str) {
        let mut current: Option<String> = None;
        for line in text.lines() {
            let line = line.trim();
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            match first {
                "config" | "menuconfig" => {
                    if let Some(name) = words.next() {
                        self.0.entry(name.to_string()).or_insert(None);
                        current = Some(name.to_string());
                    }
                    continue;
                }
                "choice" | "endchoice" | "menu" | "endmenu" | "if" | "endif" | "source"
                | "comment" | "mainmenu" => {
                    current = None;
                    continue;
                }
                _ => {}
            }
            let Some(name) = &current else { continue };
            let ty = match first {
                "bool" | "def_bool" => SymbolType::Bool,
                "tristate" | "def_tristate" => SymbolType::Tristate,
                "string" => SymbolType::String,
                "int" => SymbolType::Int,
                "hex" => SymbolType::Hex,
                _ => continue,
            };
            let slot = self.0.get_mut(name).expect("inserted above");
            slot.get_or_insert(ty);
        }
    }

    pub fn knows(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn kind(&self, name: &str) -> Option<SymbolType> {
        self.0.get(name).copied().flatten()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The config make starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// `make x86_64_defconfig`: upstream's small configuration that boots PCs and common VMs.
    Defconfig,
    /// `make tinyconfig`: the smallest kernel kconfig can make; for pipeline tests.
    Tinyconfig,
}

impl Base {
    pub fn make_target(self) -> &'static str {
        match self {
            Base::Defconfig => "x86_64_defconfig",
            Base::Tinyconfig => "tinyconfig",
        }
    }
}

/// One kernel eci can build.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Names the kernel release (`-eci-NAME`), the object directory and the messages.
    pub name: String,
    pub base: Base,
    /// What the result must satisfy, checked without any exception profile.
    pub pins: Pins,
    /// Build-only settings merged before the pins (and with precedence over alternatives).
    pub build: Vec<Fragment>,
    /// Where a missing dependency should be added (named in errors).
    pub hint: PathBuf,
}

impl Recipe {
    /// The recipe of a VM target: defconfig, `build/own-kernel.config`, `build/TARGET.config`
    /// when present, and the target's pins.
    pub fn for_target(
        target: Target,
        kernel_config_dir: &Path,
    ) -> Result<Recipe, KernelBuildError> {
        let dir = kernel_config_dir.join(BUILD_FRAGMENTS_DIR);
        let mut build = Vec::new();
        for (name, required) in [(OWN_KERNEL_FRAGMENT, true), (target.name(), false)] {
            let path = dir.join(format!("{name}.config"));
            if !required && !path.is_file() {
                continue;
            }
            build.push(load_fragment(name, &path)?);
        }
        Ok(Recipe {
            name: target.name().to_string(),
            base: Base::Defconfig,
            pins: Pins::builtin(target)?,
            build,
            // Dependencies so far were needed by every target; one only a target needs goes
            // in build/TARGET.config, which is merged when it exists.
            hint: dir.join(format!("{OWN_KERNEL_FRAGMENT}.config")),
        })
    }

    /// Where the committed full config of a target lives.
    pub fn generated_path(kernel_config_dir: &Path, target: Target) -> PathBuf {
        kernel_config_dir
            .join(GENERATED_DIR)
            .join(format!("{}.config", target.name()))
    }
}

/// Parses a fragment file with the pin parser (same format, same reason rule).
pub fn load_fragment(name: &str, path: &Path) -> Result<Fragment, KernelBuildError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(Fragment::parse(name, &path.display().to_string(), &text)?)
}

/// One value handed to kconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub symbol: String,
    /// `None`: `# CONFIG_X is not set`.
    pub value: Option<String>,
    /// A `>=` pin: a larger value kconfig keeps (from the base or a dependency) is fine.
    pub at_least: bool,
    /// An `if-known` pin: it does not apply when the result has no such symbol at all (as
    /// the checker sees it), e.g. module options in a kernel without modules.
    pub if_known: bool,
    /// `build/own-kernel.config:7` or `fragments/container.config:31`.
    pub origin: String,
    pub reason: String,
}

impl Request {
    pub(super) fn line(&self) -> String {
        match &self.value {
            Some(v) => format!("CONFIG_{}={v}", self.symbol),
            None => format!("# CONFIG_{} is not set", self.symbol),
        }
    }
}

/// The fragment merged over the base: the build settings, then one chosen term per pin.
pub fn plan(recipe: &Recipe, symbols: &Symbols) -> Result<Vec<Request>, KernelBuildError> {
    let mut out: Vec<Request> = Vec::new();
    let mut by_symbol: BTreeMap<String, usize> = BTreeMap::new();
    let mut add = |req: Request, out: &mut Vec<Request>| -> Result<(), KernelBuildError> {
        if let Some(&i) = by_symbol.get(&req.symbol) {
            if out[i].value != req.value {
                return Err(KernelBuildError::Conflict(format!(
                    "{}: `{}` contradicts `{}` at {}; one of them must change",
                    req.origin,
                    req.line(),
                    out[i].line(),
                    out[i].origin
                )));
            }
            return Ok(());
        }
        by_symbol.insert(req.symbol.clone(), out.len());
        out.push(req);
        Ok(())
    };
    let build_symbols: BTreeSet<&str> = recipe
        .build
        .iter()
        .flat_map(|f| f.requirements.iter())
        .flat_map(|r| r.terms.iter().map(|t| t.option.as_str()))
        .collect();
    let local = Request {
        symbol: "LOCALVERSION".into(),
        value: Some(format!("\"-eci-{}\"", recipe.name)),
        at_least: false,
        if_known: false,
        origin: "eci-build".into(),
        reason: "the kernel release names the recipe it was built from".into(),
    };
    add(local, &mut out)?;
    for fragment in &recipe.build {
        for req in &fragment.requirements {
            if let Some(r) = choose(req, symbols, &BTreeSet::new(), "build") {
                add(r, &mut out)?;
            }
        }
    }
    for req in &recipe.pins.requirements {
        if let Some(r) = choose(req, symbols, &build_symbols, "fragments") {
            add(r, &mut out)?;
        }
    }
    Ok(out)
}

/// The term of a requirement to hand to kconfig: none for alternatives of which a build
/// fragment already decides one (`MODULE_SIG_FORCE=y || MODULES=n` with MODULES unset; the
/// checker then confirms the pin holds) or for an unknown `if-known` symbol; else the first
/// term kconfig knows (alternatives list the current name first); else the first term, which
/// then fails loudly. A single-term pin is always requested, so a build fragment that
/// contradicts it is reported.
fn choose(
    req: &Requirement,
    symbols: &Symbols,
    decided: &BTreeSet<&str>,
    dir: &str,
) -> Option<Request> {
    if req.terms.len() > 1
        && req
            .terms
            .iter()
            .any(|t| decided.contains(t.option.as_str()))
    {
        return None;
    }
    let known = req.terms.iter().find(|t| symbols.knows(&t.option));
    if known.is_none() && req.if_known {
        return None;
    }
    let term = known.unwrap_or(&req.terms[0]);
    let number = |n: i128| match symbols.kind(&term.option) {
        Some(SymbolType::Hex) => format!("0x{n:x}"),
        _ => n.to_string(),
    };
    let value = match &term.want {
        Want::BuiltIn | Want::BuiltInOrModule(_) => Some("y".to_string()),
        Want::Unset => None,
        Want::Str(s) => Some(format!(
            "\"{}\"",
            s.replace('\\', "\\\\").replace('"', "\\\"")
        )),
        Want::Equals(n) | Want::AtLeast(n) => Some(number(*n)),
    };
    Some(Request {
        symbol: term.option.clone(),
        value,
        at_least: matches!(term.want, Want::AtLeast(_)),
        if_known: req.if_known,
        origin: format!("{dir}/{}.config:{}", req.fragment, req.line),
        reason: req.reason.clone(),
    })
}

/// Whether kconfig's result still holds a request.
pub(super) fn kept(req: &Request, config: &KernelConfig) -> bool {
    let got = config.get(&req.symbol);
    if req.if_known && got.is_none() {
        return true;
    }
    match (&req.value, got) {
        (None, None | Some(Value::NotSet)) => true,
        (None, _) => false,
        (Some(v), Some(Value::Yes)) => v == "y",
        (Some(v), Some(Value::Str(s))) => {
            *v == format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
        }
        (Some(v), Some(n @ (Value::Num(_) | Value::Hex { .. }))) => {
            let want = match v.strip_prefix("0x") {
                Some(h) => i128::from_str_radix(h, 16).ok(),
                None => v.parse::<i128>().ok(),
            };
            match (want, n.as_number()) {
                (Some(w), Some(g)) => g == w || (req.at_least && g > w),
                _ => false,
            }
        }
        (Some(_), _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbols(text: &str) -> Symbols {
        let mut s = Symbols::default();
        s.add_kconfig(text);
        s
    }

    const KCONFIG: &str = "\
config MODULES
\tbool \"Enable loadable module support\"
menuconfig NETFILTER
\tbool \"Network packet filtering\"
config MAGIC_SYSRQ_DEFAULT_ENABLE
\thex \"Enable magic SysRq key functions by default\"
\tdefault 0x1
config DEFAULT_MMAP_MIN_ADDR
\tint \"Low address space to protect\"
config OVERLAY_FS
\ttristate \"Overlay filesystem support\"
config CPU_MITIGATIONS
\tdef_bool y
choice
\tprompt \"x\"
config LOCALVERSION
\tstring \"Local version\"
endchoice
";

    fn recipe(pins: &str, build: &str) -> Recipe {
        let frag = Fragment::parse("container", "fragments/container.config", pins).unwrap();
        Recipe {
            name: "unit".into(),
            base: Base::Tinyconfig,
            pins: Pins {
                target: Target::Qemu,
                requirements: frag.requirements,
                version_pins: frag.version_pins,
                profiles: Vec::new(),
            },
            build: vec![Fragment::parse("own-kernel", "build/own-kernel.config", build).unwrap()],
            hint: PathBuf::from("build/unit.config"),
        }
    }

    #[test]
    fn kconfig_scan_reads_names_and_types() {
        let s = symbols(KCONFIG);
        assert_eq!(s.kind("MODULES"), Some(SymbolType::Bool));
        assert_eq!(s.kind("NETFILTER"), Some(SymbolType::Bool));
        assert_eq!(s.kind("MAGIC_SYSRQ_DEFAULT_ENABLE"), Some(SymbolType::Hex));
        assert_eq!(s.kind("DEFAULT_MMAP_MIN_ADDR"), Some(SymbolType::Int));
        assert_eq!(s.kind("OVERLAY_FS"), Some(SymbolType::Tristate));
        assert_eq!(s.kind("CPU_MITIGATIONS"), Some(SymbolType::Bool));
        assert_eq!(s.kind("LOCALVERSION"), Some(SymbolType::String));
        assert!(!s.knows("SPECULATION_MITIGATIONS"));
    }

    #[test]
    fn plan_turns_pins_into_kconfig_lines() {
        let r = recipe(
            "CONFIG_OVERLAY_FS=y|m:overlay  # layers\n\
             CONFIG_SPECULATION_MITIGATIONS=y || CONFIG_CPU_MITIGATIONS=y  # renamed\n\
             CONFIG_MODULE_SIG_FORCE=y || CONFIG_MODULES=n  # signed or none\n\
             CONFIG_MAGIC_SYSRQ_DEFAULT_ENABLE=0  # no sysrq\n\
             CONFIG_DEFAULT_MMAP_MIN_ADDR>=65536  # null deref\n\
             CONFIG_HYPERV_VMBUS=y  if-known  # newer kernels\n\
             # CONFIG_DEVMEM is not set  # /dev/mem\n",
            "# CONFIG_MODULES is not set  # no modules\n",
        );
        let lines: Vec<String> = plan(&r, &symbols(KCONFIG))
            .unwrap()
            .iter()
            .map(Request::line)
            .collect();
        assert_eq!(
            lines,
            [
                "CONFIG_LOCALVERSION=\"-eci-unit\"",
                "# CONFIG_MODULES is not set",
                "CONFIG_OVERLAY_FS=y",
                // The first alternative kconfig knows; the build fragment decides MODULES.
                "CONFIG_CPU_MITIGATIONS=y",
                "CONFIG_MAGIC_SYSRQ_DEFAULT_ENABLE=0x0",
                "CONFIG_DEFAULT_MMAP_MIN_ADDR=65536",
                // Unknown symbols without if-known are still requested, so they fail loudly.
                "# CONFIG_DEVMEM is not set",
            ]
        );
    }

    #[test]
    fn contradicting_requests_name_both_origins() {
        let r = recipe(
            "CONFIG_OVERLAY_FS=y|m:overlay  # layers\n",
            "# CONFIG_OVERLAY_FS is not set  # smaller\n",
        );
        let err = plan(&r, &symbols(KCONFIG)).unwrap_err().to_string();
        assert!(
            err.contains("fragments/container.config:1")
                && err.contains("build/own-kernel.config:1"),
            "{err}"
        );
    }

    #[test]
    fn kept_compares_what_kconfig_wrote() {
        let config = KernelConfig::parse(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\\\"y\"\nCONFIG_D=70000\n",
            "t",
        )
        .unwrap();
        let req = |symbol: &str, value: Option<&str>| Request {
            symbol: symbol.into(),
            value: value.map(str::to_string),
            at_least: symbol == "D",
            if_known: symbol == "K",
            origin: String::new(),
            reason: String::new(),
        };
        assert!(kept(&req("A", Some("y")), &config));
        assert!(!kept(&req("B", Some("y")), &config));
        assert!(kept(&req("B", None), &config));
        assert!(kept(&req("Z", None), &config));
        assert!(!kept(&req("A", None), &config));
        assert!(kept(&req("C", Some("\"x\\\"y\"")), &config));
        assert!(!kept(&req("Z", Some("y")), &config));
        assert!(kept(&req("K", Some("y")), &config));
        assert!(kept(&req("D", Some("65536")), &config));
        assert!(!kept(&req("D", Some("80000")), &config));
        let exact = Request {
            at_least: false,
            ..req("D", Some("65536"))
        };
        assert!(!kept(&exact, &config));
    }
}
