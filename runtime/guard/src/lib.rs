//! eci-guard: the Docker API policy proxy of the eci VM.
//!
//! It owns the engine sockets users and containers reach and forwards to dockerd's root-only
//! socket (SPEC S4). Decisions are pure functions ([`policy::decide`]) over the request, the
//! settings ([`settings::Policy`]), the image pins ([`images::Pins`]) and facts gathered from
//! the engine ([`facts::Facts`]); [`proxy`] is the thin edge that gathers facts and acts.

pub mod audit;
pub mod engine;
pub mod facts;
/// Properties the fuzz targets check (also run on the seeds by `cargo test`).
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod images;
pub mod limits;
pub mod paths;
pub mod pins;
pub mod policy;
pub mod proxy;
pub mod routes;
pub mod settings;
pub mod vsock;

pub use policy::{decide, Decision, Request, Role, Sockets, Verdict};
pub use settings::{load_settings, parse_settings, Policy};
