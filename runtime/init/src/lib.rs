//! eci-init: PID 1 of the eci VM.
//!
//! Boot, in order: make the initramfs a pivot_root-able root ([`run`]), mount the kernel file
//! systems and tmpfs ([`mounts`]), load the image's modules and apply the hardening sysctls
//! ([`sysctl`]), then set `kernel.modules_disabled=1` (SPEC V3); copy the image's /var onto a
//! tmpfs; compare the running kernel with the image's pins ([`kernel_check`], SPEC V5), which on
//! drift refuses isolation: no service is started; mount the data disk ([`disk`]) over the
//! engine directories; list containers that predate isolation ([`legacy`], SPEC A5); write
//! dockerd's run-time config ([`engine`]); make the root read-only (SPEC V2); start the services
//! of /etc/eci/services.json ([`services`]) in order with readiness checks ([`ready`]) and
//! supervise them ([`supervise`]); shut down cleanly on SIGTERM, SIGINT (ctrl-alt-del), SIGPWR,
//! SIGUSR2 (`eci-init poweroff`, the kernel's poweroff helper) or the ACPI power button
//! ([`input`]). eci-init never starts a shell or getty and never reads the console (SPEC V4).
//!
//! `eci-init --under-init` runs the same boot under another init (WSL2's), without the PID-1
//! duties: no mounts of /, no disks, no power off (see [`run::Mode::under_init`]).
//!
//! The decisions are pure functions and a state machine, unit-tested without root; [`sys`] and
//! [`run`] are the edge that makes the syscalls.

pub mod cmdline;
pub mod disk;
pub mod engine;
pub mod fd_store;
pub mod input;
pub mod kernel_check;
pub mod legacy;
pub mod log;
pub mod modinfo;
pub mod mounts;
pub mod ready;
pub mod run;
pub mod services;
pub mod shares;
pub mod supervise;
pub mod sys;
pub mod sysctl;
