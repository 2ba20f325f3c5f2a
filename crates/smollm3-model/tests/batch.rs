//! A batched forward pass is an optimisation only: each sequence of a batch gets, bit for bit,
//! the logits it gets alone, whatever the other sequences, their lengths or their chunk sizes;
//! and a batch that cannot run leaves every cache as it was.

use std::path::PathBuf;

use smollm3_model::{BatchItem, KvCache, Model, ModelError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name)
}

/// `n` tokens of sequence `seed` (inside every fixture's vocabulary).
fn tokens(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 37 + 11 * seed + 5) % 90)
        .collect()
}

fn bits(t: &smollm3_model::Tensor) -> Vec<u32> {
    t.to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Three conversations at different lengths, stepped together: first a token each, then a
/// chunk of four for one of them beside single tokens, then a token each again.
const STEPS: [[usize; 3]; 3] = [[1, 1, 1], [1, 4, 1], [1, 1, 1]];

fn prompts() -> [Vec<u32>; 3] {
    [tokens(5, 1), tokens(9, 2), tokens(2, 3)]
}

/// The logits of each sequence at each step, one sequence at a time.
fn alone(model: &Model) -> Vec<[Vec<u32>; 3]> {
    let mut caches: Vec<KvCache> = (0..3).map(|_| model.new_cache(64).unwrap()).collect();
    let mut next: Vec<u32> = prompts()
        .iter()
        .zip(&mut caches)
        .map(|(p, c)| {
            model
                .forward_last(p, c)
                .unwrap()
                .argmax(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        })
        .collect();
    let mut out = Vec::new();
    for (step, sizes) in STEPS.iter().enumerate() {
        let logits: [Vec<u32>; 3] = std::array::from_fn(|s| {
            let input = step_input(next[s], sizes[s], step);
            bits(&model.forward_last(&input, &mut caches[s]).unwrap())
        });
        next = logits.iter().map(|l| argmax(l)).collect();
        out.push(logits);
    }
    out
}

/// Sequence input at a step: the model's last choice, then (for a chunk) fixed tokens.
fn step_input(next: u32, size: usize, step: usize) -> Vec<u32> {
    std::iter::once(next)
        .chain(tokens(size - 1, 7 + step as u32))
        .collect()
}

fn argmax(logit_bits: &[u32]) -> u32 {
    let values: Vec<f32> = logit_bits.iter().map(|b| f32::from_bits(*b)).collect();
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn each_sequence_of_a_batch_gets_its_own_logits_bit_for_bit() {
    // Q4_K/Q6_K (row products for a few rows), Q8_0 (candle's dot products); both share
    // their arithmetic row by row whatever the number of rows.
    for file in ["smollm3-tiny-q4_k_m.gguf", "smollm3-tiny-q8_0.gguf"] {
        let model = Model::load(fixture(file)).unwrap();
        let expected = alone(&model);
        let mut caches: Vec<KvCache> = (0..3).map(|_| model.new_cache(64).unwrap()).collect();
        // The prompts go in one batch too (chunks of 5, 9 and 2 tokens).
        let prompts = prompts();
        let mut batch: Vec<BatchItem<'_>> = caches
            .iter_mut()
            .zip(&prompts)
            .map(|(cache, p)| BatchItem::new(p, cache))
            .collect();
        let first = model.forward_batch(&mut batch).unwrap();
        let mut next: Vec<u32> = first.iter().map(|l| argmax(&bits(l))).collect();
        for (step, sizes) in STEPS.iter().enumerate() {
            let inputs: Vec<Vec<u32>> = (0..3)
                .map(|s| step_input(next[s], sizes[s], step))
                .collect();
            let mut batch: Vec<BatchItem<'_>> = caches
                .iter_mut()
                .zip(&inputs)
                .map(|(cache, tokens)| BatchItem::new(tokens, cache))
                .collect();
            let logits = model.forward_batch(&mut batch).unwrap();
            assert_eq!(logits.len(), 3);
            for s in 0..3 {
                assert_eq!(
                    bits(&logits[s]),
                    expected[step][s],
                    "{file} step {step} sequence {s}"
                );
            }
            next = logits.iter().map(|l| argmax(&bits(l))).collect();
        }
        let lengths: Vec<usize> = caches.iter().map(KvCache::len).collect();
        assert_eq!(lengths, [5 + 3, 9 + 6, 2 + 3]);
    }
}

#[test]
fn a_batch_that_cannot_run_moves_no_cache() {
    let model = Model::load(fixture("smollm3-tiny-q4_k_m.gguf")).unwrap();
    let vocab = model.config().vocab_size as u32;
    let mut a = model.new_cache(64).unwrap();
    let mut b = model.new_cache(8).unwrap();
    model.forward_last(&tokens(3, 1), &mut a).unwrap();
    model.forward_last(&tokens(6, 2), &mut b).unwrap();
    let too_long = tokens(3, 3);
    let cases: [(&[u32], &[u32], &str); 3] = [
        (&[1], &[], "empty"),
        (&[1], &[vocab], "out of range"),
        // `b` holds 6 of 8 positions.
        (&[1], &too_long, "overflow"),
    ];
    for (first, second, what) in cases {
        let err = model
            .forward_batch(&mut [
                BatchItem::new(first, &mut a),
                BatchItem::new(second, &mut b),
            ])
            .unwrap_err();
        match what {
            "empty" => assert!(matches!(err, ModelError::EmptyInput), "{err}"),
            "out of range" => assert!(matches!(err, ModelError::TokenOutOfRange { .. }), "{err}"),
            _ => assert!(matches!(err, ModelError::ContextOverflow { .. }), "{err}"),
        }
        assert_eq!((a.len(), b.len()), (3, 6), "{what}");
    }
    // More tokens in all than one pass takes.
    let slice = smollm3_model::DEFAULT_PROMPT_SLICE;
    let mut big = model.new_cache(2 * slice).unwrap();
    let long = tokens(slice, 4);
    let err = model
        .forward_batch(&mut [
            BatchItem::new(&long, &mut big),
            BatchItem::new(&[1], &mut a),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("at most 512"), "{err}");
    assert_eq!((a.len(), big.len()), (3, 0));
    // An empty batch is no work.
    assert!(model.forward_batch(&mut []).unwrap().is_empty());
}

/// A draft checked in one pass (`forward_verify`) gives every position the logits of feeding
/// the tokens one at a time, bit for bit, and caches them the same; a failing one moves no
/// cache.
#[test]
fn a_verified_draft_equals_tokens_fed_one_at_a_time() {
    for file in ["smollm3-tiny-q4_k_m.gguf", "smollm3-tiny-q8_0.gguf"] {
        let model = Model::load(fixture(file)).unwrap();
        let prompt = tokens(7, 1);
        let draft = tokens(5, 2);
        let mut one = model.new_cache(64).unwrap();
        model.forward_last(&prompt, &mut one).unwrap();
        let expected: Vec<Vec<u32>> = draft
            .iter()
            .map(|&t| bits(&model.forward_last(&[t], &mut one).unwrap()))
            .collect();
        let mut all = model.new_cache(64).unwrap();
        model.forward_last(&prompt, &mut all).unwrap();
        let logits = model.forward_verify(&draft, &mut all).unwrap();
        assert_eq!(logits.dims2().unwrap().0, draft.len());
        for (i, expected) in expected.iter().enumerate() {
            assert_eq!(
                &bits(&logits.get(i).unwrap()),
                expected,
                "{file} position {i}"
            );
        }
        // The caches hold the same: the next token's logits agree too.
        let next = [3u32];
        assert_eq!(
            bits(&model.forward_last(&next, &mut all).unwrap()),
            bits(&model.forward_last(&next, &mut one).unwrap())
        );
        let before = all.len();
        let vocab = model.config().vocab_size as u32;
        assert!(model.forward_verify(&[1, vocab], &mut all).is_err());
        assert!(model.forward_verify(&[], &mut all).is_err());
        assert_eq!(all.len(), before);
    }
}

/// A draft checked as an item of a batch (`BatchItem::verify`) gets every row's logits as
/// `forward_verify` alone does, beside a sequence decoding a token, which gets its own.
#[test]
fn a_draft_in_a_batch_is_checked_as_alone() {
    let model = Model::load(fixture("smollm3-tiny-q4_k_m.gguf")).unwrap();
    let prime = |seed: u32| {
        let mut cache = model.new_cache(64).unwrap();
        model.forward_last(&tokens(6, seed), &mut cache).unwrap();
        cache
    };
    let draft = tokens(4, 5);
    let (mut a_alone, mut b_alone) = (prime(1), prime(2));
    let a_expected = bits(&model.forward_last(&[7], &mut a_alone).unwrap());
    let b_expected = model.forward_verify(&draft, &mut b_alone).unwrap();
    let (mut a, mut b) = (prime(1), prime(2));
    let out = model
        .forward_batch(&mut [
            BatchItem::new(&[7], &mut a),
            BatchItem::verify(&draft, &mut b),
        ])
        .unwrap();
    assert_eq!(bits(&out[0]), a_expected);
    assert_eq!(out[1].dims2().unwrap(), b_expected.dims2().unwrap());
    for row in 0..draft.len() {
        assert_eq!(
            bits(&out[1].get(row).unwrap()),
            bits(&b_expected.get(row).unwrap()),
            "draft row {row}"
        );
    }
    assert_eq!((a.len(), b.len()), (7, 10));
}
