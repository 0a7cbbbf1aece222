//! Mixed precision for the training step on the CPU: the block op's matrix products in bf16
//! with f32 accumulation (AVX512_BF16's pair products, twice the rate of f32 multiply-adds),
//! while the tensors, the master weights, the batch statistics and every other op stay f32.
//! It is what PyTorch's CPU autocast does for convolutions.
//!
//! Each product rounds its operands to bf16 as it packs them: the left-hand side into bf16
//! rows, the right-hand side into the kernels' panels (`repvgg_kernels::PackedRhs`).

use std::sync::atomic::{AtomicU8, Ordering};

use half::bf16;
use rayon::prelude::*;
use repvgg_kernels::{Element, Lhs, MatMut, PackedRhs, SendPtr, multiply, supported, to_bf16};

/// The precision of the training ops' matrix products on Burn's CPU backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Products {
    /// f32 operands and sums.
    #[default]
    F32,
    /// bf16 operands, f32 sums: needs AVX512_BF16.
    Bf16,
}

/// bf16 products asked for on a CPU without AVX512_BF16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bf16 products need a CPU with AVX512_BF16, which this one lacks")]
pub struct Bf16Unsupported;

static PRODUCTS: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of the products for every later training op of this process.
pub fn set_products(products: Products) -> Result<(), Bf16Unsupported> {
    if products == Products::Bf16 && !bf16_products_supported() {
        return Err(Bf16Unsupported);
    }
    PRODUCTS.store(products as u8, Ordering::Relaxed);
    Ok(())
}

/// The precision of the products.
pub fn products() -> Products {
    match PRODUCTS.load(Ordering::Relaxed) {
        0 => Products::F32,
        _ => Products::Bf16,
    }
}

/// Whether this CPU computes bf16 products (AVX512_BF16).
pub fn bf16_products_supported() -> bool {
    supported(Element::Bf16)
}

/// Rows of a product's left-hand side per parallel task, when the rows are many.
const ROW_CHUNK: usize = 192;

/// `dst = lhs · rhs`: `lhs` is `rows` bf16 rows of `rhs.padded_depth()` values, `lhs_stride`
/// apart; `dst` has `rows` rows of `rhs`'s columns, `dst_stride` apart. The cores share it by
/// chunks of rows where the rows are many (the right-hand side stays in cache), else by panels
/// of columns.
pub(crate) fn product(
    dst: &mut [f32],
    dst_stride: usize,
    lhs: &[bf16],
    lhs_stride: usize,
    rows: usize,
    rhs: &PackedRhs,
) {
    let (panels, columns) = (rhs.panels(), rhs.panel_columns(0..rhs.panels()).len());
    if rows == 0 || columns == 0 {
        return;
    }
    let depth = rhs.padded_depth();
    assert!(
        (rows - 1) * lhs_stride + depth <= lhs.len(),
        "{rows} rows of {depth}, {lhs_stride} apart"
    );
    // Checks that `dst` holds the whole product.
    let _ = MatMut::new(dst, rows, columns, dst_stride);
    let threads = rayon::current_num_threads();
    let row_chunks = rows.div_ceil(ROW_CHUNK);
    let panel_chunks = if row_chunks >= 2 * threads {
        1
    } else {
        panels.min(4 * threads)
    };
    let (base, len) = (SendPtr(dst.as_mut_ptr()), dst.len());
    (0..row_chunks * panel_chunks)
        .into_par_iter()
        .for_each(|task| {
            let (chunk, share) = (task / panel_chunks, task % panel_chunks);
            let first_row = chunk * ROW_CHUNK;
            let chunk_rows = ROW_CHUNK.min(rows - first_row);
            let share_panels = share * panels / panel_chunks..(share + 1) * panels / panel_chunks;
            let share_columns = rhs.panel_columns(share_panels.clone());
            // SAFETY: `dst` holds the product (checked above) and is borrowed for this call;
            // each task writes only its rows' cells of its panels' columns.
            let task_dst = unsafe {
                MatMut::in_buffer(
                    base.get(),
                    len,
                    first_row * dst_stride + share_columns.start,
                    chunk_rows,
                    share_columns.len(),
                    dst_stride,
                )
            };
            let lhs = Lhs::Bf16 {
                data: &lhs[first_row * lhs_stride..],
                stride: lhs_stride,
            };
            multiply(task_dst, lhs, rhs, share_panels, None, false);
        });
}

/// An even row length: bf16 rows are read in pairs.
pub(crate) fn even(len: usize) -> usize {
    len + len % 2
}

/// `rows` rows of `len` values of `values`, `stride` apart, as bf16 rows of [`even`]`(len)`
/// (the padding zero), in `out`.
pub(crate) fn bf16_rows(
    values: &[f32],
    rows: usize,
    len: usize,
    stride: usize,
    out: &mut Vec<bf16>,
) {
    let padded = even(len);
    out.clear();
    out.resize(rows * padded, bf16::ZERO);
    out.par_chunks_mut(padded)
        .enumerate()
        .for_each(|(row, out)| to_bf16(&values[row * stride..][..len], &mut out[..len]));
}

/// The transpose of `rows x len` bf16 rows `stride` apart: `len` rows of [`even`]`(rows)`
/// values (the padding zero), in `out`.
pub(crate) fn transposed(
    values: &[bf16],
    rows: usize,
    len: usize,
    stride: usize,
    out: &mut Vec<bf16>,
) {
    const TILE: usize = 64;
    let padded = even(rows);
    out.clear();
    out.resize(len * padded, bf16::ZERO);
    out.par_chunks_mut(TILE * padded)
        .enumerate()
        .for_each(|(tile, out)| {
            let first = tile * TILE;
            let width = out.len() / padded;
            for row in 0..rows {
                let source = &values[row * stride + first..][..width];
                for (j, &value) in source.iter().enumerate() {
                    out[j * padded + row] = value;
                }
            }
        });
}
