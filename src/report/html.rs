//! `report --html`: one static page, no scripts or external resources: the
//! table and an inline SVG bar chart of the return rates, treated beside
//! holdout, per signal.

use std::fmt::Write;

use super::{pct, Report, Row};

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const BAR_W: f64 = 28.0;
const GROUP_W: f64 = 110.0;
const CHART_H: f64 = 220.0;
const TOP: f64 = 20.0;
const LEFT: f64 = 50.0;

/// The chart: one group per signal (segment `all`), two bars each.
fn chart(rows: &[&Row]) -> String {
    let width = LEFT + GROUP_W * rows.len().max(1) as f64 + 20.0;
    let height = TOP + CHART_H + 60.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="Return rate within the horizon, treated vs holdout, per signal">"#
    );
    let y = |rate: f64| TOP + CHART_H * (1.0 - rate);
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" x2="{}" y1="{y0}" y2="{y0}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{:.0}%</text>"##,
            width - 10.0,
            LEFT - 6.0,
            y(tick) + 4.0,
            tick * 100.0,
            y0 = y(tick)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let x0 = LEFT + 15.0 + GROUP_W * i as f64;
        for (j, (rate, colour, label)) in [
            (r.treated.rate(), "#2f6db5", "treated"),
            (r.holdout.rate(), "#b0b0b0", "holdout"),
        ]
        .into_iter()
        .enumerate()
        {
            let rate = rate.unwrap_or(0.0);
            let x = x0 + j as f64 * (BAR_W + 4.0);
            let _ = write!(
                s,
                r#"<rect class="bar {label}" x="{x}" y="{}" width="{BAR_W}" height="{}" fill="{colour}"><title>{} {label}: {}</title></rect>"#,
                y(rate),
                CHART_H * rate,
                esc(&r.signal),
                pct(Some(rate))
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x0 + BAR_W + 2.0,
            TOP + CHART_H + 16.0,
            esc(&r.signal)
        );
        let uplift = r
            .uplift()
            .map_or("-".into(), |u| format!("{:+.1} pp", u.uplift * 100.0));
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x0 + BAR_W + 2.0,
            TOP + CHART_H + 32.0,
            esc(&uplift)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{LEFT}" y="{ly}" width="12" height="12" fill="#2f6db5"/><text x="{}" y="{}" font-size="12">treated</text><rect x="{}" y="{ly}" width="12" height="12" fill="#b0b0b0"/><text x="{}" y="{}" font-size="12">holdout</text></svg>"##,
        LEFT + 16.0,
        TOP + CHART_H + 52.0,
        LEFT + 90.0,
        LEFT + 106.0,
        TOP + CHART_H + 52.0,
        ly = TOP + CHART_H + 42.0
    );
    s
}

pub fn render(report: &Report) -> String {
    let signals: Vec<&Row> = report.rows.iter().filter(|r| r.segment == "all").collect();
    let mut rows = String::new();
    for r in report.summary_rows() {
        let u = r.uplift();
        let _ = writeln!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.signal),
            esc(&r.segment),
            r.treated.members,
            r.treated.returned,
            pct(r.treated.rate()),
            r.holdout.members,
            r.holdout.returned,
            pct(r.holdout.rate()),
            u.map_or("-".into(), |u| format!("{:+.1} pp", u.uplift * 100.0)),
            u.map_or("-".into(), |u| format!("[{:+.1}, {:+.1}]", u.low * 100.0, u.high * 100.0)),
            r.pending,
            esc(r.note()),
        );
    }
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>churnwatch reactivation report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(-n+2),td:last-child,th{{text-align:left}}</style>
</head><body>
<h1>Reactivation: treated vs holdout</h1>
<p>Members who came back within {horizon} days of their first alert of each signal; {alerts} alerts read. Uplift = treated rate − holdout rate, with a 95% confidence interval (Newcombe). Members alerted less than {horizon} days before the last alert are pending.</p>
<figure id="chart">{chart}<figcaption>Return rate per signal</figcaption></figure>
<table id="report"><thead><tr><th>signal</th><th>segment</th><th>treated</th><th>returned</th><th>rate</th><th>holdout</th><th>returned</th><th>rate</th><th>uplift</th><th>95% CI</th><th>pending</th><th>note</th></tr></thead>
<tbody>
{rows}</tbody></table>
</body></html>
"#,
        horizon = report.horizon_days,
        alerts = report.alerts,
        chart = chart(&signals),
    )
}
