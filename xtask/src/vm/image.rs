//! The guest image: a Debian trixie root built with debootstrap, turned into an ext4 disk
//! without loop mounts (`mke2fs -d`), the Debian kernel from that root, and a small busybox
//! initrd that loads just the drivers the root needs. Cached in `image-<key>/`, where the key is
//! a hash of everything that shapes the image (this file's recipe and the initrd script).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::proc::{run_ok, run_visible};

/// The Debian release of the guest (bookworm's irecovery 1.0.0 crashes on open; see
/// `../shared/design/VM-BENCH.md`).
pub const SUITE: &str = "trixie";
/// The default mirror.
pub const MIRROR: &str = "http://deb.debian.org/debian";

/// What the guest needs beyond `minbase`: the kernel and module tools, udev (the reference
/// tools rely on its rules and libusb on its hotplug monitor), networking, the USB/IP client,
/// and the reference tools with their libraries.
pub const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "kmod",
    "udev",
    "iproute2",
    "usbip",
    "usbutils",
    "libusb-1.0-0",
    "usbmuxd",
    "libimobiledevice-utils",
    "irecovery",
    "idevicerestore",
    "jq",
    "procps",
];

/// Modules the initrd loads (with their dependencies) to mount the root disk and the run
/// share; everything else is loaded with `modprobe` from the root.
const INITRD_MODULES: &[&str] = &["crc32c_generic", "virtio_blk", "ext4", "9pnet_virtio", "9p"];

const INITRD_INIT: &str = include_str!("initrd-init.sh");

/// Bumped by hand when the build steps below change in a way the hashed text does not show.
const RECIPE_VERSION: u32 = 1;

/// Free space left on the root disk for the guest's writes (they go to a throwaway overlay:
/// qemu runs the disk with `snapshot=on`).
const FREE_MIB: u64 = 256;

/// A built image.
pub struct Image {
    pub key: String,
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub rootfs: PathBuf,
    pub kernel_version: String,
}

/// The text the cache key is the hash of.
pub fn recipe() -> String {
    format!(
        "recipe {RECIPE_VERSION}\nsuite {SUITE}\nvariant minbase\npackages {}\ninitrd modules {}\nfree {FREE_MIB} MiB\n--- initrd init ---\n{INITRD_INIT}",
        PACKAGES.join(","),
        INITRD_MODULES.join(","),
    )
}

/// The cache key: the first 16 hex digits of the recipe's SHA-256.
pub fn key() -> String {
    hex::encode(Sha256::digest(recipe().as_bytes()))[..16].to_owned()
}

impl Image {
    fn at(dir: PathBuf, key: String) -> Result<Self> {
        let kernel_version = fs::read_to_string(dir.join("kernel-version"))
            .with_context(|| format!("reading {}/kernel-version", dir.display()))?
            .trim()
            .to_owned();
        Ok(Self {
            key,
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            rootfs: dir.join("rootfs.ext4"),
            dir,
            kernel_version,
        })
    }

    fn complete(dir: &Path) -> bool {
        [
            "vmlinuz",
            "initrd.img",
            "rootfs.ext4",
            "kernel-version",
            "recipe.txt",
        ]
        .iter()
        .all(|f| dir.join(f).is_file())
    }
}

/// Returns the cached image for this recipe, building it first when absent (or when `rebuild`).
/// The second value is the build time when it was built.
pub fn ensure(cache: &Path, mirror: &str, rebuild: bool) -> Result<(Image, Option<Duration>)> {
    let key = key();
    let dir = cache.join(format!("image-{key}"));
    if !rebuild && Image::complete(&dir) {
        return Ok((Image::at(dir, key)?, None));
    }
    let started = Instant::now();
    require_tools()?;
    let partial = cache.join(format!("image-{key}.partial"));
    remove_tree(&partial)?;
    fs::create_dir_all(&partial)?;
    build(cache, &partial, mirror)?;
    remove_tree(&dir)?;
    fs::rename(&partial, &dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    prune(cache, &key);
    Ok((Image::at(dir, key)?, Some(started.elapsed())))
}

/// The host tools an image build needs, with the Debian packages that provide them.
fn require_tools() -> Result<()> {
    if !is_root() {
        bail!("building the VM image needs root (debootstrap); run as root or provide a cache built elsewhere with RESTATION_VM_CACHE");
    }
    let tools = [
        ("debootstrap", "debootstrap"),
        ("mke2fs", "e2fsprogs"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("gzip", "gzip"),
    ];
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(tool, _)| which(tool).is_none())
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing tools; install them with: apt-get install {}",
            missing.join(" ")
        );
    }
    let busybox = Path::new("/bin/busybox");
    let bytes =
        fs::read(busybox).context("reading /bin/busybox (apt-get install busybox-static)")?;
    if contains(&bytes, b"/lib64/ld-linux") || contains(&bytes, b"/lib/ld-linux") {
        bail!("/bin/busybox is dynamically linked; the initrd needs a static one (apt-get install busybox-static)");
    }
    Ok(())
}

fn build(cache: &Path, partial: &Path, mirror: &str) -> Result<()> {
    let rootfs = partial.join("rootfs");
    let debs = cache.join("debs");
    fs::create_dir_all(&debs)?;
    let log = partial.join("debootstrap.log");
    eprintln!(
        "vm: debootstrap {SUITE} ({} extra packages) from {mirror}; log: {}",
        PACKAGES.len(),
        log.display()
    );
    let t = Instant::now();
    let log_file = fs::File::create(&log)?;
    let result = run_visible(
        "debootstrap",
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(format!("--cache-dir={}", absolute(&debs)?.display()))
            .arg(SUITE)
            .arg(&rootfs)
            .arg(mirror)
            .stdout(log_file.try_clone()?)
            .stderr(log_file),
        Duration::from_secs(45 * 60),
    );
    if let Err(e) = result {
        let text = fs::read_to_string(&log).unwrap_or_default();
        unmount_under(partial);
        bail!("{e:#}\n{}", super::proc::tail(&text, 20));
    }
    unmount_under(partial);
    eprintln!("vm: debootstrap done in {:.0} s", t.elapsed().as_secs_f64());

    let kernel_version = configure_root(&rootfs)?;
    fs::write(
        partial.join("kernel-version"),
        format!("{kernel_version}\n"),
    )?;
    fs::copy(
        rootfs.join(format!("boot/vmlinuz-{kernel_version}")),
        partial.join("vmlinuz"),
    )
    .context("copying the kernel out of the root")?;

    let t = Instant::now();
    build_initrd(&rootfs, &kernel_version, partial)?;
    eprintln!("vm: initrd built in {:.1} s", t.elapsed().as_secs_f64());

    let t = Instant::now();
    let used_kib = du_kib(&rootfs)?;
    let size_mib = used_kib / 1024 * 5 / 4 + FREE_MIB;
    run_ok(
        "mke2fs",
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0"])
            .args(["-L", "benchroot", "-E", "root_owner=0:0", "-d"])
            .arg(&rootfs)
            .arg(partial.join("rootfs.ext4"))
            .arg(format!("{size_mib}M")),
        Duration::from_secs(15 * 60),
    )?;
    eprintln!(
        "vm: rootfs.ext4 ({size_mib} MiB, {} MiB used) in {:.1} s",
        used_kib / 1024,
        t.elapsed().as_secs_f64()
    );
    remove_tree(&rootfs)?;
    fs::write(partial.join("recipe.txt"), recipe())?;
    Ok(())
}

/// Files the bench relies on in the root, and trimming of what it does not need. Returns the
/// kernel version (the one directory under lib/modules).
fn configure_root(rootfs: &Path) -> Result<String> {
    let mut versions: Vec<String> = fs::read_dir(rootfs.join("lib/modules"))
        .context("listing lib/modules in the root")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    let Some(kernel_version) = versions.pop() else {
        bail!("no kernel modules in the root (did linux-image-amd64 install?)");
    };
    fs::create_dir_all(rootfs.join("bench"))?;
    fs::write(rootfs.join("etc/hostname"), "bench\n")?;
    // gs.apple.com on loopback: idevicerestore asks it for signatures; a stand-in answers there.
    fs::write(
        rootfs.join("etc/hosts"),
        "127.0.0.1 localhost bench gs.apple.com\n::1 localhost\n",
    )?;
    for dir in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "var/lib/apt/lists",
    ] {
        clear_dir(&rootfs.join(dir))?;
    }
    // the Debian initramfs is not used (ours is smaller and boots faster under TCG)
    for entry in fs::read_dir(rootfs.join("boot"))? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("initrd.img")
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(kernel_version)
}

/// The busybox initrd: /init, a static busybox, the modules in load order (decompressed: the
/// busybox insmod does not decompress).
fn build_initrd(rootfs: &Path, kernel_version: &str, partial: &Path) -> Result<()> {
    let modules_dir = rootfs.join("lib/modules").join(kernel_version);
    let deps = read_modules_dep(&modules_dir.join("modules.dep"))?;
    let by_name: BTreeMap<String, String> = deps
        .keys()
        .map(|path| (module_name(path), path.clone()))
        .collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in INITRD_MODULES {
        let Some(path) = by_name.get(&normalize(name)) else {
            bail!("module {name} is not in modules.dep of {kernel_version} (built in? then drop it from INITRD_MODULES)");
        };
        visit(path, &deps, &mut seen, &mut order);
    }

    let root = partial.join("initrd-root");
    remove_tree(&root)?;
    fs::create_dir_all(root.join("bin"))?;
    fs::create_dir_all(root.join("lib/modules"))?;
    fs::copy("/bin/busybox", root.join("bin/busybox"))?;
    let init = root.join("init");
    fs::write(&init, INITRD_INIT)?;
    set_mode(&init, 0o755)?;
    let mut load = String::new();
    for path in &order {
        let name = format!("{}.ko", module_name(path));
        let out = fs::File::create(root.join("lib/modules").join(&name))?;
        let src = modules_dir.join(path);
        let tool = if path.ends_with(".xz") {
            Some("xz")
        } else if path.ends_with(".zst") {
            Some("zstd")
        } else {
            None
        };
        match tool {
            Some(tool) => {
                let status = Command::new(tool)
                    .arg("-dc")
                    .arg(&src)
                    .stdout(out)
                    .status()
                    .with_context(|| format!("{tool} -dc {}", src.display()))?;
                if !status.success() {
                    bail!("{tool} -dc {} failed: {status}", src.display());
                }
            }
            None => {
                drop(out);
                fs::copy(&src, root.join("lib/modules").join(&name))?;
            }
        }
        load.push_str(&name);
        load.push('\n');
    }
    fs::write(root.join("modules.load"), load)?;
    let out = partial.join("initrd.img");
    run_ok(
        "cpio",
        Command::new("sh")
            .arg("-c")
            .arg("cd \"$1\" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1 > \"$2\"")
            .arg("sh")
            .arg(&root)
            .arg(absolute(&out)?),
        Duration::from_secs(120),
    )?;
    remove_tree(&root)?;
    Ok(())
}

/// modules.dep: `path: dep dep ...`, paths relative to the modules directory.
fn read_modules_dep(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            Some((
                module.trim().to_owned(),
                deps.split_whitespace().map(str::to_owned).collect(),
            ))
        })
        .collect())
}

/// Dependencies first, each once.
fn visit(
    path: &str,
    deps: &BTreeMap<String, Vec<String>>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(path.to_owned()) {
        return;
    }
    for dep in deps.get(path).into_iter().flatten() {
        visit(dep, deps, seen, order);
    }
    order.push(path.to_owned());
}

/// `kernel/fs/9p/9p.ko.xz` -> `9p`; dashes and underscores are the same to the kernel.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let base = file.split(".ko").next().unwrap_or(file);
    normalize(base)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

fn du_kib(dir: &Path) -> Result<u64> {
    let out = run_ok(
        "du",
        Command::new("du").arg("-sk").arg(dir),
        Duration::from_secs(300),
    )?;
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du -sk output: {text}"))
}

/// Removes a directory tree, first unmounting anything a killed debootstrap left mounted in it.
fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    unmount_under(dir);
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn unmount_under(dir: &Path) {
    let Ok(dir) = absolute(dir) else { return };
    let prefix = dir.to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

fn clear_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Drops other images from the cache (each is a few hundred MiB).
fn prune(cache: &Path, key: &str) {
    let keep = format!("image-{key}");
    let Ok(entries) = fs::read_dir(cache) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("image-") && name != keep && !name.ends_with(".partial") {
            eprintln!("vm: removing the old image {name}");
            let _ = remove_tree(&entry.path());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    // /proc/self/status: "Uid:\treal\teffective\t..."
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_drop_directories_and_compression_suffixes() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz"), "9p");
        assert_eq!(
            module_name("kernel/drivers/usb/usbip/vhci-hcd.ko.zst"),
            "vhci_hcd"
        );
        assert_eq!(module_name("extra/foo.ko"), "foo");
    }

    #[test]
    fn dependencies_load_before_their_users_and_once() {
        let deps = read_modules_dep_text(
            "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n\
             kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n\
             kernel/fs/netfs/netfs.ko.xz:\n",
        );
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        visit(
            "kernel/net/9p/9pnet_virtio.ko.xz",
            &deps,
            &mut seen,
            &mut order,
        );
        visit("kernel/fs/9p/9p.ko.xz", &deps, &mut seen, &mut order);
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(names, ["netfs", "9pnet", "9pnet_virtio", "9p"]);
    }

    #[test]
    fn the_key_changes_with_the_recipe_and_is_stable() {
        assert_eq!(key(), key());
        assert_eq!(key().len(), 16);
        assert!(recipe().contains("irecovery"));
        assert!(recipe().contains(INITRD_INIT));
    }

    fn read_modules_dep_text(text: &str) -> BTreeMap<String, Vec<String>> {
        let dir = std::env::temp_dir().join(format!("xtask-modules-dep-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("modules.dep");
        fs::write(&path, text).unwrap();
        let deps = read_modules_dep(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        deps
    }
}
