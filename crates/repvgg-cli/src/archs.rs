//! `repvgg archs`: the architecture table, as the README quotes it.

use repvgg_model::RepVggArch;

use crate::thousands;

/// The parameters and compute of every reference architecture at `size x size`, in markdown.
pub fn table(size: usize) -> String {
    let mut out = String::from(
        "| arch | blocks per stage | widths (stem, stages) | groups | training-time params | \
         QARepVGG training-time params | deploy params | training-time GMACs | deploy GMACs |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|\n",
    );
    for arch in RepVggArch::ALL {
        let config = arch.config();
        let params = config.num_params();
        let macs = config.macs(size, size);
        let groups = config
            .grouped_layers
            .values()
            .max()
            .map_or("-".to_string(), |g| format!("{g} (layers 2-26, even)"));
        let groups = match (config.use_se, config.is_plus()) {
            (true, _) => format!("{groups}, SE"),
            (false, true) => format!("{groups}, post-SE, aux heads"),
            (false, false) => groups,
        };
        let name = match config.is_plus() {
            true => format!("{} (RepVGGplus)", arch.name()),
            false => arch.name().to_string(),
        };
        let quantization_aware = config.clone().quantization_aware().num_params();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} |\n",
            name,
            join(&config.num_blocks),
            join(&config.stage_widths()),
            groups,
            thousands(params.training),
            thousands(quantization_aware.training),
            thousands(params.deploy),
            macs.training as f64 / 1e9,
            macs.deploy as f64 / 1e9,
        ));
    }
    out.push_str(&format!(
        "\nMACs per {size}x{size} image (the paper's \"FLOPs\" column counts MACs; 1 MAC = 2 FLOPs). \
         RepVGGplus's training-time parameters include its three auxiliary heads (5,963,640 for \
         L2pse), which conversion drops; its MACs leave them out. QARepVGG's blocks (`repvgg train \
         --quantization-aware`) keep two batch norms where RepVGG's have three, and convert to the \
         same deploy network.\n"
    ));
    out
}

fn join(values: &[usize]) -> String {
    values
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("/")
}
