//! `restation ipsw …`: inspect an IPSW or BuildManifest, pick the build identity for a device,
//! write synthetic IPSWs, and stage/list/verify IPSWs in the firmware store.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use ipsw::store::{Phase, Progress};
use ipsw::{
    BuildIdentity, BuildManifest, DeviceMatch, Digest, RestoreBehavior, RestoreInfo, StageOptions,
    Store, VerifyOutcome,
};
use serde::Serialize;

/// `println!` that does not panic when stdout is a closed pipe (`| head`).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

#[derive(Debug, Args)]
pub struct IpswArgs {
    #[command(subcommand)]
    command: IpswCommand,
}

#[derive(Debug, Args)]
struct StoreArg {
    /// Firmware store folder [default: $RESTATION_STORE, else $XDG_CACHE_HOME/restation/ipsw,
    /// else ~/.cache/restation/ipsw; the service uses /var/cache/restation/ipsw].
    #[arg(long, value_name = "DIR")]
    store: Option<PathBuf>,
}

impl StoreArg {
    fn open(&self) -> anyhow::Result<Store> {
        let root = self.store.clone().unwrap_or_else(Store::default_root);
        Ok(Store::open(&root)?)
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Behavior {
    Erase,
    Update,
}

impl From<Behavior> for RestoreBehavior {
    fn from(b: Behavior) -> Self {
        match b {
            Behavior::Erase => RestoreBehavior::Erase,
            Behavior::Update => RestoreBehavior::Update,
        }
    }
}

#[derive(Debug, Subcommand)]
enum IpswCommand {
    /// Version, build, product types, every build identity and its components.
    Inspect {
        /// An .ipsw, or a BuildManifest.plist.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The build identity a restore of this device would use.
    Select {
        /// An .ipsw, or a BuildManifest.plist.
        path: PathBuf,
        /// ApChipID, e.g. 0x8110.
        #[arg(long, value_parser = parse_hex, required_unless_present = "device_class")]
        cpid: Option<u32>,
        /// ApBoardID, e.g. 0x0E.
        #[arg(long, value_parser = parse_hex, requires = "cpid")]
        bdid: Option<u32>,
        /// Or select by board config (DeviceClass), e.g. d64ap.
        #[arg(long, conflicts_with = "cpid")]
        device_class: Option<String>,
        /// Erase (clean install) or update.
        #[arg(long, value_enum, default_value = "erase")]
        behavior: Behavior,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a synthetic, well-formed IPSW (correct digests, IM4P components, streamed OS).
    Synth {
        /// Product type, e.g. iPhone14,3.
        #[arg(long)]
        profile: String,
        /// OS image size, e.g. 64M, 2G.
        #[arg(long, default_value = "64M")]
        os_size: String,
        /// Output file.
        out: PathBuf,
    },
    /// Copy or download an IPSW into the store, verifying hashes and every component digest.
    Stage {
        /// A local path or an http(s) URL.
        source: String,
        /// Expected whole-file SHA-1 (hex).
        #[arg(long)]
        sha1: Option<String>,
        /// Expected whole-file SHA-256 (hex).
        #[arg(long)]
        sha256: Option<String>,
        #[command(flatten)]
        store: StoreArg,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Staged IPSWs.
    List {
        #[command(flatten)]
        store: StoreArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-check staged IPSWs (all, or one id prefix); a mismatch is quarantined.
    Verify {
        /// Id (SHA-256) or a unique prefix of it.
        id: Option<String>,
        #[command(flatten)]
        store: StoreArg,
    },
}

fn parse_hex(s: &str) -> Result<u32, String> {
    ipsw::manifest::parse_int(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| format!("{s:?} is not a number (e.g. 0x8110)"))
}

pub fn run(args: &IpswArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        IpswCommand::Inspect { path, json } => inspect(path, *json),
        IpswCommand::Select {
            path,
            cpid,
            bdid,
            device_class,
            behavior,
            json,
        } => {
            let device = match (cpid, bdid, device_class) {
                (Some(cpid), Some(bdid), _) => DeviceMatch::Chip {
                    cpid: *cpid,
                    bdid: *bdid,
                },
                (_, _, Some(c)) => DeviceMatch::DeviceClass(c.clone()),
                _ => anyhow::bail!("give --cpid and --bdid, or --device-class"),
            };
            select(path, &device, (*behavior).into(), *json)
        }
        IpswCommand::Synth {
            profile,
            os_size,
            out,
        } => synth(profile, os_size, out),
        IpswCommand::Stage {
            source,
            sha1,
            sha256,
            store,
            json,
        } => stage(source, sha1, sha256, &store.open()?, *json),
        IpswCommand::List { store, json } => list(&store.open()?, *json),
        IpswCommand::Verify { id, store } => verify(&store.open()?, id.as_deref()),
    }
}

#[derive(Serialize)]
struct ComponentView<'a> {
    name: &'a str,
    path: Option<&'a str>,
    digest_algorithm: Option<&'static str>,
    digest: Option<String>,
    loaded_by_iboot: bool,
    loaded_by_iboot_stage1: bool,
    trusted: bool,
    hash_method: Option<&'a str>,
}

#[derive(Serialize)]
struct IdentityView<'a> {
    ap_chip_id: String,
    ap_board_id: String,
    ap_security_domain: u32,
    device_class: &'a str,
    restore_behavior: RestoreBehavior,
    variant: &'a str,
    build_number: Option<&'a str>,
    components: Vec<ComponentView<'a>>,
}

fn identity_view(id: &BuildIdentity) -> IdentityView<'_> {
    IdentityView {
        ap_chip_id: format!("0x{:04X}", id.ap_chip_id),
        ap_board_id: format!("0x{:02X}", id.ap_board_id),
        ap_security_domain: id.ap_security_domain,
        device_class: &id.info.device_class,
        restore_behavior: id.info.restore_behavior,
        variant: &id.info.variant,
        build_number: id.info.build_number.as_deref(),
        components: id
            .components
            .iter()
            .map(|c| ComponentView {
                name: &c.name,
                path: c.path.as_deref(),
                digest_algorithm: c.digest.as_ref().map(|d| d.algorithm().name()),
                digest: c.digest.as_ref().map(Digest::to_hex),
                loaded_by_iboot: c.is_loaded_by_iboot,
                loaded_by_iboot_stage1: c.is_loaded_by_iboot_stage1,
                trusted: c.trusted,
                hash_method: c.hash_method.as_deref(),
            })
            .collect(),
    }
}

#[derive(Serialize)]
struct InspectView<'a> {
    product_version: &'a str,
    product_build_version: &'a str,
    supported_product_types: &'a [String],
    restore: Option<&'a RestoreInfo>,
    identities: Vec<IdentityView<'a>>,
}

fn print_identity(index: Option<usize>, id: &BuildIdentity) {
    let n = index.map(|i| format!("[{i}] ")).unwrap_or_default();
    out!(
        "{n}ApChipID 0x{:04X}  ApBoardID 0x{:02X}  {}  {}  {}",
        id.ap_chip_id,
        id.ap_board_id,
        id.info.device_class,
        id.info.restore_behavior,
        id.info.variant
    );
    for c in &id.components {
        let alg = c
            .digest
            .as_ref()
            .map(|d| d.algorithm().name())
            .unwrap_or("-");
        let iboot = match (c.is_loaded_by_iboot, c.is_loaded_by_iboot_stage1) {
            (_, true) => "iBoot stage1",
            (true, false) => "iBoot",
            _ => "",
        };
        out!(
            "    {:<34} {:<7} {:<12} {}",
            c.name,
            alg,
            iboot,
            c.path.as_deref().unwrap_or("-")
        );
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<(BuildManifest, Option<RestoreInfo>)> {
    ipsw::read_manifest(path).with_context(|| format!("reading {}", path.display()))
}

fn inspect(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let (m, r) = load(path)?;
    if json {
        let view = InspectView {
            product_version: &m.product_version,
            product_build_version: &m.product_build_version,
            supported_product_types: &m.supported_product_types,
            restore: r.as_ref(),
            identities: m.identities.iter().map(identity_view).collect(),
        };
        out!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    out!("iOS {} ({})", m.product_version, m.product_build_version);
    out!("product types: {}", m.supported_product_types.join(", "));
    if let Some(r) = &r {
        for d in &r.device_map {
            out!(
                "device map: CPID 0x{:04X} BDID 0x{:02X} {} {}",
                d.cpid,
                d.bdid,
                d.board_config,
                d.platform.as_deref().unwrap_or("")
            );
        }
    }
    out!("build identities: {}", m.identities.len());
    for (i, id) in m.identities.iter().enumerate() {
        print_identity(Some(i), id);
    }
    Ok(ExitCode::SUCCESS)
}

fn select(
    path: &std::path::Path,
    device: &DeviceMatch,
    behavior: RestoreBehavior,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (m, _) = load(path)?;
    let id = m.select(device, behavior)?;
    if json {
        out!("{}", serde_json::to_string_pretty(&identity_view(id))?);
    } else {
        out!(
            "iOS {} ({}) for {device}, {behavior}:",
            m.product_version,
            m.product_build_version
        );
        print_identity(None, id);
    }
    Ok(ExitCode::SUCCESS)
}

fn synth(product: &str, os_size: &str, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let profile = ipsw::profile::profile(product).ok_or_else(|| ipsw::Error::UnknownProfile {
        product_type: product.to_owned(),
        known: ipsw::profile::PROFILES
            .iter()
            .map(|p| p.product_type.to_owned())
            .collect(),
    })?;
    let os_size = ipsw::synth::parse_size(os_size)?;
    let summary = ipsw::synth::synthesize(profile, &ipsw::synth::SynthOptions { os_size }, out)?;
    out!(
        "wrote {} ({} bytes, {} members, {} components per identity, {} {} {})",
        out.display(),
        summary.size,
        summary.members,
        summary.components,
        profile.product_type,
        profile.product_version,
        profile.build
    );
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on a terminal, a plain line every few seconds otherwise.
struct Reporter {
    bar: Option<indicatif::ProgressBar>,
    last: Mutex<(Instant, Option<Phase>)>,
}

impl Reporter {
    fn new() -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Reporter {
            bar,
            last: Mutex::new((Instant::now(), None)),
        }
    }

    fn report(&self, p: Progress) {
        let phase = match p.phase {
            Phase::Waiting => "waiting",
            Phase::Download => "download",
            Phase::Verify => "verify",
        };
        if let Some(bar) = &self.bar {
            if let Some(t) = p.total {
                bar.set_length(t);
            }
            bar.set_message(phase);
            bar.set_position(p.done);
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let finished = p.total == Some(p.done);
        if last.1 != Some(p.phase) || finished || last.0.elapsed() >= Duration::from_secs(5) {
            let total = p.total.map(|t| format!(" of {t}")).unwrap_or_default();
            if p.phase == Phase::Waiting {
                eprintln!("waiting: another staging of this source is running");
            } else {
                eprintln!("{phase}: {} bytes{total}", p.done);
            }
            *last = (Instant::now(), Some(p.phase));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn stage(
    source: &str,
    sha1: &Option<String>,
    sha256: &Option<String>,
    store: &Store,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let parse = |h: &Option<String>, len: usize, what: &str| -> anyhow::Result<Option<Digest>> {
        h.as_deref()
            .map(|h| {
                let d = Digest::from_hex(h)?;
                anyhow::ensure!(
                    d.as_bytes().len() == len,
                    "--{what} must be {} hex digits",
                    len * 2
                );
                Ok(d)
            })
            .transpose()
    };
    let reporter = Reporter::new();
    let report = |p: Progress| reporter.report(p);
    let opts = StageOptions {
        sha1: parse(sha1, 20, "sha1")?,
        sha256: parse(sha256, 32, "sha256")?,
        progress: Some(&report),
        wrap_sink: None,
    };
    let started = Instant::now();
    let result = if source.starts_with("http://") || source.starts_with("https://") {
        store.stage_url(source, &opts)
    } else {
        store.stage_file(std::path::Path::new(source), &opts)
    };
    reporter.finish();
    let staged = result.with_context(|| format!("staging {source}"))?;
    if json {
        out!("{}", serde_json::to_string_pretty(&staged.record)?);
    } else {
        let r = &staged.record;
        if staged.already {
            out!("already staged: {}", staged.path.display());
        } else {
            out!(
                "staged {} in {:.1}s: iOS {} ({}), {} bytes, {} component digests checked{}",
                staged.path.display(),
                started.elapsed().as_secs_f64(),
                r.product_version,
                r.product_build_version,
                r.size,
                r.components_checked,
                if r.components_skipped.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (not over member bytes, skipped: {})",
                        r.components_skipped.join(", ")
                    )
                }
            );
        }
        out!("sha1   {}\nsha256 {}", r.sha1, r.sha256);
    }
    Ok(ExitCode::SUCCESS)
}

fn list(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let records = store.list()?;
    if json {
        out!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        out!("no IPSW staged in {}", store.root().display());
    }
    for r in &records {
        let boards: Vec<String> = {
            let mut b: Vec<String> = r
                .identities
                .iter()
                .map(|i| i.device_class.clone())
                .collect();
            b.dedup();
            b
        };
        out!(
            "{}  {:<8} {:<8} {:>12}  {}  {}",
            &r.id[..16.min(r.id.len())],
            r.product_version,
            r.product_build_version,
            r.size,
            boards.join(","),
            r.original_name
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(store: &Store, id: Option<&str>) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = match id {
        Some(id) => vec![store.find(id)?.id],
        None => store.list()?.into_iter().map(|r| r.id).collect(),
    };
    let reporter = Reporter::new();
    let report = |p: Progress| reporter.report(p);
    let mut bad = 0;
    for id in &ids {
        match store.verify(id, Some(&report))? {
            VerifyOutcome::Intact(r) => {
                reporter.finish();
                out!(
                    "ok          {}  iOS {} ({})",
                    r.id,
                    r.product_version,
                    r.product_build_version
                );
            }
            VerifyOutcome::Quarantined {
                record,
                reason,
                moved_to,
            } => {
                reporter.finish();
                bad += 1;
                out!(
                    "QUARANTINED {}: {reason}; moved to {}",
                    record.id,
                    moved_to.display()
                );
            }
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
