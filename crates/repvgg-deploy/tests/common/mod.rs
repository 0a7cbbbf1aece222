//! Helpers shared by the deploy tests: the model crate's random networks.
#![allow(dead_code)]

#[path = "../../../repvgg-model/tests/support/random_model.rs"]
mod random_model;

pub use random_model::{random_training_model, relative_difference};
