//! The stand-in's tickets through a virtual phone's real DFU path: `irecv`'s DFU engine
//! uploads an IMG4 to a SecureROM in DFU whose personalization hook is
//! [`tss::verify::image_check`]. A ticket for a stale nonce is refused (the phone comes back
//! in DFU), a fresh one boots iBSS.

use std::sync::Arc;
use std::time::Duration;

use irecv::dfu::{self, Options as DfuOptions};
use sim::clock::{Clock, DriverClock, ManualClock};
use sim::hub::VirtualHub;
use sim::phone::{Mode, Options, Phone};
use sim::profile::{DfuStage, Profile};
use tss::client::{Client, Config};
use tss::img4::Img4;
use tss::request::{Device, Request};
use tss::standin::Standin;
use tss::verify::image_check;
use usb::UsbBackend;

fn device_of(p: &Profile) -> Device {
    Device {
        ecid: p.ecid,
        ap_nonce: p.ap_nonce.clone(),
        sep_nonce: p.sep_nonce.clone(),
        chip_id: p.chip_id,
        board_id: p.board_id,
        security_domain: p.security_domain,
        production_mode: true,
        security_mode: true,
    }
}

#[tokio::test]
async fn phone_boots_only_a_ticket_for_its_current_nonce() {
    let standin = Standin::start().await.unwrap();
    let client = Client::new(Config {
        url: standin.url(),
        retry_delay: Duration::ZERO,
        ..Config::default()
    })
    .unwrap();

    let clock = ManualClock::new();
    let hub = VirtualHub::new(2, clock.clone() as Arc<dyn Clock>);
    let profile = Profile::for_product_type("iPhone14,3", 11).unwrap();
    let options = Options {
        start: Mode::Dfu(DfuStage::SecureRom),
        ..Options::default()
    };
    hub.plug(0, Phone::new(profile, options, clock.now()))
        .unwrap();
    let key = standin.public_key();
    hub.with_phone(0, |p| p.set_image_check(Box::new(image_check(key))))
        .unwrap();
    let profile = hub.with_phone(0, |p| p.profile().clone()).unwrap();

    let ibss = ipsw::Im4p::new("ibss", "iBoot-synthetic", vec![0x3C; 40 << 10]).encode();
    let digest = ipsw::Algorithm::Sha384.digest(&ibss);
    let ticket_for = |device: Device| {
        let mut r = Request::new(device);
        r.add_component("iBSS", digest.as_bytes());
        r
    };
    let upload = |img4: &[u8]| {
        let info = hub.devices().unwrap().remove(0);
        let mut dev = hub.open(info.id).unwrap();
        let mut clock = DriverClock(clock.clone() as Arc<dyn Clock>);
        dfu::run_download(
            dev.as_mut(),
            img4,
            DfuOptions::dfu(),
            &mut clock,
            &mut |_| {},
        )
        .unwrap();
    };

    // A ticket asked for with a stale ApNonce.
    let stale = Device {
        ap_nonce: vec![0xEE; profile.ap_nonce.len()],
        ..device_of(&profile)
    };
    let t = client.request(&ticket_for(stale)).await.unwrap();
    upload(
        &Img4::stitch(&ibss, &t.ap_img4_ticket, None)
            .unwrap()
            .encode(),
    );
    assert!(
        hub.run_port_until(0, Duration::from_secs(300), |p| p.is_on_bus()
            && p.mode() == Mode::Dfu(DfuStage::SecureRom))
    );

    // The ticket for the nonce the phone advertises now.
    let now = hub.with_phone(0, |p| device_of(p.profile())).unwrap();
    let t = client.request(&ticket_for(now)).await.unwrap();
    upload(
        &Img4::stitch(&ibss, &t.ap_img4_ticket, None)
            .unwrap()
            .encode(),
    );
    assert!(
        hub.run_port_until(0, Duration::from_secs(300), |p| p.is_on_bus()
            && p.mode() == Mode::Dfu(DfuStage::Ibss))
    );

    let uploads = hub
        .with_phone(0, |p| {
            p.core()
                .record
                .uploads
                .iter()
                .map(|u| (u.accepted, u.refusal.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(uploads.len(), 2);
    assert!(!uploads[0].0);
    assert!(
        uploads[0].1.as_deref().is_some_and(|w| w.contains("nonce")),
        "{uploads:?}"
    );
    assert!(uploads[1].0, "{uploads:?}");
}
