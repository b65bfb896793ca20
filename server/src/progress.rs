//! Progress bars for long operations started from a terminal (index sync,
//! embedding, summary builds, evaluations).

use std::time::Duration;

use anyhow::Context as _;
use quarry_search_sync::{EmbedReport, Syncer};

/// A progress bar on stderr (hidden when `visible` is false) labelled `what`.
pub fn bar(visible: bool, total: u64, what: &str) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>24} {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}

/// Runs [`Syncer::embed_pending`] with a progress bar fed by polling the
/// sync status (`embed_pending` reports only when it is done).
///
/// # Errors
/// Status and embedding failures.
pub async fn embed_with_progress(
    syncer: &Syncer,
    progress: bool,
    name: &str,
) -> anyhow::Result<EmbedReport> {
    let status = syncer.status().await?;
    let pending = status.docs.saturating_sub(status.embedded);
    if pending == 0 {
        return Ok(EmbedReport::default());
    }
    let bar = bar(progress, pending, &format!("{name} embedding"));
    let watcher = {
        let syncer = syncer.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Ok(s) = syncer.status().await {
                    bar.set_position(pending.saturating_sub(s.docs.saturating_sub(s.embedded)));
                }
            }
        })
    };
    let report = syncer.embed_pending().await;
    watcher.abort();
    bar.finish_and_clear();
    report.with_context(|| format!("{name}: embedding"))
}
