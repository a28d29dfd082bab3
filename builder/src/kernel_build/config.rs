//! Config generation: kconfig runs the base config, the merged plan and `olddefconfig`; the
//! result must keep every requested value and pass the pins.

use super::make::Make;
use super::recipe::{kept, plan, Recipe, Request, Symbols};
use super::source::SourceTree;
use super::{io_err, KernelBuildError, ARCH, SOURCE_LOCK};
use crate::apt::fetch::Cache;
use eci_kernel_config::{CheckOptions, KernelConfig, ProfileSelection, Report};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What kconfig made of a recipe.
#[derive(Debug, Clone)]
pub struct GeneratedConfig {
    /// `.config` exactly as kconfig wrote it: what the kernel is built from.
    pub kconfig: String,
    /// The committed form: a header naming the inputs, then `kconfig`.
    pub committed: String,
    pub requests: Vec<Request>,
    /// The recipe's pins checked without exceptions; always free of violations here.
    pub report: Report,
    /// kconfig's warnings (unmet dependencies and the like).
    pub warnings: Vec<String>,
    /// The object directory holding `.config`.
    pub obj_dir: PathBuf,
}

/// Where the build of `recipe` from `tree` keeps its objects between runs.
pub fn obj_dir(cache: &Cache, tree: &SourceTree, recipe: &Recipe) -> PathBuf {
    cache
        .root()
        .join("kernel")
        .join("obj")
        .join(format!("{}-{}", &tree.sha256[..16], recipe.name))
}

/// Runs kconfig: base config, merged fragment, `olddefconfig`; then checks the result.
pub fn generate_config(
    tree: &SourceTree,
    recipe: &Recipe,
    obj: &Path,
    echo: bool,
) -> Result<GeneratedConfig, KernelBuildError> {
    std::fs::create_dir_all(obj).map_err(io_err(obj))?;
    let symbols = Symbols::scan(&tree.dir)?;
    let requests = plan(recipe, &symbols)?;
    let make = Make {
        tree: &tree.dir,
        obj,
        log: obj.join("eci-config.log"),
        echo,
        env: Vec::new(),
    };
    let _ = std::fs::remove_file(&make.log);
    make.run(&[recipe.base.make_target()])?;

    // Merge: the base's lines for symbols we do not request, then ours, so each symbol appears
    // once and kconfig never has to resolve an override.
    let dot_config = obj.join(".config");
    let base = std::fs::read_to_string(&dot_config).map_err(io_err(&dot_config))?;
    let requested: BTreeSet<&str> = requests.iter().map(|r| r.symbol.as_str()).collect();
    let mut merged = String::new();
    for line in base.lines() {
        let symbol = line
            .strip_prefix("CONFIG_")
            .and_then(|l| l.split_once('=').map(|(s, _)| s))
            .or_else(|| {
                line.strip_prefix("# CONFIG_")
                    .and_then(|l| l.strip_suffix(" is not set"))
            });
        if symbol.is_some_and(|s| requested.contains(s)) {
            continue;
        }
        merged.push_str(line);
        merged.push('\n');
    }
    merged.push_str(&format!("# --- eci recipe `{}` ---\n", recipe.name));
    for r in &requests {
        merged.push_str(&format!("{}\n", r.line()));
    }
    std::fs::write(&dot_config, &merged).map_err(io_err(&dot_config))?;
    let output = make.run(&["olddefconfig"])?;
    let warnings: Vec<String> = output
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("warning:"))
        .map(str::to_string)
        .collect();

    let kconfig = std::fs::read_to_string(&dot_config).map_err(io_err(&dot_config))?;
    let config = KernelConfig::parse(&kconfig, &dot_config.display().to_string())?;
    let lost: Vec<String> = requests
        .iter()
        .filter(|r| !kept(r, &config))
        .map(|r| {
            format!(
                "  {:<48} from {} (got {}): {}",
                r.line(),
                r.origin,
                config
                    .get(&r.symbol)
                    .map_or("absent".to_string(), |v| v.to_string()),
                r.reason
            )
        })
        .collect();
    if !lost.is_empty() {
        return Err(KernelBuildError::Lost {
            lost,
            hint: recipe.hint.clone(),
        });
    }
    let report = recipe.pins.check(
        &config,
        &CheckOptions {
            boot_modules: Vec::new(),
            kernel_release: None,
            kernel_version: None,
            profile: ProfileSelection::Disabled,
        },
    )?;
    if !report.is_ok() {
        return Err(KernelBuildError::Violations {
            target: recipe.name.clone(),
            table: report.render_table(),
        });
    }
    let committed = format!("{}{kconfig}", header(tree, recipe, &requests));
    Ok(GeneratedConfig {
        kconfig,
        committed,
        requests,
        report,
        warnings,
        obj_dir: obj.to_path_buf(),
    })
}

fn header(tree: &SourceTree, recipe: &Recipe, requests: &[Request]) -> String {
    let mut fragments: Vec<String> = recipe
        .build
        .iter()
        .map(|f| format!("build/{}", f.name))
        .collect();
    for r in &recipe.pins.requirements {
        let name = format!("fragments/{}", r.fragment);
        if !fragments.contains(&name) {
            fragments.push(name);
        }
    }
    format!(
        "# eci: generated by `eci-build kernel build --target {name} --config-only`; do not edit.\n\
         # Source: {package} {version} (sha256 {sha}), kernel {kernel}, pinned in {SOURCE_LOCK}.\n\
         # Made by: make ARCH={ARCH} {base}; {count} values merged from\n\
         #   {fragments};\n\
         # make olddefconfig; checked against the {name} pins without exception profiles.\n",
        name = recipe.name,
        package = tree.package,
        version = tree.version,
        sha = tree.sha256,
        kernel = tree.kernel_version,
        base = recipe.base.make_target(),
        count = requests.len(),
        fragments = fragments.join(", "),
    )
}

/// Lines only in `old` (-) and only in `new` (+), ignoring order; empty when equal.
pub fn config_diff(old: &str, new: &str, limit: usize) -> String {
    let a: BTreeSet<&str> = old.lines().collect();
    let b: BTreeSet<&str> = new.lines().collect();
    // Ordered by symbol, old before new, so a changed value reads as a pair.
    let key = |l: &str| -> String {
        let l = l.trim_start_matches("# ");
        l.split(['=', ' ']).next().unwrap_or(l).to_string()
    };
    let mut changed: Vec<(String, u8, &str)> = Vec::new();
    changed.extend(a.difference(&b).map(|l| (key(l), 0, *l)));
    changed.extend(b.difference(&a).map(|l| (key(l), 1, *l)));
    changed.sort();
    let mut out: Vec<String> = changed
        .iter()
        .map(|(_, side, l)| format!("  {} {l}", if *side == 0 { '-' } else { '+' }))
        .collect();
    if old != new && out.is_empty() {
        out.push("  (same lines, different order)".into());
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("  ... and {} more", total - limit));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_diff_lists_changed_lines() {
        assert_eq!(config_diff("a\nb\n", "a\nb\n", 10), "");
        let d = config_diff("a\nb\n", "a\nc\n", 10);
        assert_eq!(d, "  - b\n  + c");
        let d = config_diff(
            "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=1\n",
            "# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=1\n",
            10,
        );
        assert_eq!(
            d,
            "  - CONFIG_A=y\n  + # CONFIG_A is not set\n  - # CONFIG_B is not set\n  + CONFIG_B=y"
        );
        let d = config_diff("", "1\n2\n3\n", 2);
        assert!(d.ends_with("... and 1 more"), "{d}");
    }
}
