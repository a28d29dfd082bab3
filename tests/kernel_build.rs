//! `eci-build kernel build` end to end on a tiny recipe (SPEC V6): the pinned linux-source
//! package through the locked, content-addressed fetcher, unpacked once per sha256, kconfig
//! from `tinyconfig` plus `tests/kernel/tiny.config`, the pin check, a build with fixed
//! metadata, the output cache, and a boot under QEMU (TCG) whose init prints the running
//! kernel's release on the serial console.
//!
//! Cost on the project's 2-core CI machine (kernel-config/README.md has the figures): a
//! ~150 MB download into the user cache on the first run, unpacking, and a few minutes of
//! compiling; later runs hit the caches. It runs in CI (`./dev test`); `ECI_SKIP_KERNEL_BUILD=1`
//! skips it on a laptop (and fails it in CI). `ECI_KERNEL_BUILD_REPRO=1` adds a second,
//! independent build that must give the same bytes (another few minutes).

use eci_build::apt::fetch::{Cache, FetchOptions};
use eci_build::boot::{self, Accel, BootOptions};
use eci_build::initramfs::{self, Compression};
use eci_build::kernel_build::{
    self, Base, BuildRequest, Recipe, SourceFetch, BUILD_INFO, KERNEL_CONFIG, KERNEL_IMAGE,
};
use eci_build::manifest::{Entry, EntryKind, Manifest};
use eci_e2e::{prerequisite, workspace_root};
use eci_kernel_config::{Fragment, KernelConfig, Pins, Target, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";
const MARKER: &str = "ECI-SELFTEST kernel-release=";

fn tiny_recipe() -> Recipe {
    let path = workspace_root().join("tests/kernel/tiny.config");
    let fragment = kernel_build::load_fragment("tiny", &path).unwrap();
    Recipe {
        name: "tiny-test".into(),
        base: Base::Tinyconfig,
        pins: Pins {
            // The target only labels the report; the requirements are the tiny fragment's.
            target: Target::Qemu,
            requirements: fragment.requirements,
            version_pins: fragment.version_pins,
            profiles: Vec::new(),
        },
        build: Vec::<Fragment>::new(),
        hint: path,
    }
}

fn request(out: &Path) -> BuildRequest {
    let dir = workspace_root().join("kernel-config");
    BuildRequest {
        recipe: tiny_recipe(),
        definition: dir.join(kernel_build::SOURCE_DEFINITION),
        lock: dir.join(kernel_build::SOURCE_LOCK),
        source: SourceFetch {
            cache: Cache::new(Cache::default_location()),
            fetch: FetchOptions {
                progress: false,
                ..FetchOptions::default()
            },
            sources_root: "/etc/apt".into(),
            mirrors: Vec::new(),
        },
        committed: None,
        config_only: false,
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        out_dir: Some(out.to_path_buf()),
        echo: false,
    }
}

/// busybox as /init's interpreter, /dev/console for its output; the init prints the running
/// release as a self-test line and reboots, which ends QEMU (`-no-reboot`).
fn write_initramfs(path: &Path) {
    let busybox = std::fs::read(BUSYBOX).unwrap();
    let mut m = Manifest::new();
    for dir in ["/bin", "/dev", "/proc"] {
        m.insert(dir, Entry::dir(0o755)).unwrap();
    }
    m.insert(
        "/dev/console",
        Entry::new(EntryKind::CharDevice { major: 5, minor: 1 }, 0o600),
    )
    .unwrap();
    m.insert("/bin/busybox", Entry::file(busybox, 0o755))
        .unwrap();
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox echo \"{MARKER}$(/bin/busybox cat /proc/sys/kernel/osrelease)\"\n\
         /bin/busybox echo 'ECI-SELFTEST-END status=pass'\n\
         /bin/busybox reboot -f\n"
    );
    m.insert("/init", Entry::file(init.into_bytes(), 0o755))
        .unwrap();
    initramfs::write_initramfs(&m, 0, Compression::Gzip, path).unwrap();
}

#[test]
fn tiny_kernel_builds_from_the_pinned_source_caches_and_boots() {
    // A laptop may opt out; in CI the opt-out is a failure, never a silent pass.
    if std::env::var_os("ECI_SKIP_KERNEL_BUILD").is_some_and(|v| v == "1")
        && !prerequisite(
            false,
            "ECI_SKIP_KERNEL_BUILD=1 asks to skip the kernel build",
        )
    {
        return;
    }
    let missing = kernel_build::missing_host_packages();
    if !prerequisite(
        missing.is_empty(),
        &format!("kernel build dependencies missing: {}", missing.join(" ")),
    ) {
        return;
    }
    if !prerequisite(
        boot::qemu_available() && Path::new(BUSYBOX).is_file(),
        "qemu-system-x86 and busybox-static are needed to boot the kernel",
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");

    let started = Instant::now();
    let first = match kernel_build::run(&request(&out)) {
        Ok(o) => o,
        Err(e) => {
            let msg = e.to_string();
            let offline = msg.contains("cannot download");
            if offline && !prerequisite(false, &format!("Debian mirror unreachable: {msg}")) {
                return;
            }
            panic!("tiny kernel build failed: {msg}");
        }
    };
    let built = first.built.as_ref().expect("a build, not config-only");
    eprintln!(
        "tiny kernel {}: {} in {:.0} s (source {:.0} s, config {:.0} s, compile {:.0} s{})",
        built.info.kernel_release,
        if built.cached { "cached" } else { "built" },
        started.elapsed().as_secs_f64(),
        first.seconds_source,
        first.seconds_config,
        built.info.seconds,
        if built.cached {
            ", from an earlier run"
        } else {
            ""
        }
    );

    // The build is what the recipe asked for, from the pinned source, with fixed metadata.
    let release = &built.info.kernel_release;
    assert_eq!(
        *release,
        format!("{}-eci-tiny-test", first.tree.kernel_version)
    );
    assert_eq!(built.info.source_package, "linux-source-6.12");
    assert_eq!(built.info.environment["KBUILD_BUILD_USER"], "eci");
    assert_eq!(built.info.environment["KBUILD_BUILD_HOST"], "eci");
    let config =
        KernelConfig::from_path(&out.join(KERNEL_CONFIG)).expect("the build's config is kept");
    assert_eq!(
        config.get("MODULES"),
        Some(&Value::NotSet),
        "no module support at all"
    );
    assert!(first.generated.report.is_ok());
    let image = std::fs::read(out.join(KERNEL_IMAGE)).unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&image)),
        built.info.image_sha256
    );
    assert!(out.join(BUILD_INFO).is_file());

    // Same inputs: the cache answers, nothing is compiled again.
    let again = kernel_build::run(&request(&work.path().join("again"))).unwrap();
    let cached = again.built.unwrap();
    assert!(
        cached.cached,
        "an identical second build must come from the cache"
    );
    assert_eq!(cached.info.key, built.info.key);
    assert_eq!(
        std::fs::read(work.path().join("again").join(KERNEL_IMAGE)).unwrap(),
        image
    );

    // Opt-in (another full compile): a build in a second cache, so other absolute source and
    // object paths, gives the same bytes.
    if std::env::var_os("ECI_KERNEL_BUILD_REPRO").is_some_and(|v| v == "1") {
        let cache = work.path().join("cache2");
        let pkg = &first.tree.sha256;
        let from = Cache::new(Cache::default_location()).path_for(pkg);
        let to = Cache::new(&cache).path_for(pkg);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
        let mut req = request(&work.path().join("repro"));
        req.source.cache = Cache::new(&cache);
        let repro = kernel_build::run(&req).unwrap().built.unwrap();
        assert!(!repro.cached);
        assert_eq!(
            repro.info.image_sha256, built.info.image_sha256,
            "two builds from the same inputs differ"
        );
    }

    // It boots, and the kernel that runs is the one just built.
    let initrd = work.path().join("initramfs.img");
    write_initramfs(&initrd);
    let result = boot::boot(&BootOptions {
        kernel: out.join(KERNEL_IMAGE),
        initramfs: initrd,
        cmdline: vec!["console=ttyS0".into(), "panic=-1".into()],
        memory_mib: 256,
        cpus: 1,
        accel: Accel::Tcg,
        timeout: Duration::from_secs(180),
        console_log: work.path().join("console.log"),
        echo: false,
    })
    .unwrap();
    let console = std::fs::read_to_string(&result.console_log).unwrap_or_default();
    assert!(
        result.selftest.passed(),
        "no self-test line on the console after {:.0} s; console:\n{console}",
        result.seconds
    );
    assert_eq!(
        result.selftest.fact("kernel-release"),
        Some(release.as_str()),
        "{console}"
    );
}

/// `kernel-config/generated/T.config` is exactly what `eci-build kernel build --target T
/// --config-only` makes from the committed fragments and source lock, so a diff of that file
/// shows every change a fragment edit or a new source causes.
#[test]
fn committed_configs_are_what_the_fragments_generate() {
    let missing = kernel_build::missing_host_packages();
    if !prerequisite(
        missing.is_empty(),
        &format!("kernel build dependencies missing: {}", missing.join(" ")),
    ) {
        return;
    }
    let dir = workspace_root().join("kernel-config");
    for target in Target::ALL {
        let committed = Recipe::generated_path(&dir, target);
        let text = std::fs::read_to_string(&committed)
            .unwrap_or_else(|e| panic!("{}: {e}", committed.display()));
        // The file records the compiler it was generated with; another compiler changes
        // toolchain-dependent options, which is a different config, not a stale one.
        let cc = text
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_CC_VERSION_TEXT="))
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        let here = std::process::Command::new("gcc")
            .arg("--version")
            .env("LC_ALL", "C")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default();
        if !prerequisite(
            here == cc,
            &format!(
                "{} was generated with `{cc}`, this machine has `{here}`",
                committed.display()
            ),
        ) {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let copy = work.path().join(format!("{target}.config"));
        std::fs::copy(&committed, &copy).unwrap();
        let mut req = request(work.path());
        req.recipe = Recipe::for_target(target, &dir).unwrap();
        req.committed = Some(copy.clone());
        req.config_only = true;
        let outcome = match kernel_build::run(&req) {
            Ok(o) => o,
            Err(e) => {
                let msg = e.to_string();
                if msg.contains("cannot download")
                    && !prerequisite(false, &format!("Debian mirror unreachable: {msg}"))
                {
                    return;
                }
                panic!("{target}: {msg}");
            }
        };
        assert!(
            outcome.config_changes.is_empty(),
            "{} is stale; run `eci-build kernel build --target {target} --config-only` and commit the result:\n{}",
            committed.display(),
            outcome.config_changes
        );
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), text);
        assert!(outcome.generated.report.is_ok());
    }
}

/// Opt-in (`ECI_KERNEL_BUILD_TARGET=hyperv|qemu|wsl2`; a full build takes about 17 minutes on
/// two idle cores unless it is cached): the target's own kernel, built from the committed
/// config, boots under QEMU and `eci-probe` inside it finds no drift from the target's pins.
#[test]
fn own_target_kernel_boots_and_its_probe_reports_no_drift() {
    let Some(name) = std::env::var_os("ECI_KERNEL_BUILD_TARGET") else {
        eprintln!("opt-in: set ECI_KERNEL_BUILD_TARGET=hyperv (or qemu, wsl2) to run");
        return;
    };
    let name = name.to_string_lossy().into_owned();
    let target: Target = name.parse().unwrap();
    assert!(
        kernel_build::missing_host_packages().is_empty() && boot::qemu_available(),
        "needs the kernel build dependencies and qemu-system-x86"
    );
    let dir = workspace_root().join("kernel-config");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let mut req = request(&out);
    req.recipe = Recipe::for_target(target, &dir).unwrap();
    req.committed = Some(Recipe::generated_path(&dir, target));
    req.echo = true;
    let outcome = kernel_build::run(&req).unwrap();
    let built = outcome.built.unwrap();
    let release = built.info.kernel_release.clone();

    let probe = eci_build::binaries::build(
        &[eci_build::spec::WorkspaceBinary {
            bin: "eci-probe".into(),
            path: "/usr/libexec/eci/eci-probe".into(),
        }],
        &workspace_root(),
        false,
    )
    .unwrap()
    .0
    .remove(0);
    let pins = eci_kernel_config::ImagePins {
        target: name.clone(),
        fragments: target.fragments().iter().map(|f| f.to_string()).collect(),
        kernel_release: release.clone(),
        boot_modules: Vec::new(),
        profile: None,
    };
    let mut m = Manifest::new();
    for dir in [
        "/bin",
        "/dev",
        "/proc",
        "/sys",
        "/etc",
        "/etc/eci",
        "/lib",
        "/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr",
        "/usr/libexec",
        "/usr/libexec/eci",
    ] {
        m.insert(dir, Entry::dir(0o755)).unwrap();
    }
    m.insert(
        "/dev/console",
        Entry::new(EntryKind::CharDevice { major: 5, minor: 1 }, 0o600),
    )
    .unwrap();
    m.insert(
        "/bin/busybox",
        Entry::file(std::fs::read(BUSYBOX).unwrap(), 0o755),
    )
    .unwrap();
    // eci-probe links against the build machine's glibc, which is the VM's (Debian 12).
    for lib in [
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/x86_64-linux-gnu/libgcc_s.so.1",
    ] {
        m.insert(lib, Entry::file(std::fs::read(lib).unwrap(), 0o755))
            .unwrap();
    }
    m.insert(&probe.path, Entry::file(probe.bytes, 0o755))
        .unwrap();
    m.insert(
        eci_kernel_config::IMAGE_PINS_PATH,
        Entry::file(pins.to_json().into_bytes(), 0o644),
    )
    .unwrap();
    // The hardening sysctls the image's init applies (vm-config's sysctl.conf template).
    let sysctls =
        std::fs::read(workspace_root().join("vm-config/templates/sysctl.conf.tera")).unwrap();
    m.insert("/etc/sysctl.conf", Entry::file(sysctls, 0o644))
        .unwrap();
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mount -t proc proc /proc\n\
         /bin/busybox mount -t sysfs sys /sys\n\
         /bin/busybox mount -t securityfs securityfs /sys/kernel/security\n\
         /bin/busybox sysctl -q -p /etc/sysctl.conf\n\
         /bin/busybox echo \"{MARKER}$(/bin/busybox cat /proc/sys/kernel/osrelease)\"\n\
         {} --selftest\n\
         /bin/busybox echo 'ECI-SELFTEST-END status=pass'\n\
         /bin/busybox reboot -f\n",
        probe.path
    );
    m.insert("/init", Entry::file(init.into_bytes(), 0o755))
        .unwrap();
    let initrd = work.path().join("initramfs.img");
    initramfs::write_initramfs(&m, 0, Compression::Gzip, &initrd).unwrap();

    let result = boot::boot(&BootOptions {
        kernel: out.join(KERNEL_IMAGE),
        initramfs: initrd,
        cmdline: vec!["console=ttyS0".into(), "panic=-1".into()],
        memory_mib: 512,
        cpus: 1,
        accel: Accel::Tcg,
        timeout: Duration::from_secs(300),
        console_log: work.path().join("console.log"),
        echo: false,
    })
    .unwrap();
    let console = std::fs::read_to_string(&result.console_log).unwrap_or_default();
    assert_eq!(
        result.selftest.fact("kernel-release"),
        Some(release.as_str()),
        "{console}"
    );
    assert_eq!(
        result.selftest.fact("kernel-drift"),
        Some("none"),
        "{console}"
    );
}
