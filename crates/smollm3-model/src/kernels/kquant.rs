//! Q4_K and Q6_K weights × Q8_K activations for prompts: the types of SmolLM3-3B Q4_K_M.
//!
//! Why: a prompt's matmul multiplies every weight by hundreds of activation rows, and candle's
//! kernel (ggml's AVX2 dot product) unpacks each 144-byte Q4_K super-block (scales, nibbles)
//! again for every row it meets. Here each super-block is unpacked once per call into
//! [`Unpacked`] (its 256 values as bytes, one i16 scale per pair of values, the offset terms),
//! held in a per-thread buffer for a tile of columns while every activation row streams past
//! it, so the inner loop is only `maddubs` (u8 × i8 pairs), `madd` with the scales and an add.
//! Both types fit the same form, which is why one kernel serves both:
//!
//! - Q4_K: `value = d × sc[j] × q − dmin × m[j]`, 8 sub-blocks of 32, `q` in 0..16;
//! - Q6_K: `value = d × sc[g] × (q − 32)`, 16 groups of 16, `q` in 0..64.
//!
//! **Same bits as candle.** An activation's 8-bit rounding is a step, so a float difference
//! of one ulp in a matmul can move a value of the next layer's input by a whole unit; on the
//! random-weight Q4_K_M fixture a kernel with another float order (exact integers, f32
//! accumulation) moved the logits by 0.2 of 5.8 and flipped a greedy token the llama.cpp and HF
//! goldens agree on. So the integer sums here land in the same eight i32 lanes as in ggml's
//! AVX2 `vec_dot_q4_K_q8_K` / `vec_dot_q6_K_q8_K` (which candle runs), Q6_K's `−32` is taken
//! off in i16 before the scales as there, Q4_K's mins go through the same four float lanes
//! (on the SIMD paths in a pass of their own, [`super::kquant_mins`], added last as ggml
//! adds them), and the float work per super-block and the final reductions are theirs, op
//! for op: every path (portable, AVX2, AVX-512) returns candle's bits, which the tests check.
//! (Where a kernel takes the activations plus 128, what that adds to each lane is taken off
//! as an exact integer: the same lanes.)
//!
//! The kernels by path: portable (the reference), AVX2 (4 rows × 2 columns), AVX-512
//! ([`super::kquant_pairs`]: two activation rows per 512-bit vector, 6 rows × 4 columns; its
//! Q6_K form takes two multiplying instructions where ggml's takes three and a quarter, one
//! and a `vpdpwssd` with VNNI) and, with VNNI, Q4_K by `vpdpbusd` (three multiplying
//! instructions where the others take four). Zen 4, 2 threads, prefill @512: the 4 × 4
//! AVX-512 kernel that kept an accumulator per (row, column) ran at 19–21 tok/s in one
//! sitting; pairs of rows 25–26; 6 rows 32–34; VNNI for Q4_K 33–36 (interleaved runs, the
//! page-fault fix in between). The driver that runs them over a matmul, column tile by column
//! tile on the pool: [`super::kquant_gemm`] ([`matmul`], [`matmul_uninit`]).
//!
//! Single rows (decode) are not unpacked to memory (the weights are read once, and unpacking
//! them to a buffer first would only add work): see [`super::kquant_rows`]. The activations
//! are quantized with exactly candle's arithmetic ([`quantize_row`]).

use half::f16;

pub use super::kquant_gemm::{matmul, matmul_uninit, MAX_TILE};
pub use super::kquant_mins::RowSums;
pub use super::kquant_pairs::PairQ8K;

/// Values per super-block.
pub const QK_K: usize = 256;

/// ggml's `block_q4_K`, as stored in the file (144 bytes).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    /// Eight 6-bit scales and eight 6-bit mins, packed (see [`BlockQ4K::scale_min`]).
    pub scales: [u8; 12],
    /// Value `64i + l` is the low nibble of byte `32i + l`, value `64i + 32 + l` its high one.
    pub qs: [u8; QK_K / 2],
}

/// ggml's `block_q6_K`, as stored in the file (210 bytes).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low four bits of each value.
    pub ql: [u8; QK_K / 2],
    /// High two bits of each value.
    pub qh: [u8; QK_K / 4],
    /// One signed scale per 16 values.
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}

/// ggml's `block_q8_K`: 256 activations `≈ d × q` and the sums of each 16 of them.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// One super-block unpacked for the dot products (640 bytes, a cache-line multiple).
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
pub struct Unpacked {
    /// The 256 codes, unsigned, in order (Q6_K's still carry their `+32`).
    pub q: [u8; QK_K],
    /// The scale of values `2p` and `2p + 1` (a pair is never split between two scales).
    pub scales: [i16; QK_K / 2],
    /// Q4_K's eight scales, one per 32 values (zero for Q6_K).
    pub sub_scales: [i16; 8],
    /// `128 ×` the sum over the super-block of scale × code (Q4_K) or scale × (code − 32)
    /// (Q6_K), per AVX2 lane (values `4l..4l+4` of each 32): what activations made unsigned
    /// (`+ 128`) add to each lane (the AVX-512 pair kernels, [`super::kquant_pairs`]).
    pub unsigned_correction: [i32; 8],
    /// Q4_K's eight mins (zero for Q6_K).
    pub mins: [i16; 8],
    pub d: f32,
    /// Q4_K's `dmin` (zero for Q6_K).
    pub dmin: f32,
}

const _: () = assert!(std::mem::size_of::<Unpacked>() == 640);

impl Unpacked {
    pub const ZERO: Self = Self {
        q: [0; QK_K],
        scales: [0; QK_K / 2],
        sub_scales: [0; 8],
        unsigned_correction: [0; 8],
        mins: [0; 8],
        d: 0.0,
        dmin: 0.0,
    };
}

/// A weight super-block type this kernel handles.
pub trait SuperBlock: Copy + Send + Sync + 'static {
    /// The tile kernels of this type on `path`.
    fn tiles(path: &super::Path) -> Tiles;
    /// Into the common form (see the module doc). The definition, in plain code: the tests'
    /// reference for [`SuperBlock::unpack_fast`].
    fn unpack(&self, out: &mut Unpacked);
    /// [`SuperBlock::unpack`] on the SIMD path in use where the type has one, with the same
    /// result: what the prompt kernels call, once per super-block and call.
    fn unpack_fast(&self, out: &mut Unpacked) {
        self.unpack(out)
    }
    /// The 256 values, computed from the format's definition (the tests' reference).
    fn dequantize(&self) -> [f32; QK_K];
}

impl BlockQ4K {
    /// Sub-block `j`'s 6-bit scale and min (ggml's `get_scale_min_k4`).
    pub fn scale_min(&self, j: usize) -> (u8, u8) {
        let s = &self.scales;
        if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            (
                (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
                (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
            )
        }
    }
}

impl SuperBlock for BlockQ4K {
    fn tiles(path: &super::Path) -> Tiles {
        path.q4k
    }

    fn unpack(&self, out: &mut Unpacked) {
        for i in 0..4 {
            for l in 0..32 {
                let byte = self.qs[32 * i + l];
                out.q[64 * i + l] = byte & 0x0F;
                out.q[64 * i + 32 + l] = byte >> 4;
            }
        }
        out.unsigned_correction = [0; 8];
        for j in 0..8 {
            let (scale, min) = self.scale_min(j);
            out.scales[16 * j..16 * j + 16].fill(i16::from(scale));
            out.sub_scales[j] = i16::from(scale);
            out.mins[j] = i16::from(min);
            for (l, correction) in out.unsigned_correction.iter_mut().enumerate() {
                let at = 32 * j + 4 * l;
                let four =
                    u32::from_le_bytes([out.q[at], out.q[at + 1], out.q[at + 2], out.q[at + 3]]);
                // The four codes' sum in the top byte (each below 16: no carries).
                let codes = (four.wrapping_mul(0x0101_0101) >> 24) as i32;
                *correction += 128 * i32::from(scale) * codes;
            }
        }
        out.d = self.d.to_f32();
        out.dmin = self.dmin.to_f32();
    }

    fn unpack_fast(&self, out: &mut Unpacked) {
        #[cfg(target_arch = "x86_64")]
        if super::path().name != "portable" {
            // SAFETY: every path but the portable one is chosen only on CPUs with AVX2.
            unsafe { unpack_q4k_avx2(self, out) };
            return;
        }
        self.unpack(out)
    }

    fn dequantize(&self) -> [f32; QK_K] {
        let (d, dmin) = (self.d.to_f32(), self.dmin.to_f32());
        let mut out = [0f32; QK_K];
        for (v, value) in out.iter_mut().enumerate() {
            let (chunk, within) = (v / 64, v % 64);
            let byte = self.qs[32 * chunk + within % 32];
            let q = if within < 32 { byte & 0x0F } else { byte >> 4 };
            let (scale, min) = self.scale_min(v / 32);
            *value = d * f32::from(scale) * f32::from(q) - dmin * f32::from(min);
        }
        out
    }
}

/// [`BlockQ4K`]'s `unpack` in AVX2: nibbles split 32 bytes at a time, each scale spread over
/// its 16 pairs with one store, the VNNI correction's lane sums of codes by `maddubs` and
/// `madd` with ones. The scalar unpack (its correction a byte at a time) was 13% of a
/// 64-token prompt chunk's time on the 3B file, the chunk size generation uses.
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn unpack_q4k_avx2(block: &BlockQ4K, out: &mut Unpacked) {
    use std::arch::x86_64::*;
    let nibble = _mm256_set1_epi8(0x0F);
    for i in 0..4 {
        let bytes = _mm256_loadu_si256(block.qs.as_ptr().add(32 * i) as *const __m256i);
        let low = _mm256_and_si256(bytes, nibble);
        let high = _mm256_and_si256(_mm256_srli_epi16::<4>(bytes), nibble);
        _mm256_storeu_si256(out.q.as_mut_ptr().add(64 * i) as *mut __m256i, low);
        _mm256_storeu_si256(out.q.as_mut_ptr().add(64 * i + 32) as *mut __m256i, high);
    }
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    let mut correction = _mm256_setzero_si256();
    for j in 0..8 {
        let (scale, min) = block.scale_min(j);
        let (scale, min) = (i16::from(scale), i16::from(min));
        _mm256_storeu_si256(
            out.scales.as_mut_ptr().add(16 * j) as *mut __m256i,
            _mm256_set1_epi16(scale),
        );
        out.sub_scales[j] = scale;
        out.mins[j] = min;
        // Lane l: the sum of codes 4l..4l+4 of sub-block j (each below 16: no saturation).
        let codes = _mm256_loadu_si256(out.q.as_ptr().add(32 * j) as *const __m256i);
        let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(codes, ones8), ones16);
        correction = _mm256_add_epi32(
            correction,
            _mm256_mullo_epi32(sums, _mm256_set1_epi32(128 * i32::from(scale))),
        );
    }
    _mm256_storeu_si256(
        out.unsigned_correction.as_mut_ptr() as *mut __m256i,
        correction,
    );
    out.d = block.d.to_f32();
    out.dmin = block.dmin.to_f32();
}

impl BlockQ6K {
    /// Value `v`'s unsigned 6-bit code (ggml's `dequantize_row_q6_K` layout: each half of 128
    /// values has 64 bytes of `ql` and 32 of `qh`; value `l + 32s` of a half takes the low or
    /// high nibble of `ql[l + 32 (s % 2)]` and bits `2s..2s+2` of `qh[l]`).
    fn code(&self, v: usize) -> u8 {
        let (half, within) = (v / 128, v % 128);
        let (s, l) = (within / 32, within % 32);
        let ql = self.ql[64 * half + l + 32 * (s % 2)];
        let low = if s < 2 { ql & 0x0F } else { ql >> 4 };
        let high = (self.qh[32 * half + l] >> (2 * s)) & 3;
        low | (high << 4)
    }
}

impl SuperBlock for BlockQ6K {
    fn tiles(path: &super::Path) -> Tiles {
        path.q6k
    }

    fn unpack(&self, out: &mut Unpacked) {
        // `code` value by value, in loops the compiler vectorizes (unpacking is per call).
        for half in 0..2 {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let q = &mut out.q[128 * half..128 * half + 128];
            for l in 0..32 {
                q[l] = (ql[l] & 0x0F) | ((qh[l] & 3) << 4);
                q[32 + l] = (ql[32 + l] & 0x0F) | (((qh[l] >> 2) & 3) << 4);
                q[64 + l] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                q[96 + l] = (ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        for (p, scale) in out.scales.iter_mut().enumerate() {
            *scale = i16::from(self.scales[p / 8]);
        }
        // What activations made unsigned (`+ 128`) add to each lane of
        // Q6_K's AVX-512 pair kernel, which multiplies them by `code − 32`.
        // Lane `l` of chunk `s` holds values `32s + 4l ..+ 4`, all of group `2s + l / 4`.
        let mut correction = [0i32; 8];
        for (s, chunk) in out.q.chunks_exact(32).enumerate() {
            for (l, four) in chunk.chunks_exact(4).enumerate() {
                let codes: i32 = four.iter().map(|&c| i32::from(c)).sum();
                let scale = i32::from(self.scales[2 * s + l / 4]);
                correction[l] += 128 * scale * (codes - 4 * 32);
            }
        }
        out.mins = [0; 8];
        out.sub_scales = [0; 8];
        out.unsigned_correction = correction;
        out.d = self.d.to_f32();
        out.dmin = 0.0;
    }

    fn dequantize(&self) -> [f32; QK_K] {
        let d = self.d.to_f32();
        std::array::from_fn(|v| {
            d * f32::from(self.scales[v / 16]) * (f32::from(self.code(v)) - 32.0)
        })
    }
}

/// Quantizes `x` (a multiple of 256 values) into `out` with exactly candle's arithmetic
/// (`BlockQ8K::from_float`: scale `−127 / max` by the signed value of largest magnitude,
/// rounded half away from zero, `d = 1 / scale`), so this kernel and candle's single-row one
/// see the same integers. On AVX-512 16 values per instruction: a decode step quantizes 253
/// activation rows one after another on one thread, 2.9 ms of a 3B step (Zen 4) with the
/// scalar loop's `roundf` calls.
pub fn quantize_row(x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if super::path().name == "avx512" {
        for (xs, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
            // SAFETY: the avx512 path is only chosen on CPUs with AVX-512 F and BW; `xs` has
            // QK_K values.
            unsafe { quantize_block_avx512(xs, y) };
        }
        return;
    }
    for (xs, y) in x.chunks_exact(QK_K).zip(out.iter_mut()) {
        quantize_block(xs, y);
    }
}

/// One block of [`quantize_row`], the definition: candle's loop.
pub(super) fn quantize_block(xs: &[f32], y: &mut BlockQ8K) {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in xs {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        y.d = 0.0;
        y.qs.fill(0);
        y.bsums.fill(0);
        return;
    }
    let iscale = -127f32 / max;
    for (q, &v) in y.qs.iter_mut().zip(xs) {
        *q = (iscale * v).round().clamp(-128.0, 127.0) as i8;
    }
    for (g, sum) in y.bsums.iter_mut().enumerate() {
        *sum = y.qs[16 * g..16 * g + 16]
            .iter()
            .map(|&q| i16::from(q))
            .sum();
    }
    y.d = 1.0 / iscale;
}

/// [`quantize_block`] 16 values at a time with the same results: the first value of largest
/// magnitude picks the scale (NaNs are skipped, as the scalar `<` skips them), products are
/// the same single multiplications, rounded half away from zero from the truncation and the
/// exact remainder, and a NaN product becomes 0 as `NaN as i8` does.
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `xs` must hold `QK_K` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_block_avx512(xs: &[f32], y: &mut BlockQ8K) {
    use std::arch::x86_64::*;
    let abs_mask = _mm512_set1_epi32(0x7FFF_FFFF);
    let abs = |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
    let mut amax = _mm512_setzero_ps();
    for i in 0..QK_K / 16 {
        let a = abs(_mm512_loadu_ps(xs.as_ptr().add(16 * i)));
        // An ordered comparison: NaN lanes never win, as in the scalar loop.
        let bigger = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, amax);
        amax = _mm512_mask_mov_ps(amax, bigger, a);
    }
    let amax = _mm512_reduce_max_ps(amax);
    if amax == 0.0 {
        y.d = 0.0;
        y.qs.fill(0);
        y.bsums.fill(0);
        return;
    }
    // The first value whose magnitude is the maximum.
    let target = _mm512_set1_ps(amax);
    let mut max = 0f32;
    for i in 0..QK_K / 16 {
        let a = abs(_mm512_loadu_ps(xs.as_ptr().add(16 * i)));
        let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(a, target);
        if hit != 0 {
            max = xs[16 * i + hit.trailing_zeros() as usize];
            break;
        }
    }
    let iscale = -127f32 / max;
    let scale = _mm512_set1_ps(iscale);
    for i in 0..QK_K / 16 {
        let q = round_to_i8_range(_mm512_mul_ps(
            scale,
            _mm512_loadu_ps(xs.as_ptr().add(16 * i)),
        ));
        _mm_storeu_si128(
            y.qs.as_mut_ptr().add(16 * i) as *mut __m128i,
            _mm512_cvtepi32_epi8(q),
        );
        y.bsums[i] = _mm512_reduce_add_epi32(q) as i16;
    }
    y.d = 1.0 / iscale;
}

/// Products rounded as `f32::round` rounds them (half away from zero: from the truncation and
/// the exact remainder), saturated as `as i8` saturates, a NaN to 0 as `NaN as i8` gives:
/// the activation quantizers' step, 16 values at a time, as i32 lanes.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn round_to_i8_range(p: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    let abs_mask = _mm512_set1_epi32(0x7FFF_FFFF);
    let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(p);
    // |p - t| is exact; from one half on, away from zero by one.
    let remainder = _mm512_castsi512_ps(_mm512_and_si512(
        _mm512_castps_si512(_mm512_sub_ps(p, t)),
        abs_mask,
    ));
    let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(remainder, _mm512_set1_ps(0.5));
    let signed_one = _mm512_or_ps(
        _mm512_set1_ps(1.0),
        _mm512_castsi512_ps(_mm512_andnot_si512(abs_mask, _mm512_castps_si512(p))),
    );
    let r = _mm512_mask_add_ps(t, away, t, signed_one);
    let r = _mm512_min_ps(
        _mm512_max_ps(r, _mm512_set1_ps(-128.0)),
        _mm512_set1_ps(127.0),
    );
    let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
    _mm512_maskz_cvttps_epi32(ordered, r)
}

/// Dot products of `a.len()` activation rows with `w.len()` unpacked weight rows, each added
/// to `out[r × stride + c]`, where the prompt driver has put Q4_K's mins (ggml's `sum + m`:
/// the same bits either way round) or `−0.0` (`−0.0 + x` is `x`, bit for bit): straight into
/// the driver's column tile, with no copies between. Each kernel takes one shape (see
/// [`Tiles`]) and panics on another.
pub type Tile = fn(a: &[&[BlockQ8K]], w: &[&[Unpacked]], out: &mut [f32], stride: usize);

/// The kernels of one weight type on one path: a full `rows × cols` tile, its edges
/// (`1 × cols`, `rows × 1`) and a single dot product. Sharing each loaded weight vector between
/// `rows` activation rows and each activation vector between `cols` weight rows is what keeps
/// the inner loop out of L2: one row at a time it would read two bytes of unpacked weights per
/// multiply-add (measured: slower than candle at 512 rows).
#[derive(Clone, Copy)]
pub struct Tiles {
    /// The kernels take the activation codes plus 128, as unsigned bytes (see
    /// [`make_unsigned`]).
    pub unsigned_activations: bool,
    pub rows: usize,
    pub cols: usize,
    pub full: Tile,
    pub row_edge: Tile,
    pub col_edge: Tile,
    pub single: Tile,
    /// Q4_K's mins term computed apart ([`super::kquant_mins`]): the tile kernels leave it
    /// out and the driver adds this pass's value to theirs (ggml's `sum + m`, the same bits).
    /// `None`: the kernels add it themselves.
    pub mins: Option<super::kquant_mins::MinsTile>,
    /// The `rows × cols` and `rows × 1` tiles over activation rows interleaved in pairs
    /// ([`PairQ8K`], one load per chunk of both rows), where the path has them: the driver
    /// then interleaves the rows of its full tiles once per call and keeps only the others
    /// as blocks.
    pub paired: Option<PairedTiles>,
}

/// A tile over `rows / 2` interleaved pairs of activation rows, added to `out` as a [`Tile`]
/// adds.
pub type PairedTile = fn(a: &[&[PairQ8K]], w: &[&[Unpacked]], out: &mut [f32], stride: usize);

/// [`Tiles::full`] and [`Tiles::col_edge`] over interleaved pairs ([`Tiles::paired`]).
#[derive(Clone, Copy)]
pub struct PairedTiles {
    pub full: PairedTile,
    pub col_edge: PairedTile,
}

/// ggml's `hsum_float_8`: the high half plus the low half, then lanes 0 + 2 and 1 + 3, then
/// those two.
fn hsum8(v: [f32; 8]) -> f32 {
    let r: [f32; 4] = std::array::from_fn(|i| v[4 + i] + v[i]);
    (r[0] + r[2]) + (r[1] + r[3])
}

/// The portable path: the SIMD paths' lanes emulated one by one, with the same fused
/// multiply-adds and reductions, so it returns the same bits (and is their reference).
/// `Q6` takes 32 off every code (Q6_K); otherwise the mins term is added (Q4_K).
pub fn dot_portable<const Q6: bool>(a: &[BlockQ8K], w: &[Unpacked]) -> f32 {
    let mut acc = [0f32; 8];
    let mut acc_m = [0f32; 4];
    for (u, y) in w.iter().zip(a) {
        // Lane `l` of the 32-value vector `s` holds values 32s + 4l .. 32s + 4l + 4.
        let mut sumi = [0i32; 8];
        for (v, (&q, &x)) in u.q.iter().zip(&y.qs).enumerate() {
            let code = i32::from(q) - if Q6 { 32 } else { 0 };
            sumi[(v % 32) / 4] += i32::from(u.scales[v / 2]) * code * i32::from(x);
        }
        let d = y.d * u.d;
        for (acc, sumi) in acc.iter_mut().zip(sumi) {
            *acc = d.mul_add(sumi as f32, *acc);
        }
        if !Q6 {
            let dmin = -y.d * u.dmin;
            let pair = |j: usize| i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1]);
            for (i, acc_m) in acc_m.iter_mut().enumerate() {
                let prod = i32::from(u.mins[2 * i]) * pair(2 * i)
                    + i32::from(u.mins[2 * i + 1]) * pair(2 * i + 1);
                *acc_m = dmin.mul_add(prod as f32, *acc_m);
            }
        }
    }
    let sum = hsum8(acc);
    if Q6 {
        sum
    } else {
        sum + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3]))
    }
}

/// AVX2: per 32 values, row and column, `maddubs` (u8 × i8 pairs to i16, at most
/// 2 × 63 × 127: no saturation), Q6_K's `32 × y` pairs taken off, `madd` with the pairs'
/// scales into eight i32 lanes. Each weight vector is loaded once for the `R` rows, each
/// activation vector once for the `C` columns.
///
/// # Safety
/// The CPU must have AVX2 and FMA; every `w[c]` and `a[r]` as long as `a[0]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot_avx2<const R: usize, const C: usize, const Q6: bool>(
    a: [&[BlockQ8K]; R],
    w: [&[Unpacked]; C],
) -> [[f32; C]; R] {
    use std::arch::x86_64::*;
    let m32 = _mm256_set1_epi8(32);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    for b in 0..a[0].len() {
        let mut sumi = [[_mm256_setzero_si256(); C]; R];
        for s in 0..QK_K / 32 {
            let ys: [__m256i; R] = std::array::from_fn(|r| {
                _mm256_loadu_si256(a[r].get_unchecked(b).qs.as_ptr().add(32 * s) as *const __m256i)
            });
            let offsets: [__m256i; R] = std::array::from_fn(|r| {
                if Q6 {
                    _mm256_maddubs_epi16(m32, ys[r])
                } else {
                    _mm256_setzero_si256()
                }
            });
            for c in 0..C {
                let u = w[c].get_unchecked(b);
                let q = _mm256_load_si256(u.q.as_ptr().add(32 * s) as *const __m256i);
                let scales = _mm256_loadu_si256(u.scales.as_ptr().add(16 * s) as *const __m256i);
                for r in 0..R {
                    let mut pairs = _mm256_maddubs_epi16(q, ys[r]);
                    if Q6 {
                        pairs = _mm256_sub_epi16(pairs, offsets[r]);
                    }
                    sumi[r][c] = _mm256_add_epi32(sumi[r][c], _mm256_madd_epi16(scales, pairs));
                }
            }
        }
        scale_block::<R, C>(&a, &w, b, &sumi, &mut acc);
    }
    // Q4_K's mins term is left out: the driver adds [`Tiles::mins`]' value.
    std::array::from_fn(|r| std::array::from_fn(|c| hsum_float_8(acc[r][c])))
}

/// A block's activation codes plus 128, stored as unsigned bytes (flipping the sign bit), for
/// `vpdpbusd`; its `d` and `bsums` stay those of the signed codes.
pub fn make_unsigned(block: &mut BlockQ8K) {
    for q in &mut block.qs {
        *q ^= i8::MIN;
    }
}

/// Super-block `b`'s float work for every (row, column) of an AVX2 tile: the eight integer
/// lanes times `d_y × d` into the row's accumulator (ggml's order, see the module doc). The
/// AVX-512 pair kernels do the same two rows at a time ([`super::kquant_pairs`]); Q4_K's mins are
/// [`super::kquant_mins`]' on both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_block<const R: usize, const C: usize>(
    a: &[&[BlockQ8K]; R],
    w: &[&[Unpacked]; C],
    b: usize,
    sumi: &[[std::arch::x86_64::__m256i; C]; R],
    acc: &mut [[std::arch::x86_64::__m256; C]; R],
) {
    use std::arch::x86_64::*;
    for r in 0..R {
        let y = a[r].get_unchecked(b);
        for c in 0..C {
            let u = w[c].get_unchecked(b);
            acc[r][c] = _mm256_fmadd_ps(
                _mm256_set1_ps(y.d * u.d),
                _mm256_cvtepi32_ps(sumi[r][c]),
                acc[r][c],
            );
        }
    }
}

/// The sums of each 32 activations of a Q8_K block (pairs of `bsums`, added by `hadd` as
/// ggml does), for Q4_K's mins (decode's row products; prompts take [`RowSums`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn pair_sums(y: &BlockQ8K) -> std::arch::x86_64::__m128i {
    use std::arch::x86_64::*;
    let bsums = _mm256_loadu_si256(y.bsums.as_ptr() as *const __m256i);
    _mm_hadd_epi16(
        _mm256_castsi256_si128(bsums),
        _mm256_extracti128_si256(bsums, 1),
    )
}

/// ggml's `hsum_float_8`: the high half plus the low half, then lanes 0 + 2 and 1 + 3, then
/// those two. A tile's or row product's final sum where no mins are added (Q6_K, and the
/// prompt tiles, whose Q4_K mins [`super::kquant_mins`] adds).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn hsum_float_8(acc: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let r = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
    let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)))
}

/// ggml's final Q4_K reduction: [`hsum_float_8`] plus the four mins lanes (0 + 2, 1 + 3,
/// then those two).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn finish(
    acc: std::arch::x86_64::__m256,
    acc_m: std::arch::x86_64::__m128,
) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
    hsum_float_8(acc) + _mm_cvtss_f32(_mm_add_ss(m, _mm_movehdup_ps(m)))
}
