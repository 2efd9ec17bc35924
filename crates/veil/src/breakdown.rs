//! `veil bench --breakdown`: one query's costs per operator kind and per protocol
//! primitive, printed as tables and drawn as a bar chart (plotters' SVG backend): each
//! kind's share of the online time, of the online bytes and of the preprocessing,
//! against its share of the plaintext FLOPs.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use veil_exec::breakdown::Breakdown;
use veil_serve::bench::{BenchOptions, bench_plan};

/// Measures, prints and draws the breakdown of `options`' model.
pub(crate) fn breakdown(options: &BenchOptions, chart: &Path) -> Result<()> {
    let (plan, input) = bench_plan(options)?;
    let breakdown =
        veil_exec::breakdown::measure(&plan, &input, options.batch, options.comparison_keys)?;
    let name = match options.plan {
        Some(_) => plan.public.name.as_str(),
        None => options.model.as_str(),
    };
    print_tables(name, &breakdown);
    draw(name, &breakdown, chart).with_context(|| format!("drawing {}", chart.display()))?;
    println!("chart: {}", chart.display());
    Ok(())
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        100.0 * part / whole
    } else {
        0.0
    }
}

fn print_tables(model: &str, breakdown: &Breakdown) {
    let kinds = &breakdown.kinds;
    let time: f64 = kinds.iter().map(|k| k.online.as_secs_f64()).sum();
    let bytes: f64 = kinds.iter().map(|k| k.online_bytes as f64).sum();
    let material: f64 = kinds.iter().map(|k| k.material_bytes as f64).sum();
    let flops: f64 = kinds.iter().map(|k| k.plaintext_flops).sum();
    println!(
        "{model}: one query, dealer setting, the client's online figures (bytes sent + received), the dealer's material (both halves)"
    );
    println!(
        "{:<28} {:>5} {:>10} {:>7} {:>13} {:>7} {:>7} {:>14} {:>7} {:>9}",
        "operator",
        "nodes",
        "online_s",
        "time%",
        "online_bytes",
        "bytes%",
        "rounds",
        "material",
        "mat%",
        "flops%"
    );
    for kind in kinds {
        println!(
            "{:<28} {:>5} {:>10.4} {:>6.1}% {:>13} {:>6.1}% {:>7} {:>14} {:>6.1}% {:>8.1}%",
            kind.kind,
            kind.nodes,
            kind.online.as_secs_f64(),
            share(kind.online.as_secs_f64(), time),
            kind.online_bytes,
            share(kind.online_bytes as f64, bytes),
            kind.rounds,
            kind.material_bytes,
            share(kind.material_bytes as f64, material),
            share(kind.plaintext_flops, flops),
        );
    }
    println!(
        "{:<28} {:>5} {:>10.4} {:>7} {:>13} {:>7} {:>7} {:>14}",
        "total",
        kinds.iter().map(|k| k.nodes).sum::<usize>(),
        time,
        "",
        bytes as u64,
        "",
        kinds.iter().map(|k| k.rounds).sum::<u64>(),
        material as u64
    );
    println!();
    println!(
        "{:<28} {:>10} {:>13} {:>7} {:>14}",
        "primitive", "online_s", "online_bytes", "rounds", "material"
    );
    for primitive in &breakdown.primitives {
        println!(
            "{:<28} {:>10.4} {:>13} {:>7} {:>14}",
            primitive.primitive.name(),
            primitive.online.time.as_secs_f64(),
            primitive.online.sent_bytes + primitive.online.received_bytes,
            primitive.online.rounds,
            primitive.material_bytes
        );
    }
}

/// Grouped bars: per operator kind, its share of online time, online bytes,
/// preprocessing and plaintext FLOPs.
fn draw(model: &str, breakdown: &Breakdown, chart: &Path) -> Result<()> {
    let kinds: Vec<_> = breakdown
        .kinds
        .iter()
        .filter(|k| k.online_bytes > 0 || k.plaintext_flops > 0.0 || k.material_bytes > 0)
        .collect();
    let totals = [
        kinds.iter().map(|k| k.online.as_secs_f64()).sum::<f64>(),
        kinds.iter().map(|k| k.online_bytes as f64).sum(),
        kinds.iter().map(|k| k.material_bytes as f64).sum(),
        kinds.iter().map(|k| k.plaintext_flops).sum(),
    ];
    let series: [(&str, RGBColor); 4] = [
        ("online time", RGBColor(31, 119, 180)),
        ("online bytes", RGBColor(255, 127, 14)),
        ("preprocessing bytes", RGBColor(44, 160, 44)),
        ("plaintext FLOPs", RGBColor(127, 127, 127)),
    ];
    let value = |kind: &veil_exec::breakdown::KindCost, which: usize| match which {
        0 => kind.online.as_secs_f64(),
        1 => kind.online_bytes as f64,
        2 => kind.material_bytes as f64,
        _ => kind.plaintext_flops,
    };
    let root = SVGBackend::new(chart, (1100, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let count = kinds.len() as f64;
    let mut plot = ChartBuilder::on(&root)
        .caption(
            format!("{model} under MPC: where one query's cost goes, by operator"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(60)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..count, 0.0..100.0)?;
    let names: Vec<&str> = kinds.iter().map(|k| k.kind).collect();
    plot.configure_mesh()
        .disable_x_mesh()
        .x_labels(kinds.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let index = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 1e-6 && index < names.len() {
                names[index].to_string()
            } else {
                String::new()
            }
        })
        .y_desc("share of the query's total (%)")
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (which, (label, color)) in series.iter().enumerate() {
        let bars = kinds.iter().enumerate().map(|(index, kind)| {
            let left = index as f64 + 0.1 + which as f64 * width;
            let height = share(value(kind, which), totals[which]);
            Rectangle::new([(left, 0.0), (left + width, height)], color.filled())
        });
        plot.draw_series(bars)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    plot.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}
