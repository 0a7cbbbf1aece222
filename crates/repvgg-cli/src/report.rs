//! A finished run, as the binary prints it.

use repvgg_train::TrainReport;

/// Prints what the run measured and wrote.
pub fn print_report(report: &TrainReport) {
    let (training, deploy) = (&report.validation, &report.deploy_validation);
    for unusable in &report.unusable_checkpoints {
        println!(
            "passed over the unusable checkpoint of epoch {}: {}",
            unusable.epoch, unusable.reason
        );
    }
    if let Some(epoch) = report.resumed_after {
        println!("resumed after epoch {epoch}");
    }
    if let Some(init) = &report.initial_weights {
        // `pretrained:a0` names no file: say which one was read.
        let file = match init.path.as_os_str() == init.source.as_str() {
            true => String::new(),
            false => format!("{}, ", init.path.display()),
        };
        println!(
            "started from {} ({file}sha256 {}){}",
            init.source,
            init.sha256,
            init.replaced_head
                .as_ref()
                .map(|reason| format!(": {reason}"))
                .unwrap_or_default()
        );
    }
    if let Some(last) = report.config.recipe.freeze_stages {
        println!("stage0 (the stem) through stage{last} were frozen");
    }
    println!("trained in {:.1?}", report.training_time);
    println!(
        "validation ({} images): top-1 {:.2}%, top-5 {:.2}% (training-time model)",
        training.images,
        100.0 * training.top1(),
        100.0 * training.top5()
    );
    println!(
        "re-parameterized in {:.2?}: deploy top-1 {:.2}%, top-5 {:.2}%, {} of {} top-1 \
         predictions differ, max logit difference {:.1e} of the largest logit",
        report.conversion_time,
        100.0 * deploy.top1(),
        100.0 * deploy.top5(),
        report.disagreements,
        training.images,
        report.max_relative_logit_difference
    );
    if let Some(average) = &report.ema {
        println!(
            "EMA (decay {}, {} updates): deploy top-1 {:.2}%, top-5 {:.2}%; wrote {} \
             and {}",
            report.config.recipe.ema_decay.unwrap_or_default(),
            average.updates,
            100.0 * average.validation.top1(),
            100.0 * average.validation.top5(),
            average.model_path.display(),
            average.deploy_path.display()
        );
    }
    println!(
        "wrote {} (training time) and {} (deploy), with training.json, config.json and classes.txt",
        report.model_path.display(),
        report.deploy_path.display()
    );
    println!("{}", crate::curves::files_line(&report.output));
    if !report.skipped_images.is_empty() {
        println!("skipped {} unreadable images:", report.skipped_images.len());
        for (path, reason) in report.skipped_images.iter().take(10) {
            println!("  {}: {reason}", path.display());
        }
    }
}
