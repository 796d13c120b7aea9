//! A small horizontal bar chart as inline SVG, drawn on the server: one row per project and
//! cluster, the all-time value as a light bar with this period's value over it. No script,
//! no style attributes (the page's Content-Security-Policy allows neither inline): colours
//! are SVG presentation attributes. The numbers are also in the table beside it, for screen
//! readers and for copying.

use maud::{Markup, html};

/// One row of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    /// This period.
    pub current: f64,
    /// All time.
    pub total: f64,
}

const WIDTH: f64 = 480.0;
const LABEL_W: f64 = 170.0;
const VALUE_W: f64 = 100.0;
const ROW_H: f64 = 30.0;
const BAR_H: f64 = 18.0;

/// The bar length for `v` on a scale whose longest bar is `max`.
pub fn scaled(v: f64, max: f64) -> f64 {
    let room = WIDTH - LABEL_W - VALUE_W;
    if max > 0.0 && v.is_finite() && v > 0.0 {
        (v / max * room).min(room)
    } else {
        0.0
    }
}

fn short(label: &str) -> String {
    if label.chars().count() > 22 {
        let mut s: String = label.chars().take(21).collect();
        s.push('…');
        s
    } else {
        label.to_string()
    }
}

/// The chart; `id` names its title for `aria-labelledby`.
pub fn bars(id: &str, title: &str, unit: &str, bars: &[Bar]) -> Markup {
    if bars.is_empty() {
        return html! { p.empty { "No usage recorded yet." } };
    }
    let max = bars
        .iter()
        .map(|b| b.total.max(b.current))
        .fold(0.0_f64, f64::max);
    let height = ROW_H * bars.len() as f64 + 26.0;
    let title_id = format!("{id}-title");
    html! {
        svg.chart id=(id) role="img" aria-labelledby=(title_id)
            viewBox={ "0 0 " (WIDTH) " " (height) } xmlns="http://www.w3.org/2000/svg" {
            title id=(title_id) { (title) }
            @for (i, b) in bars.iter().enumerate() {
                @let y = ROW_H * i as f64;
                g {
                    title { (b.label) ": " (format!("{:.1}", b.current)) " " (unit)
                        " this period, " (format!("{:.1}", b.total)) " " (unit) " all time" }
                    text x=(LABEL_W - 8.0) y=(y + 19.0) text-anchor="end" fill="#1f2933"
                        font-size="14" { (short(&b.label)) }
                    rect.total x=(LABEL_W) y=(y + 6.0) width=(scaled(b.total, max))
                        height=(BAR_H) fill="#b3d1f2" {}
                    rect.current x=(LABEL_W) y=(y + 6.0) width=(scaled(b.current, max))
                        height=(BAR_H) fill="#1f5fa8" {}
                    text x=(WIDTH - VALUE_W + 6.0) y=(y + 19.0) fill="#1f2933" font-size="13" {
                        (format!("{:.1}", b.current)) " / " (format!("{:.1}", b.total))
                    }
                }
            }
            g {
                rect x=(LABEL_W) y=(height - 18.0) width="12" height="12" fill="#1f5fa8" {}
                text x=(LABEL_W + 18.0) y=(height - 8.0) font-size="12" fill="#1f2933" { "this period" }
                rect x=(LABEL_W + 100.0) y=(height - 18.0) width="12" height="12" fill="#b3d1f2" {}
                text x=(LABEL_W + 118.0) y=(height - 8.0) font-size="12" fill="#1f2933" { "all time (" (unit) ")" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, current: f64, total: f64) -> Bar {
        Bar {
            label: label.into(),
            current,
            total,
        }
    }

    #[test]
    fn bars_are_scaled_to_the_largest_value() {
        let room = WIDTH - LABEL_W - VALUE_W;
        assert_eq!(scaled(10.0, 10.0), room);
        assert_eq!(scaled(5.0, 10.0), room / 2.0);
        assert_eq!(scaled(0.0, 10.0), 0.0);
        assert_eq!(scaled(3.0, 0.0), 0.0, "nothing to scale by");
        assert_eq!(scaled(-1.0, 10.0), 0.0);
        assert_eq!(scaled(f64::NAN, 10.0), 0.0);
        let svg = bars("u", "CPU hours", "h", &[bar("physics", 5.0, 10.0)]).into_string();
        assert!(svg.contains(&format!("width=\"{room}\"")), "{svg}");
        assert!(svg.contains(&format!("width=\"{}\"", room / 2.0)), "{svg}");
        assert!(svg.contains("role=\"img\""));
        assert!(svg.contains("aria-labelledby=\"u-title\""));
        assert!(svg.contains("<title id=\"u-title\">CPU hours</title>"));
        assert!(svg.contains("5.0 / 10.0"));
    }

    #[test]
    fn labels_are_escaped_and_shortened() {
        let svg = bars(
            "u",
            "t",
            "h",
            &[bar("<script>alert(1)</script> on slurm-0", 1.0, 1.0)],
        )
        .into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains('…'));
    }

    #[test]
    fn no_rows_is_said_in_words() {
        let html = bars("u", "t", "h", &[]).into_string();
        assert!(!html.contains("<svg"));
        assert!(html.contains("No usage"));
    }
}
