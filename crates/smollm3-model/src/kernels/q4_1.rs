//! Q4_1 weights × 8-bit activations: our own kernel for the type SmolLM2's GGUF (and other
//! small models) store their matrices in.
//!
//! Why: candle has no SIMD path for Q4_1 (`BlockQ4_1::vec_dot` is its scalar loop, converting
//! four f16 values per 32-weight block); profiled on SmolLM2-135M Q4_1 with one thread, 82% of a
//! 77 ms decode step was spent there (AMD EPYC Zen 4, 2026-12-02). The AVX2 path here does a
//! block's integer work in a handful of instructions: nibbles unpacked with one mask and one
//! shift, `maddubs` (u8 × i8 pairs) and `madd` (pairs of i16) into eight i32 lanes, summed.
//! The float work per block (two products and an add) is done in candle's order, so the results
//! are bit for bit candle's and the reference-parity tests keep their margins. The weight's
//! offset `m` contributes `m × Σ activations`, which the activation block carries precomputed
//! (`s`), as in ggml's `q8_1`.
//!
//! On AVX-512 with VNNI and VBMI (Zen 4 here) [`dot_avx512_vnni`] does the integer work of
//! eight blocks in about a third of the instructions (byte permutes gather the nibbles,
//! `vpdpbusd` multiplies and sums), over activations arranged once per row ([`GroupQ8`]), and
//! prefetches the weights ahead: 1 KB took a SmolLM2 decode step from 9.0–10.0 to 7.6–8.6 ms
//! (Zen 4, interleaved runs, 2 threads; without the prefetch the new kernel only waited longer
//! on its loads), and 4 KB, the k-quant row products' distance, was 3–8% faster again in three
//! of four interleaved pairs on an Intel Xeon (SmolLM2 decode 77–87 against 73–80 tok/s). The
//! same float work, so the same bits.
//!
//! Activations are quantized per 32 values to i8 with exactly candle's arithmetic (see
//! [`quantize_row`]). The blocks of the weights are the file's own 20-byte
//! `block_q4_1` (f16 `d`, f16 `m`, 16 bytes of nibbles: value `j` is the low nibble of byte `j`,
//! value `j + 16` its high nibble), read in place.

use half::f16;

/// Values per block, for weights and activations alike.
pub const BLOCK: usize = 32;

/// ggml's `block_q4_1`: `value = d × q + m`, `q` in 0..16.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; BLOCK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// 32 activations: `value ≈ d × q`, with `s = d × Σ q` for the weights' offsets.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(16))]
pub struct BlockQ8 {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; BLOCK],
}

impl BlockQ4_1 {
    /// The block's 32 values.
    pub fn dequantize(&self) -> [f32; BLOCK] {
        let (d, m) = (self.d.to_f32(), self.m.to_f32());
        let mut out = [0f32; BLOCK];
        for (j, byte) in self.qs.iter().enumerate() {
            out[j] = d * f32::from(byte & 0x0F) + m;
            out[j + BLOCK / 2] = d * f32::from(byte >> 4) + m;
        }
        out
    }
}

/// Quantizes `x` (a multiple of 32 values) into `out` (one block per 32 values) with exactly
/// the arithmetic of ggml's `quantize_row_q8_1` as candle implements it (`d = max / 127`,
/// values times `1 / d` rounded half away from zero, `d` kept at f16, `s = f16(Σq) × d` in
/// f16). An activation's rounding is a step: a value a hair either side of a half lands one
/// unit (`max / 127`) apart, so any other arithmetic moves some logits visibly. Measured on
/// SmolLM2 against the llama.cpp goldens: an f32 scale, ggml's scalar `s` and llama.cpp's x86
/// variant (round half to even) each failed a greedy-answer or logit-parity check that this
/// arithmetic passes.
///
/// On AVX-512 32 values in two instructions per step, with the same results: a prompt of 64
/// tokens on SmolLM2 spent 4.5% of its time in the scalar loop's `roundf` calls.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8]) {
    #[cfg(target_arch = "x86_64")]
    if super::path().name == "avx512" {
        for (chunk, block) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
            // SAFETY: the avx512 path is only chosen on CPUs with AVX-512 F and BW; `chunk`
            // has BLOCK values.
            unsafe { quantize_block_avx512(chunk, block) };
        }
        return;
    }
    for (chunk, block) in x.chunks_exact(BLOCK).zip(out.iter_mut()) {
        quantize_block(chunk, block);
    }
}

/// One block of [`quantize_row`], the definition.
pub(super) fn quantize_block(chunk: &[f32], block: &mut BlockQ8) {
    let amax = chunk.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in block.qs.iter_mut().zip(chunk) {
        // |v × inverse| <= 127 by construction.
        *q = (v * inverse).round() as i8;
        sum += i32::from(*q);
    }
    finish_block(block, d, sum);
}

/// The scales at f16 precision, as ggml's `q8_1` keeps them.
fn finish_block(block: &mut BlockQ8, d: f32, sum: i32) {
    let d16 = f16::from_f32(d);
    block.d = d16.to_f32();
    block.s = (f16::from_f32(sum as f32) * d16).to_f32();
}

/// [`quantize_block`] 16 values per instruction with the same results: NaNs are skipped by the
/// maximum (`max_ps` returns its second operand, the running maximum, when the first is NaN,
/// as `f32::max` keeps the other value); products are the same single multiplications,
/// rounded half away from zero from the truncation and the exact remainder, saturated as
/// `as i8` saturates, and a NaN product becomes 0 as `NaN as i8` does.
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `chunk` must hold `BLOCK` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_block_avx512(chunk: &[f32], block: &mut BlockQ8) {
    use std::arch::x86_64::*;
    const { assert!(BLOCK == 32) };
    let values = [
        _mm512_loadu_ps(chunk.as_ptr()),
        _mm512_loadu_ps(chunk.as_ptr().add(16)),
    ];
    let amax = _mm512_max_ps(_mm512_abs_ps(values[0]), _mm512_setzero_ps());
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(values[1]), amax));
    let d = amax / 127.0;
    let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
    let scale = _mm512_set1_ps(inverse);
    let mut sum = 0i32;
    for (i, &v) in values.iter().enumerate() {
        let q = super::kquant::round_to_i8_range(_mm512_mul_ps(v, scale));
        _mm_storeu_si128(
            block.qs.as_mut_ptr().add(16 * i) as *mut __m128i,
            _mm512_cvtepi32_epi8(q),
        );
        sum += _mm512_reduce_add_epi32(q);
    }
    finish_block(block, d, sum);
}

/// The dot product of one weight row with one quantized activation row, on the best path
/// this machine has (chosen once, at the first call).
pub fn dot(w: &[BlockQ4_1], a: &[BlockQ8]) -> f32 {
    (super::path().q4_1)(w, a)
}

/// The portable path (and the reference the SIMD paths are tested against).
pub fn dot_portable(w: &[BlockQ4_1], a: &[BlockQ8]) -> f32 {
    let mut sum = 0f32;
    for (w, a) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for j in 0..BLOCK / 2 {
            let lo = i32::from(w.qs[j] & 0x0F);
            let hi = i32::from(w.qs[j] >> 4);
            sumi += lo * i32::from(a.qs[j]) + hi * i32::from(a.qs[j + BLOCK / 2]);
        }
        sum += block_value(w, a, sumi);
    }
    sum
}

/// One block's contribution from its exact integer dot product, in candle's (ggml's scalar)
/// order of float operations, so that every path gives the same bits.
#[inline(always)]
fn block_value(w: &BlockQ4_1, a: &BlockQ8, sumi: i32) -> f32 {
    sumi as f32 * w.d.to_f32() * a.d + w.m.to_f32() * a.s
}

/// AVX2: the integer work of a block in SIMD, the float work as in [`dot_portable`], so both
/// paths (and candle) give the same bits.
///
/// # Safety
/// The CPU must have AVX2 and F16C (checked by the dispatcher before it picks this path).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn dot_avx2(w: &[BlockQ4_1], a: &[BlockQ8]) -> f32 {
    use std::arch::x86_64::*;
    let mut sum = 0f32;
    let groups = w.len() / 8;
    for g in 0..groups {
        let (w8, a8) = (&w[g * 8..g * 8 + 8], &a[g * 8..g * 8 + 8]);
        // Eight blocks' totals in one vector (integer adds: exact in any order).
        let s: [__m256i; 8] = std::array::from_fn(|i| block_sums(&w8[i], &a8[i]));
        let h01 = _mm256_hadd_epi32(s[0], s[1]);
        let h23 = _mm256_hadd_epi32(s[2], s[3]);
        let h45 = _mm256_hadd_epi32(s[4], s[5]);
        let h67 = _mm256_hadd_epi32(s[6], s[7]);
        let h0123 = _mm256_hadd_epi32(h01, h23);
        let h4567 = _mm256_hadd_epi32(h45, h67);
        let t0123 = _mm_add_epi32(
            _mm256_castsi256_si128(h0123),
            _mm256_extracti128_si256(h0123, 1),
        );
        let t4567 = _mm_add_epi32(
            _mm256_castsi256_si128(h4567),
            _mm256_extracti128_si256(h4567, 1),
        );
        let sumi = _mm256_cvtepi32_ps(_mm256_set_m128i(t4567, t0123));
        // The float work of `block_value`, lane by lane, with the same roundings (separate
        // multiplies and add, no FMA), so the bits stay those of the portable path.
        let f16s = |f: fn(&BlockQ4_1) -> u16| {
            _mm256_cvtph_ps(_mm_setr_epi16(
                f(&w8[0]) as i16,
                f(&w8[1]) as i16,
                f(&w8[2]) as i16,
                f(&w8[3]) as i16,
                f(&w8[4]) as i16,
                f(&w8[5]) as i16,
                f(&w8[6]) as i16,
                f(&w8[7]) as i16,
            ))
        };
        let dx = f16s(|b| b.d.to_bits());
        let mx = f16s(|b| b.m.to_bits());
        let dy = _mm256_setr_ps(
            a8[0].d, a8[1].d, a8[2].d, a8[3].d, a8[4].d, a8[5].d, a8[6].d, a8[7].d,
        );
        let sy = _mm256_setr_ps(
            a8[0].s, a8[1].s, a8[2].s, a8[3].s, a8[4].s, a8[5].s, a8[6].s, a8[7].s,
        );
        let terms = _mm256_add_ps(
            _mm256_mul_ps(_mm256_mul_ps(sumi, dx), dy),
            _mm256_mul_ps(mx, sy),
        );
        let mut out = [0f32; 8];
        _mm256_storeu_ps(out.as_mut_ptr(), terms);
        // Accumulated in block order, as the portable path does.
        for t in out {
            sum += t;
        }
    }
    for (w, a) in w[groups * 8..].iter().zip(&a[groups * 8..]) {
        sum += block_value(w, a, block_sumi_avx2(w, a));
    }
    sum
}

/// The eight i32 partial sums of one block's integer dot product.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn block_sums(w: &BlockQ4_1, a: &BlockQ8) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    let low_mask = _mm_set1_epi8(0x0F);
    // 16 bytes of nibbles -> 32 u8 values: low nibbles, then high nibbles.
    let packed = _mm_loadu_si128(w.qs.as_ptr() as *const __m128i);
    let lo = _mm_and_si128(packed, low_mask);
    let hi = _mm_and_si128(_mm_srli_epi16(packed, 4), low_mask);
    let x = _mm256_set_m128i(hi, lo);
    let y = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
    // u8 × i8 pairs summed to i16 (at most 2 × 15 × 127: no saturation), then pairs of i16 to
    // eight i32.
    _mm256_madd_epi16(_mm256_maddubs_epi16(x, y), _mm256_set1_epi16(1))
}

/// One block's exact integer dot product (the blocks past the last whole group of eight).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_sumi_avx2(w: &BlockQ4_1, a: &BlockQ8) -> i32 {
    use std::arch::x86_64::*;
    let sums = block_sums(w, a);
    let quad = _mm_add_epi32(
        _mm256_castsi256_si128(sums),
        _mm256_extracti128_si256(sums, 1),
    );
    let pair = _mm_add_epi32(quad, _mm_unpackhi_epi64(quad, quad));
    let one = _mm_add_epi32(pair, _mm_shuffle_epi32(pair, 1));
    _mm_cvtsi128_si32(one)
}

/// Eight activation blocks laid out for [`dot_avx512_vnni`]: the first 16 values of each block
/// side by side (`lo`, 64 bytes for blocks 0–3, then 4–7), the last 16 likewise (`hi`), then the
/// eight scales and sums, so that one aligned load fetches what four weight blocks' low (or
/// high) nibbles multiply. Built once per activation row ([`GroupQ8::arrange`]) and read by
/// every weight row.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub struct GroupQ8 {
    lo: [i8; 8 * BLOCK / 2],
    hi: [i8; 8 * BLOCK / 2],
    d: [f32; 8],
    s: [f32; 8],
}

impl GroupQ8 {
    /// The whole groups of eight blocks of `a` (the blocks after the last whole group stay
    /// with `a`).
    pub fn arrange(a: &[BlockQ8]) -> Vec<GroupQ8> {
        a.chunks_exact(8)
            .map(|eight| {
                let mut g = GroupQ8 {
                    lo: [0; 8 * BLOCK / 2],
                    hi: [0; 8 * BLOCK / 2],
                    d: [0.0; 8],
                    s: [0.0; 8],
                };
                for (b, block) in eight.iter().enumerate() {
                    let half = BLOCK / 2;
                    g.lo[b * half..(b + 1) * half].copy_from_slice(&block.qs[..half]);
                    g.hi[b * half..(b + 1) * half].copy_from_slice(&block.qs[half..]);
                    g.d[b] = block.d;
                    g.s[b] = block.s;
                }
                g
            })
            .collect()
    }
}

/// A row product over activations arranged in groups ([`GroupQ8`]) plus the blocks past them.
pub type DotGrouped = fn(w: &[BlockQ4_1], groups: &[GroupQ8], a: &[BlockQ8]) -> f32;

/// For a window of four 20-byte weight blocks (80 bytes read as two 64-byte vectors): where
/// block `i / 16`'s nibble byte `i % 16` is.
#[cfg(target_arch = "x86_64")]
const NIBBLE_BYTES: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        t[i] = (20 * (i / 16) + 4 + i % 16) as u8;
        i += 1;
    }
    t
};

/// The same window's f16 scales `d` (words 0, 10, 20, 30) then offsets `m` (1, 11, 21, 31).
#[cfg(target_arch = "x86_64")]
const SCALE_WORDS: [u16; 32] = [
    0, 10, 20, 30, 1, 11, 21, 31, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0,
];

/// How far ahead of its reads [`dot_avx512_vnni`] prefetches the weights.
#[cfg(target_arch = "x86_64")]
const PREFETCH: usize = 4096;

/// Lane 0 of each 128-bit lane of two vectors: eight block totals in order.
#[cfg(target_arch = "x86_64")]
const FIRST_LANES: [u32; 16] = [0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0];

/// AVX-512 with VNNI and VBMI: eight weight blocks' nibbles gathered from 160 bytes with two
/// byte permutes, multiplied and summed by four `vpdpbusd` (u8 × i8, four products a lane), the
/// block totals reduced with shuffles; the float work is [`dot_avx2`]'s, lane for lane, so the
/// bits are the same. About a third of `dot_avx2`'s instructions a group, whose `maddubs`,
/// `madd` and `hadd` tree bounded SmolLM2's decode.
///
/// # Safety
/// The CPU must have AVX-512 F, BW, VBMI and VNNI, AVX2 and F16C; `groups` are `a`'s whole
/// groups ([`GroupQ8::arrange`]) and `w` as long as `a`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2,f16c")]
pub unsafe fn dot_avx512_vnni(w: &[BlockQ4_1], groups: &[GroupQ8], a: &[BlockQ8]) -> f32 {
    let [sum] = dot_avx512_vnni_rows::<1>(w, [groups], [a]);
    sum
}

/// [`dot_avx512_vnni`] for `R` activation rows: each group of weight blocks loaded and its
/// nibbles gathered once for all the rows (a draft to check, a batch), each row's sums and
/// float work its own, in its own order (the same bits as one row at a time). The rows' block
/// sums, one dependent add after another within a row, also run side by side.
///
/// # Safety
/// As [`dot_avx512_vnni`]'s, for every row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2,f16c")]
#[inline]
pub unsafe fn dot_avx512_vnni_rows<const R: usize>(
    w: &[BlockQ4_1],
    groups: [&[GroupQ8]; R],
    a: [&[BlockQ8]; R],
) -> [f32; R] {
    use std::arch::x86_64::*;
    let nibbles = _mm512_loadu_si512(NIBBLE_BYTES.as_ptr() as *const _);
    let scale_words = _mm512_loadu_si512(SCALE_WORDS.as_ptr() as *const _);
    let first_lanes = _mm512_loadu_si512(FIRST_LANES.as_ptr() as *const _);
    let low_mask = _mm512_set1_epi8(0x0F);
    let mut terms = [0f32; 8];
    let mut sum = [0f32; R];
    for g in 0..groups[0].len() {
        // Blocks 0–3 lie in bytes 0..80 of the group's 160, blocks 4–7 in 80..160; the last
        // load is masked to the group's own 16 bytes (a masked load never touches the rest).
        let base = w.as_ptr().add(8 * g) as *const u8;
        // The weights stream from memory: ask for the lines PREFETCH bytes ahead (past the
        // row's end they are the next row's, which this thread reads next; a prefetch never
        // faults).
        for line in 0..3 {
            _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(PREFETCH + 64 * line) as *const i8);
        }
        let w0 = _mm512_loadu_si512(base as *const _);
        let w0_next = _mm512_loadu_si512(base.add(64) as *const _);
        let w1 = _mm512_loadu_si512(base.add(80) as *const _);
        let w1_next = _mm512_maskz_loadu_epi8(0xFFFF, base.add(144) as *const i8);
        let q0 = _mm512_permutex2var_epi8(w0, nibbles, w0_next);
        let q1 = _mm512_permutex2var_epi8(w1, nibbles, w1_next);
        let (lo0, hi0) = (
            _mm512_and_si512(q0, low_mask),
            _mm512_and_si512(_mm512_srli_epi16(q0, 4), low_mask),
        );
        let (lo1, hi1) = (
            _mm512_and_si512(q1, low_mask),
            _mm512_and_si512(_mm512_srli_epi16(q1, 4), low_mask),
        );
        // [d0..d3, m0..m3] of each half, then the eight d and the eight m.
        let x0 = _mm512_castsi512_si128(_mm512_permutexvar_epi16(scale_words, w0));
        let x1 = _mm512_castsi512_si128(_mm512_permutexvar_epi16(scale_words, w1));
        let dx = _mm256_cvtph_ps(_mm_unpacklo_epi64(x0, x1));
        let mx = _mm256_cvtph_ps(_mm_unpackhi_epi64(x0, x1));
        // Macros, not closures: a closure the compiler leaves out of line is a call at every
        // use (a 4 × 4 tile attempt spent a quarter of its time in such calls).
        macro_rules! y {
            ($half:expr, $at:expr) => {
                _mm512_load_si512($half.as_ptr().add($at) as *const _)
            };
        }
        macro_rules! total {
            ($s:expr) => {{
                let pairs = _mm512_add_epi32($s, _mm512_shuffle_epi32::<0xB1>($s));
                _mm512_add_epi32(pairs, _mm512_shuffle_epi32::<0x4E>(pairs))
            }};
        }
        let zero = _mm512_setzero_si512();
        for r in 0..R {
            let group = groups[r].get_unchecked(g);
            // 128-bit lane b: four partial sums of block b (and of block 4 + b in `s1`).
            let s0 = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(zero, lo0, y!(group.lo, 0)),
                hi0,
                y!(group.hi, 0),
            );
            let s1 = _mm512_dpbusd_epi32(
                _mm512_dpbusd_epi32(zero, lo1, y!(group.lo, 64)),
                hi1,
                y!(group.hi, 64),
            );
            let totals = _mm512_permutex2var_epi32(total!(s0), first_lanes, total!(s1));
            let sumi = _mm256_cvtepi32_ps(_mm512_castsi512_si256(totals));
            let dy = _mm256_load_ps(group.d.as_ptr());
            let sy = _mm256_load_ps(group.s.as_ptr());
            let t = _mm256_add_ps(
                _mm256_mul_ps(_mm256_mul_ps(sumi, dx), dy),
                _mm256_mul_ps(mx, sy),
            );
            _mm256_storeu_ps(terms.as_mut_ptr(), t);
            // In block order, as the portable path.
            for t in terms {
                sum[r] += t;
            }
        }
    }
    let done = groups[0].len() * 8;
    for r in 0..R {
        for (w, a) in w[done..].iter().zip(&a[r][done..]) {
            sum[r] += block_value(w, a, block_sumi_avx2(w, a));
        }
    }
    sum
}

/// The weight rows of `w` (each `blocks` blocks) · up to 8 activation rows at once by
/// [`dot_avx512_vnni_rows`]: `out[r × stride + c]` for weight row `c` and activation row `r`.
/// One call per run of weight rows, the loop over them built with the kernel's features:
/// SmolLM2's rows are 18 to 48 blocks, so a few calls per row would show in decode.
///
/// # Safety
/// As [`dot_avx512_vnni`]'s; `groups` and `a` of the same 1 to 8 rows of `blocks` blocks;
/// `out` valid for every write.
#[cfg(target_arch = "x86_64")]
unsafe fn grouped_rows(
    w: &[BlockQ4_1],
    blocks: usize,
    groups: &[&[GroupQ8]],
    a: &[&[BlockQ8]],
    (out, stride): (*mut f32, usize),
) {
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2,f16c")]
    unsafe fn run<const R: usize>(
        w: &[BlockQ4_1],
        blocks: usize,
        groups: &[&[GroupQ8]],
        a: &[&[BlockQ8]],
        (out, stride): (*mut f32, usize),
    ) {
        let (mut g, mut rows): ([&[GroupQ8]; R], [&[BlockQ8]; R]) = ([&[]; R], [&[]; R]);
        for r in 0..R {
            (g[r], rows[r]) = (groups[r], a[r]);
        }
        for (c, w) in w.chunks_exact(blocks).enumerate() {
            for (r, value) in dot_avx512_vnni_rows::<R>(w, g, rows)
                .into_iter()
                .enumerate()
            {
                *out.add(r * stride + c) = value;
            }
        }
    }
    match a.len() {
        1 => run::<1>(w, blocks, groups, a, (out, stride)),
        2 => run::<2>(w, blocks, groups, a, (out, stride)),
        3 => run::<3>(w, blocks, groups, a, (out, stride)),
        4 => run::<4>(w, blocks, groups, a, (out, stride)),
        5 => run::<5>(w, blocks, groups, a, (out, stride)),
        6 => run::<6>(w, blocks, groups, a, (out, stride)),
        7 => run::<7>(w, blocks, groups, a, (out, stride)),
        8 => run::<8>(w, blocks, groups, a, (out, stride)),
        n => unreachable!("{n} activation rows (1 to 8)"),
    }
}

/// `dst[r × n + c] = lhs row r · weight row c` for `lhs` `[m, k]` and the `n` rows of `k`
/// values in `weights`; the activations are quantized once, the columns split over our pool.
/// Slices that do not have these sizes (or `k` not a multiple of 32) are an error naming the
/// shapes.
pub fn matmul(
    mkn: (usize, usize, usize),
    lhs: &[f32],
    weights: &[BlockQ4_1],
    dst: &mut [f32],
) -> crate::Result<()> {
    matmul_on(super::path(), mkn, lhs, weights, dst)
}

/// Prompts of at least this many rows go through the panels ([`super::q4_1_panels`]) where
/// the path has them; fewer go through the row products, several rows at once where the path
/// has the grouped kernel ([`dot_avx512_vnni_rows`]). SmolLM2-135M on Zen 4, a pass of k
/// tokens against k one-token steps (`forward_verify`): with panels from 4 rows, 2/4/8 tokens
/// took 1.7/3.0/5.5 steps; from 16 rows with the rows kernel, 1.6/2.6/3.8.
const PANEL_MIN_ROWS: usize = 16;

/// [`matmul`] on a given path (the tests run every path).
pub(crate) fn matmul_on(
    path: &super::Path,
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    weights: &[BlockQ4_1],
    dst: &mut [f32],
) -> crate::Result<()> {
    let blocks = k / BLOCK;
    // The raw writes below rely on these.
    if !(k.is_multiple_of(BLOCK)
        && lhs.len() == m * k
        && weights.len() == n * blocks
        && dst.len() >= m * n)
    {
        return Err(candle_core::Error::Msg(format!(
            "q4_1 matmul ({m}, {k}, {n}): got {} activations, {} blocks, room for {}",
            lhs.len(),
            weights.len(),
            dst.len()
        ))
        .into());
    }
    if k == 0 {
        // Empty rows: every dot product is zero (and no chunk of zero blocks is taken below).
        dst[..m * n].fill(0.0);
        return Ok(());
    }
    let zero = BlockQ8 {
        d: 0.0,
        s: 0.0,
        qs: [0; BLOCK],
    };
    let mut quantized = vec![zero; m * blocks];
    for (row, out) in lhs.chunks_exact(k).zip(quantized.chunks_exact_mut(blocks)) {
        quantize_row(row, out);
    }
    let dst_address = dst.as_mut_ptr() as usize;
    let quantized = &quantized;
    if let (Some(kernels), true) = (path.q4_1_panel, m >= PANEL_MIN_ROWS) {
        use super::q4_1_panels::PANEL;
        let rows: Vec<&[BlockQ8]> = quantized.chunks_exact(blocks).collect();
        let rows = &rows;
        super::pool().execute_chunked(n.div_ceil(PANEL), |panels| {
            let mut panel = Vec::new();
            let mut values = vec![[0f32; PANEL]; m];
            for p in panels {
                let columns = p * PANEL..((p + 1) * PANEL).min(n);
                (kernels.unpack)(weights, blocks, columns.clone(), &mut panel);
                (kernels.tile)(&panel, rows, &mut values);
                for (r, row) in values.iter().enumerate() {
                    for (c, value) in columns.clone().zip(row) {
                        // SAFETY: `dst` holds `m × n` values (checked above), and each
                        // (r, c) is written by exactly one work item: the pool splits the
                        // panels.
                        unsafe { *(dst_address as *mut f32).add(r * n + c) = *value };
                    }
                }
            }
        });
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if path.q4_1_grouped.is_some() {
        // The grouped kernel's CPU: several rows at once, each group of weights gathered
        // once for them; the activations arranged in groups once per row.
        let grouped: Vec<Vec<GroupQ8>> = quantized
            .chunks_exact(blocks)
            .map(GroupQ8::arrange)
            .collect();
        let rows: Vec<&[BlockQ8]> = quantized.chunks_exact(blocks).collect();
        let groups: Vec<&[GroupQ8]> = grouped.iter().map(Vec::as_slice).collect();
        let (rows, groups) = (&rows, &groups);
        super::pool().execute_chunked(n, |columns| {
            let w = &weights[columns.start * blocks..columns.end * blocks];
            for r0 in (0..m).step_by(8) {
                let r1 = (r0 + 8).min(m);
                let out = (dst_address as *mut f32).wrapping_add(r0 * n + columns.start);
                // SAFETY: `q4_1_grouped` is set only where VNNI and VBMI are (the kernel's
                // CPU); rows, groups and weight rows have `blocks` blocks each; `dst` holds
                // `m × n` values (checked above), and each (r, c) is written by exactly one
                // work item: the pool splits the columns.
                unsafe { grouped_rows(w, blocks, &groups[r0..r1], &rows[r0..r1], (out, n)) };
            }
        });
        return Ok(());
    }
    let dot = path.q4_1;
    super::pool().execute_chunked(n, |columns| {
        for c in columns {
            let w = &weights[c * blocks..(c + 1) * blocks];
            for r in 0..m {
                let value = dot(w, &quantized[r * blocks..(r + 1) * blocks]);
                // SAFETY: `dst` holds `m × n` values (checked above), and each (r, c)
                // is written by exactly one work item: the pool splits the columns.
                unsafe { *(dst_address as *mut f32).add(r * n + c) = value };
            }
        }
    });
    Ok(())
}
