//! Pair record files: decode(encode(x)) == x for any record, in XML and binary plist.

use lockdown::PairRecordFile;
use plist::{Dictionary, Value};
use proptest::prelude::*;

fn pem() -> impl Strategy<Value = Vec<u8>> {
    "[A-Za-z0-9+/=\n]{1,200}".prop_map(|body| {
        format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n").into_bytes()
    })
}

fn text() -> impl Strategy<Value = String> {
    "[ -~]{1,40}"
}

fn extra() -> impl Strategy<Value = Dictionary> {
    proptest::collection::btree_map(
        "X-[A-Za-z]{1,12}",
        prop_oneof![
            text().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Data),
        ],
        0..4,
    )
    .prop_map(|m| m.into_iter().collect())
}

fn record() -> impl Strategy<Value = PairRecordFile> {
    (
        (pem(), pem(), pem(), pem(), pem()),
        (text(), text()),
        proptest::option::of("[0-9a-f:]{17}"),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        extra(),
    )
        .prop_map(
            |(
                (device_certificate, host_certificate, root_certificate, host_key, root_key),
                (host_id, system_buid),
                wifi_mac_address,
                escrow_bag,
                extra,
            )| PairRecordFile {
                device_certificate,
                host_certificate,
                root_certificate,
                host_private_key: host_key,
                root_private_key: root_key,
                host_id,
                system_buid,
                wifi_mac_address,
                escrow_bag,
                extra,
            },
        )
}

proptest! {
    #[test]
    fn xml_round_trip(record in record()) {
        let xml = record.to_xml().unwrap();
        prop_assert_eq!(PairRecordFile::from_bytes(&xml).unwrap(), record);
    }

    #[test]
    fn binary_round_trip(record in record()) {
        let mut binary = Vec::new();
        plist::to_writer_binary(&mut binary, &Value::Dictionary(record.to_dictionary())).unwrap();
        prop_assert_eq!(PairRecordFile::from_bytes(&binary).unwrap(), record);
    }

    #[test]
    fn the_pair_request_carries_no_private_key(record in record()) {
        let sent = record.to_pair_record().to_dictionary();
        prop_assert!(!sent.contains_key("HostPrivateKey"));
        prop_assert!(!sent.contains_key("RootPrivateKey"));
        prop_assert_eq!(
            sent.get("HostID").and_then(Value::as_string),
            Some(record.host_id.as_str())
        );
    }
}
