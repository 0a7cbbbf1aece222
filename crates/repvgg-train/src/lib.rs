//! RepVGG training on Burn: a run is a [`TrainingConfig`] (the network, the paper's recipe, the
//! augmentation, the loader; saved as JSON in the run directory), trained by [`train`] on an
//! ImageFolder data set with burn-train's learner, continued by [`resume`], and finished by the
//! conversion to the deploy-time model, checked on the validation set ([`TrainReport`]).
//!
//! ```no_run
//! use std::path::Path;
//!
//! use burn::tensor::Device;
//! use repvgg_model::RepVggArch;
//! use repvgg_train::{RecipeConfig, TrainingConfig, train};
//!
//! let config = TrainingConfig::new(RepVggArch::A0.config().with_num_classes(100))
//!     .with_recipe(RecipeConfig::new().with_epochs(90));
//! let report = train(&config, Path::new("/data/set"), &[Device::flex()], Path::new("runs/a0"))?;
//! println!("deploy top-1 {:.2}%", 100.0 * report.deploy_validation.top1());
//! # Ok::<(), repvgg_train::TrainError>(())
//! ```
//!
//! Every run also keeps its training curves: `metrics.csv` (one row per epoch) and `curves.svg`,
//! updated at the end of each epoch; [`curves`] reads them back and draws several runs in one
//! picture.
//!
//! The pieces are public for programs that assemble their own training: the objective
//! ([`classifier`]), the optimizer and schedule ([`recipe`]), the EMA ([`ema`]), the
//! metrics and the plain-text progress display.

pub mod checkpoint;
pub mod classifier;
mod config;
pub mod curves;
pub mod ema;
mod error;
mod finetune;
pub mod metric;
mod output;
pub mod recipe;
mod recorder;
pub mod renderer;
mod run;

pub use config::{
    AugmentationConfig, InvalidTrainingConfig, LoaderConfig, Precision, RecipeConfig,
    TrainingConfig, UnknownPrecision, WeightsInit,
};
pub use error::TrainError;
pub use finetune::{InitialWeights, starting_network};
pub use output::{EmaReport, TrainReport};
pub use run::{DataParallel, resume, resume_with, train, train_with};
