//! Which images may mount the engine socket (SPEC B4, B5).
//!
//! Names are not evidence: anyone with the socket can `docker tag` any image as `docker:cli`.
//! The guard therefore decides on image ids and registry digests:
//!
//! - a digest rule (`name@sha256:...`) passes an image whose RepoDigests hold that digest for
//!   that repository, or whose id is that digest (a locally built image pinned by id);
//! - a tag rule (`name:tag`, `name:*`) passes an image whose id is *pinned* for an allowed
//!   reference. A reference is pinned to the image id it names when the guard first sees it
//!   at start or on a settings change (the admin's state of the VM), and re-pinned after a
//!   pull of that reference through the guard (the registry vouches for the content). A later
//!   `docker tag evil docker:cli` moves the name, not the pin, so it does not pass;
//! - a reference not pinned yet passes only with registry provenance: the image has a
//!   RepoDigest in the rule's repository, i.e. its content was pulled from there. It is then
//!   pinned. A local build or import given an allowed name has no such digest;
//! - `allowDerivedImages` (B5) passes an image whose parent chain (classic builder) reaches an
//!   allowed image, or whose layers start with all layers of an allowed image (BuildKit
//!   images have no parent; a `FROM` image's layers are always the prefix of the result).

use std::collections::BTreeMap;

use eci_vm_config::{normalise, ImageRef, ImageRule};
use serde::{Deserialize, Serialize};

use crate::facts::{EngineFacts, ImageInfo};
use crate::settings::Policy;

/// How a pin came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinSource {
    /// Present when the guard started or the settings changed.
    FirstSeen,
    /// Pulled through the guard.
    Pull,
    /// First seen at a socket-mount check, with a RepoDigest of the rule's repository.
    Provenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    pub id: String,
    /// The pinned image's layers, for derived-image checks (B5).
    pub layers: Vec<String>,
    pub source: PinSource,
}

/// Normalised reference (`docker.io/library/docker:cli`) -> pinned image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    pub by_ref: BTreeMap<String, Pin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinUpdate {
    pub reference: String,
    pub pin: Pin,
}

impl Pins {
    pub fn apply(&mut self, updates: &[PinUpdate]) -> bool {
        let mut changed = false;
        for u in updates {
            if self.by_ref.get(&u.reference) != Some(&u.pin) {
                self.by_ref.insert(u.reference.clone(), u.pin.clone());
                changed = true;
            }
        }
        changed
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketImage {
    Allowed {
        /// Which rule and how, for the audit log.
        via: String,
        pins: Vec<PinUpdate>,
    },
    Denied {
        reason: String,
    },
}

fn tag_ref(name: &str, tag: &str) -> String {
    format!("{name}:{tag}")
}

fn refs(list: &[String]) -> Vec<ImageRef> {
    list.iter().filter_map(|s| normalise(s).ok()).collect()
}

/// The image's content came from repository `name` (it has a registry digest there).
fn has_provenance(img: &ImageInfo, name: &str) -> bool {
    refs(&img.repo_digests).iter().any(|r| r.name() == name)
}

/// A reference covered by a tag rule (pinned references whose rule was removed are not).
pub fn in_scope(policy: &Policy, reference: &str) -> bool {
    let Ok(r) = normalise(reference) else {
        return false;
    };
    policy.socket_images.iter().any(|rule| match rule {
        ImageRule::Tag { .. } | ImageRule::AnyTag { .. } => rule.matches(&r),
        _ => false,
    })
}

fn pin_for(img: &ImageInfo, source: PinSource) -> Pin {
    Pin {
        id: img.id.clone(),
        layers: img.layers.clone(),
        source,
    }
}

/// Is `img` itself (not its ancestry) allowed? `Err` carries why a name-match failed.
fn direct(
    policy: &Policy,
    pins: &Pins,
    img: &ImageInfo,
) -> Result<(String, Vec<PinUpdate>), Vec<String>> {
    let tags = refs(&img.repo_tags);
    let digests = refs(&img.repo_digests);
    let mut why = Vec::new();
    for rule in &policy.socket_images {
        match rule {
            ImageRule::Any => return Ok(("rule \"*\"".to_string(), Vec::new())),
            ImageRule::Digest { name, digest, .. } => {
                let by_repo_digest = digests
                    .iter()
                    .any(|d| d.name() == *name && d.digest.as_deref() == Some(digest.as_str()));
                if by_repo_digest || img.id == *digest {
                    return Ok((format!("rule \"{rule}\" (digest)"), Vec::new()));
                }
            }
            ImageRule::Tag { name, tag } => {
                let reference = tag_ref(name, tag);
                let named = tags.iter().any(|t| t.to_string() == reference);
                match pins.by_ref.get(&reference) {
                    Some(pin) if pin.id == img.id => {
                        return Ok((format!("rule \"{rule}\" (pinned image id)"), Vec::new()))
                    }
                    Some(_) if named => why.push(format!(
                        "it is named {reference} but is not the image pinned for that name (it was retagged or pulled outside the guard); pull {reference} again to refresh the pin"
                    )),
                    Some(_) => {}
                    None if named && has_provenance(img, name) => {
                        return Ok((
                            format!("rule \"{rule}\" (registry digest of {name})"),
                            vec![PinUpdate {
                                reference,
                                pin: pin_for(img, PinSource::Provenance),
                            }],
                        ))
                    }
                    None if named => why.push(format!(
                        "it is named {reference} but did not come from {name}'s registry (no RepoDigest of that repository), so the name proves nothing"
                    )),
                    None => {}
                }
            }
            ImageRule::AnyTag { name } => {
                let pinned = pins
                    .by_ref
                    .iter()
                    .any(|(k, p)| p.id == img.id && normalise(k).is_ok_and(|r| r.name() == *name));
                if pinned {
                    return Ok((format!("rule \"{rule}\" (pinned image id)"), Vec::new()));
                }
                if has_provenance(img, name) {
                    let updates = tags
                        .iter()
                        .filter(|t| t.name() == *name)
                        .map(|t| t.to_string())
                        .filter(|t| !pins.by_ref.contains_key(t))
                        .map(|reference| PinUpdate {
                            reference,
                            pin: pin_for(img, PinSource::Provenance),
                        })
                        .collect();
                    return Ok((
                        format!("rule \"{rule}\" (registry digest of {name})"),
                        updates,
                    ));
                }
                if tags.iter().any(|t| t.name() == *name) {
                    why.push(format!(
                        "it is named in {name} but is neither a pinned image of it nor pulled from its registry"
                    ));
                }
            }
        }
    }
    Err(why)
}

/// Layer lists of the allowed images (pins in scope, and digest rules the engine has).
fn allowed_layer_sets<'a>(
    policy: &'a Policy,
    pins: &'a Pins,
    facts: &'a dyn EngineFacts,
) -> Vec<(String, &'a [String])> {
    let mut out: Vec<(String, &[String])> = pins
        .by_ref
        .iter()
        .filter(|(r, _)| in_scope(policy, r))
        .map(|(r, p)| (r.clone(), p.layers.as_slice()))
        .collect();
    for rule in &policy.socket_images {
        if let ImageRule::Digest { .. } = rule {
            if let Some(img) = facts.image(&rule.to_string()) {
                out.push((rule.to_string(), img.layers.as_slice()));
            }
        }
    }
    out
}

/// Most parents an image chain is followed through; dockerd's own limit on layers is 127.
const MAX_CHAIN: usize = 256;

/// May the image `reference` mount the engine socket?
pub fn socket_image_allowed(
    policy: &Policy,
    pins: &Pins,
    facts: &dyn EngineFacts,
    reference: &str,
) -> SocketImage {
    let Some(img) = facts.image(reference) else {
        return SocketImage::Denied {
            reason: format!("image {reference:?} is not known to the engine"),
        };
    };
    let why = match direct(policy, pins, img) {
        Ok((via, pins)) => return SocketImage::Allowed { via, pins },
        Err(why) => why,
    };
    if policy.allow_derived {
        let mut cur = img.parent.clone();
        let mut depth = 0;
        while !cur.is_empty() && depth < MAX_CHAIN {
            let Some(parent) = facts.image(&cur) else {
                break;
            };
            if let Ok((via, _)) = direct(policy, pins, parent) {
                return SocketImage::Allowed {
                    via: format!("derived from {} (parent chain), {via}", parent.id),
                    pins: Vec::new(),
                };
            }
            cur = parent.parent.clone();
            depth += 1;
        }
        for (label, layers) in allowed_layer_sets(policy, pins, facts) {
            if !layers.is_empty() && img.layers.starts_with(layers) {
                return SocketImage::Allowed {
                    via: format!("derived from {label} (its layers are the base of this image)"),
                    pins: Vec::new(),
                };
            }
        }
    }
    let mut reason = format!(
        "image {reference:?} is not allowed to mount the Docker engine socket: it is not in enhancedContainerIsolation.dockerSocketMount.imageList"
    );
    if policy.allow_derived {
        reason.push_str(" nor derived from an image in it");
    }
    for w in why {
        reason.push_str("; ");
        reason.push_str(&w);
    }
    SocketImage::Denied { reason }
}

/// Pins for allowed references present when the guard starts or the settings change.
/// References already pinned keep their pin.
pub fn first_seen_pins(policy: &Policy, pins: &Pins, images: &[ImageInfo]) -> Vec<PinUpdate> {
    let mut out: Vec<PinUpdate> = Vec::new();
    for img in images {
        for t in refs(&img.repo_tags) {
            let reference = t.to_string();
            if pins.by_ref.contains_key(&reference)
                || out.iter().any(|u| u.reference == reference)
                || !in_scope(policy, &reference)
            {
                continue;
            }
            out.push(PinUpdate {
                reference,
                pin: pin_for(img, PinSource::FirstSeen),
            });
        }
    }
    out
}

/// After `reference` was pulled through the guard and now names `img`: re-pin it if a tag
/// rule covers it and the content came from its registry.
pub fn pull_pins(policy: &Policy, reference: &str, img: &ImageInfo) -> Vec<PinUpdate> {
    let Ok(r) = normalise(reference) else {
        return Vec::new();
    };
    if r.tag.is_none() || r.digest.is_some() || !in_scope(policy, &r.to_string()) {
        return Vec::new();
    }
    if !has_provenance(img, &r.name()) {
        return Vec::new();
    }
    vec![PinUpdate {
        reference: r.to_string(),
        pin: pin_for(img, PinSource::Pull),
    }]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Facts;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn policy(rules: &[&str], derived: bool) -> Policy {
        Policy {
            socket_images: rules.iter().map(|r| ImageRule::parse(r).unwrap()).collect(),
            allow_derived: derived,
            ..Policy::default()
        }
    }

    fn img(id: &str, tags: &[&str], digests: &[&str], parent: &str, layers: &[&str]) -> ImageInfo {
        ImageInfo {
            id: id.to_string(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            parent: parent.to_string(),
            layers: layers.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn facts(images: &[ImageInfo]) -> Facts {
        let mut f = Facts::default();
        for i in images {
            for t in &i.repo_tags {
                f.add_image(t, i.clone());
            }
            f.add_image(&i.id.clone(), i.clone());
        }
        f
    }

    fn allowed(p: &Policy, pins: &Pins, f: &Facts, r: &str) -> bool {
        matches!(
            socket_image_allowed(p, pins, f, r),
            SocketImage::Allowed { .. }
        )
    }

    fn reason(p: &Policy, pins: &Pins, f: &Facts, r: &str) -> String {
        match socket_image_allowed(p, pins, f, r) {
            SocketImage::Denied { reason } => reason,
            a => panic!("expected a refusal, got {a:?}"),
        }
    }

    #[test]
    fn star_allows_everything_and_empty_list_nothing() {
        let f = facts(&[img("sha256:a", &["x:1"], &[], "", &["l1"])]);
        assert!(allowed(&policy(&["*"], false), &Pins::default(), &f, "x:1"));
        let r = reason(&policy(&[], false), &Pins::default(), &f, "x:1");
        assert!(
            r.contains("not in enhancedContainerIsolation.dockerSocketMount.imageList"),
            "{r}"
        );
        let r = reason(&policy(&["*"], false), &Pins::default(), &f, "missing:1");
        assert!(r.contains("not known"), "{r}");
    }

    #[test]
    fn first_seen_pins_make_tag_rules_pass_and_retags_fail() {
        let good = img("sha256:good", &["docker:cli"], &[], "", &["l1"]);
        let p = policy(&["docker:cli"], false);
        let mut pins = Pins::default();
        let ups = first_seen_pins(&p, &pins, std::slice::from_ref(&good));
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].reference, "docker.io/library/docker:cli");
        pins.apply(&ups);
        assert!(allowed(
            &p,
            &pins,
            &facts(std::slice::from_ref(&good)),
            "docker:cli"
        ));
        // Normalised names: the same image by its full name and by id.
        assert!(allowed(
            &p,
            &pins,
            &facts(std::slice::from_ref(&good)),
            "sha256:good"
        ));

        // `docker tag evil docker:cli`: the name moved, the pin did not.
        let evil = img("sha256:evil", &["docker:cli", "evil:1"], &[], "", &["l9"]);
        let f = facts(std::slice::from_ref(&evil));
        let r = reason(&p, &pins, &f, "docker:cli");
        assert!(r.contains("not the image pinned"), "{r}");
        // A second look at startup does not re-pin a pinned reference.
        assert!(first_seen_pins(&p, &pins, &[evil]).is_empty());
        // Other tags never match a tag rule.
        let other = img("sha256:good", &["docker:dind"], &[], "", &["l1"]);
        assert!(first_seen_pins(&p, &Pins::default(), &[other]).is_empty());
    }

    #[test]
    fn unpinned_names_need_registry_provenance() {
        let p = policy(&["docker:cli"], false);
        let local = img("sha256:l", &["docker:cli"], &[], "", &["l1"]);
        let r = reason(&p, &Pins::default(), &facts(&[local]), "docker:cli");
        assert!(
            r.contains("did not come from docker.io/library/docker's registry"),
            "{r}"
        );

        let pulled = img(
            "sha256:p",
            &["docker:cli"],
            &[&format!("docker@{D1}")],
            "",
            &["l1"],
        );
        match socket_image_allowed(&p, &Pins::default(), &facts(&[pulled]), "docker:cli") {
            SocketImage::Allowed { via, pins } => {
                assert!(via.contains("registry digest"), "{via}");
                assert_eq!(pins.len(), 1);
                assert_eq!(pins[0].pin.source, PinSource::Provenance);
            }
            d => panic!("{d:?}"),
        }
        // Provenance of another repository proves nothing about this one.
        let foreign = img(
            "sha256:f",
            &["docker:cli"],
            &[&format!("evil/x@{D1}")],
            "",
            &["l1"],
        );
        assert!(!allowed(
            &p,
            &Pins::default(),
            &facts(&[foreign]),
            "docker:cli"
        ));
    }

    #[test]
    fn any_tag_rules_cover_a_repository_by_pin_or_provenance() {
        let p = policy(&["testcontainers/ryuk:*"], false);
        let a = img("sha256:a", &["testcontainers/ryuk:0.5"], &[], "", &["l1"]);
        let mut pins = Pins::default();
        pins.apply(&first_seen_pins(&p, &pins, std::slice::from_ref(&a)));
        assert!(allowed(&p, &pins, &facts(&[a]), "testcontainers/ryuk:0.5"));
        let b = img(
            "sha256:b",
            &["testcontainers/ryuk:0.6"],
            &[&format!("testcontainers/ryuk@{D2}")],
            "",
            &[],
        );
        match socket_image_allowed(&p, &pins, &facts(&[b]), "testcontainers/ryuk:0.6") {
            SocketImage::Allowed { pins, .. } => {
                assert_eq!(pins[0].reference, "docker.io/testcontainers/ryuk:0.6")
            }
            d => panic!("{d:?}"),
        }
        let c = img("sha256:c", &["testcontainers/ryuk:evil"], &[], "", &[]);
        let r = reason(&p, &pins, &facts(&[c]), "testcontainers/ryuk:evil");
        assert!(r.contains("neither a pinned image"), "{r}");
        let d = img("sha256:d", &["testcontainers/ryuk-evil:1"], &[], "", &[]);
        assert!(!allowed(
            &p,
            &pins,
            &facts(&[d]),
            "testcontainers/ryuk-evil:1"
        ));
    }

    #[test]
    fn digest_rules_match_repo_digests_or_ids() {
        let p = policy(&[&format!("localhost:5000/tools/cli@{D1}")], false);
        let pulled = img(
            "sha256:x",
            &[],
            &[&format!("localhost:5000/tools/cli@{D1}")],
            "",
            &[],
        );
        assert!(allowed(&p, &Pins::default(), &facts(&[pulled]), "sha256:x"));
        let other_repo = img(
            "sha256:y",
            &[],
            &[&format!("localhost:5000/other@{D1}")],
            "",
            &[],
        );
        assert!(!allowed(
            &p,
            &Pins::default(),
            &facts(&[other_repo]),
            "sha256:y"
        ));
        let by_id = img(D1, &["anything:1"], &[], "", &[]);
        assert!(allowed(
            &p,
            &Pins::default(),
            &facts(&[by_id]),
            "anything:1"
        ));
        let other = img(D2, &["localhost:5000/tools/cli:latest"], &[], "", &[]);
        assert!(!allowed(
            &p,
            &Pins::default(),
            &facts(&[other]),
            "localhost:5000/tools/cli"
        ));
    }

    #[test]
    fn derived_images_pass_by_parent_chain_or_layer_prefix() {
        let base = img("sha256:base", &["docker:cli"], &[], "", &["l1", "l2"]);
        let mid = img("sha256:mid", &[], &[], "sha256:base", &["l1", "l2", "l3"]);
        let child = img(
            "sha256:child",
            &["mine:1"],
            &[],
            "sha256:mid",
            &["l1", "l2", "l3", "l4"],
        );
        let buildkit = img("sha256:bk", &["bk:1"], &[], "", &["l1", "l2", "l5"]);
        let unrelated = img("sha256:u", &["u:1"], &[], "", &["l1", "l9"]);
        let all = [base.clone(), mid, child, buildkit, unrelated];
        let mut pins = Pins::default();
        let p = policy(&["docker:cli"], true);
        pins.apply(&first_seen_pins(&p, &pins, std::slice::from_ref(&base)));
        let f = facts(&all);
        match socket_image_allowed(&p, &pins, &f, "mine:1") {
            SocketImage::Allowed { via, .. } => assert!(via.contains("parent chain"), "{via}"),
            d => panic!("{d:?}"),
        }
        match socket_image_allowed(&p, &pins, &f, "bk:1") {
            SocketImage::Allowed { via, .. } => assert!(via.contains("layers"), "{via}"),
            d => panic!("{d:?}"),
        }
        // A shared first layer is not derivation.
        let r = reason(&p, &pins, &f, "u:1");
        assert!(r.contains("nor derived"), "{r}");
        // Without allowDerivedImages the child is refused.
        assert!(!allowed(
            &policy(&["docker:cli"], false),
            &pins,
            &f,
            "mine:1"
        ));
        // A pin of a rule the admin removed does not count any more.
        assert!(!allowed(&policy(&["other:1"], true), &pins, &f, "bk:1"));
    }

    #[test]
    fn an_allowed_image_without_layers_derives_nothing() {
        let empty = img("sha256:e", &["scratchy:1"], &[], "", &[]);
        let any = img("sha256:z", &["z:1"], &[], "", &["l1"]);
        let p = policy(&["scratchy:1"], true);
        let mut pins = Pins::default();
        pins.apply(&first_seen_pins(&p, &pins, std::slice::from_ref(&empty)));
        assert!(!allowed(&p, &pins, &facts(&[empty, any]), "z:1"));
    }

    #[test]
    fn pulls_repin_only_with_registry_provenance() {
        let p = policy(&["docker:cli"], false);
        let fresh = img(
            "sha256:new",
            &["docker:cli"],
            &[&format!("docker@{D2}")],
            "",
            &["l7"],
        );
        let ups = pull_pins(&p, "docker:cli", &fresh);
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].pin.source, PinSource::Pull);
        let local = img("sha256:loc", &["docker:cli"], &[], "", &[]);
        assert!(pull_pins(&p, "docker:cli", &local).is_empty());
        assert!(pull_pins(&p, "alpine", &fresh).is_empty());
        assert!(pull_pins(&p, "Bad Ref", &fresh).is_empty());
        let mut pins = Pins::default();
        assert!(pins.apply(&ups));
        assert!(!pins.apply(&ups));
    }
}
