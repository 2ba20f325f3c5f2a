//! Cost of one `Sampler::sample` call on a SmolLM3-sized row of logits (128256 entries).
//!
//! Run: `cargo bench -p smollm3-gen --bench sampling`. The logits are normal(0, 2.5) noise from a
//! fixed seed; each iteration samples from a fresh copy (the copy is not timed), since the
//! penalties modify the row in place.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use smollm3_gen::sampling::{Sampler, SamplingParams};

const VOCAB: usize = 128_256;

fn random_logits() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    (0..VOCAB)
        .map(|_| {
            // Box-Muller: a standard normal from two uniforms.
            let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let u2: f64 = rng.random();
            let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            (2.5 * z) as f32
        })
        .collect()
}

fn bench_sampling(c: &mut Criterion) {
    let logits = random_logits();
    let mut group = c.benchmark_group("sample_128k");

    let cases: [(&str, SamplingParams, usize); 3] = [
        ("greedy", SamplingParams::greedy(), 0),
        (
            "default_t0.6_top_p0.95",
            SamplingParams {
                seed: Some(1),
                ..Default::default()
            },
            0,
        ),
        (
            "top_k40_top_p0.95_min_p0.05_rep1.1",
            SamplingParams {
                top_k: 40,
                top_p: 0.95,
                min_p: 0.05,
                repeat_penalty: 1.1,
                seed: Some(1),
                ..Default::default()
            },
            64,
        ),
    ];
    for (name, params, accepted) in cases {
        let mut sampler = match Sampler::new(&params) {
            Ok(s) => s,
            Err(e) => panic!("{name}: {e}"),
        };
        // 64 recent tokens spread over the vocabulary, some of them repeated.
        for i in 0..accepted {
            let token = u32::try_from((i % 48) * 2671 % VOCAB).unwrap_or(0);
            sampler.accept(token);
        }
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || logits.clone(),
                |row| black_box(sampler.sample(black_box(row)).ok()),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench_sampling);
criterion_main!(benches);
