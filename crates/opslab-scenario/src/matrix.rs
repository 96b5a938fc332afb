//! Several runs of the same cases, side by side: each case attempted K times (`--repeat`) by each of
//! several models (`--model a,b,c`). Per model and case: pass@1 (the share of attempts passed, the
//! unbiased estimate of one attempt's chance) and pass@K (whether any of the K attempts passed);
//! per model: their means over the cases, with tokens and cost. Rendered as JSON, a Markdown table
//! and an SVG chart. Pure.

use std::collections::BTreeMap;

use serde::Serialize;

use super::report::RunReport;

/// One model's attempts.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ModelResult {
    pub model: String,
    /// Per case, in the order the cases ran.
    pub cases: Vec<CaseAttempts>,
    /// The mean over the cases of their pass@1, and of their pass@K.
    pub pass_at_1: f64,
    pub pass_at_k: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// Every attempt's full report, in order.
    pub runs: Vec<RunReport>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CaseAttempts {
    pub case: String,
    pub attempts: usize,
    pub passed: usize,
    pub pass_at_1: f64,
    pub pass_at_k: f64,
}

/// The whole matrix.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MatrixReport {
    /// K: attempts per case and model.
    pub repeat: usize,
    pub models: Vec<ModelResult>,
}

impl ModelResult {
    /// Sums up one model's runs (each run holds one attempt at every case).
    pub fn of(model: String, runs: Vec<RunReport>) -> ModelResult {
        let mut per_case: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for (order, case) in runs.iter().flat_map(|run| &run.cases).enumerate() {
            let entry = per_case.entry(case.case.as_str()).or_insert((order, 0, 0));
            entry.1 += 1;
            entry.2 += usize::from(case.passed && case.error.is_none());
        }
        let mut ordered: Vec<(&str, (usize, usize, usize))> = per_case.into_iter().collect();
        ordered.sort_by_key(|(_, (order, _, _))| *order);
        let cases: Vec<CaseAttempts> = ordered
            .into_iter()
            .map(|(case, (_, attempts, passed))| CaseAttempts {
                case: case.to_string(),
                attempts,
                passed,
                pass_at_1: passed as f64 / attempts.max(1) as f64,
                pass_at_k: if passed > 0 { 1.0 } else { 0.0 },
            })
            .collect();
        let mean = |pick: fn(&CaseAttempts) -> f64| {
            if cases.is_empty() {
                0.0
            } else {
                cases.iter().map(pick).sum::<f64>() / cases.len() as f64
            }
        };
        ModelResult {
            model,
            pass_at_1: mean(|case| case.pass_at_1),
            pass_at_k: mean(|case| case.pass_at_k),
            input_tokens: runs.iter().map(|run| run.summary.input_tokens).sum(),
            output_tokens: runs.iter().map(|run| run.summary.output_tokens).sum(),
            cost_usd: runs.iter().map(|run| run.summary.cost_usd).sum(),
            cases,
            runs,
        }
    }
}

impl MatrixReport {
    /// Every attempt of every case passed, for every model.
    pub fn all_passed(&self) -> bool {
        self.models
            .iter()
            .all(|model| model.runs.iter().all(RunReport::all_passed))
    }

    /// Cases as rows, models side by side as columns: `pass@1 / pass@K`.
    pub fn markdown(&self) -> String {
        let k = self.repeat;
        let mut out = format!("## Scenario matrix (each case {k} time(s) per model)\n\n| case |");
        for model in &self.models {
            out.push_str(&format!(" {} pass@1 / pass@{k} |", model.model));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(self.models.len()));
        out.push('\n');
        let cases: Vec<&str> = self
            .models
            .first()
            .map(|model| model.cases.iter().map(|c| c.case.as_str()).collect())
            .unwrap_or_default();
        for case in cases {
            out.push_str(&format!("| {case} |"));
            for model in &self.models {
                match model.cases.iter().find(|c| c.case == case) {
                    Some(c) => out.push_str(&format!(" {:.2} / {:.2} |", c.pass_at_1, c.pass_at_k)),
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
        out.push_str("| **all** |");
        for model in &self.models {
            out.push_str(&format!(
                " **{:.2} / {:.2}** |",
                model.pass_at_1, model.pass_at_k
            ));
        }
        out.push_str("\n| tokens |");
        for model in &self.models {
            out.push_str(&format!(" {} |", model.input_tokens + model.output_tokens));
        }
        out.push_str("\n| cost (USD) |");
        for model in &self.models {
            out.push_str(&format!(" {:.4} |", model.cost_usd));
        }
        out.push('\n');
        out
    }

    /// A bar chart: per model, pass@1 and pass@K (left axis, 0 to 1) and cost (its own bar, scaled
    /// to the costliest model). Hand-written SVG: two bar series need no plotting library, and the
    /// file stays small and diffable.
    pub fn svg(&self) -> String {
        const WIDTH: f64 = 640.0;
        const HEIGHT: f64 = 360.0;
        const LEFT: f64 = 50.0;
        const TOP: f64 = 40.0;
        const BOTTOM: f64 = 300.0;
        let plot_height = BOTTOM - TOP;
        let groups = self.models.len().max(1) as f64;
        let group_width = (WIDTH - LEFT - 20.0) / groups;
        let bar = (group_width / 4.0).min(40.0);
        let max_cost = self
            .models
            .iter()
            .map(|model| model.cost_usd)
            .fold(0.0, f64::max);
        let mut out = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <title>Scenario matrix: score and cost per model</title>\n\
             <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n\
             <text x=\"{LEFT}\" y=\"20\" font-size=\"14\">pass@1, pass@{k} (0 to 1) and cost (USD, scaled to the highest: {max_cost:.4})</text>\n",
            k = self.repeat,
        );
        for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
            let y = BOTTOM - tick * plot_height;
            out.push_str(&format!(
                "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{tick:.2}</text>\n",
                WIDTH - 20.0,
                LEFT - 5.0,
                y + 4.0
            ));
        }
        let series = [
            ("pass@1", "#4477aa"),
            ("pass@K", "#66ccee"),
            ("cost", "#ee6677"),
        ];
        for (index, model) in self.models.iter().enumerate() {
            let x0 = LEFT + index as f64 * group_width + group_width / 2.0 - 1.5 * bar;
            let cost = if max_cost > 0.0 {
                model.cost_usd / max_cost
            } else {
                0.0
            };
            let values = [
                (model.pass_at_1, format!("{:.2}", model.pass_at_1)),
                (model.pass_at_k, format!("{:.2}", model.pass_at_k)),
                (cost, format!("${:.4}", model.cost_usd)),
            ];
            for (i, ((value, label), (name, colour))) in values.iter().zip(series).enumerate() {
                let height = value.clamp(0.0, 1.0) * plot_height;
                let x = x0 + i as f64 * bar;
                out.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{height:.1}\" fill=\"{colour}\"><title>{} {name}: {}</title></rect>\n\
                     <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                    BOTTOM - height,
                    bar - 2.0,
                    escape(&model.model),
                    escape(label),
                    x + bar / 2.0 - 1.0,
                    BOTTOM - height - 3.0,
                    escape(label),
                ));
            }
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                x0 + 1.5 * bar,
                BOTTOM + 18.0,
                escape(&model.model)
            ));
        }
        for (i, (name, colour)) in series.iter().enumerate() {
            let x = LEFT + i as f64 * 110.0;
            out.push_str(&format!(
                "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{name}</text>\n",
                HEIGHT - 28.0,
                x + 16.0,
                HEIGHT - 18.0
            ));
        }
        out.push_str("</svg>\n");
        out
    }
}

/// Text as SVG (XML) may hold it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::CaseResult;

    fn run(passed: &[(&str, bool)], cost: f64) -> RunReport {
        RunReport::new(
            "m".into(),
            "s".into(),
            passed
                .iter()
                .map(|(case, passed)| CaseResult {
                    case: case.to_string(),
                    fault: true,
                    passed: *passed,
                    cost_usd: cost,
                    input_tokens: 10,
                    output_tokens: 5,
                    ..CaseResult::default()
                })
                .collect(),
        )
    }

    #[test]
    fn pass_at_1_is_the_share_passed_and_pass_at_k_any() {
        let model = ModelResult::of(
            "a".into(),
            vec![
                run(&[("x", true), ("y", false)], 0.5),
                run(&[("x", false), ("y", false)], 0.25),
                run(&[("x", true), ("y", false)], 0.25),
            ],
        );
        assert_eq!(model.cases.len(), 2);
        assert_eq!(model.cases[0].case, "x");
        assert_eq!(model.cases[0].attempts, 3);
        assert_eq!(model.cases[0].passed, 2);
        assert!((model.cases[0].pass_at_1 - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(model.cases[0].pass_at_k, 1.0);
        assert_eq!(model.cases[1].pass_at_1, 0.0);
        assert_eq!(model.cases[1].pass_at_k, 0.0);
        assert!((model.pass_at_1 - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(model.pass_at_k, 0.5);
        assert_eq!(model.cost_usd, 2.0);
        assert_eq!(model.input_tokens + model.output_tokens, 90);
    }

    #[test]
    fn models_side_by_side_in_markdown_and_svg() {
        let matrix = MatrixReport {
            repeat: 2,
            models: vec![
                ModelResult::of(
                    "claude<&>".into(),
                    vec![run(&[("x", true)], 0.1), run(&[("x", false)], 0.1)],
                ),
                ModelResult::of(
                    "small".into(),
                    vec![run(&[("x", false)], 0.0), run(&[("x", false)], 0.0)],
                ),
            ],
        };
        assert!(!matrix.all_passed());
        let markdown = matrix.markdown();
        assert!(
            markdown.contains("| case | claude<&> pass@1 / pass@2 | small pass@1 / pass@2 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| x | 0.50 / 1.00 | 0.00 / 0.00 |"),
            "{markdown}"
        );
        assert!(
            markdown.contains("| cost (USD) | 0.2000 | 0.0000 |"),
            "{markdown}"
        );
        let svg = matrix.svg();
        let document = roxmltree::Document::parse(&svg).expect("the SVG is well-formed XML");
        let bars: Vec<_> = document
            .descendants()
            .filter(|node| {
                node.has_tag_name("rect") && node.children().any(|c| c.has_tag_name("title"))
            })
            .collect();
        assert_eq!(bars.len(), 6, "three bars per model");
        let height = |i: usize| bars[i].attribute("height").unwrap().parse::<f64>().unwrap();
        // The first model: pass@1 half of pass@K; the costliest, so its cost bar is full height.
        assert!((height(0) * 2.0 - height(1)).abs() < 0.2, "{svg}");
        assert_eq!(height(2), height(1));
        assert_eq!(height(3), 0.0);
        assert!(svg.contains("claude&lt;&amp;&gt;"), "{svg}");
    }
}
