//! A layer's matrix product, `out = bias + rows · weights` (ReLU optional), with the weights
//! prepared once for whichever kernel runs it: the engine's own kernels ([`kernel`]) where the
//! CPU has AVX-512 (f32, or bf16 with AVX512_BF16), gemm's row-major product elsewhere (f32).

use half::bf16;
use rayon::prelude::*;

use crate::CpuPrecision;
use crate::kernel::{self, Element, Lhs, PackedRhs};
use crate::ops::{MatMut, MatRef, SendPtr, matmul_add};

/// A `depth x columns` matrix of weights, prepared for its kernel.
#[derive(Clone, Debug)]
pub(super) enum PackedWeights {
    /// Packed for the engine's kernels.
    Packed(PackedRhs),
    /// Row-major, for gemm (CPUs without AVX-512; f32 only).
    RowMajor {
        data: Vec<f32>,
        depth: usize,
        columns: usize,
    },
}

/// The rows of a product, in the element type of the weights: `rows` rows of
/// [`PackedWeights::row_length`] values, `stride` elements apart.
#[derive(Clone, Copy)]
pub(super) enum Rows<'a> {
    F32 { data: &'a [f32], stride: usize },
    Bf16 { data: &'a [bf16], stride: usize },
}

impl PackedWeights {
    /// `value(k, column)` for `k < depth`, `column < columns`, prepared for `precision`.
    ///
    /// # Panics
    /// For bf16 on a CPU without AVX512_BF16 (the path checks before preparing).
    pub fn new(
        precision: CpuPrecision,
        depth: usize,
        columns: usize,
        value: impl Fn(usize, usize) -> f32,
    ) -> Self {
        match precision {
            CpuPrecision::Bf16 => {
                assert!(kernel::supported(Element::Bf16), "bf16 needs AVX512_BF16");
                Self::Packed(PackedRhs::new(Element::Bf16, depth, columns, value))
            }
            CpuPrecision::F32 if kernel::supported(Element::F32) => {
                Self::Packed(PackedRhs::new(Element::F32, depth, columns, value))
            }
            CpuPrecision::F32 => {
                let mut data = vec![0f32; depth * columns];
                for (k, row) in data.chunks_exact_mut(columns).enumerate() {
                    for (column, value_out) in row.iter_mut().enumerate() {
                        *value_out = value(k, column);
                    }
                }
                Self::RowMajor {
                    data,
                    depth,
                    columns,
                }
            }
        }
    }

    /// Whether the rows are bf16.
    pub fn takes_bf16(&self) -> bool {
        matches!(self, Self::Packed(packed) if packed.element() == Element::Bf16)
    }

    /// The values per row the product reads: the depth, rounded up to a pair for bf16.
    pub fn row_length(&self) -> usize {
        match self {
            Self::Packed(packed) => packed.padded_depth(),
            Self::RowMajor { depth, .. } => *depth,
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Packed(packed) => packed.bytes(),
            Self::RowMajor { data, .. } => data.len() * 4,
        }
    }

    /// `dst = bias + rows · self` (bias zero if `None`), then `max(0, ..)` when `relu`, on
    /// `threads` threads (the columns shared between them).
    pub fn multiply(
        &self,
        dst: MatMut<'_>,
        rows: Rows<'_>,
        bias: Option<&[f32]>,
        relu: bool,
        threads: usize,
    ) {
        match self {
            Self::Packed(packed) => {
                let lhs = match rows {
                    Rows::F32 { data, stride } => Lhs::F32 { data, stride },
                    Rows::Bf16 { data, stride } => Lhs::Bf16 { data, stride },
                };
                let panels = packed.panels();
                let shares = threads.clamp(1, panels);
                if shares == 1 {
                    kernel::multiply(dst, lhs, packed, 0..panels, bias, relu);
                    return;
                }
                let (base, rows_count, stride) =
                    (SendPtr(dst.as_mut_ptr()), dst.rows(), dst.stride());
                let len = (rows_count - 1) * stride + dst.cols();
                (0..shares).into_par_iter().for_each(|share| {
                    let share_panels = share * panels / shares..(share + 1) * panels / shares;
                    let columns = packed.panel_columns(share_panels.clone());
                    // SAFETY: `dst`'s cells lie in `len` elements from its first (checked when it
                    // was made) and it is borrowed for this call; each share writes only the
                    // columns of its own panels.
                    let share_dst = unsafe {
                        MatMut::in_buffer(
                            base.get(),
                            len,
                            columns.start,
                            rows_count,
                            columns.len(),
                            stride,
                        )
                    };
                    let share_bias = bias.map(|bias| &bias[columns.clone()]);
                    kernel::multiply(share_dst, lhs, packed, share_panels, share_bias, relu);
                });
            }
            Self::RowMajor {
                data,
                depth,
                columns,
            } => {
                let Rows::F32 { data: lhs, stride } = rows else {
                    unreachable!("row-major weights are f32 and take f32 rows");
                };
                let (rows_count, out_stride) = (dst.rows(), dst.stride());
                let base = dst.as_mut_ptr();
                if let Some(bias) = bias {
                    for r in 0..rows_count {
                        // SAFETY: row r of `dst` (checked when it was made).
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(base.add(r * out_stride), *columns)
                        };
                        row.copy_from_slice(&bias[..*columns]);
                    }
                }
                matmul_add(
                    dst,
                    MatRef::new(lhs, rows_count, *depth, stride),
                    MatRef::new(data, *depth, *columns, *columns),
                    bias.is_some(),
                    threads,
                );
                if relu {
                    for r in 0..rows_count {
                        // SAFETY: as above.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(base.add(r * out_stride), *columns)
                        };
                        for value in row {
                            *value = value.max(0.0);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::reference_product;

    /// gemm's path (CPUs without AVX-512) and the packed kernels compute the same product, with
    /// the bias and ReLU, on one thread and shared between two.
    #[test]
    fn both_kernels_compute_the_definition() {
        let (rows, depth, columns) = (11, 30, 70);
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 50.0;
        let lhs: Vec<f32> = (0..rows * depth).map(value).collect();
        let rhs: Vec<f32> = (0..depth * columns).map(|i| value(i + 7)).collect();
        let bias: Vec<f32> = (0..columns).map(|i| value(i + 3)).collect();
        let expected = reference_product(
            Element::F32,
            &lhs,
            &rhs,
            [rows, depth, columns],
            &bias,
            true,
        );
        let row_major = PackedWeights::RowMajor {
            data: rhs.clone(),
            depth,
            columns,
        };
        let mut candidates = vec![row_major];
        if kernel::supported(Element::F32) {
            let packed = PackedRhs::new(Element::F32, depth, columns, |k, c| rhs[k * columns + c]);
            candidates.push(PackedWeights::Packed(packed));
        }
        for weights in &candidates {
            for threads in [1, 2] {
                let mut out = vec![f32::NAN; rows * columns];
                weights.multiply(
                    MatMut::new(&mut out, rows, columns, columns),
                    Rows::F32 {
                        data: &lhs,
                        stride: depth,
                    },
                    Some(&bias),
                    true,
                    threads,
                );
                for (actual, expected) in out.iter().zip(&expected) {
                    assert!(
                        (actual - expected).abs() <= 1e-5,
                        "{threads} threads: {actual} vs {expected}"
                    );
                }
            }
        }
    }
}
