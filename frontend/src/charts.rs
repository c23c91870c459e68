//! A small SVG line chart (points joined by lines), used for the density
//! sweep (time and memory against N) and the run history (time per run).

use leptos::prelude::*;

use crate::num::{fixed, n};

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Its name in the legend, e.g. "Containers".
    pub name: &'static str,
    /// CSS class that colours it (`s-container`, `s-vm`).
    pub class: &'static str,
    /// (x, y) points in x order.
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 520.0;
const H: f64 = 220.0;
const LEFT: f64 = 64.0;
const BOTTOM: f64 = 34.0;
const TOP: f64 = 12.0;
const RIGHT: f64 = 16.0;

/// A line chart. `fmt_y` formats y values (axis ticks and point labels);
/// the description goes into the chart's accessible name.
#[component]
pub fn LineChart(
    title: String,
    x_label: &'static str,
    series: Vec<Series>,
    fmt_y: fn(f64) -> String,
    how: String,
) -> impl IntoView {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (x_min, x_max) = if x_min > x_max {
        (0.0, 1.0)
    } else if x_min == x_max {
        (x_min - 1.0, x_max + 1.0)
    } else {
        (x_min, x_max)
    };
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let px = move |x: f64| LEFT + (x - x_min) / (x_max - x_min) * (W - LEFT - RIGHT);
    let py = move |y: f64| H - BOTTOM - y / y_max * (H - BOTTOM - TOP);
    let description = series
        .iter()
        .map(|s| {
            let values: Vec<String> = s
                .points
                .iter()
                .map(|(x, y)| format!("{} → {}", n(*x), fmt_y(*y)))
                .collect();
            format!("{}: {}", s.name, values.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let ticks: Vec<f64> = (0..=4).map(|i| y_max / 1.1 * f64::from(i) / 4.0).collect();
    let x_ticks: Vec<f64> = {
        let step = ((x_max - x_min) / 8.0).ceil().max(1.0);
        let mut v = Vec::new();
        let mut x = x_min.ceil();
        while x <= x_max {
            v.push(x);
            x += step;
        }
        v
    };
    view! {
        <figure class="line-chart">
            <figcaption>{title.clone()}</figcaption>
            <svg viewBox=format!("0 0 {} {}", n(W), n(H)) role="img" aria-label=format!("{title}. {description}")>
                {ticks
                    .into_iter()
                    .map(|t| {
                        view! {
                            <g class="grid">
                                <line x1=n(LEFT) x2=n(W - RIGHT) y1=n(py(t)) y2=n(py(t)) />
                                <text x=n(LEFT - 6.0) y=n(py(t) + 4.0) text-anchor="end">{fmt_y(t)}</text>
                            </g>
                        }
                    })
                    .collect_view()}
                {x_ticks
                    .into_iter()
                    .map(|x| {
                        view! {
                            <text class="x-tick" x=n(px(x)) y=n(H - BOTTOM + 16.0) text-anchor="middle">{n(x)}</text>
                        }
                    })
                    .collect_view()}
                <text class="axis-label" x=n((LEFT + W - RIGHT) / 2.0) y=n(H - 2.0) text-anchor="middle">{x_label}</text>
                {series
                    .iter()
                    .map(|s| {
                        let path = s
                            .points
                            .iter()
                            .map(|(x, y)| format!("{},{}", fixed(px(*x), 1), fixed(py(*y), 1)))
                            .collect::<Vec<_>>()
                            .join(" ");
                        view! {
                            <g class=format!("series {}", s.class)>
                                <polyline points=path />
                                {s
                                    .points
                                    .iter()
                                    .map(|(x, y)| {
                                        view! {
                                            <circle cx=n(px(*x)) cy=n(py(*y)) r=4>
                                                <title>{format!("{} at {}: {}", s.name, n(*x), fmt_y(*y))}</title>
                                            </circle>
                                        }
                                    })
                                    .collect_view()}
                            </g>
                        }
                    })
                    .collect_view()}
            </svg>
            <p class="legend">
                {series
                    .iter()
                    .map(|s| view! { <span class=format!("key {}", s.class)>{s.name}</span> })
                    .collect_view()}
            </p>
            <p class="how">{how}</p>
        </figure>
    }
}

/// Milliseconds from microseconds, for chart axes.
pub fn fmt_ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{}\u{a0}ms", fixed(us / 1000.0, 0))
    } else {
        format!("{}\u{a0}ms", fixed(us / 1000.0, 1))
    }
}

/// MiB from bytes, for chart axes.
pub fn fmt_mib(b: f64) -> String {
    if b < 1048576.0 {
        format!("{}\u{a0}KiB", fixed(b / 1024.0, 0))
    } else if b >= 10.0 * 1048576.0 {
        format!("{}\u{a0}MiB", fixed(b / 1048576.0, 0))
    } else {
        format!("{}\u{a0}MiB", fixed(b / 1048576.0, 2))
    }
}
