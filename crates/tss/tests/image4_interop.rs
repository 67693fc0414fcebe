//! An independent reader agrees with ours: the `image4` crate (crates.io) decodes the IMG4s
//! this crate stitches (payload tag and bytes, the ticket's MANP and image entries, the
//! signature, IM4R's BNCN), and our decoder reads back what `image4` re-encodes.

use der::{Decode, Encode};
use image4::property::Value;
use image4::Tag;
use tss::img4::{Im4m, Im4r, Img4};
use tss::request::{Device, Request};
use tss::response;
use tss::standin::{Policy, Signer};

#[test]
fn image4_crate_reads_our_img4() {
    let device = Device {
        ecid: 0x0012_3456_789A_BCDE,
        ap_nonce: vec![0x11; 32],
        sep_nonce: Some(vec![0x22; 20]),
        chip_id: 0x8110,
        board_id: 0x0E,
        security_domain: 1,
        production_mode: true,
        security_mode: true,
    };
    let payload = vec![0xC3; 3000];
    let ibss = ipsw::Im4p::new("ibss", "iBoot-synthetic", payload.clone()).encode();
    let digest = ipsw::Algorithm::Sha384.digest(&ibss);
    let mut request = Request::new(device.clone());
    request.add_component("iBSS", digest.as_bytes());
    request.add_component("iBEC", &[7; 48]);
    let signer = Signer::from_seed(b"interop");
    let body = signer
        .answer(&Policy::default(), &request.to_xml())
        .encode();
    let ticket = response::parse(&body).unwrap();
    let ours = Img4::stitch(
        &ibss,
        &ticket.ap_img4_ticket,
        Some(Im4r::boot_nonce(0x1122_3344_5566_7788)),
    )
    .unwrap();
    let der_bytes = ours.encode();

    let theirs = image4::Image::from_der(&der_bytes).unwrap();
    assert_eq!(theirs.payload().tag(), Tag::from_bytes(*b"ibss"));
    assert_eq!(theirs.payload().data(), &payload[..]);
    let manifest = theirs.manifest().unwrap();
    assert_eq!(manifest.signature(), &ours.im4m.signature[..]);
    let body = manifest.decode_body().unwrap();
    let Some(Value::Dict(manb)) = body.get(&Tag::from_bytes(*b"MANB")) else {
        panic!("no MANB in {body:?}");
    };
    let Some(Value::Dict(manp)) = manb.get(&Tag::from_bytes(*b"MANP")) else {
        panic!("no MANP in {manb:?}");
    };
    assert!(
        matches!(manp.get(&Tag::from_bytes(*b"ECID")), Some(Value::Integer(e)) if *e == device.ecid)
    );
    assert!(
        matches!(manp.get(&Tag::from_bytes(*b"BNCH")), Some(Value::Data(n)) if n[..] == device.ap_nonce[..])
    );
    assert!(matches!(
        manp.get(&Tag::from_bytes(*b"CPRO")),
        Some(Value::Boolean(true))
    ));
    let Some(Value::Dict(entry)) = manb.get(&Tag::from_bytes(*b"ibss")) else {
        panic!("no ibss in {manb:?}");
    };
    assert!(
        matches!(entry.get(&Tag::from_bytes(*b"DGST")), Some(Value::Data(d)) if d[..] == *digest.as_bytes())
    );
    assert!(manb.contains_key(&Tag::from_bytes(*b"ibec")));
    let im4r = theirs
        .restore_info()
        .unwrap()
        .as_dict_ref()
        .decode_owned()
        .unwrap();
    assert!(matches!(
        im4r.get(&Tag::from_bytes(*b"BNCN")),
        Some(Value::Integer(0x1122_3344_5566_7788))
    ));

    // Their re-encoding is ours, byte for byte, and our decoder reads it.
    let again = theirs.to_der().unwrap();
    assert_eq!(again, der_bytes);
    let back = Img4::decode(&again).unwrap();
    assert_eq!(back, ours);
    let m = Im4m::decode(&ticket.ap_img4_ticket).unwrap();
    assert_eq!(m.body, back.im4m.body);
}
