//! A kernel module's `.modinfo` section: what eci-build follows to ship a module's dependency
//! closure, and what eci-init reads in the VM to tell why a boot module failed to load.

/// What a module's `.modinfo` says about its relations. Names are canonical (dashes become
/// underscores, as kmod does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModInfo {
    pub name: Option<String>,
    pub depends: Vec<String>,
    /// Whether the section has a `depends=` entry at all (modpost always writes one, empty when
    /// the module needs nothing; without it the dependencies are unknown).
    pub depends_declared: bool,
    /// `softdep=pre: a b` modules are loaded first by modprobe; the image honours that too.
    pub softdep_pre: Vec<String>,
}

/// A module name as kmod compares them.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Reads the `.modinfo` section of a (decompressed) 64-bit little-endian ELF relocatable
/// object; the error says what is wrong with the bytes.
pub fn read(elf: &[u8]) -> Result<ModInfo, &'static str> {
    let bad = |message: &'static str| message;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return Err(bad("not an ELF object"));
    }
    if elf[4] != 2 || elf[5] != 1 {
        return Err(bad("only 64-bit little-endian modules are supported"));
    }
    let u16_at =
        |o: usize| -> Option<u16> { Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?)) };
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?)) };
    let shoff = u64_at(0x28).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let shentsize = u16_at(0x3a).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let shnum = u16_at(0x3c).ok_or_else(|| bad("truncated ELF header"))? as usize;
    let shstrndx = u16_at(0x3e).ok_or_else(|| bad("truncated ELF header"))? as usize;
    if shentsize < 64 || shstrndx >= shnum {
        return Err(bad("invalid section header table"));
    }
    let section = |i: usize| -> Option<(u32, usize, usize)> {
        let h = shoff.checked_add(i.checked_mul(shentsize)?)?;
        let name = u32::from_le_bytes(elf.get(h..h + 4)?.try_into().ok()?);
        let off = u64_at(h + 0x18)? as usize;
        let size = u64_at(h + 0x20)? as usize;
        Some((name, off, size))
    };
    let (_, stroff, strsize) = section(shstrndx).ok_or_else(|| bad("truncated section headers"))?;
    let strtab = elf
        .get(stroff..stroff.saturating_add(strsize))
        .ok_or_else(|| bad("section name table out of bounds"))?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i).ok_or_else(|| bad("truncated section headers"))?;
        let name = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|b| *b == 0).next())
            .unwrap_or_default();
        if name != b".modinfo" {
            continue;
        }
        let data = elf
            .get(off..off.saturating_add(size))
            .ok_or_else(|| bad(".modinfo out of bounds"))?;
        let mut info = ModInfo::default();
        for field in data.split(|b| *b == 0).filter(|f| !f.is_empty()) {
            let field = String::from_utf8_lossy(field);
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            match key {
                "name" => info.name = Some(canonical(value)),
                "depends" => {
                    info.depends_declared = true;
                    info.depends
                        .extend(value.split(',').filter(|d| !d.is_empty()).map(canonical));
                }
                "softdep" => {
                    // "pre: a b post: c" — only pre-dependencies change what must be loaded first.
                    let mut in_pre = false;
                    for word in value.split_whitespace() {
                        match word {
                            "pre:" => in_pre = true,
                            "post:" => in_pre = false,
                            w if in_pre => info.softdep_pre.push(canonical(w)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        return Ok(info);
    }
    Err(bad("no .modinfo section"))
}
