//! Whole conversations on loopback: a synthetic IPSW's build identity and a virtual phone's
//! profile → request → stand-in → ticket → IMG4 → the phone's check.

use std::time::Duration;

use ipsw::archive::Archive;
use ipsw::{profile, synth, DeviceMatch, RestoreBehavior};
use sim::check::{ImageContext, ImageKind, Verdict};
use sim::profile::{DfuStage, Profile};
use tss::client::{Client, Config};
use tss::error::{TransportError, TssError};
use tss::img4::{Im4r, Img4};
use tss::request::{Device, Request};
use tss::standin::{Signer, Standin};
use tss::verify::{image_check, DeviceState, Refusal, TicketCheck};

struct Fixture {
    _dir: tempfile::TempDir,
    identity: ipsw::BuildIdentity,
    ibss: Vec<u8>,
    phone: Profile,
}

impl Fixture {
    fn device(&self) -> Device {
        Device {
            ecid: self.phone.ecid,
            ap_nonce: self.phone.ap_nonce.clone(),
            sep_nonce: self.phone.sep_nonce.clone(),
            chip_id: self.phone.chip_id,
            board_id: self.phone.board_id,
            security_domain: self.phone.security_domain,
            production_mode: true,
            security_mode: true,
        }
    }

    fn state(&self) -> DeviceState<'_> {
        DeviceState {
            ecid: self.phone.ecid,
            ap_nonce: &self.phone.ap_nonce,
            chip_board: Some((self.phone.chip_id, self.phone.board_id)),
        }
    }

    fn request(&self) -> Request {
        Request::for_identity(&self.device(), &self.identity).unwrap()
    }
}

fn fixture(product: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.ipsw");
    let p = profile::profile(product).unwrap();
    synth::synthesize(p, &synth::SynthOptions { os_size: 1 << 20 }, &path).unwrap();
    let (manifest, _) = ipsw::read_manifest(&path).unwrap();
    let identity = manifest
        .select(
            &DeviceMatch::Chip {
                cpid: p.cpid,
                bdid: p.bdid,
            },
            RestoreBehavior::Erase,
        )
        .unwrap()
        .clone();
    let member = identity.component("iBSS").unwrap().path.clone().unwrap();
    let (file, archive) = Archive::open(&path).unwrap();
    let ibss = archive.read_member(&file, &member, 64 << 20).unwrap();
    let phone = Profile::for_product_type(product, 7).unwrap();
    Fixture {
        _dir: dir,
        identity,
        ibss,
        phone,
    }
}

fn config(url: String) -> Config {
    Config {
        url,
        attempt_timeout: Duration::from_secs(5),
        max_attempts: 3,
        retry_delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn ticket_for_ibss_is_accepted_and_forgeries_are_refused() {
    let f = fixture("iPhone14,3");
    let standin = Standin::start().await.unwrap();
    let client = Client::new(config(standin.url())).unwrap();
    let ticket = client.request(&f.request()).await.unwrap();
    assert_eq!(standin.requests(), 1);

    let nonce = Im4r::boot_nonce(0x5A5A_5A5A_5A5A_5A5A);
    let img4 = Img4::stitch(&f.ibss, &ticket.ap_img4_ticket, Some(nonce))
        .unwrap()
        .encode();
    let check = TicketCheck::new(standin.public_key());
    check.check_img4(&img4, &f.state(), Some(*b"ibss")).unwrap();
    // The ticket covers every component the stand-in knows a tag for.
    let parsed = Img4::decode(&img4).unwrap();
    assert!(parsed.im4m.body.images.len() > 20);
    assert_eq!(parsed.im4m.body.ecid(), Some(f.phone.ecid));

    // Through the virtual phone's hook, as SecureROM DFU would see it.
    let hook = image_check(standin.public_key());
    let ctx = |data: &'_ [u8], nonce: &'_ [u8], ecid: u64| -> Verdict {
        hook(&ImageContext {
            kind: ImageKind::Dfu(DfuStage::SecureRom),
            data,
            ecid,
            chip_id: f.phone.chip_id,
            board_id: f.phone.board_id,
            ap_nonce: nonce,
            sep_nonce: f.phone.sep_nonce.as_deref(),
        })
    };
    assert_eq!(ctx(&img4, &f.phone.ap_nonce, f.phone.ecid), Verdict::Accept);

    // Wrong nonce: the phone rolled its ApNonce since the ticket was asked for.
    let rolled = vec![0xEE; f.phone.ap_nonce.len()];
    let e = check
        .check_img4(
            &img4,
            &DeviceState {
                ap_nonce: &rolled,
                ..f.state()
            },
            Some(*b"ibss"),
        )
        .unwrap_err();
    assert!(matches!(e, Refusal::WrongNonce { .. }), "{e}");
    assert!(
        matches!(ctx(&img4, &rolled, f.phone.ecid), Verdict::Refuse(why) if why.contains("nonce"))
    );

    // Wrong ECID: another phone.
    let e = check
        .check_img4(
            &img4,
            &DeviceState {
                ecid: f.phone.ecid ^ 1,
                ..f.state()
            },
            Some(*b"ibss"),
        )
        .unwrap_err();
    assert!(matches!(e, Refusal::WrongEcid { .. }), "{e}");
    assert!(
        matches!(ctx(&img4, &f.phone.ap_nonce, f.phone.ecid ^ 1), Verdict::Refuse(why) if why.contains("ECID"))
    );

    // Tampered payload: one byte of iBSS changed, same ticket.
    let mut im4p = ipsw::Im4p::decode(&f.ibss).unwrap();
    if let Some(b) = im4p.payload.get_mut(100) {
        *b ^= 0xFF;
    }
    let tampered = Img4::stitch(&im4p.encode(), &ticket.ap_img4_ticket, None)
        .unwrap()
        .encode();
    let e = check
        .check_img4(&tampered, &f.state(), Some(*b"ibss"))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Refusal::WrongDigest {
                algorithm: ipsw::Algorithm::Sha384,
                ..
            }
        ),
        "{e}"
    );

    // Wrong image for the stage: iBSS's IMG4 offered where iBEC is expected.
    let e = check
        .check_img4(&img4, &f.state(), Some(*b"zzzz"))
        .unwrap_err();
    assert!(matches!(e, Refusal::NotInTicket { .. }), "{e}");

    // Wrong key: a ticket from another signing authority.
    let other = TicketCheck::new(Signer::from_seed(b"someone else").public_key());
    let e = other
        .check_img4(&img4, &f.state(), Some(*b"ibss"))
        .unwrap_err();
    assert!(matches!(e, Refusal::BadSignature), "{e}");

    // A flipped byte inside the signed body breaks the signature.
    let mut forged = img4.clone();
    let at = forged.windows(4).position(|w| w == b"ECID").unwrap();
    if let Some(b) = forged.get_mut(at + 8) {
        *b ^= 1;
    }
    assert!(check
        .check_img4(&forged, &f.state(), Some(*b"ibss"))
        .is_err());
    standin.shutdown().await;
}

#[tokio::test]
async fn sha1_era_ticket_checks_with_sha1() {
    let f = fixture("iPhone7,2");
    let standin = Standin::start().await.unwrap();
    let client = Client::new(config(standin.url())).unwrap();
    let ticket = client.request(&f.request()).await.unwrap();
    let check = TicketCheck::new(standin.public_key());
    check
        .check_parts(&ticket.ap_img4_ticket, &f.ibss, &f.state(), *b"ibss")
        .unwrap();
    let m = tss::Im4m::decode(&ticket.ap_img4_ticket).unwrap();
    assert_eq!(m.body.digest(*b"ibss").map(<[u8]>::len), Some(20));
}

#[tokio::test]
async fn unsigned_build_is_not_retried() {
    let f = fixture("iPhone14,3");
    let standin = Standin::start().await.unwrap();
    standin.refuse_ecid(f.phone.ecid);
    let client = Client::new(config(standin.url())).unwrap();
    let e = client.request(&f.request()).await.unwrap_err();
    assert!(e.is_unsigned_build(), "{e}");
    assert_eq!(e.status(), Some(94));
    assert_eq!(standin.requests(), 1);

    // Per build too, and any other refusal is as terminal.
    standin.refuse_build(f.identity.unique_build_id.as_deref().unwrap());
    let other = Device {
        ecid: f.phone.ecid + 1,
        ..f.device()
    };
    let r = Request::for_identity(&other, &f.identity).unwrap();
    assert!(client.request(&r).await.unwrap_err().is_unsigned_build());
    assert_eq!(standin.requests(), 2);
    standin.refuse_all(Some((126, "internal error".into())));
    let e = client.request(&r).await.unwrap_err();
    assert!(matches!(e, TssError::Refused { status: 126, .. }), "{e}");
    assert_eq!(standin.requests(), 3);
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let f = fixture("iPhone14,3");
    let standin = Standin::start().await.unwrap();
    standin.drop_connections(2);
    let client = Client::new(config(standin.url())).unwrap();
    let ticket = client.request(&f.request()).await.unwrap();
    assert!(!ticket.ap_img4_ticket.is_empty());
    assert_eq!((standin.dropped(), standin.requests()), (2, 1));

    // More drops than attempts: a transport error after exactly max_attempts.
    standin.drop_connections(10);
    let e = client.request(&f.request()).await.unwrap_err();
    assert!(
        matches!(
            e,
            TssError::Transport {
                attempts: 3,
                last: TransportError::Http(_)
            }
        ),
        "{e}"
    );
    assert_eq!((standin.dropped(), standin.requests()), (5, 1));
}

#[tokio::test]
async fn refused_connect_and_silence_are_transport_errors() {
    let f = fixture("iPhone14,3");
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let client = Client::new(config(format!(
        "http://127.0.0.1:{port}/TSS/controller?action=2"
    )))
    .unwrap();
    let e = client.request(&f.request()).await.unwrap_err();
    assert!(
        matches!(
            e,
            TssError::Transport {
                attempts: 3,
                last: TransportError::Connect { .. }
            }
        ),
        "{e}"
    );

    // A server that accepts and never answers: each attempt times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let client = Client::new(Config {
        url: format!("http://{addr}/TSS/controller?action=2"),
        attempt_timeout: Duration::from_millis(150),
        max_attempts: 2,
        retry_delay: Duration::ZERO,
    })
    .unwrap();
    let e = client.request(&f.request()).await.unwrap_err();
    assert!(
        matches!(
            e,
            TssError::Transport {
                attempts: 2,
                last: TransportError::Timeout { ms: 150 }
            }
        ),
        "{e}"
    );
    hold.abort();
}
