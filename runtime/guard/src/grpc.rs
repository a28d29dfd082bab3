//! BuildKit's control API (`POST /grpc`, upgraded to h2c) with its Solve calls checked for the
//! entitlements isolation forbids (SPEC D1, D2).
//!
//! buildx asks for `network.host` or `security.insecure` in `SolveRequest.Entitlements`
//! (`--allow`, and `--network=host` adds `network.host` next to the frontend attribute
//! `force-network-mode=host`). BuildKit then refuses any build step needing an entitlement the
//! request did not list, so refusing such requests here covers every step of the build.
//! The guard terminates HTTP/2 on both sides and forwards each stream; only
//! `/moby.buildkit.v1.Control/Solve` bodies are read, every other call streams through.

/// The gRPC method whose requests carry entitlements.
pub const SOLVE_PATH: &str = "/moby.buildkit.v1.Control/Solve";
pub const FORBIDDEN_ENTITLEMENTS: &[&str] = &["network.host", "security.insecure"];

const ENTITLEMENTS_FIELD: u64 = 9;
const FRONTEND_ATTRS_FIELD: u64 = 7;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("truncated protobuf message")]
    Truncated,
    #[error("protobuf wire type {0} is not valid here")]
    WireType(u64),
    #[error("gRPC message is compressed; the guard cannot inspect it")]
    Compressed,
    #[error("gRPC frame length does not match the body")]
    Frame,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, WireError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(WireError::Truncated)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(WireError::Truncated)
}

/// Walk the top-level fields of a protobuf message: `(field number, length-delimited
/// payload)` for wire type 2, other wire types skipped.
fn fields(msg: &[u8]) -> Result<Vec<(u64, &[u8])>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let key = varint(msg, &mut pos)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(msg, &mut pos)?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                pos = pos
                    .checked_add(n)
                    .filter(|p| *p <= msg.len())
                    .ok_or(WireError::Truncated)?;
            }
            2 => {
                let len =
                    usize::try_from(varint(msg, &mut pos)?).map_err(|_| WireError::Truncated)?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= msg.len())
                    .ok_or(WireError::Truncated)?;
                out.push((field, &msg[pos..end]));
                pos = end;
            }
            w => return Err(WireError::WireType(w)),
        }
    }
    Ok(out)
}

/// What a SolveRequest asks for that isolation refuses, as the message to return.
pub fn solve_refusal(msg: &[u8]) -> Result<Option<String>, WireError> {
    let mut asked: Vec<String> = Vec::new();
    for (field, payload) in fields(msg)? {
        if field == ENTITLEMENTS_FIELD {
            let e = String::from_utf8_lossy(payload);
            if FORBIDDEN_ENTITLEMENTS.contains(&e.as_ref())
                && !asked.iter().any(|a| a == e.as_ref())
            {
                asked.push(e.into_owned());
            }
        } else if field == FRONTEND_ATTRS_FIELD {
            let entry = fields(payload)?;
            let key = entry
                .iter()
                .find(|(f, _)| *f == 1)
                .map(|(_, v)| *v)
                .unwrap_or_default();
            let value = entry
                .iter()
                .find(|(f, _)| *f == 2)
                .map(|(_, v)| *v)
                .unwrap_or_default();
            if key == b"force-network-mode"
                && value == b"host"
                && !asked.iter().any(|a| a == "network.host")
            {
                asked.push("network.host".to_string());
            }
        }
    }
    if asked.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "BuildKit entitlement {} is not allowed: build steps would run with the VM's {} outside the eci runtime",
        asked.join(", "),
        if asked.iter().any(|a| a == "security.insecure") {
            "privileges"
        } else {
            "network namespace"
        }
    )))
}

/// The messages of a gRPC request body (length-prefixed frames).
pub fn grpc_messages(body: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let head = body.get(pos..pos + 5).ok_or(WireError::Frame)?;
        if head[0] != 0 {
            return Err(WireError::Compressed);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let start = pos + 5;
        let end = start
            .checked_add(len)
            .filter(|e| *e <= body.len())
            .ok_or(WireError::Frame)?;
        out.push(&body[start..end]);
        pos = end;
    }
    Ok(out)
}

/// Why a Solve call's body is refused; `None` when it may go to BuildKit. A body the guard
/// cannot read is refused rather than passed unread.
pub fn check_solve_body(body: &[u8]) -> Option<String> {
    let messages = match grpc_messages(body) {
        Ok(m) => m,
        Err(e) => return Some(format!("BuildKit Solve request refused: {e}")),
    };
    for m in messages {
        match solve_refusal(m) {
            Ok(None) => {}
            Ok(Some(reason)) => return Some(reason),
            Err(e) => return Some(format!("BuildKit Solve request refused: {e}")),
        }
    }
    None
}

/// Encode a SolveRequest with the given entitlements and frontend attributes (for tests).
pub fn encode_solve_request(
    reference: &str,
    entitlements: &[&str],
    attrs: &[(&str, &str)],
) -> Vec<u8> {
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn put_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        put_varint(out, field << 3 | 2);
        put_varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let mut msg = Vec::new();
    put_bytes(&mut msg, 1, reference.as_bytes());
    for (k, v) in attrs {
        let mut entry = Vec::new();
        put_bytes(&mut entry, 1, k.as_bytes());
        put_bytes(&mut entry, 2, v.as_bytes());
        put_bytes(&mut msg, FRONTEND_ATTRS_FIELD, &entry);
    }
    for e in entitlements {
        put_bytes(&mut msg, ENTITLEMENTS_FIELD, e.as_bytes());
    }
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    framed.extend_from_slice(&msg);
    framed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_entitlements_are_found() {
        let ok = encode_solve_request("r1", &[], &[("filename", "Dockerfile")]);
        assert_eq!(check_solve_body(&ok), None);
        let host = encode_solve_request("r2", &["network.host"], &[]);
        let msg = check_solve_body(&host).unwrap();
        assert!(
            msg.contains("network.host") && msg.contains("network namespace"),
            "{msg}"
        );
        let insecure = encode_solve_request("r3", &["security.insecure", "network.host"], &[]);
        let msg = check_solve_body(&insecure).unwrap();
        assert!(
            msg.contains("security.insecure, network.host") && msg.contains("privileges"),
            "{msg}"
        );
        let attr = encode_solve_request("r4", &[], &[("force-network-mode", "host")]);
        assert!(check_solve_body(&attr).unwrap().contains("network.host"));
        let other = encode_solve_request("r5", &["device"], &[("force-network-mode", "none")]);
        assert_eq!(check_solve_body(&other), None);
    }

    #[test]
    fn unreadable_bodies_are_refused_not_passed() {
        assert!(check_solve_body(&[1, 0, 0, 0, 0])
            .unwrap()
            .contains("compressed"));
        assert!(check_solve_body(&[0, 0, 0, 0, 9, 1])
            .unwrap()
            .contains("frame"));
        let mut bad = vec![0, 0, 0, 0, 2];
        bad.extend_from_slice(&[0x4a, 0x05]);
        assert!(check_solve_body(&bad).unwrap().contains("truncated"));
        let mut group = vec![0, 0, 0, 0, 1];
        group.push(0x0b);
        assert!(check_solve_body(&group).unwrap().contains("wire type 3"));
        assert_eq!(check_solve_body(&[]), None);
    }

    #[test]
    fn other_wire_types_are_skipped() {
        // field 11 varint (Internal = true), field 3 fixed64, then the entitlement.
        let mut msg = vec![0x58, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8];
        msg.extend_from_slice(&[0x4a, 12]);
        msg.extend_from_slice(b"network.host");
        assert!(solve_refusal(&msg).unwrap().is_some());
    }
}
