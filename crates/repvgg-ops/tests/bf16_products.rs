//! The block op with its products in bf16 (`set_products(Products::Bf16)`, f32 sums) against
//! the block composed of Burn's f32 ops: the same outputs and batch statistics within bf16's
//! rounding. In its own test binary, since the setting is the process's.
//!
//! The gradients are held to the f32 products in `block.rs`' unit tests, on the convolutions
//! alone: through the batch norms, whose backward subtracts the gradient's mean and its
//! projection, and through ReLUs that bf16's rounding can flip, a comparison with f32 measures
//! the conditioning of the test's loss more than the products.

use repvgg_ops::{Products, bf16_products_supported, products, set_products};

mod common;

use common::{BLOCK_CASES, block_case_name, block_differences, loss_weights};

/// The largest difference relative to the largest magnitude: each operand rounded to bf16 (8
/// significant bits, a relative error up to 2^-9) before sums of 27 to 2,304 products.
const TOLERANCE: f32 = 1e-2;

#[test]
fn bf16_products_follow_burns_block_within_bf16_rounding() {
    if !bf16_products_supported() {
        assert!(set_products(Products::Bf16).is_err());
        eprintln!("skipped: this CPU lacks AVX512_BF16");
        return;
    }
    set_products(Products::Bf16).unwrap();
    assert_eq!(products(), Products::Bf16);
    let mut worst = 0f32;
    for case in BLOCK_CASES {
        let forward = block_differences(case, loss_weights)
            .into_iter()
            .filter(|(what, _)| ["output", "mean", "variance"].contains(what));
        for (what, difference) in forward {
            assert!(
                difference < TOLERANCE,
                "{}: {what} differs by {difference:e}",
                block_case_name(case)
            );
            worst = worst.max(difference);
        }
    }
    // bf16 did round: the products are not f32's.
    assert!(
        worst > 1e-4,
        "largest difference {worst:e}: were the products bf16?"
    );
}
