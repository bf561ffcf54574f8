//! Property tests of the search space: sampling, validation, JSON and cost models.

#![allow(clippy::unwrap_used)]

use ofa_space::{cost, sample, ArchConfig, Choices, SearchSpace};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn spaces() -> impl Strategy<Value = SearchSpace> {
    prop_oneof![
        Just(SearchSpace::preset("ofa-mbv3-w1.0").unwrap()),
        Just(SearchSpace::preset("ofa-mbv3-w1.2").unwrap()),
        Just(SearchSpace::preset("ofa-mbv3-tiny").unwrap()),
        Just(SearchSpace::preset("ofa-mbv3-small32").unwrap()),
        Just(SearchSpace::preset("ofa-proxyless-tiny").unwrap()),
        Just(SearchSpace::preset("ofa-resnet50").unwrap()),
        Just(SearchSpace::preset("ofa-resnet-small32").unwrap()),
    ]
}

proptest! {
    #[test]
    fn sampled_archs_are_valid_and_round_trip_through_json(space in spaces(), seed in any::<u64>()) {
        let arch = sample(&space, &Choices::all(&space), &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert!(arch.validate(&space).is_ok());
        let back = ArchConfig::from_json(&arch.to_json()).unwrap();
        prop_assert_eq!(&back, &arch);
        // Canonical form: same network, same cost.
        let c = arch.canonical(&space);
        prop_assert_eq!(cost(&space, &c), cost(&space, &arch));
    }

    #[test]
    fn cost_is_bounded_by_the_smallest_and_largest(space in spaces(), seed in any::<u64>()) {
        let mut arch = sample(&space, &Choices::all(&space), &mut ChaCha8Rng::seed_from_u64(seed));
        let mut big = ArchConfig::largest(&space);
        let mut small = ArchConfig::smallest(&space);
        big.r = arch.r;
        small.r = arch.r;
        let (c, lo, hi) = (cost(&space, &arch), cost(&space, &small), cost(&space, &big));
        prop_assert!(lo.macs <= c.macs && c.macs <= hi.macs);
        prop_assert!(lo.params <= c.params && c.params <= hi.params);
        // MACs grow with resolution, params do not change.
        let r = arch.r;
        if let Some(&r2) = space.resolutions.iter().filter(|&&x| x > r).min() {
            arch.r = r2;
            let c2 = cost(&space, &arch);
            prop_assert!(c2.macs >= c.macs);
            prop_assert_eq!(c2.params, c.params);
        }
    }
}

#[test]
fn custom_space_json_round_trip_and_validation() {
    let mut s = SearchSpace::mobilenet_v3("custom", 0.75, 7, vec![64, 96]);
    s.in_channels = 1;
    s.ks_list = vec![3, 5];
    let back = SearchSpace::from_json(&s.to_json()).unwrap();
    assert_eq!(back, s);
    assert_eq!(s.kernel_transforms(), vec![(5, 3)]);
    let mut bad = s.clone();
    bad.ks_list = vec![3, 4];
    assert!(bad.validate().unwrap_err().to_string().contains("odd"));
    let mut bad = s.clone();
    bad.depth_list.clear();
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("`depth_list` is empty"));
    assert!(SearchSpace::from_json("{\"name\": 1}").is_err());
    let e = SearchSpace::preset("ofa-mbv3-w9").unwrap_err().to_string();
    assert!(e.contains("ofa-mbv3-w1.0"), "{e}");
}
