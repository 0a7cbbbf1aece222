//! Matrices inside slices, as the kernels and their callers pass them.

use std::marker::PhantomData;

/// A pointer that rayon jobs writing disjoint parts of one buffer may share.
#[derive(Clone, Copy)]
pub struct SendPtr(pub *mut f32);

// SAFETY: only used for buffers whose jobs write disjoint elements (see each use).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so that closures capture the whole `SendPtr`).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// A row-major `rows x cols` matrix inside a slice, its rows `stride` elements apart (a column
/// block of a wider matrix has `stride > cols`). Made only by [`MatRef::new`], which checks that
/// the matrix lies within the slice.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> MatRef<'a> {
    /// # Panics
    /// If the matrix does not lie within `data` or its rows overlap (`stride < cols`).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, stride: usize) -> Self {
        check_extent(data.len(), rows, cols, stride);
        Self {
            data,
            rows,
            cols,
            stride,
        }
    }

    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn stride(&self) -> usize {
        self.stride
    }
}

/// The writable counterpart of [`MatRef`]. It holds a pointer rather than a slice so that
/// parallel jobs can each write their own column block of one buffer: the spans of such blocks
/// interleave, their cells do not.
pub struct MatMut<'a> {
    data: *mut f32,
    rows: usize,
    cols: usize,
    stride: usize,
    _borrow: PhantomData<&'a mut [f32]>,
}

impl<'a> MatMut<'a> {
    /// # Panics
    /// If the matrix does not lie within `data` or its rows overlap (`stride < cols`).
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, stride: usize) -> Self {
        check_extent(data.len(), rows, cols, stride);
        Self {
            data: data.as_mut_ptr(),
            rows,
            cols,
            stride,
            _borrow: PhantomData,
        }
    }

    /// The matrix at `offset` elements into a buffer of `len` elements at `base`.
    ///
    /// # Panics
    /// If the matrix does not lie within the buffer or its rows overlap.
    ///
    /// # Safety
    /// `base` must point to `len` valid elements that outlive `'a`, and nothing else may read
    /// or write this matrix's cells (rows `0..rows`, columns `0..cols`) while it is alive.
    pub unsafe fn in_buffer(
        base: *mut f32,
        len: usize,
        offset: usize,
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Self {
        check_extent(
            len.checked_sub(offset).expect("offset within the buffer"),
            rows,
            cols,
            stride,
        );
        Self {
            // SAFETY: `offset <= len` (checked), so the pointer stays within the buffer.
            data: unsafe { base.add(offset) },
            rows,
            cols,
            stride,
            _borrow: PhantomData,
        }
    }
}

impl MatMut<'_> {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The first cell; the matrix's cells lie within its buffer (checked when it was made).
    pub fn as_mut_ptr(&self) -> *mut f32 {
        self.data
    }
}

/// A `rows x cols` matrix with row stride `stride` spans `(rows - 1) * stride + cols` elements.
fn check_extent(len: usize, rows: usize, cols: usize, stride: usize) {
    assert!(
        stride >= cols,
        "rows of {cols} values cannot be {stride} apart"
    );
    let extent = match rows.checked_sub(1) {
        None => 0,
        Some(last) => last
            .checked_mul(stride)
            .and_then(|start| start.checked_add(cols))
            .expect("matrix extent overflows"),
    };
    assert!(
        extent <= len,
        "a {rows}x{cols} matrix with row stride {stride} spans {extent} values; the slice has {len}"
    );
}
