//! Kernel modules: keep only what the image loads at boot, in an order that needs no depmod.
//!
//! Debian's kernel package ships ~1400 compressed modules and no `modules.dep` (its postinst runs
//! depmod). The VM loads a short, pinned list once and then disables module loading for good
//! (SPEC V3), so the image carries just that list's dependency closure, decompressed (the
//! initramfs is compressed as a whole anyway), plus a load-order file the init walks with
//! `finit_module`/`insmod`. Dependencies come from each module's own `.modinfo` section.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    #[error("kernel.modules: `{name}` is neither a module of kernel {version} nor built into it; check the spelling (see modules.order in the kernel package) or remove it")]
    Unknown { name: String, version: String },
    #[error("kernel module {path}: {message}")]
    Malformed { path: String, message: String },
    #[error(
        "kernel module `{module}` depends on `{dependency}`, which kernel {version} does not ship"
    )]
    MissingDependency {
        module: String,
        dependency: String,
        version: String,
    },
}

pub use eci_kernel_config::modinfo::ModInfo;

/// A module in the kernel package, by canonical name (dashes become underscores, as kmod does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Available {
    pub path: String,
}

/// One module to ship, decompressed, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub name: String,
    /// Path inside the VM, without the compression suffix.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The result of selection: modules to ship in load order, and requested names found built in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub modules: Vec<Selected>,
    pub builtin: Vec<String>,
}

pub use eci_kernel_config::modinfo::canonical;

/// Canonical module name from a file name like `.../br_netfilter.ko.xz`.
pub fn name_from_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".ko.xz")
        .or_else(|| file.strip_suffix(".ko.zst"))
        .or_else(|| file.strip_suffix(".ko.gz"))
        .or_else(|| file.strip_suffix(".ko"))?;
    Some(canonical(stem))
}

/// Undoes the package's per-module compression.
pub fn decompress(path: &str, bytes: &[u8]) -> Result<Vec<u8>, ModuleError> {
    use std::io::Read;
    let malformed = |e: std::io::Error| ModuleError::Malformed {
        path: path.to_string(),
        message: format!("cannot decompress: {e}"),
    };
    let mut out = Vec::with_capacity(bytes.len() * 3);
    if path.ends_with(".xz") {
        xz2::read::XzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(malformed)?;
    } else if path.ends_with(".zst") {
        out = zstd::stream::decode_all(bytes).map_err(malformed)?;
    } else if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .map_err(malformed)?;
    } else {
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// Reads the `.modinfo` section of a (decompressed) module (eci_kernel_config::modinfo).
pub fn modinfo(path: &str, elf: &[u8]) -> Result<ModInfo, ModuleError> {
    eci_kernel_config::modinfo::read(elf).map_err(|message| ModuleError::Malformed {
        path: path.to_string(),
        message: message.to_string(),
    })
}

/// Computes the closure of `wanted` and returns it in an order where every module follows the
/// modules it needs. `read` returns a module's bytes as stored in the package.
pub fn select(
    version: &str,
    available: &BTreeMap<String, Available>,
    builtin: &BTreeSet<String>,
    wanted: &[String],
    mut read: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Result<Selection, ModuleError> {
    let mut selection = Selection::default();
    let mut loaded: BTreeMap<String, (String, Vec<u8>, ModInfo)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut visiting: BTreeSet<String> = BTreeSet::new();

    #[allow(clippy::too_many_arguments)]
    fn visit(
        name: &str,
        requested_by: Option<&str>,
        version: &str,
        available: &BTreeMap<String, Available>,
        builtin: &BTreeSet<String>,
        read: &mut dyn FnMut(&str) -> Option<Vec<u8>>,
        loaded: &mut BTreeMap<String, (String, Vec<u8>, ModInfo)>,
        order: &mut Vec<String>,
        visiting: &mut BTreeSet<String>,
    ) -> Result<bool, ModuleError> {
        if loaded.contains_key(name) || visiting.contains(name) {
            return Ok(true);
        }
        let Some(avail) = available.get(name) else {
            if builtin.contains(name) {
                return Ok(false);
            }
            return Err(match requested_by {
                None => ModuleError::Unknown {
                    name: name.to_string(),
                    version: version.to_string(),
                },
                Some(module) => ModuleError::MissingDependency {
                    module: module.to_string(),
                    dependency: name.to_string(),
                    version: version.to_string(),
                },
            });
        };
        let raw = read(&avail.path).ok_or_else(|| ModuleError::Malformed {
            path: avail.path.clone(),
            message: "listed but its contents are missing".into(),
        })?;
        let bytes = decompress(&avail.path, &raw)?;
        let info = modinfo(&avail.path, &bytes)?;
        visiting.insert(name.to_string());
        for dep in info.softdep_pre.iter().chain(info.depends.iter()) {
            // A soft pre-dependency that this kernel lacks is not fatal: modprobe skips it too.
            if info.softdep_pre.contains(dep)
                && !available.contains_key(dep)
                && !info.depends.contains(dep)
            {
                continue;
            }
            visit(
                dep,
                Some(name),
                version,
                available,
                builtin,
                read,
                loaded,
                order,
                visiting,
            )?;
        }
        visiting.remove(name);
        let path = avail
            .path
            .trim_end_matches(".xz")
            .trim_end_matches(".zst")
            .trim_end_matches(".gz")
            .to_string();
        loaded.insert(name.to_string(), (path, bytes, info));
        order.push(name.to_string());
        Ok(true)
    }

    for w in wanted {
        let name = canonical(w);
        let shipped = visit(
            &name,
            None,
            version,
            available,
            builtin,
            &mut read,
            &mut loaded,
            &mut order,
            &mut visiting,
        )?;
        if !shipped && !selection.builtin.contains(&name) {
            selection.builtin.push(name);
        }
    }
    for name in order {
        let (path, bytes, _) = loaded.remove(&name).expect("ordered names were loaded");
        selection.modules.push(Selected { name, path, bytes });
    }
    Ok(selection)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal ELF64 relocatable object with a `.modinfo` section.
    pub(crate) fn fake_module(modinfo: &str) -> Vec<u8> {
        let shstrtab = b"\0.modinfo\0.shstrtab\0".to_vec();
        let info = modinfo.replace(';', "\0").into_bytes();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let info_off = elf.len();
        elf.extend_from_slice(&info);
        let str_off = elf.len();
        elf.extend_from_slice(&shstrtab);
        while !elf.len().is_multiple_of(8) {
            elf.push(0);
        }
        let shoff = elf.len();
        let mut header = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        header(0, 0, 0);
        header(1, info_off, info.len());
        header(10, str_off, shstrtab.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf
    }

    fn xz(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn kernel(mods: &[(&str, &str)]) -> (BTreeMap<String, Available>, BTreeMap<String, Vec<u8>>) {
        let mut avail = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (name, info) in mods {
            let path = format!("/lib/modules/6.12/kernel/{name}.ko.xz");
            avail.insert(canonical(name), Available { path: path.clone() });
            files.insert(path, xz(&fake_module(info)));
        }
        (avail, files)
    }

    #[test]
    fn reads_modinfo_fields() {
        let m = fake_module("license=GPL;depends=bridge,ipv6;softdep=pre: crc32c post: x;name=br-netfilter;vermagic=6.12");
        let info = modinfo("x.ko", &m).unwrap();
        assert_eq!(info.name.as_deref(), Some("br_netfilter"));
        assert_eq!(info.depends, vec!["bridge", "ipv6"]);
        assert_eq!(info.softdep_pre, vec!["crc32c"]);
    }

    #[test]
    fn closure_is_ordered_dependencies_first_and_deduplicated() {
        let (avail, files) = kernel(&[
            ("br_netfilter", "depends=bridge;name=br_netfilter"),
            ("bridge", "depends=stp,llc;name=bridge"),
            ("stp", "depends=llc;name=stp"),
            ("llc", "depends=;name=llc"),
            ("overlay", "depends=;name=overlay"),
            ("unused", "depends=;name=unused"),
        ]);
        let builtin = BTreeSet::new();
        let sel = select(
            "6.12",
            &avail,
            &builtin,
            &["br-netfilter".into(), "overlay".into(), "bridge".into()],
            |p| files.get(p).cloned(),
        )
        .unwrap();
        let names: Vec<_> = sel.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            vec!["llc", "stp", "bridge", "br_netfilter", "overlay"]
        );
        assert!(sel.modules[0].path.ends_with("llc.ko"));
        assert_eq!(&sel.modules[0].bytes[..4], b"\x7fELF");
    }

    #[test]
    fn builtin_requests_are_reported_not_shipped() {
        let (avail, files) = kernel(&[("veth", "depends=;name=veth")]);
        let builtin: BTreeSet<String> = ["overlay".to_string()].into();
        let sel = select(
            "6.12",
            &avail,
            &builtin,
            &["overlay".into(), "veth".into()],
            |p| files.get(p).cloned(),
        )
        .unwrap();
        assert_eq!(sel.builtin, vec!["overlay"]);
        assert_eq!(sel.modules.len(), 1);
    }

    #[test]
    fn unknown_module_and_missing_dependency_are_errors() {
        let (avail, files) = kernel(&[("a", "depends=ghost;name=a")]);
        let builtin = BTreeSet::new();
        let err = select("6.12", &avail, &builtin, &["nope".into()], |p| {
            files.get(p).cloned()
        })
        .unwrap_err();
        assert!(matches!(err, ModuleError::Unknown { .. }));
        assert!(err.to_string().contains("kernel.modules: `nope`"));
        let err = select("6.12", &avail, &builtin, &["a".into()], |p| {
            files.get(p).cloned()
        })
        .unwrap_err();
        assert_eq!(
            err,
            ModuleError::MissingDependency {
                module: "a".into(),
                dependency: "ghost".into(),
                version: "6.12".into()
            }
        );
    }

    #[test]
    fn malformed_modules_are_errors_not_panics() {
        assert!(modinfo("x", b"not elf").is_err());
        let mut m = fake_module("name=x");
        m.truncate(80);
        assert!(modinfo("x", &m).is_err());
        assert!(decompress("x.ko.xz", b"garbage").is_err());
        assert_eq!(
            name_from_path("/a/b/nf-nat.ko.xz").as_deref(),
            Some("nf_nat")
        );
        assert_eq!(name_from_path("/a/b/readme"), None);
    }
}
