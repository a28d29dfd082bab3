//! A boot module's declared dependencies, read from its own `.modinfo` section. The image ships
//! its modules decompressed (builder/src/modules.rs), so the file init loads is the ELF object.
//! Init needs them for one decision: a module whose load failed with ENOENT (unresolved
//! symbols) because a dependency had no hardware to drive counts as hardware-absent too
//! (eci_kernel_config::HardwareAbsent), and only the module itself says what it depends on.

/// `depends=` of a 64-bit little-endian kernel module (canonical names), `None` if the bytes
/// are not one or have no `.modinfo` section. An empty list means the module depends on
/// nothing.
pub fn depends(elf: &[u8]) -> Option<Vec<String>> {
    eci_kernel_config::modinfo::read(elf)
        .ok()
        .filter(|info| info.depends_declared)
        .map(|info| info.depends)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal relocatable ELF64 with a `.modinfo` section holding `entries`.
    pub(crate) fn module_elf(entries: &[&str]) -> Vec<u8> {
        let mut info = Vec::new();
        for e in entries {
            info.extend_from_slice(e.as_bytes());
            info.push(0);
        }
        let names = b"\0.shstrtab\0.modinfo\0".to_vec();
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let info_off = elf.len();
        elf.extend_from_slice(&info);
        let names_off = elf.len();
        elf.extend_from_slice(&names);
        let shoff = elf.len();
        // Section 0 is the null section; 1 .shstrtab; 2 .modinfo.
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = [0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            elf.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, names_off, names.len());
        sh(11, info_off, info.len());
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        elf
    }

    #[test]
    fn depends_come_from_the_modinfo_section() {
        let elf = module_elf(&[
            "license=GPL",
            "depends=scsi_mod,hv_vmbus",
            "name=hv_storvsc",
        ]);
        assert_eq!(depends(&elf).unwrap(), ["scsi_mod", "hv_vmbus"]);
        let none = module_elf(&["license=GPL", "depends=", "name=hv_vmbus"]);
        assert_eq!(depends(&none).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn anything_else_is_not_a_module() {
        assert_eq!(depends(b"#!/bin/sh\n"), None);
        assert_eq!(depends(&[]), None);
        let elf = module_elf(&["depends=x"]);
        // Cut inside the section header table.
        assert_eq!(depends(&elf[..elf.len() - 40]), None);
        // No depends= entry at all.
        assert_eq!(depends(&module_elf(&["license=GPL"])), None);
        let mut big_endian = elf.clone();
        big_endian[5] = 2;
        assert_eq!(depends(&big_endian), None);
    }
}
