//! Leave-one-database-out tuning of schema linking (`quarry eval tokens
//! --leave-one-out`): the linking parameters are chosen on the other
//! databases and measured on the held-out one, for every database, so the
//! figures say how linking does on a schema nobody tuned it for.
//!
//! Every setting of [`grid`] runs [`run_token_eval`] over all sets once;
//! then, for each held-out set, the setting is chosen on the other sets'
//! questions by [`choose`] and the held-out set's figures are those of that
//! setting. The out-of-sample summary is over the held-out figures, so it
//! is comparable with the in-sample one (every set under one setting).

use std::fmt::Write as _;

use quarry_bench::ask::ServerSections;
use quarry_sql::linking::LinkingConfig;
use serde_json::{Value, json};

use crate::tokens::{QuestionSet, TokenEvalReport, TokenSummary, run_token_eval};

/// Context share the choice aims under (issue 18: ≤ 35 % of the schema).
pub const TARGET_SHARE: f64 = 0.35;

/// The settings tried: what README's linking sweep varied —
/// `relative_table_threshold` × `column_threshold`, and
/// `small_table_columns = 2` — around the defaults (first).
pub fn grid() -> Vec<LinkingConfig> {
    let base = LinkingConfig::default();
    let mut out = vec![base.clone()];
    for relative in [0.3, 0.35, 0.4] {
        for column in [0.34, 0.5] {
            let c = LinkingConfig {
                relative_table_threshold: relative,
                column_threshold: column,
                ..base.clone()
            };
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out.push(LinkingConfig {
        relative_table_threshold: 0.35,
        small_table_columns: 2,
        ..base
    });
    out
}

/// The index of the setting to use, from each setting's summary on the
/// training sets: among those whose context share is at most
/// [`TARGET_SHARE`], the highest table + column recall; when none is, the
/// smallest share. Ties go to the earlier setting.
pub fn choose(summaries: &[TokenSummary]) -> usize {
    let recall = |s: &TokenSummary| s.table_recall.unwrap_or(0.0) + s.column_recall.unwrap_or(0.0);
    let under: Vec<usize> = (0..summaries.len())
        .filter(|&i| summaries[i].share_of_full_schema <= TARGET_SHARE)
        .collect();
    if under.is_empty() {
        return (0..summaries.len())
            .min_by(|&a, &b| {
                summaries[a]
                    .share_of_full_schema
                    .total_cmp(&summaries[b].share_of_full_schema)
                    .then(a.cmp(&b))
            })
            .unwrap_or(0);
    }
    under
        .into_iter()
        .max_by(|&a, &b| {
            recall(&summaries[a])
                .total_cmp(&recall(&summaries[b]))
                .then(b.cmp(&a))
        })
        .unwrap_or(0)
}

/// What [`run_leave_one_out`] measured.
#[derive(Debug, Clone)]
pub struct LooReport {
    /// The settings, in [`grid`] order.
    pub settings: Vec<LinkingConfig>,
    /// Each setting's run over every set.
    pub runs: Vec<TokenEvalReport>,
    /// Per set (in order), the setting chosen on the others.
    pub chosen: Vec<usize>,
    /// Each set's figures under the setting chosen without it.
    pub held_out: TokenEvalReport,
}

/// Runs every [`grid`] setting over `sets`, then chooses per held-out set.
///
/// # Errors
/// As [`run_token_eval`].
pub async fn run_leave_one_out(
    sections: &ServerSections,
    sets: &[QuestionSet],
    progress: bool,
) -> anyhow::Result<LooReport> {
    let settings = grid();
    let mut runs = Vec::with_capacity(settings.len());
    for (i, setting) in settings.iter().enumerate() {
        let mut sections = sections.clone();
        sections.sql.linking = setting.clone();
        if progress {
            eprintln!("setting {}/{}: {setting:?}", i + 1, settings.len());
        }
        runs.push(run_token_eval(&sections, sets, None, false).await?);
    }
    let mut chosen = Vec::with_capacity(sets.len());
    let mut held_out = TokenEvalReport::default();
    for (k, set) in sets.iter().enumerate() {
        let training: Vec<TokenSummary> = runs
            .iter()
            .map(|run| {
                let others = TokenEvalReport {
                    sets: run
                        .sets
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != k)
                        .map(|(_, s)| s.clone())
                        .collect(),
                };
                others.summary("")
            })
            .collect();
        let pick = choose(&training);
        chosen.push(pick);
        if let Some(figures) = runs[pick].sets.get(k) {
            held_out.sets.push(figures.clone());
        } else {
            anyhow::bail!("no figures for {}", set.name);
        }
    }
    Ok(LooReport {
        settings,
        runs,
        chosen,
        held_out,
    })
}

fn setting_label(c: &LinkingConfig) -> String {
    format!(
        "relative_table_threshold {}, column_threshold {}, small_table_columns {}",
        c.relative_table_threshold, c.column_threshold, c.small_table_columns
    )
}

fn row(out: &mut String, label: &str, s: &TokenSummary) {
    let pct = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |x| format!("{:.3}", x));
    let _ = writeln!(
        out,
        "| {label} | {} | {:.1} % | {} | {} |",
        s.questions,
        s.share_of_full_schema * 100.0,
        pct(s.table_recall),
        pct(s.column_recall)
    );
}

impl LooReport {
    /// Markdown: every setting in sample, then out of sample, then the
    /// setting chosen per held-out set.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| linking setting | questions | schema ÷ full | table recall | column recall |\n| --- | ---: | ---: | ---: | ---: |\n",
        );
        for (setting, run) in self.settings.iter().zip(&self.runs) {
            row(
                &mut out,
                &format!("in sample: {}", setting_label(setting)),
                &run.summary(""),
            );
        }
        let all: Vec<TokenSummary> = self.runs.iter().map(|r| r.summary("")).collect();
        row(
            &mut out,
            &format!(
                "in sample, chosen on all sets: {}",
                setting_label(&self.settings[choose(&all)])
            ),
            &all[choose(&all)],
        );
        row(
            &mut out,
            "**out of sample (leave one database out)**",
            &self.held_out.summary(""),
        );
        out.push_str("\n| held-out set | setting chosen on the others | schema ÷ full | table recall | column recall |\n| --- | --- | ---: | ---: | ---: |\n");
        for (set, &pick) in self.held_out.sets.iter().zip(&self.chosen) {
            let s = TokenEvalReport {
                sets: vec![set.clone()],
            }
            .summary("");
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} % | {} | {} |",
                set.name,
                setting_label(&self.settings[pick]),
                s.share_of_full_schema * 100.0,
                s.table_recall.map_or("–".into(), |x| format!("{x:.3}")),
                s.column_recall.map_or("–".into(), |x| format!("{x:.3}")),
            );
        }
        out
    }

    /// The report as JSON.
    pub fn to_json(&self) -> Value {
        let summary = |s: TokenSummary| {
            json!({
                "questions": s.questions,
                "share_of_full_schema": s.share_of_full_schema,
                "table_recall": s.table_recall,
                "column_recall": s.column_recall,
            })
        };
        json!({
            "method": "each setting runs eval tokens over every set; per held-out set the setting is chosen on the other sets (share <= 0.35, then highest table + column recall; else smallest share)",
            "in_sample": self.settings.iter().zip(&self.runs).map(|(c, r)| json!({
                "setting": setting_label(c),
                "summary": summary(r.summary("")),
            })).collect::<Vec<_>>(),
            "out_of_sample": summary(self.held_out.summary("")),
            "chosen": self.held_out.sets.iter().zip(&self.chosen).map(|(s, &i)| json!({
                "set": s.name,
                "setting": setting_label(&self.settings[i]),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(share: f64, table: f64, column: f64) -> TokenSummary {
        TokenSummary {
            share_of_full_schema: share,
            table_recall: Some(table),
            column_recall: Some(column),
            ..TokenSummary::default()
        }
    }

    #[test]
    fn the_choice_is_the_best_recall_under_the_share_target_else_the_leanest() {
        let under = [
            summary(0.37, 0.99, 0.99),
            summary(0.34, 0.96, 0.93),
            summary(0.33, 0.97, 0.94),
        ];
        assert_eq!(choose(&under), 2);
        let over = [summary(0.40, 0.99, 0.99), summary(0.36, 0.9, 0.9)];
        assert_eq!(choose(&over), 1);
    }

    #[test]
    fn the_grid_starts_with_the_defaults_and_has_no_duplicates() {
        let g = grid();
        assert_eq!(g[0], LinkingConfig::default());
        for (i, a) in g.iter().enumerate() {
            assert!(!g[i + 1..].contains(a));
        }
    }
}
