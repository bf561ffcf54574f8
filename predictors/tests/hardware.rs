//! The few-shot latency model: a known synthetic device is recovered exactly from noiseless
//! measurements and within tolerance from noisy ones; the written table predicts what the model
//! does; probes span the cost range; too few measurements are a named error.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use ofa_predictors::hardware::{
    all_layers, choose_probes, fit, to_table, Candidate, ErrorStats, Feature, Features,
    HardwareError, Measurement, ModelChoice, ProbeSelection,
};
use ofa_predictors::latency::{Entry, LatencyTable, Meta, FORMAT};
use ofa_space::{sample, ArchConfig, Choices, SearchSpace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A base table for `space` whose entries are a made-up function of the layers' MACs (a runtime
/// that is not the device's).
fn base_table(space: &SearchSpace) -> LatencyTable {
    let mut tables = BTreeMap::new();
    for &r in &space.resolutions {
        let mut t = BTreeMap::new();
        for l in all_layers(space, r) {
            let phi = l.phi;
            let mean = 0.02
                + 0.9 * phi[Feature::DepthwiseMacs as usize]
                + 0.15 * phi[Feature::DenseMacs as usize]
                + 0.05 * phi[Feature::Elements as usize].sqrt();
            t.insert(
                l.key,
                Entry {
                    count: 1,
                    mean,
                    std: 0.0,
                },
            );
        }
        tables.insert(r, t);
    }
    LatencyTable {
        format: FORMAT.to_string(),
        meta: Meta {
            device: "synthetic base".into(),
            ..Meta::default()
        },
        tables,
    }
}

/// The synthetic device: other ratios than the base (ms per unit of each feature).
const TRUE: [(Feature, f64); 5] = [
    (Feature::BaseBlocks, 0.2),
    (Feature::DepthwiseMacs, 0.05),
    (Feature::DenseMacs, 0.08),
    (Feature::Blocks, 0.004),
    (Feature::Overhead, 0.03),
];

fn truth(x: &[f64; 7]) -> f64 {
    TRUE.iter().map(|(f, w)| w * x[*f as usize]).sum()
}

fn measurements(
    f: &Features<'_>,
    archs: &[ArchConfig],
    noise: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<Measurement> {
    archs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let t = truth(&f.of(a).unwrap());
            Measurement {
                id: format!("m{i}"),
                arch: a.clone(),
                latency_ms: t * (1.0 + noise * (rng.random::<f64>() * 2.0 - 1.0)),
            }
        })
        .collect()
}

fn random_archs(space: &SearchSpace, n: usize, seed: u64) -> Vec<ArchConfig> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| sample(space, &Choices::all(space), &mut rng))
        .collect()
}

#[test]
fn a_known_device_is_recovered_exactly_without_noise_and_closely_with_it() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let base = base_table(&space);
    let f = Features::new(&space, Some(&base));
    let probes = choose_probes(&f, &Choices::all(&space), 20, 0, ProbeSelection::Spread).unwrap();
    assert_eq!(probes.len(), 20);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let exact = measurements(&f, &probes, 0.0, &mut rng);
    let model = Candidate::named("types+macs").unwrap();
    let r = fit(&f, &exact, ModelChoice::Fixed(model)).unwrap();
    // the true model lies in the candidate: every prediction, in sample and left out, is exact
    assert!(r.fit.mape_pct < 1e-6, "{:?}", r.fit);
    assert!(r.loo.mape_pct < 1e-6, "{:?}", r.loo);
    let heldout = random_archs(&space, 50, 7);
    let hm = measurements(&f, &heldout, 0.0, &mut rng);
    let table = to_table(&f, &r, Meta::default()).unwrap();
    // the written table predicts what the model does, through the additive compiler the search
    // uses and through the table's own sum
    let add = table.additive(&space);
    for m in &hm {
        let via_add = add.predict(&m.arch).unwrap();
        let via_table = table.predict(&space, &m.arch).unwrap();
        assert!(
            (via_add - m.latency_ms).abs() < 1e-9 * m.latency_ms,
            "{via_add} vs {}",
            m.latency_ms
        );
        assert!((via_table - m.latency_ms).abs() < 1e-9 * m.latency_ms);
    }
    // auto picks a model at least as good, left out
    let auto = fit(&f, &exact, ModelChoice::Auto).unwrap();
    assert!(auto.loo.mape_pct < 1e-6, "{:?}", auto.candidates);

    // ±3 % uniform noise: held-out error stays near the noise, ranks hold
    let noisy = measurements(&f, &probes, 0.03, &mut rng);
    let r = fit(&f, &noisy, ModelChoice::Auto).unwrap();
    let table = to_table(&f, &r, Meta::default()).unwrap();
    let add = table.additive(&space);
    let pred: Vec<f64> = hm.iter().map(|m| add.predict(&m.arch).unwrap()).collect();
    let meas: Vec<f64> = hm.iter().map(|m| m.latency_ms).collect();
    let s = ErrorStats::of(&pred, &meas);
    assert!(s.mape_pct < 4.0, "{s} ({:?})", r.candidates);
    assert!(s.within_10pct >= 95.0, "{s}");
    assert!(s.spearman > 0.95, "{s}");
}

#[test]
fn one_global_scale_cannot_follow_a_device_with_other_ratios() {
    // The reason the model has more than one weight: the base table scaled alone is far off.
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let base = base_table(&space);
    let f = Features::new(&space, Some(&base));
    let probes = choose_probes(&f, &Choices::all(&space), 20, 0, ProbeSelection::Spread).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let exact = measurements(&f, &probes, 0.0, &mut rng);
    let scale = fit(
        &f,
        &exact,
        ModelChoice::Fixed(Candidate::named("scale").unwrap()),
    )
    .unwrap();
    let best = fit(&f, &exact, ModelChoice::Auto).unwrap();
    assert!(
        scale.loo.mape_pct > 10.0 * best.loo.mape_pct.max(1e-3),
        "{:?}",
        best.candidates
    );
    assert_ne!(best.model.name, "scale");
}

#[test]
fn too_few_measurements_and_missing_bases_are_named_errors() {
    let space = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let base = base_table(&space);
    let f = Features::new(&space, Some(&base));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let archs = random_archs(&space, 2, 3);
    let two = measurements(&f, &archs, 0.0, &mut rng);
    let e = fit(&f, &two, ModelChoice::Auto).unwrap_err();
    assert!(
        matches!(
            e,
            HardwareError::TooFewMeasurements {
                got: 2,
                need: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("at least 3"), "{e}");
    let archs = random_archs(&space, 6, 3);
    let six = measurements(&f, &archs, 0.0, &mut rng);
    let e = fit(
        &f,
        &six,
        ModelChoice::Fixed(Candidate::named("types+macs").unwrap()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs at least 9"), "{e}");
    // a model over the base table, with no base table
    let bare = Features::new(&space, None);
    let e = fit(
        &bare,
        &six,
        ModelChoice::Fixed(Candidate::named("types").unwrap()),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs a base table"), "{e}");
    // without a base, auto uses MACs and counts only
    let r = fit(&bare, &six, ModelChoice::Auto).unwrap();
    assert!(!Candidate::named(&r.model.name).unwrap().needs_base());
}

#[test]
fn probes_are_distinct_span_the_cost_range_and_are_seeded() {
    let space = SearchSpace::preset("ofa-mbv3-w1.0").unwrap();
    let base = base_table(&space);
    let f = Features::new(&space, Some(&base));
    let c = Choices::all(&space);
    let a = choose_probes(&f, &c, 12, 5, ProbeSelection::Spread).unwrap();
    assert_eq!(
        a,
        choose_probes(&f, &c, 12, 5, ProbeSelection::Spread).unwrap()
    );
    assert_ne!(
        a,
        choose_probes(&f, &c, 12, 6, ProbeSelection::Spread).unwrap()
    );
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert_eq!(distinct.len(), 12);
    let lat = base.additive(&space);
    let costs: Vec<f64> = a.iter().map(|x| lat.predict(x).unwrap()).collect();
    let (lo, hi) = (
        lat.predict(&ArchConfig::smallest(&space)).unwrap(),
        lat.predict(&ArchConfig::largest(&space)).unwrap(),
    );
    // the two ends of the space are probes
    assert!(costs.iter().any(|c| (c - lo).abs() < 1e-12));
    assert!(costs.iter().any(|c| (c - hi).abs() < 1e-12));
    // so are both ends of the resolution range, and every kernel size appears
    for r in [space.resolutions[0], *space.resolutions.last().unwrap()] {
        assert!(a.iter().any(|x| x.r == r), "resolution {r} missing");
    }
    for k in &space.ks_list {
        assert!(a.iter().any(|x| x.ks.contains(k)), "kernel {k} missing");
    }
    let random = choose_probes(&f, &c, 12, 5, ProbeSelection::Random).unwrap();
    assert_eq!(random.len(), 12);
}
