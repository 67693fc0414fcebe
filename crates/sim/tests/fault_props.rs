//! Property tests of the fault language: every fault a phone can produce prints in a form that
//! parses back to the same fault, and lists of them too.

use proptest::prelude::*;
use sim::fault::{Action, Fault, FaultSpec, Point, Trigger};

fn point() -> impl Strategy<Value = Point> {
    proptest::sample::select(Point::ALL.to_vec())
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Unplug),
        Just(Action::Stall),
        Just(Action::IoError),
        Just(Action::Timeout),
        Just(Action::Corrupt),
        Just(Action::Panic),
        Just(Action::Flap),
        Just(Action::NeverReturns),
        Just(Action::Refuse),
        Just(Action::FullSpeed),
        (1u64..=u64::MAX / 2).prop_map(|bytes_per_sec| Action::Slow { bytes_per_sec }),
        any::<i64>().prop_map(Action::Status),
    ]
}

fn trigger() -> impl Strategy<Value = Trigger> {
    prop_oneof![
        Just(Trigger::Immediately),
        (0u32..=1_000_000).prop_map(Trigger::Progress),
        any::<u64>().prop_map(Trigger::Byte),
        (1u32..).prop_map(Trigger::Transfer),
        (0u32..=1_000_000).prop_map(Trigger::Chance),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    (point(), action(), trigger(), proptest::option::of(1u32..))
        .prop_filter("a fault the language allows", |(p, a, t, _)| {
            p.allows(*a)
                && (p.is_transfer() || !matches!(t, Trigger::Progress(_) | Trigger::Byte(_)))
        })
        .prop_map(|(point, action, trigger, count)| Fault {
            point,
            action,
            trigger,
            count,
        })
}

proptest! {
    #[test]
    fn fault_round_trips(f in fault()) {
        let text = f.to_string();
        prop_assert_eq!(text.parse::<Fault>(), Ok(f), "{}", text);
    }

    #[test]
    fn spec_round_trips(faults in proptest::collection::vec(fault(), 1..6)) {
        let spec = FaultSpec { faults };
        let text = spec.to_string();
        prop_assert_eq!(text.parse::<FaultSpec>(), Ok(spec), "{}", text);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,64}") {
        let _ = text.parse::<FaultSpec>();
    }
}
