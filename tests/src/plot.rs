//! PNG plots for the reports (the chaos soak's recovery times), drawn with plotters.
//!
//! plotters is built without its system-font backend (font-kit links fontconfig and freetype):
//! its `ab_glyph` renderer draws text from a TrueType file that we hand it, DejaVu Sans from
//! Debian's `fonts-dejavu-core` (xtask's setup installs it with the lab's packages).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// Where Debian's `fonts-dejavu-core` puts DejaVu Sans.
const FONT_FILE: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The family name the charts ask for.
const FONT: &str = "sans-serif";

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("reading the font {path}: {source} (apt-get install fonts-dejavu-core)")]
    Font {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the font {0} is not a TrueType font plotters can use")]
    InvalidFont(PathBuf),
    #[error("nothing to plot")]
    Empty,
    #[error("drawing {path}: {message}")]
    Draw { path: PathBuf, message: String },
}

/// Registers the font once per process (plotters keeps fonts in a global table, by name).
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    let registered = REGISTERED.get_or_init(|| {
        let bytes = std::fs::read(FONT_FILE).map_err(|e| e.to_string())?;
        // plotters wants the font for the life of the process: it is read once, so leaking
        // it costs one copy.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| "invalid".to_string())
    });
    match registered {
        Ok(()) => Ok(()),
        Err(why) if why == "invalid" => Err(PlotError::InvalidFont(FONT_FILE.into())),
        Err(why) => Err(PlotError::Font {
            path: FONT_FILE.into(),
            source: std::io::Error::other(why.clone()),
        }),
    }
}

/// One box per group: its quartiles, whiskers at 1.5 × the interquartile range (plotters'
/// `Quartiles`), and every value as a dot on it.
/// `groups` are (label, values in ms); groups without values are left out.
pub fn box_plot_ms(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
) -> Result<(), PlotError> {
    register_font()?;
    let groups: Vec<&(String, Vec<f64>)> = groups.iter().filter(|(_, v)| !v.is_empty()).collect();
    let labels: Vec<String> = groups.iter().map(|(label, _)| label.clone()).collect();
    let top = groups
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .fold(f64::NAN, f64::max);
    if labels.is_empty() || !top.is_finite() {
        return Err(PlotError::Empty);
    }
    let draw_error = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let width = (160 * labels.len() as u32).clamp(640, 1600);
    let root = BitMapBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(labels[..].into_segmented(), 0f32..(top * 1.1) as f32)
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(label) | SegmentValue::Exact(label) => (*label).clone(),
            SegmentValue::Last => String::new(),
        })
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(|e| draw_error(&e))?;
    chart
        .draw_series(groups.iter().zip(&labels).map(|((_, values), label)| {
            Boxplot::new_vertical(SegmentValue::CenterOf(label), &Quartiles::new(values))
                .width(36)
                .style(BLUE)
        }))
        .map_err(|e| draw_error(&e))?;
    chart
        .draw_series(groups.iter().zip(&labels).flat_map(|((_, values), label)| {
            values.iter().map(move |value| {
                Circle::new(
                    (SegmentValue::CenterOf(label), *value as f32),
                    2,
                    RED.mix(0.5).filled(),
                )
            })
        }))
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}

/// One line per series over a shared x axis; `series` are (label, (x, y) points). Series
/// without points are left out; the legend names the rest.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    register_font()?;
    let series: Vec<&(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, points)| !points.is_empty())
        .collect();
    let points = || series.iter().flat_map(|(_, points)| points.iter().copied());
    let x_max = points().map(|(x, _)| x).fold(f64::NAN, f64::max);
    let y_max = points().map(|(_, y)| y).fold(f64::NAN, f64::max);
    if series.is_empty() || !x_max.is_finite() || !y_max.is_finite() {
        return Err(PlotError::Empty);
    }
    let draw_error = |e: &dyn std::fmt::Display| PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_error(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x_max.max(1.0), 0f64..(y_max * 1.1).max(1.0))
        .map_err(|e| draw_error(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(|e| draw_error(&e))?;
    for (index, (label, points)) in series.iter().enumerate() {
        let colour = Palette99::pick(index).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| draw_error(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| draw_error(&e))?;
    root.present().map_err(|e| draw_error(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_plot_is_a_png() {
        if !Path::new(FONT_FILE).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{FONT_FILE} missing: fonts-dejavu-core is one of the packages setup installs"
            );
            eprintln!("SKIP: {FONT_FILE} missing (apt-get install fonts-dejavu-core)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("ferrolb-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("box.png");
        let groups = vec![
            ("link-down".to_string(), vec![290.0, 310.0, 380.0]),
            ("speaker-kill".to_string(), vec![321.0, 442.0]),
            ("controller-kill".to_string(), vec![]),
        ];
        box_plot_ms(&path, "recovery", "ms", &groups).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
        assert!(bytes.len() > 2_000, "an image, not an empty file");
        let lines = dir.join("lines.png");
        let series = vec![
            (
                "controller".to_string(),
                vec![(0.0, 20.0), (1.0, 30.0), (2.0, 25.0)],
            ),
            ("empty".to_string(), vec![]),
        ];
        line_plot(&lines, "rss", "s", "MiB", &series).unwrap();
        let bytes = std::fs::read(&lines).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "a PNG signature");
        assert!(matches!(
            line_plot(&lines, "t", "s", "MiB", &[("a".to_string(), vec![])]),
            Err(PlotError::Empty)
        ));
        assert!(matches!(
            box_plot_ms(&path, "t", "ms", &[("a".to_string(), vec![])]),
            Err(PlotError::Empty)
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
