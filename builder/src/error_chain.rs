//! One line from an error and every cause under it.
//!
//! Libraries such as tar and Tera put the useful part (`No space left on device`, the template
//! line) in the source chain and only a summary in `Display`; a message that stops at the
//! summary leaves the user guessing.

/// `e` and its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Some wrappers repeat their source's text in their own; say it once.
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tar_unpack_error_names_the_io_cause() {
        // What tar's unpack returns when the disk fills: a summary over the io error.
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        {
            let mut b = tar::Builder::new(&mut bytes);
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "a/b", &b"x"[..]).unwrap();
            b.finish().unwrap();
        }
        // A file where the archive needs a directory makes the unpack fail with an io cause.
        std::fs::write(dir.path().join("a"), b"").unwrap();
        let e = tar::Archive::new(&bytes[..])
            .unpack(dir.path())
            .unwrap_err();
        let line = error_chain(&e);
        assert!(line.starts_with(&e.to_string()), "{line}");
        assert!(
            line.len() > e.to_string().len(),
            "the cause is missing: {line}"
        );
    }
}
