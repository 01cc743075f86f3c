//! Charts drawn with plotters, twice: as an SVG string (inlined in the HTML) and as a PNG file.
//!
//! Text in the PNGs is rendered by ab_glyph with DejaVu Sans, embedded from the `dejavu` crate
//! and registered as `sans-serif`, so no system font is needed. In the SVGs text stays text
//! (`font-family="sans-serif"`), drawn by whatever opens the report.

use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{
    AsRangedCoord, DefaultFormatting, KeyPointHint, Ranged, ValueFormatter,
};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The font family name every chart uses.
const FONT: &str = "sans-serif";

static FONT_ONCE: Once = Once::new();

/// Registers DejaVu Sans as `sans-serif` for ab_glyph (needed once per process, before any
/// text is measured or drawn).
pub(crate) fn register_font() {
    FONT_ONCE.call_once(|| {
        // The font is a valid TrueType file shipped by the `dejavu` crate.
        let ok = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .is_ok();
        debug_assert!(ok, "DejaVu Sans did not load");
    });
}

/// Series colours (Tableau 10), in order.
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// One named series of bar values (one value per category).
#[derive(Clone, Debug)]
pub(crate) struct Bars {
    pub(crate) name: String,
    pub(crate) values: Vec<f64>,
}

/// Horizontal bars: one row per category, one bar per series (grouped) or stacked. A NaN
/// value is drawn as "n/a", zero as "0" (when annotated).
#[derive(Clone, Debug)]
pub(crate) struct HBars {
    pub(crate) categories: Vec<String>,
    pub(crate) series: Vec<Bars>,
    pub(crate) x_desc: String,
    pub(crate) log_x: bool,
    pub(crate) stacked: bool,
    /// Write each bar's value at its end (grouped bars only).
    pub(crate) annotate: bool,
    /// Decimals of those values (`None`: short form such as 1.5k).
    pub(crate) decimals: Option<usize>,
}

/// One named line.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    pub(crate) name: String,
    pub(crate) points: Vec<(f64, f64)>,
    /// Dashed (for reference lines such as a baseline).
    pub(crate) dashed: bool,
}

/// Lines on x/y axes.
#[derive(Clone, Debug)]
pub(crate) struct Lines {
    pub(crate) series: Vec<Line>,
    pub(crate) x_desc: String,
    pub(crate) y_desc: String,
    pub(crate) log_x: bool,
    pub(crate) log_y: bool,
    /// A dot at every point.
    pub(crate) markers: bool,
    /// Force the y range to start at 0 (linear y only).
    pub(crate) y_from_zero: bool,
    pub(crate) legend: SeriesLabelPosition,
}

/// A verdict in a [`Verdicts`] grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    Blocked,
    NotBlocked,
    /// The attack does not apply to this target.
    NotApplicable,
    /// Run, but without a verdict (the lab failed, or no attempt could be made).
    NoVerdict,
    /// Not run against this target.
    NotRun,
}

/// One cell of a [`Verdicts`] grid: the verdict and a few words under it.
#[derive(Clone, Debug)]
pub(crate) struct VerdictCell {
    pub(crate) mark: Mark,
    pub(crate) note: String,
}

/// One row of a [`Verdicts`] grid.
#[derive(Clone, Debug)]
pub(crate) struct VerdictRow {
    pub(crate) name: String,
    /// What "blocked" means for this row, written beside the cells.
    pub(crate) criterion: String,
    /// One per column.
    pub(crate) cells: Vec<VerdictCell>,
}

/// A grid of verdicts: one row per attack, one coloured cell per target, and what "blocked"
/// means beside them.
#[derive(Clone, Debug)]
pub(crate) struct Verdicts {
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<VerdictRow>,
    /// A line under the grid.
    pub(crate) footnote: String,
}

/// What to draw.
#[derive(Clone, Debug)]
pub(crate) enum Spec {
    HBars(HBars),
    Lines(Lines),
    Verdicts(Verdicts),
}

/// A chart drawn for the report.
#[derive(Clone, Debug)]
pub struct Chart {
    /// Identifier (also in the PNG's file name).
    pub id: String,
    /// Title (drawn in the chart, repeated in the HTML).
    pub title: String,
    /// What to conclude from it.
    pub caption: String,
    /// The chart as an `<svg>` element.
    pub svg: String,
    /// The PNG written beside the report.
    pub png: PathBuf,
}

const WIDTH: u32 = 960;

fn size(spec: &Spec) -> (u32, u32) {
    match spec {
        Spec::HBars(b) => {
            let legend = if has_legend(b) {
                legend_px(b.series.len())
            } else {
                0
            };
            (WIDTH, 110 + b.categories.len() as u32 * row_px(b) + legend)
        }
        Spec::Lines(_) => (WIDTH, 500),
        Spec::Verdicts(v) => {
            let g = VGeom::of(v);
            let rows: u32 = v.rows.iter().map(|r| g.row_h(r)).sum();
            (WIDTH, VGeom::TOP + VGeom::HEAD + rows + VGeom::FOOT)
        }
    }
}

/// Draws `spec` as SVG (returned) and as the PNG `png`.
pub(crate) fn render(
    id: &str,
    title: &str,
    caption: String,
    spec: &Spec,
    png: &Path,
) -> Result<Chart> {
    register_font();
    let dims = size(spec);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, dims).into_drawing_area();
        draw(&root, title, spec)?;
        root.present().map_err(|e| anyhow!("svg: {e}"))?;
    }
    {
        let root = BitMapBackend::new(png, dims).into_drawing_area();
        draw(&root, title, spec)?;
        root.present()
            .map_err(|e| anyhow!("{}: {e}", png.display()))?;
    }
    Ok(Chart {
        id: id.into(),
        title: title.into(),
        caption,
        svg,
        png: png.to_path_buf(),
    })
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, title: &str, spec: &Spec) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    match spec {
        Spec::HBars(b) => draw_hbars(root, title, b),
        Spec::Lines(l) => draw_lines(root, title, l),
        Spec::Verdicts(v) => draw_verdicts(root, title, v),
    }
}

/// The layout of a [`Verdicts`] grid, in pixels.
struct VGeom {
    /// Width of the name column.
    name_w: u32,
    /// Width of each verdict column.
    cell_w: u32,
    /// Left edge of the criterion column.
    crit_x: u32,
    /// Characters per line of the criterion.
    crit_chars: usize,
}

impl VGeom {
    /// Title band.
    const TOP: u32 = 44;
    /// Header row.
    const HEAD: u32 = 26;
    /// Footnote band.
    const FOOT: u32 = 34;
    const MARGIN: u32 = 12;
    /// Line height of the criterion text (11 px).
    const LINE: u32 = 14;

    fn of(v: &Verdicts) -> Self {
        // DejaVu Sans averages about 0.55 em per character.
        let name_chars = v
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(6)
            .max(6) as u32;
        let name_w = name_chars * 7 + 16;
        let cell_w = 168;
        let crit_x = Self::MARGIN + name_w + cell_w * v.columns.len() as u32 + 10;
        let crit_w = WIDTH.saturating_sub(crit_x + Self::MARGIN);
        Self {
            name_w,
            cell_w,
            crit_x,
            crit_chars: (f64::from(crit_w) / 5.7).max(20.0) as usize,
        }
    }

    fn lines(&self, r: &VerdictRow) -> Vec<String> {
        wrap(&r.criterion, self.crit_chars)
    }

    fn row_h(&self, r: &VerdictRow) -> u32 {
        let notes = r
            .cells
            .iter()
            .map(|c| note_lines(&c.note).len())
            .max()
            .unwrap_or(0) as u32;
        (Self::LINE * self.lines(r).len().max(1) as u32 + 12)
            .max(36)
            .max(16 + 12 * notes + 10)
    }
}

/// A cell's note in lines that fit the cell (10 px text), at most three.
fn note_lines(note: &str) -> Vec<String> {
    let mut l = wrap(note, 30);
    if l.len() > 3 {
        l.truncate(3);
        l[2].push('…');
    }
    l
}

/// `text` in lines of at most `width` characters (a longer word stays whole).
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for w in text.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + w.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(w);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn mark_style(m: Mark) -> (RGBColor, RGBColor, &'static str) {
    match m {
        Mark::Blocked => (RGBColor(206, 234, 214), RGBColor(19, 115, 51), "blocked"),
        // Lower case: the PNG's text layout loses the space after a capital T ("NOTblocked").
        Mark::NotBlocked => (
            RGBColor(250, 210, 207),
            RGBColor(165, 14, 14),
            "not blocked",
        ),
        Mark::NotApplicable => (
            RGBColor(236, 236, 236),
            RGBColor(95, 99, 104),
            "does not apply",
        ),
        Mark::NoVerdict => (RGBColor(254, 239, 195), RGBColor(120, 80, 0), "no verdict"),
        Mark::NotRun => (WHITE, RGBColor(95, 99, 104), "not run"),
    }
}

fn draw_verdicts<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    v: &Verdicts,
) -> Result<()> {
    let g = VGeom::of(v);
    let px = |x: u32| x as i32;
    let (w, h) = root.dim_in_pixel();
    let text = |size: u32, h: HPos, c: RGBColor| {
        (FONT, size)
            .into_font()
            .color(&c)
            .pos(Pos::new(h, VPos::Center))
    };
    let dark = RGBColor(34, 34, 34);
    let grey = RGBColor(95, 99, 104);
    let rule = RGBColor(221, 221, 221);
    root.draw(&Text::new(
        title,
        (px(w / 2), 22),
        text(20, HPos::Center, dark),
    ))
    .map_err(err)?;
    // Header.
    let mut y = VGeom::TOP;
    let mid = |y: u32, hh: u32| px(y + hh / 2);
    root.draw(&Text::new(
        "attack",
        (px(VGeom::MARGIN), mid(y, VGeom::HEAD)),
        text(14, HPos::Left, grey),
    ))
    .map_err(err)?;
    for (j, c) in v.columns.iter().enumerate() {
        let x = VGeom::MARGIN + g.name_w + g.cell_w * j as u32 + g.cell_w / 2;
        root.draw(&Text::new(
            c.as_str(),
            (px(x), mid(y, VGeom::HEAD)),
            text(14, HPos::Center, grey),
        ))
        .map_err(err)?;
    }
    root.draw(&Text::new(
        "blocked means",
        (px(g.crit_x), mid(y, VGeom::HEAD)),
        text(14, HPos::Left, grey),
    ))
    .map_err(err)?;
    y += VGeom::HEAD;
    for r in &v.rows {
        let rh = g.row_h(r);
        root.draw(&PathElement::new(
            vec![(px(VGeom::MARGIN), px(y)), (px(w - VGeom::MARGIN), px(y))],
            rule,
        ))
        .map_err(err)?;
        root.draw(&Text::new(
            r.name.as_str(),
            (px(VGeom::MARGIN), mid(y, rh)),
            text(12, HPos::Left, dark),
        ))
        .map_err(err)?;
        for (j, c) in r.cells.iter().enumerate() {
            let (fill, ink, word) = mark_style(c.mark);
            let x0 = VGeom::MARGIN + g.name_w + g.cell_w * j as u32 + 3;
            let x1 = x0 + g.cell_w - 6;
            root.draw(&Rectangle::new(
                [(px(x0), px(y + 3)), (px(x1), px(y + rh - 3))],
                fill.filled(),
            ))
            .map_err(err)?;
            let cx = px((x0 + x1) / 2);
            // The word and the note's lines, centred together in the cell.
            let notes = note_lines(&c.note);
            let block = 16 + 12 * notes.len() as i32;
            let top = mid(y, rh) - block / 2;
            root.draw(&Text::new(word, (cx, top + 8), text(14, HPos::Center, ink)))
                .map_err(err)?;
            for (i, l) in notes.iter().enumerate() {
                root.draw(&Text::new(
                    l.as_str(),
                    (cx, top + 16 + 12 * i as i32 + 6),
                    text(10, HPos::Center, ink),
                ))
                .map_err(err)?;
            }
        }
        let lines = g.lines(r);
        let top = y + (rh - VGeom::LINE * lines.len() as u32) / 2;
        for (i, l) in lines.iter().enumerate() {
            root.draw(&Text::new(
                l.as_str(),
                (
                    px(g.crit_x),
                    px(top + VGeom::LINE * i as u32 + VGeom::LINE / 2),
                ),
                text(11, HPos::Left, dark),
            ))
            .map_err(err)?;
        }
        y += rh;
    }
    root.draw(&PathElement::new(
        vec![(px(VGeom::MARGIN), px(y)), (px(w - VGeom::MARGIN), px(y))],
        rule,
    ))
    .map_err(err)?;
    root.draw(&Text::new(
        v.footnote.as_str(),
        (px(VGeom::MARGIN), px(y + VGeom::FOOT / 2).min(px(h) - 10)),
        text(11, HPos::Left, grey),
    ))
    .map_err(err)?;
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e}")
}

/// Axis numbers: 1.5k, 16k, 2M, 0.25.
pub(crate) fn fmt_num(v: f64) -> String {
    let a = v.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if a == 0.0 {
        "0".into()
    } else if a >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if a >= 1e4 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        trim(format!("{v:.1}"))
    } else {
        trim(format!("{v:.3}"))
    }
}

fn finite_range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    (lo <= hi).then_some((lo, hi))
}

/// A value on an axis: log axes are drawn as linear axes over log10 of the value, with tick
/// marks at 1, 2, 5 × 10^k (plotters' own log axes crowd their grid lines).
fn tf(log: bool, v: f64) -> f64 {
    if log {
        v.max(f64::MIN_POSITIVE).log10()
    } else {
        v
    }
}

/// Back from axis space to the value.
fn untf(log: bool, v: f64) -> f64 {
    if log { 10f64.powf(v) } else { v }
}

/// Tick positions (in log10 space) for a log axis from `lo` to `hi` (log10 values).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mults: &[f64] = if hi - lo <= 1.2 {
        &[1.0, 1.5, 2.0, 3.0, 5.0, 7.0]
    } else if hi - lo <= 3.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut out = Vec::new();
    for d in (lo.floor() as i32)..=(hi.ceil() as i32) {
        for m in mults {
            let v = f64::from(d) + m.log10();
            if v >= lo - 1e-9 && v <= hi + 1e-9 {
                out.push(v);
            }
        }
    }
    out
}

/// An f64 axis with fixed tick positions (log axes) or plotters' own (linear axes).
#[derive(Clone)]
struct Axis {
    inner: RangedCoordf64,
    ticks: Option<Vec<f64>>,
}

impl Axis {
    fn new(lo: f64, hi: f64, log: bool) -> Self {
        Self {
            inner: (lo..hi).into(),
            ticks: log.then(|| log_ticks(lo, hi)),
        }
    }
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        match &self.ticks {
            Some(_) if hint.weight().allow_light_points() => Vec::new(),
            Some(t) => t.clone(),
            None => self.inner.key_points(hint),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

/// Pixels a legend of `entries` lines needs.
fn legend_px(entries: usize) -> u32 {
    20 * entries as u32 + 16
}

fn draw_hbars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    b: &HBars,
) -> Result<()> {
    let n = b.categories.len();
    let totals: Vec<f64> = (0..n)
        .map(|i| {
            b.series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0))
                .sum()
        })
        .collect();
    let all = b.series.iter().flat_map(|s| s.values.iter().copied());
    let log = b.log_x && !b.stacked;
    let (lo, hi) = if b.stacked {
        finite_range(totals.iter().copied(), false)
    } else {
        finite_range(all, log)
    }
    .unwrap_or((1.0, 10.0));
    let label_w = b
        .categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(4) as u32
        * 7
        + 24;
    // Blank rows at the bottom for the legend, so it never covers a bar.
    let per_row = row_px(b) as f64;
    let legend_rows = if has_legend(b) {
        f64::from(legend_px(b.series.len())) / per_row
    } else {
        0.0
    };
    let y = (-0.5 - legend_rows)..(n as f64 - 0.5);
    if log {
        let (x0, x1) = (tf(true, lo / 1.6), tf(true, hi * 2.0));
        hbars_inner(
            root,
            title,
            b,
            Axis::new(x0, x1, true),
            y,
            x0,
            label_w,
            true,
        )
    } else {
        let top = if b.annotate { hi * 1.15 } else { hi * 1.05 };
        let x = Axis::new(0.0, top.max(1e-9), false);
        hbars_inner(root, title, b, x, y, 0.0, label_w, false)
    }
}

fn has_legend(b: &HBars) -> bool {
    b.series.len() > 1 || b.series.first().is_some_and(|s| !s.name.is_empty())
}

fn row_px(b: &HBars) -> u32 {
    if b.stacked {
        26
    } else {
        14 * b.series.len().max(1) as u32 + 8
    }
}

#[allow(clippy::too_many_arguments)]
fn hbars_inner<DB, X>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    b: &HBars,
    x: X,
    y: std::ops::Range<f64>,
    x0: f64,
    label_w: u32,
    log: bool,
) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let n = b.categories.len();
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 20))
        .margin(12)
        .margin_left(label_w)
        .x_label_area_size(48)
        .y_label_area_size(4)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(b.x_desc.as_str())
        .x_label_formatter(&|v| fmt_num(untf(log, *v)))
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .light_line_style(WHITE)
        .draw()
        .map_err(err)?;
    let k = b.series.len().max(1);
    let band = 0.8;
    let h = if b.stacked { band } else { band / k as f64 };
    let row = |i: usize| (n - 1 - i) as f64;
    let mut offsets = vec![x0; n];
    for (j, s) in b.series.iter().enumerate() {
        let c = color(j);
        let mut rects = Vec::new();
        let mut notes = Vec::new();
        for (i, &v) in s.values.iter().enumerate().take(n) {
            if !v.is_finite() || v <= 0.0 {
                // No bar: say so rather than leave a gap (NaN means "does not apply").
                if b.annotate && !b.stacked {
                    let top = row(i) + band / 2.0 - j as f64 * h;
                    let t = if v.is_nan() { "n/a" } else { "0" };
                    notes.push((x0, top - h / 2.0, t.to_string()));
                }
                continue;
            }
            let (left, right, y0, y1) = if b.stacked {
                let l = offsets[i];
                offsets[i] += v;
                (l, l + v, row(i) - band / 2.0, row(i) + band / 2.0)
            } else {
                let top = row(i) + band / 2.0 - j as f64 * h;
                (x0, tf(log, v), top - h, top)
            };
            rects.push(Rectangle::new([(left, y0), (right, y1)], c.filled()));
            if b.annotate && !b.stacked {
                let t = match b.decimals {
                    Some(d) => format!("{v:.d$}"),
                    None => fmt_num(v),
                };
                notes.push((right, (y0 + y1) / 2.0, t));
            }
        }
        chart
            .draw_series(rects)
            .map_err(err)?
            .label(s.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        let style = TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (xv, yv, t) in notes {
            let (px, py) = chart.backend_coord(&(xv, yv));
            root.draw(&Text::new(t, (px + 3, py), style.clone()))
                .map_err(err)?;
        }
    }
    let style = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, cat) in b.categories.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(x0, row(i)));
        root.draw(&Text::new(cat.as_str(), (px - 6, py), style.clone()))
            .map_err(err)?;
    }
    if has_legend(b) {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 12))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    l: &Lines,
) -> Result<()> {
    let xs = l.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let ys = l.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (x0, x1) = finite_range(xs, l.log_x).unwrap_or((1.0, 10.0));
    let (y0, y1) = finite_range(ys, l.log_y).unwrap_or((1.0, 10.0));
    let pad = |lo: f64, hi: f64, log: bool, zero: bool, top: f64| {
        if log {
            let (a, b) = (tf(true, lo), tf(true, hi));
            let span = (b - a).max(0.3);
            (a - span * 0.04, b + span * top)
        } else {
            let span = (hi - lo).max(hi.abs() * 0.01).max(1e-9);
            let lo = if zero { lo.min(0.0) } else { lo - span * 0.05 };
            (lo, hi + span * top)
        }
    };
    let (x0, x1) = pad(x0, x1, l.log_x, false, 0.04);
    // Headroom at the top for a legend placed there.
    let top = match l.legend {
        SeriesLabelPosition::UpperLeft
        | SeriesLabelPosition::UpperMiddle
        | SeriesLabelPosition::UpperRight => 0.08 + 0.045 * l.series.len() as f64,
        _ => 0.08,
    };
    let (y0, y1) = pad(y0, y1, l.log_y, l.y_from_zero, top);
    let x = Axis::new(x0, x1, l.log_x);
    let y = Axis::new(y0, y1, l.log_y);
    lines_inner(root, title, l, x, y)
}

fn lines_inner<DB, X, Y>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    l: &Lines,
    x: X,
    y: Y,
) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let (lx, ly) = (l.log_x, l.log_y);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(l.x_desc.as_str())
        .y_desc(l.y_desc.as_str())
        .x_label_formatter(&|v| fmt_num(untf(lx, *v)))
        .y_label_formatter(&|v| fmt_num(untf(ly, *v)))
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(err)?;
    for (j, s) in l.series.iter().enumerate() {
        let c = color(j);
        let style = c.stroke_width(2);
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|p| (!lx || p.0 > 0.0) && (!ly || p.1 > 0.0))
            .map(|p| (tf(lx, p.0), tf(ly, p.1)))
            .collect();
        if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(err)?
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?
        }
        .label(s.name.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        if l.markers {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, c.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(l.legend.clone())
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 12))
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_words_and_width() {
        let t = "an honest device served during the flood (every session opened)";
        let lines = wrap(t, 20);
        assert!(lines.iter().all(|l| l.chars().count() <= 20), "{lines:?}");
        assert_eq!(lines.join(" "), t);
        assert_eq!(wrap("", 10), Vec::<String>::new());
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            vec!["averyveryverylongword", "x"]
        );
    }

    #[test]
    fn number_format() {
        assert_eq!(fmt_num(0.0), "0");
        assert_eq!(fmt_num(16384.0), "16.4k");
        assert_eq!(fmt_num(20000.0), "20k");
        assert_eq!(fmt_num(2_500_000.0), "2.5M");
        assert_eq!(fmt_num(512.0), "512");
        assert_eq!(fmt_num(1.5), "1.5");
        assert_eq!(fmt_num(0.25), "0.25");
    }
}
