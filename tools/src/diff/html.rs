//! `l7tap diff --html`: a page, in the heatmap page's style, with each group's two latency
//! distributions (cumulative, log latency axis) and the figures of the text table.
use std::path::Path;

use hdrhistogram::Histogram;

use super::{fingerprint_name, format_ns, Diff, Side};

const HTML_TEMPLATE: &str = include_str!("diff.html");

/// Most points of one distribution drawn.
const MAX_POINTS: usize = 300;

/// `[latency ns, fraction of requests at or below]`, at each recorded bucket (thinned to
/// [`MAX_POINTS`]).
fn cumulative(histogram: &Histogram<u64>) -> Vec<[f64; 2]> {
    let total = histogram.len().max(1) as f64;
    let mut seen = 0u64;
    let mut points: Vec<[f64; 2]> = histogram
        .iter_recorded()
        .map(|bucket| {
            seen += bucket.count_at_value();
            [
                histogram.highest_equivalent(bucket.value_iterated_to()) as f64,
                seen as f64 / total,
            ]
        })
        .collect();
    if points.len() > MAX_POINTS {
        let step = points.len().div_ceil(MAX_POINTS);
        let last = *points.last().expect("not empty");
        points = points.into_iter().step_by(step).collect();
        points.push(last);
    }
    points
}

fn side_data(side: &Option<Side>) -> serde_json::Value {
    match side {
        None => serde_json::Value::Null,
        Some(s) => serde_json::json!({
            "requests": s.requests,
            "error_rate": s.error_rate(),
            "time_spent": format_ns(s.sum_ns as f64),
            "cdf": s.latency.as_ref().map(cumulative).unwrap_or_default(),
        }),
    }
}

pub fn write_html(diff: &Diff, path: &Path) -> std::io::Result<()> {
    let groups: Vec<serde_json::Value> = diff
        .groups
        .iter()
        .map(|g| {
            serde_json::json!({
                "label": format!("{} {} {}", g.key.protocol, g.key.server, g.key.operation),
                "fingerprint": fingerprint_name(g.key.fingerprint),
                "query": g.text,
                "flagged": g.flagged(),
                "error_flagged": g.error_flagged,
                "tripped": g.tripped.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "quantiles": g.quantiles.iter().map(|q| serde_json::json!([
                    super::quantile_name(q.q),
                    q.baseline.map(|b| format_ns(b.estimate as f64)),
                    q.candidate.map(|c| format_ns(c.estimate as f64)),
                    q.relative(),
                    q.flagged,
                ])).collect::<Vec<_>>(),
                "baseline": side_data(&g.baseline),
                "candidate": side_data(&g.candidate),
            })
        })
        .collect();
    let title = format!(
        "l7tap diff: {} → {}",
        diff.baseline.shown, diff.candidate.shown
    );
    let data = serde_json::json!({
        "title": title,
        "min_effect": diff.min_effect,
        "groups": groups,
    });
    let json = serde_json::to_string(&data).expect("JSON values serialize");
    // Safe inside <script>: no `</script>`, and no `://` (the page makes no references out).
    let json = json
        .replace("</", "<\\/")
        .replace("://", ":\\/\\/")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let page = HTML_TEMPLATE
        .replace("{{TITLE}}", &html_escape(&title))
        .replace("{{DATA}}", &json);
    std::fs::write(path, page)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
