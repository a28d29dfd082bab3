//! How a host folder shared with the VM is announced to it (SPEC H3): `eci-build boot --share`
//! gives QEMU one virtiofs device per folder and one SMBIOS OEM string (type 11) per device,
//! `eci.share=TAG:VMPATH`; eci-init reads the strings from the firmware tables and mounts each
//! tag at its path. The firmware tables reach the guest the same way whichever firmware boots
//! it, and a path in them needs no quoting, unlike one on the kernel command line.
//!
//! Every path is below [`HOST_SHARE_ROOT`], the bind prefix B1 allows by default: a share can
//! never appear over a VM path a container may not bind.

use crate::path::{clean, is_within};
use crate::vm_paths::HOST_SHARE_ROOT;

/// The OEM string's prefix.
pub const OEM_PREFIX: &str = "eci.share=";
/// virtio-fs tags are at most 36 bytes (the device's config space).
pub const TAG_MAX: usize = 36;
/// The tag of share number `index`.
pub fn tag(index: usize) -> String {
    format!("eci-share{index}")
}

/// One announced share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub tag: String,
    pub vm_path: String,
}

/// The OEM string announcing `tag` at `vm_path`.
pub fn encode(tag: &str, vm_path: &str) -> String {
    format!("{OEM_PREFIX}{tag}:{vm_path}")
}

/// Reads one OEM string: `None` when it is not a share announcement at all (other software
/// may add OEM strings), `Some(Err)` when it is one but unusable, with the reason.
pub fn decode(s: &str) -> Option<Result<Announced, String>> {
    let rest = s.strip_prefix(OEM_PREFIX)?;
    let Some((tag, vm_path)) = rest.split_once(':') else {
        return Some(Err(format!(
            "`{s}` has no `:` between the tag and the VM path"
        )));
    };
    Some(check_tag(tag).and_then(|_| {
        check_vm_path(vm_path)?;
        Ok(Announced {
            tag: tag.to_string(),
            vm_path: vm_path.to_string(),
        })
    }))
}

fn check_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty()
        || tag.len() > TAG_MAX
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "share tag `{tag}` must be 1-{TAG_MAX} letters, digits, `-` or `_`"
        ));
    }
    Ok(())
}

/// A share's VM path must be clean, absolute and strictly below [`HOST_SHARE_ROOT`].
pub fn check_vm_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || clean(p) != p {
        return Err(format!(
            "share path `{p}` is not a clean absolute path (no `.`, `..`, `//` or trailing `/`)"
        ));
    }
    if p == HOST_SHARE_ROOT || !is_within(p, HOST_SHARE_ROOT) {
        return Err(format!(
            "share path `{p}` is not below {HOST_SHARE_ROOT}, the share root bind mounts may use (SPEC B1, H3)"
        ));
    }
    if p.bytes().any(|b| b.is_ascii_control()) {
        return Err(format!("share path `{p:?}` holds a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip_and_other_strings_are_not_ours() {
        let s = encode(&tag(0), "/mnt/host/home/me/src");
        assert_eq!(s, "eci.share=eci-share0:/mnt/host/home/me/src");
        assert_eq!(
            decode(&s),
            Some(Ok(Announced {
                tag: "eci-share0".into(),
                vm_path: "/mnt/host/home/me/src".into()
            }))
        );
        // A path with spaces and colons survives: only the first `:` separates.
        let odd = encode("t", "/mnt/host/a b:c");
        assert_eq!(decode(&odd).unwrap().unwrap().vm_path, "/mnt/host/a b:c");
        assert_eq!(decode("io.systemd.credential:x=y"), None);
    }

    #[test]
    fn paths_outside_the_share_root_or_unclean_are_refused() {
        for bad in [
            "eci.share=t:/etc",
            "eci.share=t:/mnt/host",
            "eci.share=t:/mnt/hostile/x",
            "eci.share=t:/mnt/host/../etc",
            "eci.share=t:/mnt/host/x/",
            "eci.share=t:mnt/host/x",
            "eci.share=t:/mnt/host/x\ny",
            "eci.share=:/mnt/host/x",
            "eci.share=a/b:/mnt/host/x",
            "eci.share=/mnt/host/x",
        ] {
            assert!(matches!(decode(bad), Some(Err(_))), "{bad} accepted");
        }
        let long = format!("eci.share={}:/mnt/host/x", "t".repeat(TAG_MAX + 1));
        assert!(matches!(decode(&long), Some(Err(_))));
    }
}
