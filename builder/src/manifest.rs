//! The in-memory root filesystem that packages are unpacked into and images are written from.
//!
//! Building without root means we never touch a real filesystem: ownership, device nodes and
//! file capabilities only exist as data here until an image writer serialises them.
//!
//! # Paths
//! Keys are normalised absolute paths ("/" is the root, "/usr/bin/dockerd" a file): no `.`/`..`
//! components, no `//`, no trailing `/`. Every key is *canonical*: each of its ancestors is a
//! [`EntryKind::Dir`] entry in the manifest, never a symlink. Lookups behave like the kernel's
//! `lstat`: symlinks in the directory part of a path are followed inside the manifest (so with
//! merged /usr, `/lib/x` finds `/usr/lib/x`), the last component is not. [`Manifest::resolve`]
//! follows the last component too (`stat`). Absolute symlink targets are resolved against the
//! manifest root and `..` at the root stays at the root, as in a chroot, so nothing can escape.
//!
//! # Hard links
//! A [`EntryKind::Hardlink`] names the canonical path of a [`EntryKind::File`] that holds the data
//! and the inode metadata (mode, owner, mtime, xattrs); the link's own metadata fields are not
//! used by image writers. Links never point at links: inserting a link to a link stores the final
//! file. When the file a link points at is removed or replaced by another entry, the
//! lexicographically first surviving link becomes the file (taking over its data and metadata) and
//! the other links are re-pointed at it, exactly like unlinking one name of an inode on disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::ops::{Bound, Deref};
use std::sync::Arc;

/// Symlinks followed during one lookup before giving up (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// Permission bits an [`Entry::mode`] may carry (including setuid, setgid and sticky).
pub const PERMISSION_BITS: u32 = 0o7777;

/// File type bits as in `st_mode` (`S_IF*`), used by archive writers.
pub mod file_type {
    pub const MASK: u32 = 0o170_000;
    pub const FIFO: u32 = 0o010_000;
    pub const CHAR: u32 = 0o020_000;
    pub const DIR: u32 = 0o040_000;
    pub const BLOCK: u32 = 0o060_000;
    pub const FILE: u32 = 0o100_000;
    pub const SYMLINK: u32 = 0o120_000;
}

/// Immutable file contents, shared rather than copied when cloned.
///
/// Backed by `Arc<Vec<u8>>` so that a buffer read from a package becomes a `Blob` without a copy.
#[derive(Clone, Default)]
pub struct Blob(Arc<Vec<u8>>);

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Self {
        Blob(Arc::new(bytes))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// True when both blobs share one buffer (cloned from each other).
    pub fn ptr_eq(a: &Blob, b: &Blob) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Self {
        Blob::new(v)
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Self {
        Blob::new(v.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Blob {
    fn from(v: &[u8; N]) -> Self {
        Blob::new(v.to_vec())
    }
}

impl From<String> for Blob {
    fn from(v: String) -> Self {
        Blob::new(v.into_bytes())
    }
}

impl From<&str> for Blob {
    fn from(v: &str) -> Self {
        Blob::new(v.as_bytes().to_vec())
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Self) -> bool {
        Blob::ptr_eq(self, other) || self.as_slice() == other.as_slice()
    }
}

impl Eq for Blob {}

impl fmt::Debug for Blob {
    // Contents can be hundreds of MiB; a debug dump of a manifest must stay readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.len())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Blob),
    /// Target exactly as stored in the link (relative or absolute), not normalised.
    Symlink(String),
    /// Canonical absolute path of the [`EntryKind::File`] this is another name of.
    Hardlink(String),
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

impl EntryKind {
    /// The `S_IF*` bits for this kind; a hard link is a regular file.
    pub fn type_bits(&self) -> u32 {
        match self {
            EntryKind::Dir => file_type::DIR,
            EntryKind::File(_) | EntryKind::Hardlink(_) => file_type::FILE,
            EntryKind::Symlink(_) => file_type::SYMLINK,
            EntryKind::CharDevice { .. } => file_type::CHAR,
            EntryKind::BlockDevice { .. } => file_type::BLOCK,
            EntryKind::Fifo => file_type::FIFO,
        }
    }

    /// Human-readable kind for error messages and listings.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Dir => "directory",
            EntryKind::File(_) => "regular file",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::Hardlink(_) => "hard link",
            EntryKind::CharDevice { .. } => "character device",
            EntryKind::BlockDevice { .. } => "block device",
            EntryKind::Fifo => "fifo",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky; never file type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch; image writers clamp it to `SOURCE_DATE_EPOCH`.
    pub mtime: u64,
    /// Extended attributes by full name, e.g. `security.capability`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// An entry owned by root:root with mtime 0 and no xattrs.
    pub fn new(kind: EntryKind, mode: u32) -> Self {
        Entry {
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }

    pub fn dir(mode: u32) -> Self {
        Entry::new(EntryKind::Dir, mode)
    }

    pub fn file(data: impl Into<Blob>, mode: u32) -> Self {
        Entry::new(EntryKind::File(data.into()), mode)
    }

    pub fn symlink(target: impl Into<String>) -> Self {
        Entry::new(EntryKind::Symlink(target.into()), 0o777)
    }

    pub fn hardlink(target: impl Into<String>) -> Self {
        Entry::new(EntryKind::Hardlink(target.into()), 0o644)
    }

    pub fn with_owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    pub fn with_mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    pub fn with_xattr(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.xattrs.insert(name.into(), value.into());
        self
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, EntryKind::Dir)
    }

    /// Full `st_mode`: type bits plus permission bits.
    pub fn st_mode(&self) -> u32 {
        self.kind.type_bits() | (self.mode & PERMISSION_BITS)
    }

    /// File contents, if this is a regular file (not a hard link to one).
    pub fn data(&self) -> Option<&Blob> {
        match &self.kind {
            EntryKind::File(blob) => Some(blob),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("path {path:?} escapes the root filesystem through \"..\"; paths must stay inside /")]
    EscapesRoot { path: String },
    #[error("cannot use {path:?}: {component:?} is a {kind}, not a directory")]
    NotADirectory {
        path: String,
        component: String,
        kind: &'static str,
    },
    #[error("cannot replace directory {path:?} with a {kind}; remove the directory first")]
    DirectoryReplaced { path: String, kind: &'static str },
    #[error("the root \"/\" must be a directory, not a {kind}")]
    RootNotDirectory { kind: &'static str },
    #[error("the root directory \"/\" cannot be removed")]
    RemoveRoot,
    #[error("too many levels of symbolic links resolving {path:?} (limit {MAX_SYMLINK_HOPS})")]
    SymlinkLoop { path: String },
    #[error("{path:?} does not exist in the root filesystem")]
    NotFound { path: String },
    #[error("hard link {path:?} -> {target:?}: {reason}")]
    BadHardlink {
        path: String,
        target: String,
        reason: &'static str,
    },
    #[error("symlink {path:?}: {reason}")]
    BadSymlink { path: String, reason: &'static str },
    #[error(
        "{path:?}: mode {mode:#o} has bits outside {PERMISSION_BITS:#o}; pass permission bits \
         only (the entry kind sets the file type)"
    )]
    InvalidMode { path: String, mode: u32 },
}

/// Normalises a path to the manifest's key form.
///
/// Accepts absolute and relative forms (tar member names such as `./usr/bin/x` become
/// `/usr/bin/x`); `.` and empty components are dropped and `..` is applied lexically. A `..`
/// that would climb above the root is an error rather than being clamped, because such a name in
/// a package is an attack or a bug, never intent.
pub fn normalize_path(path: &str) -> Result<String, ManifestError> {
    if path.is_empty() {
        return Err(ManifestError::InvalidPath {
            path: path.into(),
            reason: "path is empty",
        });
    }
    if path.contains('\0') {
        return Err(ManifestError::InvalidPath {
            path: path.into(),
            reason: "path contains a NUL byte",
        });
    }
    let mut parts: Vec<&str> = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ManifestError::EscapesRoot { path: path.into() });
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok("/".to_owned());
    }
    let mut out = String::with_capacity(path.len() + 1);
    for part in parts {
        out.push('/');
        out.push_str(part);
    }
    Ok(out)
}

/// The parent of a canonical path ("/" for top-level entries and for "/" itself).
pub fn parent_path(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// Result of [`Manifest::resolve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// Canonical path of the entry reached; for a hard link, the path of its file.
    pub path: &'a str,
    pub entry: &'a Entry,
}

/// A root filesystem tree kept in memory, iterated in sorted path order.
///
/// Sorted order puts every directory before its contents (a parent is a prefix of its
/// children), which is what archive writers need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    entries: BTreeMap<String, Entry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest::new()
    }
}

impl Manifest {
    /// An empty tree: only the root directory, root:root 0755.
    pub fn new() -> Self {
        let mut entries = BTreeMap::new();
        entries.insert("/".to_owned(), Entry::dir(0o755));
        Manifest { entries }
    }

    /// Number of entries including the root directory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when only the root directory exists.
    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// Entries in sorted path order, root first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &Entry)> + '_ {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// Sum of the sizes of all regular files; hard links add nothing.
    pub fn total_file_bytes(&self) -> u64 {
        self.entries
            .values()
            .filter_map(|e| e.data())
            .map(|b| b.len() as u64)
            .sum()
    }

    /// Looks up an entry with `lstat` semantics (symlinks in the directory part are followed).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let key = self.lookup_key(path)?;
        self.entries.get(key.as_ref())
    }

    /// Mutable access to an entry's metadata.
    ///
    /// Changing `kind` here bypasses the tree's bookkeeping: turning a directory that has
    /// children into anything else, or a hard link's target into a non-file, leaves the manifest
    /// inconsistent and [`Manifest::validate`] (which image writers run) will reject it. Use
    /// [`Manifest::insert`] and [`Manifest::remove`] to change what a path is.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Entry> {
        let key = self.lookup_key(path)?.into_owned();
        self.entries.get_mut(&key)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// The canonical path `path` refers to with `lstat` semantics, whether or not it exists.
    ///
    /// Fails if a directory component is not a directory or symlinks loop.
    pub fn canonical_path(&self, path: &str) -> Result<String, ManifestError> {
        let norm = normalize_path(path)?;
        self.canonicalize(&norm, false)
    }

    /// Follows symlinks (and a final hard link) to the entry `path` finally refers to, as `stat`
    /// would. Used for lookups such as "is /bin/sh an executable file".
    pub fn resolve(&self, path: &str) -> Result<Resolved<'_>, ManifestError> {
        let norm = normalize_path(path)?;
        let canon = self.canonicalize(&norm, true)?;
        let (key, entry) = self
            .entries
            .get_key_value(&canon)
            .ok_or(ManifestError::NotFound { path: norm.clone() })?;
        if let EntryKind::Hardlink(target) = &entry.kind {
            // Links point at files by invariant; a dangling one means get_mut misuse.
            return match self.entries.get_key_value(target) {
                Some((tkey, tentry)) => Ok(Resolved {
                    path: tkey,
                    entry: tentry,
                }),
                None => Err(ManifestError::BadHardlink {
                    path: canon,
                    target: target.clone(),
                    reason: "target does not exist",
                }),
            };
        }
        Ok(Resolved { path: key, entry })
    }

    /// Inserts `entry` at `path` and returns the canonical path it was stored under.
    ///
    /// Missing parent directories are created as root:root 0755 with mtime 0. Symlinks in the
    /// directory part are followed (a package shipping `/lib/x` on a merged-/usr tree lands in
    /// `/usr/lib/x`, as with dpkg). An existing non-directory is replaced; if it was a file with
    /// hard links, the links keep the old data (see the module docs). An existing directory
    /// can only be replaced by a directory, which updates its metadata and keeps its contents.
    /// A hard link's target is normalised, resolved to the file it names and must exist.
    pub fn insert(&mut self, path: &str, mut entry: Entry) -> Result<String, ManifestError> {
        let norm = normalize_path(path)?;
        if entry.mode & !PERMISSION_BITS != 0 {
            return Err(ManifestError::InvalidMode {
                path: norm,
                mode: entry.mode,
            });
        }
        if let EntryKind::Symlink(target) = &entry.kind {
            if target.is_empty() {
                return Err(ManifestError::BadSymlink {
                    path: norm,
                    reason: "target is empty",
                });
            }
            if target.contains('\0') {
                return Err(ManifestError::BadSymlink {
                    path: norm,
                    reason: "target contains a NUL byte",
                });
            }
        }
        if norm == "/" {
            if !entry.is_dir() {
                return Err(ManifestError::RootNotDirectory {
                    kind: entry.kind.name(),
                });
            }
            self.entries.insert(norm.clone(), entry);
            return Ok(norm);
        }
        let canon = self.canonicalize(&norm, false)?;
        if let EntryKind::Hardlink(target) = &entry.kind {
            let file = self.hardlink_file(&canon, target)?;
            entry.kind = EntryKind::Hardlink(file);
        }
        match self.entries.get(&canon) {
            Some(existing) if existing.is_dir() => {
                if !entry.is_dir() {
                    return Err(ManifestError::DirectoryReplaced {
                        path: canon,
                        kind: entry.kind.name(),
                    });
                }
            }
            Some(existing) => {
                if matches!(existing.kind, EntryKind::File(_)) {
                    let old = self.entries.remove(&canon).expect("entry present");
                    self.promote_links(HashMap::from([(canon.clone(), old)]));
                }
            }
            None => self.create_parents(&canon),
        }
        self.entries.insert(canon.clone(), entry);
        Ok(canon)
    }

    /// Adds a regular file owned by `uid:gid`.
    pub fn add_file(
        &mut self,
        path: &str,
        data: impl Into<Blob>,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<String, ManifestError> {
        self.insert(path, Entry::file(data, mode).with_owner(uid, gid))
    }

    /// Adds (or updates the metadata of) a directory.
    pub fn add_dir(
        &mut self,
        path: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<String, ManifestError> {
        self.insert(path, Entry::dir(mode).with_owner(uid, gid))
    }

    /// Adds a root-owned symlink; `target` is stored verbatim.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<String, ManifestError> {
        self.insert(path, Entry::symlink(target))
    }

    /// Adds a hard link to the file at `target`.
    pub fn add_hardlink(&mut self, path: &str, target: &str) -> Result<String, ManifestError> {
        self.insert(path, Entry::hardlink(target))
    }

    /// Removes `path` and, for a directory, everything below it. Returns how many entries were
    /// removed (0 if nothing was there). Files that lose their data to the removal but still
    /// have hard links elsewhere are kept alive through those links (see the module docs).
    pub fn remove(&mut self, path: &str) -> Result<usize, ManifestError> {
        let norm = normalize_path(path)?;
        if norm == "/" {
            return Err(ManifestError::RemoveRoot);
        }
        let canon = match self.canonicalize(&norm, false) {
            Ok(c) => c,
            // A path through a non-directory cannot exist, so there is nothing to remove.
            Err(ManifestError::NotADirectory { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        if !self.entries.contains_key(&canon) {
            return Ok(0);
        }
        let mut doomed = vec![canon.clone()];
        doomed.extend(self.subtree_keys(&canon));
        Ok(self.remove_keys(doomed))
    }

    /// Removes every entry whose canonical path matches, with the subtrees of matching
    /// directories (their contents are not offered to `pred`). The root is never offered.
    /// Returns how many entries were removed.
    pub fn remove_matching(&mut self, mut pred: impl FnMut(&str) -> bool) -> usize {
        let mut doomed = Vec::new();
        let mut pruned_dir: Option<String> = None;
        for path in self.entries.keys().skip(1) {
            if let Some(dir) = &pruned_dir {
                if is_below(path, dir) {
                    doomed.push(path.clone());
                    continue;
                }
                pruned_dir = None;
            }
            if pred(path) {
                doomed.push(path.clone());
                if self.entries[path].is_dir() {
                    pruned_dir = Some(path.clone());
                }
            }
        }
        self.remove_keys(doomed)
    }

    /// Hard link groups: each file that has links, with its links in sorted order.
    pub fn hardlink_groups(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (path, entry) in &self.entries {
            if let EntryKind::Hardlink(target) = &entry.kind {
                groups.entry(target.as_str()).or_default().push(path);
            }
        }
        groups
    }

    /// Checks the invariants image writers rely on: the root is a directory, every entry's
    /// parent is a directory, modes carry permission bits only, and every hard link names an
    /// existing regular file. Only [`Manifest::get_mut`] can break these.
    pub fn validate(&self) -> Result<(), ManifestError> {
        for (path, entry) in &self.entries {
            if entry.mode & !PERMISSION_BITS != 0 {
                return Err(ManifestError::InvalidMode {
                    path: path.clone(),
                    mode: entry.mode,
                });
            }
            if path == "/" {
                if !entry.is_dir() {
                    return Err(ManifestError::RootNotDirectory {
                        kind: entry.kind.name(),
                    });
                }
                continue;
            }
            let parent = parent_path(path);
            match self.entries.get(parent) {
                Some(p) if p.is_dir() => {}
                Some(p) => {
                    return Err(ManifestError::NotADirectory {
                        path: path.clone(),
                        component: parent.to_owned(),
                        kind: p.kind.name(),
                    })
                }
                None => {
                    return Err(ManifestError::NotFound {
                        path: parent.to_owned(),
                    })
                }
            }
            if let EntryKind::Hardlink(target) = &entry.kind {
                match self.entries.get(target) {
                    Some(t) if matches!(t.kind, EntryKind::File(_)) => {}
                    Some(_) => {
                        return Err(ManifestError::BadHardlink {
                            path: path.clone(),
                            target: target.clone(),
                            reason: "target is not a regular file",
                        })
                    }
                    None => {
                        return Err(ManifestError::BadHardlink {
                            path: path.clone(),
                            target: target.clone(),
                            reason: "target does not exist",
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// The stored key `path` refers to with `lstat` semantics, if it is a valid path.
    fn lookup_key<'p>(&self, path: &'p str) -> Option<std::borrow::Cow<'p, str>> {
        // Keys are canonical, so an exact hit needs no symlink walk.
        if self.entries.contains_key(path) {
            return Some(path.into());
        }
        let norm = normalize_path(path).ok()?;
        self.canonicalize(&norm, false).ok().map(Into::into)
    }

    /// Walks a normalised path through the tree following symlinks in directory components
    /// (and in the last one if `follow_last`). Missing components are kept lexically, so the
    /// result is where the entry would be created.
    fn canonicalize(&self, norm: &str, follow_last: bool) -> Result<String, ManifestError> {
        if norm == "/" {
            return Ok(norm.to_owned());
        }
        // Fast path: parent is a real directory and the last component needs no following.
        let parent = parent_path(norm);
        if self.entries.get(parent).is_some_and(Entry::is_dir) {
            let last_is_link = matches!(
                self.entries.get(norm).map(|e| &e.kind),
                Some(EntryKind::Symlink(_))
            );
            if !(follow_last && last_is_link) {
                return Ok(norm.to_owned());
            }
        }

        let mut pending: VecDeque<&str> = norm.split('/').filter(|c| !c.is_empty()).collect();
        // Current position without a trailing slash; the root is "".
        let mut cur = String::with_capacity(norm.len());
        let mut hops = 0;
        while let Some(component) = pending.pop_front() {
            match component {
                "" | "." => continue,
                ".." => {
                    // `cur` contains no symlinks, so going up lexically is exact.
                    let cut = cur.rfind('/').unwrap_or(0);
                    cur.truncate(cut);
                    continue;
                }
                _ => {}
            }
            let len_before = cur.len();
            cur.push('/');
            cur.push_str(component);
            let is_last = pending.is_empty();
            match self.entries.get(&cur).map(|e| &e.kind) {
                None | Some(EntryKind::Dir) => {}
                Some(EntryKind::Symlink(target)) if !is_last || follow_last => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(ManifestError::SymlinkLoop { path: norm.into() });
                    }
                    if target.starts_with('/') {
                        cur.clear();
                    } else {
                        cur.truncate(len_before);
                    }
                    for c in target.rsplit('/') {
                        pending.push_front(c);
                    }
                }
                Some(_) if is_last => {}
                Some(other) => {
                    return Err(ManifestError::NotADirectory {
                        path: norm.into(),
                        component: cur,
                        kind: other.name(),
                    })
                }
            }
        }
        if cur.is_empty() {
            cur.push('/');
        }
        Ok(cur)
    }

    /// Validates a hard link at `link` to `target` and returns the canonical path of the file
    /// it must point at.
    fn hardlink_file(&self, link: &str, target: &str) -> Result<String, ManifestError> {
        let bad = |reason| ManifestError::BadHardlink {
            path: link.to_owned(),
            target: target.to_owned(),
            reason,
        };
        let norm = normalize_path(target)?;
        let canon = self.canonicalize(&norm, false)?;
        let file = match self.entries.get(&canon).map(|e| &e.kind) {
            Some(EntryKind::File(_)) => canon,
            Some(EntryKind::Hardlink(file)) => file.clone(),
            Some(_) => return Err(bad("target is not a regular file")),
            None => return Err(bad("target does not exist")),
        };
        if file == link {
            return Err(bad("a file cannot be a hard link to itself"));
        }
        Ok(file)
    }

    fn create_parents(&mut self, canon: &str) {
        // Ancestors of a canonical path are either directories or missing (canonicalize has
        // checked), so only missing ones need creating, top-down.
        for (i, _) in canon.match_indices('/').skip(1) {
            let ancestor = &canon[..i];
            if !self.entries.contains_key(ancestor) {
                self.entries.insert(ancestor.to_owned(), Entry::dir(0o755));
            }
        }
    }

    fn subtree_keys(&self, dir: &str) -> Vec<String> {
        let lower = format!("{dir}/");
        self.entries
            .range::<str, _>((Bound::Included(lower.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&lower))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn remove_keys(&mut self, keys: Vec<String>) -> usize {
        let mut removed_files = HashMap::new();
        let count = keys.len();
        for key in keys {
            if let Some(entry) = self.entries.remove(&key) {
                if matches!(entry.kind, EntryKind::File(_)) {
                    removed_files.insert(key, entry);
                }
            }
        }
        self.promote_links(removed_files);
        count
    }

    /// Keeps the data of removed files alive through their surviving hard links: the first
    /// link in path order becomes the file, the others are re-pointed at it.
    fn promote_links(&mut self, mut removed_files: HashMap<String, Entry>) {
        if removed_files.is_empty() {
            return;
        }
        let mut orphans: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (path, entry) in &self.entries {
            if let EntryKind::Hardlink(target) = &entry.kind {
                if removed_files.contains_key(target) {
                    orphans
                        .entry(target.clone())
                        .or_default()
                        .push(path.clone());
                }
            }
        }
        for (old_file, links) in orphans {
            let inode = removed_files.remove(&old_file).expect("collected above");
            let (heir, rest) = links.split_first().expect("groups are non-empty");
            for link in rest {
                if let Some(e) = self.entries.get_mut(link) {
                    e.kind = EntryKind::Hardlink(heir.clone());
                }
            }
            self.entries.insert(heir.clone(), inode);
        }
    }
}

/// True if `path` lies strictly inside directory `dir` (both canonical).
fn is_below(path: &str, dir: &str) -> bool {
    dir == "/"
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(m: &Manifest) -> Vec<&str> {
        m.iter().map(|(p, _)| p).collect()
    }

    #[test]
    fn normalises_paths() {
        for (input, want) in [
            ("/", "/"),
            (".", "/"),
            ("./", "/"),
            ("./usr/bin/x", "/usr/bin/x"),
            ("usr//bin/", "/usr/bin"),
            ("/usr/./lib/../bin", "/usr/bin"),
            ("a/b/..", "/a"),
        ] {
            assert_eq!(normalize_path(input).unwrap(), want, "{input}");
        }
        assert!(matches!(
            normalize_path("../etc/passwd"),
            Err(ManifestError::EscapesRoot { .. })
        ));
        assert!(matches!(
            normalize_path("/usr/../../x"),
            Err(ManifestError::EscapesRoot { .. })
        ));
        assert!(normalize_path("").is_err());
        assert!(normalize_path("/a\0b").is_err());
    }

    #[test]
    fn insert_creates_parents_and_sorts() {
        let mut m = Manifest::new();
        m.add_file("usr/bin/dockerd", b"ELF", 0o755, 0, 0).unwrap();
        m.add_file("/etc/hostname", "eci\n", 0o644, 0, 0).unwrap();
        assert_eq!(
            keys(&m),
            [
                "/",
                "/etc",
                "/etc/hostname",
                "/usr",
                "/usr/bin",
                "/usr/bin/dockerd"
            ]
        );
        let usr = m.get("/usr").unwrap();
        assert_eq!(
            (usr.mode, usr.uid, usr.gid, usr.is_dir()),
            (0o755, 0, 0, true)
        );
        assert_eq!(m.total_file_bytes(), 7);
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn replacement_rules() {
        let mut m = Manifest::new();
        m.add_dir("/d", 0o700, 1, 1).unwrap();
        m.add_file("/d/f", "one", 0o644, 0, 0).unwrap();
        m.add_file("/d/f", "two", 0o600, 0, 0).unwrap();
        assert_eq!(m.get("/d/f").unwrap().data().unwrap().as_slice(), b"two");
        // A file over a directory is refused; a directory over a directory keeps contents.
        assert!(matches!(
            m.add_file("/d", "x", 0o644, 0, 0),
            Err(ManifestError::DirectoryReplaced { .. })
        ));
        m.add_dir("/d", 0o755, 0, 0).unwrap();
        assert_eq!(m.get("/d").unwrap().mode, 0o755);
        assert!(m.contains("/d/f"));
        // A file in the way of a parent directory is an error, not silently replaced.
        assert!(matches!(
            m.add_file("/d/f/g", "x", 0o644, 0, 0),
            Err(ManifestError::NotADirectory { .. })
        ));
        assert!(matches!(
            m.insert("/", Entry::file("x", 0o644)),
            Err(ManifestError::RootNotDirectory { .. })
        ));
        assert!(matches!(
            m.insert("/x", Entry::file("x", 0o100644)),
            Err(ManifestError::InvalidMode { .. })
        ));
        assert!(m.add_symlink("/s", "").is_err());
    }

    #[test]
    fn symlinked_parents_are_followed_like_dpkg() {
        let mut m = Manifest::new();
        m.add_dir("/usr/lib", 0o755, 0, 0).unwrap();
        m.add_symlink("/lib", "usr/lib").unwrap();
        let stored = m.add_file("/lib/libc.so.6", "libc", 0o644, 0, 0).unwrap();
        assert_eq!(stored, "/usr/lib/libc.so.6");
        assert!(m.get("/lib/libc.so.6").is_some());
        assert!(matches!(m.get("/lib").unwrap().kind, EntryKind::Symlink(_)));
        assert!(!m.contains("/lib/libc.so.6-missing"));
        // Absolute targets resolve against the manifest root, ".." at the root stays there.
        m.add_symlink("/bin", "/../../usr/bin").unwrap();
        assert_eq!(
            m.add_file("/bin/x", "x", 0o755, 0, 0).unwrap(),
            "/usr/bin/x"
        );
    }

    #[test]
    fn resolve_follows_chains_and_detects_loops() {
        let mut m = Manifest::new();
        m.add_file("/usr/bin/dash", "#!", 0o755, 0, 0).unwrap();
        m.add_symlink("/usr/bin/sh", "dash").unwrap();
        m.add_symlink("/bin", "usr/bin").unwrap();
        let r = m.resolve("/bin/sh").unwrap();
        assert_eq!(r.path, "/usr/bin/dash");
        assert!(matches!(r.entry.kind, EntryKind::File(_)));

        m.add_symlink("/loop/a", "b").unwrap();
        m.add_symlink("/loop/b", "a").unwrap();
        assert!(matches!(
            m.resolve("/loop/a"),
            Err(ManifestError::SymlinkLoop { .. })
        ));
        m.add_symlink("/dangling", "nowhere").unwrap();
        assert!(matches!(
            m.resolve("/dangling"),
            Err(ManifestError::NotFound { .. })
        ));
        m.add_hardlink("/usr/bin/ash", "/bin/dash").unwrap();
        assert_eq!(m.resolve("/usr/bin/ash").unwrap().path, "/usr/bin/dash");
    }

    #[test]
    fn hardlinks_point_at_files_only() {
        let mut m = Manifest::new();
        m.add_file("/a", "data", 0o4755, 0, 0).unwrap();
        m.add_hardlink("/b", "./a").unwrap();
        // A link to a link stores the file.
        m.add_hardlink("/c", "/b").unwrap();
        assert_eq!(m.get("/c").unwrap().kind, EntryKind::Hardlink("/a".into()));
        assert!(m.add_hardlink("/d", "/missing").is_err());
        m.add_dir("/dir", 0o755, 0, 0).unwrap();
        assert!(m.add_hardlink("/d", "/dir").is_err());
        assert!(
            m.add_hardlink("/a", "/b").is_err(),
            "self link via another name"
        );
        assert_eq!(m.hardlink_groups()["/a"], vec!["/b", "/c"]);
        m.validate().unwrap();
    }

    #[test]
    fn removing_a_linked_file_promotes_the_first_link() {
        let mut m = Manifest::new();
        m.insert(
            "/bin/a",
            Entry::file("payload", 0o4755)
                .with_owner(0, 50)
                .with_mtime(7)
                .with_xattr("security.capability", vec![1, 2]),
        )
        .unwrap();
        m.add_hardlink("/sbin/z", "/bin/a").unwrap();
        m.add_hardlink("/sbin/y", "/bin/a").unwrap();
        assert_eq!(m.remove("/bin/a").unwrap(), 1);
        let heir = m.get("/sbin/y").unwrap();
        assert_eq!(heir.data().unwrap().as_slice(), b"payload");
        assert_eq!((heir.mode, heir.gid, heir.mtime), (0o4755, 50, 7));
        assert_eq!(heir.xattrs["security.capability"], vec![1, 2]);
        assert_eq!(
            m.get("/sbin/z").unwrap().kind,
            EntryKind::Hardlink("/sbin/y".into())
        );
        m.validate().unwrap();

        // Replacing the file by another entry keeps the old data behind the links as well.
        m.add_file("/sbin/y", "new", 0o644, 0, 0).unwrap();
        assert_eq!(
            m.get("/sbin/z").unwrap().data().unwrap().as_slice(),
            b"payload"
        );
        assert_eq!(m.get("/sbin/y").unwrap().data().unwrap().as_slice(), b"new");
        m.validate().unwrap();
    }

    #[test]
    fn removing_a_subtree_with_file_and_links_together_leaves_nothing() {
        let mut m = Manifest::new();
        m.add_file("/opt/x/f", "1", 0o644, 0, 0).unwrap();
        m.add_hardlink("/opt/x/g", "/opt/x/f").unwrap();
        m.add_file("/opt/xy", "keep", 0o644, 0, 0).unwrap();
        assert_eq!(m.remove("/opt/x").unwrap(), 3);
        assert_eq!(keys(&m), ["/", "/opt", "/opt/xy"]);
        assert_eq!(m.remove("/opt/x").unwrap(), 0);
        assert_eq!(m.remove("/opt/xy/under-a-file").unwrap(), 0);
        assert_eq!(m.remove("/"), Err(ManifestError::RemoveRoot));
        m.validate().unwrap();
    }

    #[test]
    fn remove_matching_prunes_directories() {
        let mut m = Manifest::new();
        m.add_file("/usr/share/doc/a/copyright", "c", 0o644, 0, 0)
            .unwrap();
        m.add_file("/usr/share/man/man1/x.1", "m", 0o644, 0, 0)
            .unwrap();
        m.add_file("/usr/bin/x", "x", 0o755, 0, 0).unwrap();
        m.add_hardlink("/usr/bin/y", "/usr/share/man/man1/x.1")
            .unwrap();
        let mut offered = Vec::new();
        let n = m.remove_matching(|p| {
            offered.push(p.to_owned());
            p == "/usr/share/doc" || p == "/usr/share/man"
        });
        assert_eq!(n, 6);
        assert!(!offered.iter().any(|p| p.starts_with("/usr/share/doc/")));
        assert!(!offered.contains(&"/".to_owned()));
        assert_eq!(
            m.get("/usr/bin/y").unwrap().data().unwrap().as_slice(),
            b"m"
        );
        assert_eq!(
            keys(&m),
            [
                "/",
                "/usr",
                "/usr/bin",
                "/usr/bin/x",
                "/usr/bin/y",
                "/usr/share"
            ]
        );
    }

    #[test]
    fn blobs_share_storage() {
        let blob = Blob::from(vec![7u8; 1 << 20]);
        let mut m = Manifest::new();
        m.add_file("/a", blob.clone(), 0o644, 0, 0).unwrap();
        m.add_file("/b", blob.clone(), 0o644, 0, 0).unwrap();
        let a = m.get("/a").unwrap().data().unwrap();
        assert!(Blob::ptr_eq(a, &blob));
        assert_eq!(format!("{a:?}"), "Blob(1048576 bytes)");
    }

    #[test]
    fn validate_catches_get_mut_misuse() {
        let mut m = Manifest::new();
        m.add_file("/d/f", "x", 0o644, 0, 0).unwrap();
        m.get_mut("/d").unwrap().kind = EntryKind::Fifo;
        assert!(matches!(
            m.validate(),
            Err(ManifestError::NotADirectory { .. })
        ));
    }
}
