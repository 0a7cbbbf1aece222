//! The engine's own matrix kernels for AVX-512 CPUs, for products whose right-hand side is a
//! layer's weights: packed once, when the layer is prepared, into panels of 16-column vectors,
//! so that a call streams them as they lie (a general-purpose product packs its operands on every
//! call, which at batch 1 costs as much as the product). The left-hand side (pixels or Winograd
//! tiles, channels contiguous) is read in place, one value (f32) or one pair of values (bf16)
//! broadcast at a time, and the output is written channels-last with the bias and ReLU applied.
//!
//! Three element types share the layout: f32 with fused multiply-adds, bf16 with f32
//! accumulation (`vdpbf16ps`, AVX512_BF16: a pair of products per lane and instruction, twice
//! f32's rate), and u8 x s8 with exact i32 accumulation (`vpdpbusd`, AVX512_VNNI: four products
//! per lane and instruction), rescaled per column to f32 as it is stored. They are chosen at run
//! time from the CPU's features; [`reference_product`] is the scalar definition the tests hold
//! the float ones to, and the int8 network's integer convolution the u8 one.

use std::ops::Range;

use half::bf16;
use rayon::prelude::*;

use crate::MatMut;

/// Columns per vector (16 f32 lanes), vectors per panel, and rows per kernel call: 8 x 3
/// accumulators fill 24 of the 32 vector registers.
const LANES: usize = 16;
const PANEL_VECTORS: usize = 3;
const PANEL: usize = LANES * PANEL_VECTORS;
const ROWS: usize = 8;

/// The element type of a packed product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Element {
    F32,
    Bf16,
    /// u8 left-hand side, s8 right-hand side.
    U8S8,
}

impl Element {
    /// Values per packed word: f32 one, bf16 a pair, u8/s8 four (consecutive rows of the
    /// depth).
    fn per_word(self) -> usize {
        match self {
            Element::F32 => 1,
            Element::Bf16 => 2,
            Element::U8S8 => 4,
        }
    }
}

/// Whether this CPU runs the kernels of `element` (detected once: the bf16 conversions ask
/// per row).
pub fn supported(element: Element) -> bool {
    static DETECTED: std::sync::LazyLock<[bool; 3]> = std::sync::LazyLock::new(detect);
    DETECTED[element as usize]
}

/// `[f32, bf16, u8 x s8]` support of this CPU.
fn detect() -> [bool; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let bw = avx512
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let bf16 = bw && std::arch::is_x86_feature_detected!("avx512bf16");
        let vnni = bw && std::arch::is_x86_feature_detected!("avx512vnni");
        [avx512, bf16, vnni]
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        [false, false, false]
    }
}

/// A `depth x columns` right-hand side packed for the kernels: per panel of up to 48 columns,
/// per word of depth (one f32, or two bf16 of consecutive depths), the panel's columns, padded
/// with zeros to whole vectors.
#[derive(Clone, Debug)]
pub struct PackedRhs {
    element: Element,
    columns: usize,
    /// Words of depth: `depth` for f32, `depth / 2` rounded up for bf16.
    words: usize,
    data: Vec<u32>,
}

impl PackedRhs {
    /// Packs `value(k, column)` for `k < depth`, `column < columns`.
    pub fn new(
        element: Element,
        depth: usize,
        columns: usize,
        value: impl Fn(usize, usize) -> f32,
    ) -> Self {
        let words = depth.div_ceil(element.per_word());
        let vectors = columns.div_ceil(LANES);
        let mut data = vec![0u32; words * vectors * LANES];
        let at = |k: usize, column: usize| if k < depth { value(k, column) } else { 0.0 };
        for panel in 0..vectors.div_ceil(PANEL_VECTORS) {
            let first = panel * PANEL;
            let width = (vectors * LANES - first).min(PANEL);
            let panel_data = &mut data[first * words..][..words * width];
            for (word, values) in panel_data.chunks_exact_mut(width).enumerate() {
                for (lane, packed) in values.iter_mut().enumerate() {
                    let column = first + lane;
                    if column >= columns {
                        continue;
                    }
                    *packed = match element {
                        Element::F32 => at(word, column).to_bits(),
                        Element::Bf16 => pair(at(2 * word, column), at(2 * word + 1, column)),
                        // Values that are whole numbers in -128..=127 (`new_s8`).
                        Element::U8S8 => u32::from_le_bytes(std::array::from_fn(|i| {
                            at(4 * word + i, column) as i8 as u8
                        })),
                    };
                }
            }
        }
        Self {
            element,
            columns,
            words,
            data,
        }
    }

    /// Packs rows `0..depth` of `values`, row `k` at `k * stride`, `columns` values each: as
    /// [`PackedRhs::new`] with `value(k, column) = values[k * stride + column]`, but with
    /// vector conversions and the panels shared between the cores (for operands packed on every
    /// call, such as im2col columns). f32 or bf16.
    ///
    /// # Panics
    /// For u8 x s8, or if the rows do not lie within `values`.
    pub fn from_rows(
        element: Element,
        depth: usize,
        columns: usize,
        values: &[f32],
        stride: usize,
    ) -> Self {
        assert!(element != Element::U8S8, "u8 x s8 packs from s8 values");
        assert!(
            depth == 0 || columns == 0 || (depth - 1) * stride + columns <= values.len(),
            "{depth} rows of {columns} values, {stride} apart, do not fit in {}",
            values.len()
        );
        let words = depth.div_ceil(element.per_word());
        let vectors = columns.div_ceil(LANES);
        let mut data = vec![0u32; words * vectors * LANES];
        data.par_chunks_mut(PANEL * words)
            .enumerate()
            .for_each(|(panel, panel_data)| {
                let first = panel * PANEL;
                let width = panel_data.len() / words.max(1);
                let row = |k: usize| (k < depth).then(|| &values[k * stride..]);
                for (word, packed) in panel_data.chunks_exact_mut(width).enumerate() {
                    match element {
                        Element::Bf16 => {
                            let (low, high) = (row(2 * word), row(2 * word + 1));
                            pack_pairs(packed, low, high, first, columns);
                        }
                        _ => {
                            let source = row(word).expect("a row per word");
                            let end = columns.min(first + width);
                            for (packed, value) in packed.iter_mut().zip(&source[first..end]) {
                                *packed = value.to_bits();
                            }
                        }
                    }
                }
            });
        Self {
            element,
            columns,
            words,
            data,
        }
    }

    /// Packs s8 weights `value(k, column)` for the u8 x s8 kernels.
    pub fn new_s8(depth: usize, columns: usize, value: impl Fn(usize, usize) -> i8) -> Self {
        Self::new(Element::U8S8, depth, columns, |k, column| {
            f32::from(value(k, column))
        })
    }

    pub fn element(&self) -> Element {
        self.element
    }

    /// The left-hand side's row length in its elements: the depth, even for bf16.
    pub fn padded_depth(&self) -> usize {
        self.words * self.element.per_word()
    }

    /// Panels of up to 48 columns: the units [`multiply`] can split the columns into.
    pub fn panels(&self) -> usize {
        self.columns.div_ceil(PANEL)
    }

    /// The columns of `panels`.
    pub fn panel_columns(&self, panels: Range<usize>) -> Range<usize> {
        (panels.start * PANEL).min(self.columns)..(panels.end * PANEL).min(self.columns)
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// One packed word per lane of `packed` (columns from `first`, up to `columns`): row `low`'s
/// value in the low half and row `high`'s (zero if none) in the high half, as bf16.
fn pack_pairs(
    packed: &mut [u32],
    low: Option<&[f32]>,
    high: Option<&[f32]>,
    first: usize,
    columns: usize,
) {
    let low = low.expect("a row per word");
    let end = columns.min(first + packed.len());
    let (low, high) = (&low[first..end], high.map(|high| &high[first..end]));
    #[cfg(target_arch = "x86_64")]
    if supported(Element::Bf16) {
        // SAFETY: the CPU converts (checked); `packed` covers the columns (`end - first`).
        unsafe { avx512::pack_pairs(&mut packed[..end - first], low, high) };
        return;
    }
    for (i, (packed, &low)) in packed.iter_mut().zip(low).enumerate() {
        *packed = pair(low, high.map_or(0.0, |high| high[i]));
    }
}

/// Two values as one bf16 pair, the first in the low half (as they lie in memory).
fn pair(low: f32, high: f32) -> u32 {
    u32::from(bf16::from_f32(low).to_bits()) | (u32::from(bf16::from_f32(high).to_bits()) << 16)
}

/// The left-hand side: `rows` rows of [`PackedRhs::padded_depth`] values, `stride` elements
/// apart; f32 or bf16 as the right-hand side is.
#[derive(Clone, Copy)]
pub enum Lhs<'a> {
    F32 {
        data: &'a [f32],
        stride: usize,
    },
    Bf16 {
        data: &'a [bf16],
        stride: usize,
    },
    /// f32 rows whose depth lies in runs of `segment` values, `pitch` apart (the row's first
    /// run at its start): a convolution read where its input lies, each run one row of the
    /// kernel's window (the 3-channel stem: 3 runs of 9 values, one image row apart).
    F32Segments {
        data: &'a [f32],
        stride: usize,
        segment: usize,
        pitch: usize,
    },
    /// u8 codes, rows `stride` bytes apart (a multiple of 4), for an s8 right-hand side.
    U8 {
        data: &'a [u8],
        stride: usize,
    },
    /// u8 rows whose depth lies in runs of `segment` codes, `pitch` apart, as
    /// [`Lhs::F32Segments`] (a 3x3 window read where a padded, channels-last input lies); all
    /// three a multiple of 4.
    U8Segments {
        data: &'a [u8],
        stride: usize,
        segment: usize,
        pitch: usize,
    },
}

/// `dst = bias + lhs · rhs` (then `max(0, ..)` when `relu`) for the columns of the panels
/// `panels` of `rhs` (all of them: `0..rhs.panels()`, or a share of them for one thread): `dst`
/// has those columns ([`PackedRhs::panel_columns`]) and `lhs`'s rows, `bias` (if any) a value
/// per column of `dst`.
///
/// # Panics
/// If the CPU lacks the element's kernels ([`supported`]), the element types differ, or a
/// matrix does not fit its buffer.
pub fn multiply(
    dst: MatMut<'_>,
    lhs: Lhs<'_>,
    rhs: &PackedRhs,
    panels: Range<usize>,
    bias: Option<&[f32]>,
    relu: bool,
) {
    multiply_scaled(dst, lhs, rhs, panels, None, bias, relu);
}

/// [`multiply`] with the sums multiplied by `scale` (a value per column of `dst`) before the
/// bias: how the u8 x s8 kernels' exact i32 sums become f32 (and required by them).
pub fn multiply_scaled(
    dst: MatMut<'_>,
    lhs: Lhs<'_>,
    rhs: &PackedRhs,
    panels: Range<usize>,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    relu: bool,
) {
    let (rows, depth) = (dst.rows(), rhs.padded_depth());
    // Each row: `depth / segment` runs of `segment` values, `pitch` apart.
    let (mut segment, mut pitch) = (depth, 0);
    let (stride, len) = match lhs {
        Lhs::F32 { data, stride } => {
            assert_eq!(
                rhs.element,
                Element::F32,
                "f32 rows need an f32 right-hand side"
            );
            (stride, data.len())
        }
        Lhs::F32Segments {
            data,
            stride,
            segment: run,
            pitch: apart,
        } => {
            assert_eq!(
                rhs.element,
                Element::F32,
                "f32 rows need an f32 right-hand side"
            );
            assert!(
                run > 0 && depth % run == 0,
                "runs of {run} do not make a depth of {depth}"
            );
            (segment, pitch) = (run, apart);
            (stride, data.len())
        }
        Lhs::Bf16 { data, stride } => {
            assert_eq!(
                rhs.element,
                Element::Bf16,
                "bf16 rows need a bf16 right-hand side"
            );
            assert!(stride % 2 == 0, "bf16 rows start on a pair");
            (stride, data.len())
        }
        Lhs::U8 { data, stride } => {
            assert_eq!(
                rhs.element,
                Element::U8S8,
                "u8 rows need an s8 right-hand side"
            );
            assert!(stride % 4 == 0, "u8 rows start on a word");
            (stride, data.len())
        }
        Lhs::U8Segments {
            data,
            stride,
            segment: run,
            pitch: apart,
        } => {
            assert_eq!(
                rhs.element,
                Element::U8S8,
                "u8 rows need an s8 right-hand side"
            );
            assert!(
                stride % 4 == 0 && run % 4 == 0 && apart % 4 == 0,
                "u8 runs start on words"
            );
            assert!(
                run > 0 && depth % run == 0,
                "runs of {run} do not make a depth of {depth}"
            );
            (segment, pitch) = (run, apart);
            (stride, data.len())
        }
    };
    assert_eq!(
        scale.is_some(),
        rhs.element == Element::U8S8,
        "u8 x s8 sums, and only they, are scaled"
    );
    assert!(
        supported(rhs.element),
        "this CPU lacks the {:?} kernels",
        rhs.element
    );
    assert!(
        panels.end <= rhs.panels(),
        "panels {panels:?} of {}",
        rhs.panels()
    );
    let columns = rhs.panel_columns(panels.clone());
    assert_eq!(
        dst.cols(),
        columns.len(),
        "the output has the panels' columns"
    );
    if let Some(bias) = bias {
        assert!(bias.len() >= columns.len(), "a bias per column");
    }
    if let Some(scale) = scale {
        assert!(scale.len() >= columns.len(), "a scale per column");
    }
    if rows == 0 {
        return;
    }
    let row_extent = (depth / segment - 1) * pitch + segment;
    assert!(
        (rows - 1) * stride + row_extent <= len,
        "{rows} rows of {depth} values, {stride} apart, do not fit in {len}"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has the kernels (checked above); every row read lies within `lhs` (checked
    // above), every row written within `dst` (checked by `MatMut`), the panels within
    // `rhs.data` by construction, and the bias covers every column.
    unsafe {
        avx512::multiply(dst, lhs, [segment, pitch], rhs, panels, scale, bias, relu);
    }
}

/// The scalar definition of [`multiply`]: operands rounded to the element type, products summed
/// in f32 in depth order.
pub fn reference_product(
    element: Element,
    lhs: &[f32],
    rhs: &[f32],
    [rows, depth, columns]: [usize; 3],
    bias: &[f32],
    relu: bool,
) -> Vec<f32> {
    let round = |x: f32| match element {
        Element::F32 => x,
        Element::Bf16 => bf16::from_f32(x).to_f32(),
        Element::U8S8 => unreachable!("the u8 x s8 definition is the int8 convolution's"),
    };
    let mut out = vec![0f32; rows * columns];
    for r in 0..rows {
        for c in 0..columns {
            let sum: f32 = (0..depth)
                .map(|k| round(lhs[r * depth + k]) * round(rhs[k * columns + c]))
                .sum();
            let value = sum + bias[c];
            out[r * columns + c] = if relu { value.max(0.0) } else { value };
        }
    }
    out
}

/// f32 to bf16, rounding to nearest even, in vectors where the CPU converts them.
pub fn to_bf16(source: &[f32], destination: &mut [bf16]) {
    assert_eq!(source.len(), destination.len(), "one bf16 per f32");
    #[cfg(target_arch = "x86_64")]
    if supported(Element::Bf16) {
        // SAFETY: the CPU converts (checked); the slices have equal lengths.
        unsafe { avx512::to_bf16(source, destination) };
        return;
    }
    for (out, value) in destination.iter_mut().zip(source) {
        *out = bf16::from_f32(*value);
    }
}

/// Rows of `depth` f32 values to rows of `padded` bf16 (the depth rounded up to a pair), the
/// padding zero.
pub fn to_bf16_rows(source: &[f32], depth: usize, destination: &mut [bf16], padded: usize) {
    for (values, out) in source
        .chunks_exact(depth)
        .zip(destination.chunks_exact_mut(padded))
    {
        let (values_out, pad) = out.split_at_mut(depth);
        to_bf16(values, values_out);
        pad.fill(bf16::ZERO);
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::bf16;

    use std::ops::Range;

    use super::{LANES, Lhs, MatMut, PANEL, PANEL_VECTORS, PackedRhs, ROWS};

    /// Where one kernel call reads and writes.
    #[derive(Clone, Copy)]
    struct Tile {
        /// The tile's rows (`first` its first row's first word).
        lhs: Rows,
        rhs: *const u32,
        out: *mut f32,
        out_stride: usize,
        bias: *const f32,
        /// A factor per column (u8 x s8 only).
        scale: *const f32,
        /// Lanes written of the last vector (16 but at the right edge).
        last_lanes: usize,
        relu: bool,
        words: usize,
    }

    /// The three products, one kernel body each (`MODE`).
    const F32: u8 = 0;
    const BF16: u8 = 1;
    const U8S8: u8 = 2;

    /// # Safety
    /// The CPU has AVX-512F (and AVX512_BF16 for bf16, AVX512_VNNI for u8 x s8); the matrices
    /// lie within their buffers; `scale`, when given, covers the columns.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn multiply(
        dst: MatMut<'_>,
        lhs: Lhs<'_>,
        [segment, pitch]: [usize; 2],
        rhs: &PackedRhs,
        panels: Range<usize>,
        scale: Option<&[f32]>,
        bias: Option<&[f32]>,
        relu: bool,
    ) {
        let zeros = [0f32; PANEL];
        let out = Output {
            data: dst.as_mut_ptr(),
            rows: dst.rows(),
            stride: dst.stride(),
            // Without a bias the kernels add zeros (as many as a panel has columns).
            bias: bias.map_or(zeros.as_ptr(), |bias| bias.as_ptr()),
            has_bias: bias.is_some(),
            scale: scale.map_or(std::ptr::null(), |scale| scale.as_ptr()),
            relu,
        };
        match lhs {
            Lhs::F32 { data, stride } | Lhs::F32Segments { data, stride, .. } => unsafe {
                let rows = Rows {
                    first: data.as_ptr().cast(),
                    stride,
                    segment,
                    pitch,
                };
                multiply_f32(rows, rhs, panels, out)
            },
            Lhs::Bf16 { data, stride } => unsafe {
                // Pairs of values: one run of the whole depth.
                let rows = Rows {
                    first: data.as_ptr().cast(),
                    stride: stride / 2,
                    segment: segment / 2,
                    pitch: 0,
                };
                multiply_bf16(rows, rhs, panels, out)
            },
            Lhs::U8 { data, stride } | Lhs::U8Segments { data, stride, .. } => unsafe {
                // Quads of codes.
                let rows = Rows {
                    first: data.as_ptr().cast(),
                    stride: stride / 4,
                    segment: segment / 4,
                    pitch: pitch / 4,
                };
                multiply_u8s8(rows, rhs, panels, out)
            },
        }
    }

    /// The left-hand side as the kernels read it, in 32-bit words: rows `stride` apart from
    /// `first`, each in runs of `segment` words, `pitch` apart.
    #[derive(Clone, Copy)]
    struct Rows {
        first: *const u32,
        stride: usize,
        segment: usize,
        pitch: usize,
    }

    /// The output matrix as the kernels write it.
    #[derive(Clone, Copy)]
    struct Output {
        data: *mut f32,
        rows: usize,
        stride: usize,
        bias: *const f32,
        has_bias: bool,
        scale: *const f32,
        relu: bool,
    }

    // One body, compiled thrice: the f32 kernels must run on AVX-512 CPUs without AVX512_BF16
    // or AVX512_VNNI.
    #[target_feature(enable = "avx512f")]
    unsafe fn multiply_f32(lhs: Rows, rhs: &PackedRhs, panels: Range<usize>, out: Output) {
        unsafe { multiply_words::<F32>(lhs, rhs, panels, out) }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn multiply_bf16(lhs: Rows, rhs: &PackedRhs, panels: Range<usize>, out: Output) {
        unsafe { multiply_words::<BF16>(lhs, rhs, panels, out) }
    }

    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn multiply_u8s8(lhs: Rows, rhs: &PackedRhs, panels: Range<usize>, out: Output) {
        unsafe { multiply_words::<U8S8>(lhs, rhs, panels, out) }
    }

    /// The product with `lhs` read as 32-bit words (one f32, a bf16 pair or a u8 quad).
    #[inline(always)]
    unsafe fn multiply_words<const MODE: u8>(
        lhs: Rows,
        rhs: &PackedRhs,
        panels: Range<usize>,
        out: Output,
    ) {
        let rows = out.rows;
        let vectors = rhs.columns.div_ceil(LANES);
        // `out` and the bias start at the first panel's first column.
        let origin = panels.start * PANEL;
        // Rows in equal tiles of at most ROWS (49 rows: 7 x 7, not 6 x 8 + 1): a tile of few
        // rows has too few accumulators to hide the multiply-add latency.
        let tiles = rows.div_ceil(ROWS);
        let tile_rows = rows.div_ceil(tiles);
        for panel in panels {
            let first = panel * PANEL;
            let panel_vectors = (vectors - panel * PANEL_VECTORS).min(PANEL_VECTORS);
            let last_lanes = rhs.columns - first - (panel_vectors - 1) * LANES;
            let bias = if out.has_bias {
                out.bias.wrapping_add(first - origin)
            } else {
                out.bias
            };
            let scale = out.scale.wrapping_add(first - origin);
            for row in (0..rows).step_by(tile_rows) {
                let tile = Tile {
                    // SAFETY (all pointer offsets): within the buffers, as the caller checked.
                    lhs: Rows {
                        first: unsafe { lhs.first.add(row * lhs.stride) },
                        ..lhs
                    },
                    rhs: unsafe { rhs.data.as_ptr().add(first * rhs.words) },
                    out: unsafe { out.data.add(row * out.stride + first - origin) },
                    out_stride: out.stride,
                    bias,
                    scale,
                    last_lanes,
                    relu: out.relu,
                    words: rhs.words,
                };
                // SAFETY: as above.
                unsafe { dispatch::<MODE>(tile_rows.min(rows - row), panel_vectors, tile) };
            }
        }
    }

    /// The kernel for `rows x vectors` accumulators (const parameters, so that they stay in
    /// registers).
    #[inline(always)]
    unsafe fn dispatch<const MODE: u8>(rows: usize, vectors: usize, tile: Tile) {
        macro_rules! call {
            ($($rows:literal)*) => {
                match (rows, vectors) {
                    $(
                        ($rows, 1) => unsafe { kernel::<$rows, 1, MODE>(tile) },
                        ($rows, 2) => unsafe { kernel::<$rows, 2, MODE>(tile) },
                        ($rows, 3) => unsafe { kernel::<$rows, 3, MODE>(tile) },
                    )*
                    _ => unreachable!("1 to {ROWS} rows of 1 to {PANEL_VECTORS} vectors"),
                }
            };
        }
        call!(1 2 3 4 5 6 7 8);
    }

    #[inline(always)]
    unsafe fn kernel<const R: usize, const V: usize, const MODE: u8>(tile: Tile) {
        // SAFETY: as `multiply_words`: the rows and panels read lie within their buffers.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            let panel_width = V * LANES;
            let Rows {
                first: rows,
                stride,
                segment,
                pitch,
            } = tile.lhs;
            for run in 0..tile.words / segment {
                let lhs = rows.add(run * pitch);
                let first = run * segment;
                for word in first..first + segment {
                    // SAFETY: the panel holds `words` rows of `V` vectors; each lhs row's runs
                    // hold `words` words.
                    let rhs = tile.rhs.wrapping_add(word * panel_width);
                    let weights: [__m512; V] =
                        std::array::from_fn(|v| _mm512_loadu_ps(rhs.add(v * LANES).cast()));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let value = lhs.add(r * stride + word - first).read_unaligned();
                        let broadcast = _mm512_set1_epi32(value as i32);
                        for (acc, weights) in acc.iter_mut().zip(&weights) {
                            *acc = match MODE {
                                BF16 => {
                                    _mm512_dpbf16_ps(*acc, as_pairs(broadcast), as_pairs(*weights))
                                }
                                // The i32 sums kept in the f32 registers, bit for bit.
                                U8S8 => _mm512_castsi512_ps(_mm512_dpbusd_epi32(
                                    _mm512_castps_si512(*acc),
                                    broadcast,
                                    _mm512_castps_si512(*weights),
                                )),
                                _ => {
                                    _mm512_fmadd_ps(_mm512_castsi512_ps(broadcast), *weights, *acc)
                                }
                            };
                        }
                    }
                }
            }
            let full = 0xffffu16;
            let last = if tile.last_lanes >= LANES {
                full
            } else {
                (1u16 << tile.last_lanes) - 1
            };
            for (r, acc) in acc.iter().enumerate() {
                for (v, value) in acc.iter().enumerate() {
                    let mask = if v + 1 == V { last } else { full };
                    // The masked lanes lie within the output row and the bias.
                    let bias = _mm512_maskz_loadu_ps(mask, tile.bias.add(v * LANES));
                    let mut value = *value;
                    if MODE == U8S8 {
                        let scale = _mm512_maskz_loadu_ps(mask, tile.scale.add(v * LANES));
                        let sums = _mm512_cvtepi32_ps(_mm512_castps_si512(value));
                        value = _mm512_mul_ps(sums, scale);
                    }
                    value = _mm512_add_ps(value, bias);
                    if tile.relu {
                        value = _mm512_max_ps(value, _mm512_setzero_ps());
                    }
                    let out = tile.out.add(r * tile.out_stride + v * LANES);
                    _mm512_mask_storeu_ps(out, mask, value);
                }
            }
        }
    }

    /// A vector of 32-bit words seen as 32 bf16 (pairs, the first of each in the low half).
    #[inline(always)]
    fn as_pairs<T>(value: T) -> __m512bh {
        const { assert!(size_of::<T>() == 64) };
        // SAFETY: a bit-for-bit reinterpretation between 512-bit vectors.
        unsafe { std::mem::transmute_copy(&value) }
    }

    /// `packed[i] = bf16(low[i]) | bf16(high[i]) << 16` (high zero when `None`).
    ///
    /// # Safety
    /// The CPU has AVX512_BF16; `low` (and `high`) are as long as `packed`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pack_pairs(packed: &mut [u32], low: &[f32], high: Option<&[f32]>) {
        for (chunk, out) in packed.chunks_mut(LANES).enumerate() {
            let mask = ((1u32 << out.len()) - 1) as u16;
            let start = chunk * LANES;
            // SAFETY: the masked lanes lie within the slices.
            unsafe {
                let widen = |values: *const f32| {
                    let values = _mm512_maskz_loadu_ps(mask, values);
                    let rounded: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(values));
                    _mm512_cvtepu16_epi32(rounded)
                };
                let mut words = widen(low.as_ptr().add(start));
                if let Some(high) = high {
                    words = _mm512_or_si512(
                        words,
                        _mm512_slli_epi32(widen(high.as_ptr().add(start)), 16),
                    );
                }
                _mm512_mask_storeu_epi32(out.as_mut_ptr().cast(), mask, words);
            }
        }
    }

    /// # Safety
    /// The CPU has AVX512_BF16 (and so AVX512BW and VL); the slices have equal lengths.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn to_bf16(source: &[f32], destination: &mut [bf16]) {
        for (source, destination) in source.chunks(LANES).zip(destination.chunks_mut(LANES)) {
            // The last chunk may be short: masked loads and stores (rows of 27 values, the
            // stem's, are common).
            let mask = ((1u32 << source.len()) - 1) as u16;
            // SAFETY: the masked lanes lie within both chunks.
            unsafe {
                let values = _mm512_maskz_loadu_ps(mask, source.as_ptr());
                let rounded: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(values));
                _mm256_mask_storeu_epi16(destination.as_mut_ptr().cast(), mask, rounded);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every kernel shape (1-8 rows, 1-3 vectors, partial vectors, odd depths, several panels),
    /// with and without bias and ReLU, against the scalar definition.
    #[test]
    fn products_agree_with_the_definition() {
        for element in [Element::F32, Element::Bf16] {
            if !supported(element) {
                eprintln!("skipped: this CPU lacks the {element:?} kernels");
                continue;
            }
            for (case, &[rows, depth, columns]) in [
                [1, 1, 1],
                [3, 27, 48],
                [8, 64, 16],
                [13, 33, 37],
                [49, 192, 192],
                [20, 9, 100],
                [7, 432, 130],
            ]
            .iter()
            .enumerate()
            {
                let seed = case as u64 * 3;
                let (lhs, rhs, bias) = (
                    values(rows * depth, seed),
                    values(depth * columns, seed + 1),
                    values(columns, seed + 2),
                );
                let packed = PackedRhs::new(element, depth, columns, |k, c| rhs[k * columns + c]);
                let stride = packed.padded_depth() + 2;
                let mut padded = vec![0f32; rows * stride];
                for (row, values) in padded.chunks_exact_mut(stride).zip(lhs.chunks(depth)) {
                    row[..depth].copy_from_slice(values);
                }
                let rounded: Vec<bf16> = padded.iter().map(|&v| bf16::from_f32(v)).collect();
                let lhs_view = match element {
                    Element::F32 => Lhs::F32 {
                        data: &padded,
                        stride,
                    },
                    Element::Bf16 => Lhs::Bf16 {
                        data: &rounded,
                        stride,
                    },
                    Element::U8S8 => unreachable!("f32 and bf16 only"),
                };
                for (bias_on, relu) in [(true, false), (false, true)] {
                    let out_stride = columns + 3;
                    let mut out = vec![f32::NAN; rows * out_stride];
                    let bias_used = bias_on.then_some(bias.as_slice());
                    let dst = MatMut::new(&mut out, rows, columns, out_stride);
                    multiply(dst, lhs_view, &packed, 0..packed.panels(), bias_used, relu);
                    let zero_bias = vec![0.0; columns];
                    let expected = reference_product(
                        element,
                        &lhs,
                        &rhs,
                        [rows, depth, columns],
                        if bias_on { &bias } else { &zero_bias },
                        relu,
                    );
                    for r in 0..rows {
                        for c in 0..columns {
                            let (actual, expected) =
                                (out[r * out_stride + c], expected[r * columns + c]);
                            assert!(
                                (actual - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
                                "{element:?} {rows}x{depth}x{columns} [{r}][{c}]: {actual} vs {expected}"
                            );
                        }
                        // The gap between rows is not written.
                        assert!(
                            out[r * out_stride + columns..]
                                [..3.min(out.len() - r * out_stride - columns)]
                                .iter()
                                .all(|v| v.is_nan())
                        );
                    }
                }
            }
        }
    }

    /// Rows read in runs where they lie (a convolution's windows, overlapping) compute the
    /// product of the rows gathered densely.
    #[test]
    fn rows_in_runs_agree_with_the_definition() {
        if !supported(Element::F32) {
            return;
        }
        // 13 windows, 2 values apart, of 3 runs of 9 values, 40 apart (a stride-2 stem on a
        // padded row of 40 values), into 50 columns.
        let (rows, stride, segment, pitch, columns) = (13, 2, 9, 40, 50);
        let depth = 3 * segment;
        let source = values((rows - 1) * stride + 2 * pitch + segment, 5);
        let rhs = values(depth * columns, 6);
        let bias = values(columns, 7);
        let gathered: Vec<f32> = (0..rows)
            .flat_map(|r| (0..depth).map(move |k| (r, k)))
            .map(|(r, k)| source[r * stride + k / segment * pitch + k % segment])
            .collect();
        let packed = PackedRhs::new(Element::F32, depth, columns, |k, c| rhs[k * columns + c]);
        let mut out = vec![0f32; rows * columns];
        let lhs = Lhs::F32Segments {
            data: &source,
            stride,
            segment,
            pitch,
        };
        let dst = MatMut::new(&mut out, rows, columns, columns);
        multiply(dst, lhs, &packed, 0..packed.panels(), Some(&bias), true);
        let expected = reference_product(
            Element::F32,
            &gathered,
            &rhs,
            [rows, depth, columns],
            &bias,
            true,
        );
        for (i, (actual, expected)) in out.iter().zip(&expected).enumerate() {
            assert!(
                (actual - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
                "[{}][{}]: {actual} vs {expected}",
                i / columns,
                i % columns
            );
        }
    }

    /// Packing rows in place (vector conversions, panels in parallel) packs what the
    /// element-by-element constructor packs: odd depths, partial vectors and panels, rows wider
    /// than the columns.
    #[test]
    fn packing_rows_equals_packing_values() {
        for element in [Element::F32, Element::Bf16] {
            for [depth, columns, stride] in [[1, 1, 1], [7, 37, 40], [8, 48, 48], [33, 150, 151]] {
                let values = values(depth * stride, (depth + columns) as u64);
                let expected =
                    PackedRhs::new(element, depth, columns, |k, c| values[k * stride + c]);
                let actual = PackedRhs::from_rows(element, depth, columns, &values, stride);
                assert_eq!(actual.words, expected.words);
                assert_eq!(actual.columns, expected.columns);
                assert!(
                    actual.data == expected.data,
                    "{element:?} {depth}x{columns} (stride {stride})"
                );
            }
        }
    }

    /// A share of the panels writes only its columns.
    #[test]
    fn a_share_of_the_panels_writes_its_columns() {
        if !supported(Element::F32) {
            return;
        }
        let (rows, depth, columns) = (5, 10, 150);
        let (lhs, rhs) = (values(rows * depth, 7), values(depth * columns, 8));
        let packed = PackedRhs::new(Element::F32, depth, columns, |k, c| rhs[k * columns + c]);
        assert_eq!(packed.panels(), 4);
        let share = packed.panel_columns(1..3);
        assert_eq!(share, 48..144);
        let mut out = vec![0f32; rows * share.len()];
        let dst = MatMut::new(&mut out, rows, share.len(), share.len());
        multiply(
            dst,
            Lhs::F32 {
                data: &lhs,
                stride: depth,
            },
            &packed,
            1..3,
            None,
            false,
        );
        let expected = reference_product(
            Element::F32,
            &lhs,
            &rhs,
            [rows, depth, columns],
            &vec![0.0; columns],
            false,
        );
        for r in 0..rows {
            for (i, c) in share.clone().enumerate() {
                let (actual, expected) = (out[r * share.len() + i], expected[r * columns + c]);
                assert!(
                    (actual - expected).abs() <= 1e-5,
                    "[{r}][{c}]: {actual} vs {expected}"
                );
            }
        }
    }

    /// The vector conversion rounds as `half` does (to nearest, ties to even), except that the
    /// hardware flushes subnormal values to zero (as its dot products treat them anyway).
    #[test]
    fn bf16_conversion_rounds_to_nearest_even() {
        let mut source = values(1000, 11);
        source.extend([
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            -0.0,
            1e-40,
            f32::INFINITY,
        ]);
        let mut converted = vec![bf16::ZERO; source.len()];
        to_bf16(&source, &mut converted);
        for (value, out) in source.iter().zip(&converted) {
            let expected = bf16::from_f32(*value);
            let flushed = value.is_subnormal() && *out == bf16::ZERO;
            assert!(
                out.to_bits() == expected.to_bits() || flushed,
                "{value}: {out}"
            );
        }
    }
}
