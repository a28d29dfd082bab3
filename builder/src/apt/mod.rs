//! apt's work without apt: Debian packages resolved, fetched and unpacked in-process, with
//! nothing installed on the build machine and no root.
//!
//! - [`lock`]: the machine's apt sources, signed `InRelease` files, `Packages` indices and the
//!   resolver that pins a closure in `images/T.lock`;
//! - [`fetch`]: downloads of pinned files into the content-addressed cache;
//! - [`deb`]: reading `.deb` archives (control and data) into entries.
//!
//! Nothing here knows about images: the root filesystem, the kernel and the artifacts use it.

pub mod deb;
pub mod fetch;
pub mod lock;
