//! The training step: losses, schedule, optimiser semantics, and learning on a tiny supernet.

#![allow(clippy::unwrap_used)]

use ofa_space::{sample, ArchConfig, Choices, SearchSpace};
use ofa_supernet::{Role, Supernet};
use ofa_trainer::step::{label_smoothed_cross_entropy, lr_at, train_step, Sgd, StepConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

#[test]
fn cosine_schedule_with_warmup() {
    assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
    assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
    assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
    assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
    assert!(lr_at(99, 100, 10, 1.0) < 1e-3);
}

#[test]
fn label_smoothing_matches_the_formula() {
    let logits = Tensor::from_slice(&[2.0f32, 0.0, -1.0]).reshape([1, 3]);
    let y = Tensor::from_slice(&[0i64]);
    let l = label_smoothed_cross_entropy(&logits, &y, 0.1).double_value(&[]);
    let lse = (2f64.exp() + 1.0 + (-1f64).exp()).ln();
    let logp = [2.0 - lse, -lse, -1.0 - lse];
    let soft = [0.9 + 0.1 / 3.0, 0.1 / 3.0, 0.1 / 3.0];
    let want: f64 = -(0..3).map(|i| soft[i] * logp[i]).sum::<f64>();
    assert!((l - want).abs() < 1e-6, "{l} vs {want}");
}

#[test]
fn sgd_nesterov_decays_only_weights() {
    let s = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let net = Supernet::new(&s, 0, Device::Cpu).unwrap();
    let before: Vec<Tensor> = net
        .tensors()
        .iter()
        .map(|(_, t)| t.detach().copy())
        .collect();
    let mut opt = Sgd::new(&net, 0.9, 0.01);
    // Gradient 1 everywhere.
    let mut total = Tensor::zeros([], (Kind::Float, Device::Cpu));
    for (spec, t) in net.tensors() {
        if spec.role.trainable() {
            total += t.sum(Kind::Float);
        }
    }
    total.backward();
    opt.step(&net, 0.1);
    for ((spec, t), b) in net.tensors().iter().zip(&before) {
        let want = match spec.role {
            r if !r.trainable() => b.shallow_clone(),
            r if r.weight_decay() => b - (b * 0.01 + 1.0) * (0.1 * 1.9),
            _ => b - 0.19,
        };
        let diff = (t.detach() - want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "{} ({:?}): {diff}", spec.name, spec.role);
    }
    assert!(net.tensors().iter().any(|(s, _)| s.role == Role::BnBias));
    assert_eq!(
        opt.state(&net).len(),
        net.tensors()
            .iter()
            .filter(|(s, _)| s.role.trainable())
            .count()
    );
}

fn run(steps: usize) -> (Vec<f64>, Supernet) {
    tch::set_num_threads(1);
    let s = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let net = Supernet::new(&s, 1, Device::Cpu).unwrap();
    let teacher = net.deep_clone().unwrap();
    let x = ofa_supernet::rng::with_seed(5, || {
        Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu))
    });
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
    let mut opt = Sgd::new(&net, 0.9, 3e-5);
    let cfg = StepConfig {
        kd_ratio: 1.0,
        label_smoothing: 0.1,
        precision: Default::default(),
    };
    let mut losses = Vec::new();
    for step in 0..steps {
        let mut rng = ChaCha8Rng::seed_from_u64(step as u64);
        let mut choices = Choices::all(&s);
        choices.r = vec![32];
        let archs: Vec<ArchConfig> = (0..2).map(|_| sample(&s, &choices, &mut rng)).collect();
        let st = train_step(
            &net,
            Some(&teacher),
            &mut opt,
            &x,
            &y,
            &archs,
            &cfg,
            lr_at(step as u64, steps as u64, 2, 0.05),
            None,
        )
        .unwrap();
        losses.push(st.loss);
    }
    (losses, net)
}

#[test]
fn training_steps_learn_and_are_deterministic() {
    let (losses, a) = run(12);
    let first = losses[..3].iter().sum::<f64>() / 3.0;
    let last = losses[losses.len() - 3..].iter().sum::<f64>() / 3.0;
    assert!(last < first, "loss did not fall: {losses:?}");
    let (losses2, b) = run(12);
    assert_eq!(losses, losses2);
    for ((sa, ta), (_, tb)) in a.tensors().iter().zip(b.tensors()) {
        assert!(
            ta.detach().equal(tb),
            "{} differs between identical runs",
            sa.name
        );
    }
}

#[test]
fn a_new_optimiser_gives_every_trainable_tensor_a_zero_gradient() {
    let s = SearchSpace::preset("ofa-mbv3-tiny").unwrap();
    let net = Supernet::new(&s, 0, Device::Cpu).unwrap();
    let _opt = Sgd::new(&net, 0.9, 0.01);
    for (spec, t) in net.tensors() {
        if spec.role.trainable() {
            assert!(t.grad().defined(), "{} has no gradient", spec.name);
            assert_eq!(t.grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }
}
