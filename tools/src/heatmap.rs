//! `l7tap heatmap`: latency heatmap from the `intervals` table.
use std::path::PathBuf;

/// Command-line arguments of `l7tap heatmap`.
#[derive(clap::Args)]
pub struct HeatmapArgs {
    /// Output directory of `l7tap capture`.
    pub dir: PathBuf,
    /// Image to write: `.png` or `.html`.
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub filters: crate::report::FilterArgs,
    /// Only this client (IP, or `ip:port` whose port is ignored).
    #[arg(long)]
    pub client: Option<String>,
}

pub fn run(_args: HeatmapArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
