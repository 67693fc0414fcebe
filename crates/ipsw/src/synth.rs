//! Synthetic IPSWs: well-formed zips (zip64 when needed) with a BuildManifest shaped like the
//! real ones of the profile's generation, IM4P-wrapped components whose digests are correct,
//! and an OS image of any size generated in a stream (deterministic pseudo-random bytes).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use plist::{Dictionary, Value};

use crate::archive::Method;
use crate::digest::{Algorithm, Digest};
use crate::error::Error;
use crate::im4p::Im4p;
use crate::manifest::RestoreBehavior;
use crate::profile::{Era, Profile};
use crate::zipwrite::ZipWriter;

/// What a synthetic IPSW holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthOptions {
    /// Size of the OS image member in bytes.
    pub os_size: u64,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    /// Bytes in the zip.
    pub size: u64,
    /// Members written.
    pub members: usize,
    /// Components per identity.
    pub components: usize,
}

/// Parse `4096`, `64K`, `64M`, `2G` (binary units, optional `iB`/`B`).
pub fn parse_size(text: &str) -> Result<u64, Error> {
    let t = text.trim();
    let bad = || Error::Size {
        text: text.to_owned(),
    };
    let upper = t.to_ascii_uppercase();
    let stripped = upper.trim_end_matches("IB").trim_end_matches('B');
    let (digits, shift) = match stripped.chars().last() {
        Some('K') => (&stripped[..stripped.len() - 1], 10),
        Some('M') => (&stripped[..stripped.len() - 1], 20),
        Some('G') => (&stripped[..stripped.len() - 1], 30),
        Some('T') => (&stripped[..stripped.len() - 1], 40),
        _ => (stripped, 0),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// Deterministic fast pseudo-random bytes (SplitMix64), seeded by a name.
#[derive(Debug, Clone)]
pub struct Noise(u64);

impl Noise {
    /// A generator seeded from `seed`.
    pub fn new(seed: &str) -> Noise {
        let d = Algorithm::Sha1.digest(seed.as_bytes());
        let mut s = [0u8; 8];
        s.copy_from_slice(d.as_bytes().get(..8).unwrap_or(&[0; 8]));
        Noise(u64::from_le_bytes(s))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Fill `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// `len` bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

#[derive(Debug, Clone)]
enum Content {
    /// IM4P with this 4-char type and payload size.
    Im4p(&'static str, usize),
    /// The OS image (streamed).
    Os,
    /// Raw bytes of this size (baseband, maps).
    Raw(usize),
    /// No member (personalized-only components like ftap).
    NoMember,
}

#[derive(Debug, Clone)]
struct Spec {
    name: &'static str,
    path: String,
    content: Content,
    digest: Option<Algorithm>,
    trusted: bool,
    firmware_payload: bool,
    fud: bool,
    stage1: bool,
    payload_type: Option<&'static str>,
}

fn specs(p: &Profile, behavior: RestoreBehavior, ramdisk_size: usize) -> Vec<Spec> {
    let b = p.board;
    let bc = p.board_config;
    let alg = p.algorithm;
    let (os, erase_rd, update_rd) = dmg_names(p);
    let rd = match behavior {
        RestoreBehavior::Erase => erase_rd,
        RestoreBehavior::Update => update_rd,
    };
    let flash = match p.era {
        Era::Sha1Img4 => format!("Firmware/all_flash/all_flash.{bc}.production"),
        _ => "Firmware/all_flash".to_owned(),
    };
    let s = |name: &'static str, path: String, content: Content| Spec {
        name,
        path,
        content,
        digest: Some(alg),
        trusted: true,
        firmware_payload: false,
        fud: false,
        stage1: false,
        payload_type: None,
    };
    let fw = |name: &'static str, path: String, tag: &'static str, size: usize| Spec {
        firmware_payload: true,
        ..s(name, path, Content::Im4p(tag, size))
    };
    let restore =
        |name: &'static str, path: String, tag: &'static str, size, pt: &'static str| Spec {
            payload_type: Some(pt),
            ..s(name, path, Content::Im4p(tag, size))
        };
    let personal = |name: &'static str| Spec {
        digest: None,
        ..s(name, String::new(), Content::NoMember)
    };
    let mut v = vec![
        s(
            "iBSS",
            format!("Firmware/dfu/iBSS.{b}.RELEASE.im4p"),
            Content::Im4p("ibss", 48 << 10),
        ),
        s(
            "iBEC",
            format!("Firmware/dfu/iBEC.{b}.RELEASE.im4p"),
            Content::Im4p("ibec", 48 << 10),
        ),
        fw(
            "LLB",
            format!("{flash}/LLB.{b}.RELEASE.im4p"),
            "illb",
            48 << 10,
        ),
        fw(
            "iBoot",
            format!("{flash}/iBoot.{b}.RELEASE.im4p"),
            "ibot",
            64 << 10,
        ),
        fw(
            "DeviceTree",
            format!("{flash}/DeviceTree.{bc}.im4p"),
            "dtre",
            16 << 10,
        ),
        restore(
            "RestoreDeviceTree",
            format!("{flash}/DeviceTree.{bc}.im4p"),
            "dtre",
            16 << 10,
            "rdtr",
        ),
        s(
            "KernelCache",
            format!("kernelcache.release.{b}"),
            Content::Im4p("krnl", 256 << 10),
        ),
        restore(
            "RestoreKernelCache",
            format!("kernelcache.release.{b}"),
            "krnl",
            256 << 10,
            "rkrn",
        ),
        fw(
            "AppleLogo",
            format!("{flash}/applelogo@2x~iphone.im4p"),
            "logo",
            8 << 10,
        ),
        restore(
            "RestoreLogo",
            format!("{flash}/applelogo@2x~iphone.im4p"),
            "logo",
            8 << 10,
            "rlgo",
        ),
        fw(
            "RecoveryMode",
            format!("{flash}/recoverymode@1334~iphone-lightning.im4p"),
            "recm",
            8 << 10,
        ),
        fw(
            "BatteryCharging0",
            format!("{flash}/batterycharging0@2x~iphone.im4p"),
            "chg0",
            4 << 10,
        ),
        fw(
            "BatteryCharging1",
            format!("{flash}/batterycharging1@2x~iphone.im4p"),
            "chg1",
            4 << 10,
        ),
        fw(
            "BatteryFull",
            format!("{flash}/batteryfull@2x~iphone.im4p"),
            "batF",
            4 << 10,
        ),
        fw(
            "BatteryLow0",
            format!("{flash}/batterylow0@2x~iphone.im4p"),
            "bat0",
            4 << 10,
        ),
        fw(
            "BatteryLow1",
            format!("{flash}/batterylow1@2x~iphone.im4p"),
            "bat1",
            4 << 10,
        ),
        fw(
            "BatteryPlugin",
            format!("{flash}/glyphplugin@1334~iphone-lightning.im4p"),
            "glyP",
            4 << 10,
        ),
        Spec {
            payload_type: Some("rsep"),
            ..s(
                "RestoreSEP",
                format!("{flash}/sep-firmware.{b}.RELEASE.im4p"),
                Content::Im4p("sepi", 32 << 10),
            )
        },
        s(
            "SEP",
            format!("{flash}/sep-firmware.{b}.RELEASE.im4p"),
            Content::Im4p("sepi", 32 << 10),
        ),
        s(
            "RestoreRamDisk",
            rd.clone(),
            Content::Im4p("rdsk", ramdisk_size),
        ),
        Spec {
            digest: (p.era != Era::Sha1Img4).then_some(alg),
            trusted: p.era != Era::Sha1Img4,
            ..s("OS", os.clone(), Content::Os)
        },
        Spec {
            digest: None,
            trusted: false,
            ..s(
                "BasebandFirmware",
                format!("Firmware/{}-1.00.00.Release.bbfw", b.to_uppercase()),
                Content::Raw(16 << 10),
            )
        },
        personal("ftap"),
        personal("ftsp"),
        personal("rfta"),
        personal("rfts"),
    ];
    if p.era != Era::Sha1Img4 {
        v.push(Spec {
            fud: true,
            trusted: false,
            ..s(
                "AOP",
                format!("Firmware/AOP/aopfw-{}aop.im4p", p.platform),
                Content::Im4p("aopf", 32 << 10),
            )
        });
        v.push(fw(
            "Liquid",
            format!("{flash}/liquiddetect@1334~iphone-lightning.im4p"),
            "liqd",
            4 << 10,
        ));
        v.push(Spec {
            fud: true,
            ..s(
                "StaticTrustCache",
                format!("Firmware/{os}.trustcache"),
                Content::Im4p("trst", 4 << 10),
            )
        });
        v.push(Spec {
            fud: true,
            payload_type: Some("rtsc"),
            ..s(
                "RestoreTrustCache",
                format!("Firmware/{rd}.trustcache"),
                Content::Im4p("trst", 4 << 10),
            )
        });
    }
    if p.era == Era::A15 {
        let fud = |name: &'static str, path: String, tag: &'static str| Spec {
            fud: true,
            ..s(name, path, Content::Im4p(tag, 16 << 10))
        };
        v.push(fud(
            "ANE",
            format!("Firmware/ane/{}_ane_fw.im4p", p.platform),
            "anef",
        ));
        v.push(Spec {
            stage1: true,
            ..fw(
                "ANS",
                format!("Firmware/ansf.{}.release.im4p", p.platform),
                "ansf",
                16 << 10,
            )
        });
        v.push(fud(
            "AVE",
            format!("Firmware/ave/AppleAVE2FW_{}.im4p", p.platform),
            "avef",
        ));
        v.push(fud(
            "GFX",
            format!("Firmware/agx/armfw_{}.im4p", p.platform),
            "gfxf",
        ));
        v.push(fud(
            "ISP",
            format!("Firmware/isp_bni/adc-{}.im4p", p.platform),
            "ispf",
        ));
        v.push(Spec {
            stage1: true,
            ..fud("DCP", format!("Firmware/dcp/{b}dcp.im4p"), "dcpf")
        });
        v.push(Spec {
            stage1: true,
            ..fud(
                "iBootData",
                format!("{flash}/iBootData.{b}.RELEASE.im4p"),
                "ibdt",
            )
        });
        v.push(fud(
            "Ap,SystemVolumeCanonicalMetadata",
            format!("Firmware/{os}.mtree"),
            "msys",
        ));
        v.push(fud(
            "Rap,RTKitOS",
            "Firmware/Rose/r1p2/ftab.bin".into(),
            "rkos",
        ));
        v.push(fud(
            "Rap,SoftwareBinaryDsp1",
            "Firmware/Rose/r1p2/ftab.bin".into(),
            "rkos",
        ));
        v.push(Spec {
            digest: Some(Algorithm::Sha256),
            trusted: false,
            ..s(
                "BMU,FirmwareMap",
                "Firmware/Veridian/FirmwareMap.plist".into(),
                Content::Raw(2 << 10),
            )
        });
    }
    // Everything iBoot loads is flagged from the A10 on.
    v
}

fn dmg_names(p: &Profile) -> (String, String, String) {
    let base = p.cpid % 1000;
    (
        format!("078-{base:03}01-001.dmg"),
        format!("078-{base:03}02-001.dmg"),
        format!("078-{base:03}03-001.dmg"),
    )
}

/// Write a synthetic IPSW for `profile` to `out`.
pub fn synthesize(
    profile: &Profile,
    options: &SynthOptions,
    out: &Path,
) -> Result<SynthSummary, Error> {
    let file = File::create(out).map_err(Error::io("create", out))?;
    let mut zip = ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let werr = Error::io("write", out);
    let ramdisk_size = (options.os_size / 16).clamp(64 << 10, 32 << 20) as usize;
    let erase = specs(profile, RestoreBehavior::Erase, ramdisk_size);
    let update = specs(profile, RestoreBehavior::Update, ramdisk_size);

    // Every member once, its digests per algorithm.
    let mut digests: BTreeMap<(String, Algorithm), Digest> = BTreeMap::new();
    let mut written: BTreeMap<String, ()> = BTreeMap::new();
    let algs = [profile.algorithm, Algorithm::Sha256];
    let result: std::io::Result<()> = (|| {
        for spec in erase.iter().chain(update.iter()) {
            if spec.path.is_empty() || written.contains_key(&spec.path) {
                continue;
            }
            written.insert(spec.path.clone(), ());
            let mut noise = Noise::new(&format!("{}:{}", profile.product_type, spec.path));
            match &spec.content {
                Content::NoMember => {}
                Content::Os => {
                    let mut hashers: Vec<_> = match spec.digest {
                        Some(a) => vec![a.hasher()],
                        None => vec![],
                    };
                    zip.add_stream(
                        &spec.path,
                        options.os_size,
                        |buf| noise.fill(buf),
                        |chunk| hashers.iter_mut().for_each(|h| h.update(chunk)),
                    )?;
                    for h in hashers {
                        let d = h.finish();
                        digests.insert((spec.path.clone(), d.algorithm()), d);
                    }
                }
                Content::Raw(size) | Content::Im4p(_, size) => {
                    let payload = noise.bytes(*size);
                    let bytes = match spec.content {
                        Content::Im4p(tag, _) => Im4p::new(
                            tag,
                            &format!("{}-synthetic-{}", spec.name, profile.build),
                            payload,
                        )
                        .encode(),
                        _ => payload,
                    };
                    for a in algs {
                        digests.insert((spec.path.clone(), a), a.digest(&bytes));
                    }
                    let method = if spec.path.starts_with("Firmware/all_flash")
                        || spec.path.ends_with(".plist")
                    {
                        Method::Deflated
                    } else {
                        Method::Stored
                    };
                    zip.add_bytes(&spec.path, &bytes, method)?;
                }
            }
        }
        Ok(())
    })();
    result.map_err(Error::io("write", out))?;

    let manifest = build_manifest(
        profile,
        &[
            (&erase, RestoreBehavior::Erase),
            (&update, RestoreBehavior::Update),
        ],
        &digests,
    );
    let restore = restore_plist(profile);
    let mut members = written.len();
    for (name, value) in [
        ("BuildManifest.plist", manifest),
        ("Restore.plist", restore),
    ] {
        let mut xml = Vec::new();
        plist::to_writer_xml(&mut xml, &value).map_err(|e| Error::Plist {
            file: "BuildManifest.plist",
            source: e,
        })?;
        zip.add_bytes(name, &xml, Method::Deflated)
            .map_err(Error::io("write", out))?;
        members += 1;
    }
    let w = zip.finish().map_err(werr)?;
    let file = w.into_inner().map_err(|e| Error::Io {
        op: "write",
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    let size = file.metadata().map_err(Error::io("stat", out))?.len();
    Ok(SynthSummary {
        size,
        members,
        components: erase.len(),
    })
}

fn hexs(n: u32, width: usize) -> Value {
    Value::String(format!("0x{n:0width$X}"))
}

fn build_manifest(
    p: &Profile,
    identities: &[(&Vec<Spec>, RestoreBehavior)],
    digests: &BTreeMap<(String, Algorithm), Digest>,
) -> Value {
    let mut ids = Vec::new();
    for (specs, behavior) in identities {
        let mut manifest = Dictionary::new();
        for spec in specs.iter() {
            let mut c = Dictionary::new();
            if let Some(a) = spec.digest {
                if let Some(d) = digests.get(&(spec.path.clone(), a)) {
                    c.insert("Digest".into(), Value::Data(d.as_bytes().to_vec()));
                }
            }
            if spec.trusted {
                c.insert("Trusted".into(), Value::Boolean(true));
            }
            let mut info = Dictionary::new();
            if !spec.path.is_empty() {
                info.insert("Path".into(), Value::String(spec.path.clone()));
            }
            if spec.firmware_payload {
                info.insert("IsFirmwarePayload".into(), Value::Boolean(true));
            }
            if spec.fud {
                info.insert("IsFUDFirmware".into(), Value::Boolean(true));
            }
            if p.era != Era::Sha1Img4 {
                info.insert(
                    "IsLoadedByiBoot".into(),
                    Value::Boolean(spec.firmware_payload || spec.fud || spec.stage1),
                );
                info.insert("Personalize".into(), Value::Boolean(spec.trusted));
            }
            if p.era == Era::A15 {
                info.insert("IsLoadedByiBootStage1".into(), Value::Boolean(spec.stage1));
            }
            if let Some(pt) = spec.payload_type {
                info.insert("Img4PayloadType".into(), Value::String(pt.into()));
            }
            c.insert("Info".into(), Value::Dictionary(info));
            manifest.insert(spec.name.into(), Value::Dictionary(c));
        }
        let mut info = Dictionary::new();
        info.insert("BuildNumber".into(), Value::String(p.build.into()));
        info.insert("BuildTrain".into(), Value::String("Synthetic".into()));
        info.insert("DeviceClass".into(), Value::String(p.board_config.into()));
        info.insert("FDRSupport".into(), Value::Boolean(true));
        info.insert("MinimumSystemPartition".into(), Value::Integer(4096.into()));
        info.insert(
            "RestoreBehavior".into(),
            Value::String(behavior.as_str().into()),
        );
        let variant = match behavior {
            RestoreBehavior::Erase => "Customer Erase Install (IPSW)",
            RestoreBehavior::Update => "Customer Upgrade Install (IPSW)",
        };
        info.insert("Variant".into(), Value::String(variant.into()));
        info.insert(
            "VariantContents".into(),
            Value::Dictionary(Dictionary::new()),
        );
        let mut id = Dictionary::new();
        id.insert("ApBoardID".into(), hexs(p.bdid, 2));
        id.insert("ApChipID".into(), hexs(p.cpid, 4));
        id.insert("ApSecurityDomain".into(), hexs(1, 2));
        id.insert("Info".into(), Value::Dictionary(info));
        id.insert("Manifest".into(), Value::Dictionary(manifest));
        let ubid = p
            .algorithm
            .digest(format!("{}{}{}", p.product_type, p.build, behavior).as_bytes());
        id.insert(
            "UniqueBuildID".into(),
            Value::Data(ubid.as_bytes().to_vec()),
        );
        ids.push(Value::Dictionary(id));
    }
    let mut root = Dictionary::new();
    root.insert("BuildIdentities".into(), Value::Array(ids));
    root.insert("ManifestVersion".into(), Value::Integer(0.into()));
    root.insert("ProductBuildVersion".into(), Value::String(p.build.into()));
    root.insert(
        "ProductVersion".into(),
        Value::String(p.product_version.into()),
    );
    root.insert(
        "SupportedProductTypes".into(),
        Value::Array(vec![Value::String(p.product_type.into())]),
    );
    Value::Dictionary(root)
}

fn restore_plist(p: &Profile) -> Value {
    let (os, erase_rd, update_rd) = dmg_names(p);
    let mut dev = Dictionary::new();
    dev.insert("BDID".into(), Value::Integer(u64::from(p.bdid).into()));
    dev.insert("BoardConfig".into(), Value::String(p.board_config.into()));
    dev.insert("CPID".into(), Value::Integer(u64::from(p.cpid).into()));
    dev.insert("Platform".into(), Value::String(p.platform.into()));
    dev.insert("SCEP".into(), Value::Integer(0.into()));
    let mut rd = Dictionary::new();
    rd.insert("Update".into(), Value::String(update_rd));
    rd.insert("User".into(), Value::String(erase_rd));
    let mut sys = Dictionary::new();
    sys.insert("User".into(), Value::String(os));
    let mut root = Dictionary::new();
    root.insert("DeviceClass".into(), Value::String("iPhone".into()));
    root.insert(
        "DeviceMap".into(),
        Value::Array(vec![Value::Dictionary(dev)]),
    );
    root.insert("ProductBuildVersion".into(), Value::String(p.build.into()));
    root.insert("ProductType".into(), Value::String(p.product_type.into()));
    root.insert(
        "ProductVersion".into(),
        Value::String(p.product_version.into()),
    );
    root.insert("RestoreRamDisks".into(), Value::Dictionary(rd));
    root.insert(
        "SupportedProductTypes".into(),
        Value::Array(vec![Value::String(p.product_type.into())]),
    );
    root.insert("SystemRestoreImages".into(), Value::Dictionary(sys));
    Value::Dictionary(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn noise_is_deterministic() {
        let a = Noise::new("x").bytes(33);
        assert_eq!(a, Noise::new("x").bytes(33));
        assert_ne!(a, Noise::new("y").bytes(33));
    }
}
