//! `--demo N --svg FILE`: the demo's timeline drawn as a picture.
//!
//! One row per client on a time axis in milliseconds: an amber bar while the client is connected
//! but not yet greeted (it waits, in the accept queue or for the server to get round to it), a
//! green bar while it is being served, darker spans for each request until its reply, and a
//! mark for each broadcast (`MSG`) that reaches it. The SVG is written by hand: a few rectangles
//! and texts, no drawing library needed.
//!
//! The labels follow the locale (`LC_ALL`, `LC_MESSAGES`, `LANG`, in POSIX order of
//! precedence): Korean when it names Korean (`ko_KR.UTF-8`), English otherwise.

use std::fmt::Write as _;
use std::time::Duration;

use common::Model;

/// What one demo client lived through, measured from the start of the demo.
#[derive(Clone, Debug, Default)]
pub struct ClientTimeline {
    /// The client's number (from 1).
    pub client: u32,
    /// When the TCP handshake was done (`connect()` returned); `None` if it failed.
    pub connected: Option<Duration>,
    /// When the `HELLO` line arrived, and what it said after the model word (`pid=.. tid=..`).
    pub greeted: Option<(Duration, String)>,
    /// Each request the client sent: its text, when it was sent, when its reply came.
    pub requests: Vec<Request>,
    /// When each broadcast (`MSG` line from another client) arrived.
    pub broadcasts: Vec<Duration>,
    /// When the client closed its connection (or saw the server close it).
    pub left: Option<Duration>,
}

/// One request of a demo client and its round trip.
#[derive(Clone, Debug)]
pub struct Request {
    pub text: String,
    pub sent: Duration,
    pub answered: Option<Duration>,
}

/// The language of the picture's labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    English,
    Korean,
}

impl Language {
    /// The language the locale asks for: the first of `LC_ALL`, `LC_MESSAGES`, `LANG` that is
    /// set and not empty decides (the POSIX order); `ko...` means Korean.
    pub fn from_locale() -> Language {
        Language::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Language::from_locale`] with the environment variables read by `var`.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Language {
        let locale = ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|name| var(name))
            .find(|value| !value.is_empty())
            .unwrap_or_default();
        if locale.starts_with("ko") {
            Language::Korean
        } else {
            Language::English
        }
    }
}

/// Every text of the picture, in one language.
struct Labels {
    title: fn(Model, usize) -> String,
    client: fn(u32) -> String,
    axis: &'static str,
    waited: fn(u64) -> String,
    no_connection: &'static str,
    connected: &'static str,
    waiting: &'static str,
    greeted: &'static str,
    served: &'static str,
    request: &'static str,
    broadcast: &'static str,
    left: &'static str,
}

const ENGLISH: Labels = Labels {
    title: |model, n| format!("{model} server, --demo {n}: who waited and who was served when"),
    client: |i| format!("client {i}"),
    axis: "time since the demo started (ms)",
    waited: |ms| format!("waits {ms} ms"),
    no_connection: "could not connect",
    connected: "connected",
    waiting: "waiting for HELLO",
    greeted: "greeted (HELLO)",
    served: "being served",
    request: "request → reply",
    broadcast: "MSG arrives",
    left: "left",
};

const KOREAN: Labels = Labels {
    title: |model, n| format!("{model} 서버, --demo {n}: 누가 언제 기다리고 언제 서비스받았나"),
    client: |i| format!("클라이언트 {i}"),
    axis: "데모 시작 후 경과 시간 (ms)",
    waited: |ms| format!("{ms} ms 대기"),
    no_connection: "접속 실패",
    connected: "접속",
    waiting: "HELLO를 기다림",
    greeted: "HELLO 받음",
    served: "서비스받는 중",
    request: "요청 → 응답",
    broadcast: "MSG 도착",
    left: "떠남",
};

/// Fonts that have Hangul on Linux, macOS and Windows, then whatever sans-serif there is.
pub const FONT_FAMILY: &str = "'Noto Sans CJK KR', 'Noto Sans KR', 'Apple SD Gothic Neo', \
                               'Malgun Gothic', NanumGothic, sans-serif";

// The book's colours (book/src/img): blue for clients, amber for waiting, green for serving.
const INK: &str = "#333";
const CLIENT_STROKE: &str = "#335";
const WAIT_FILL: &str = "#ffd27f";
const WAIT_STROKE: &str = "#a80";
const SERVE_FILL: &str = "#e6f4ea";
const SERVE_STROKE: &str = "#262";
const REQUEST_FILL: &str = "#8fcf9c";
const GRID: &str = "#ddd";

// The layout, in pixels.
const WIDTH: f64 = 800.0;
const PLOT_LEFT: f64 = 180.0;
const PLOT_RIGHT: f64 = WIDTH - 30.0;
const ROWS_TOP: f64 = 52.0;
const ROW_HEIGHT: f64 = 40.0;
const BAR_HEIGHT: f64 = 18.0;
const FONT_SIZE: f64 = 13.0;
const SMALL: f64 = 11.0;

/// The SVG picture of a demo's timeline: `model`'s demo with `rows`, one per client.
pub fn render(model: Model, rows: &[ClientTimeline], language: Language) -> String {
    let labels = match language {
        Language::English => &ENGLISH,
        Language::Korean => &KOREAN,
    };
    let end = last_moment(rows);
    let (step, axis_end) = axis_ticks(end.as_secs_f64() * 1000.0);
    let time = TimeAxis { end_ms: axis_end };
    let rows_bottom = ROWS_TOP + ROW_HEIGHT * rows.len() as f64;
    let legend_top = rows_bottom + 58.0;
    let (legend, legend_height) = legend(labels, legend_top);
    let height = legend_top + legend_height + 12.0;

    let mut svg = String::new();
    write_heading(&mut svg, &(labels.title)(model, rows.len()), height);
    write_axis(&mut svg, labels, step, axis_end, rows_bottom);
    for (index, row) in rows.iter().enumerate() {
        write_row(&mut svg, labels, row, index, end, &time);
    }
    svg.push_str(&legend);
    svg.push_str("</svg>\n");
    svg
}

/// When the last client left or got its last reply: where the time axis must reach.
fn last_moment(rows: &[ClientTimeline]) -> Duration {
    rows.iter()
        .flat_map(|r| {
            r.left
                .iter()
                .chain(r.requests.iter().filter_map(|q| q.answered.as_ref()))
        })
        .max()
        .copied()
        .unwrap_or_default()
}

/// The time axis: which x a moment of the demo is drawn at, when the axis ends at `end_ms`.
struct TimeAxis {
    end_ms: f64,
}

impl TimeAxis {
    fn x(&self, at: Duration) -> f64 {
        PLOT_LEFT + (at.as_secs_f64() * 1000.0 / self.end_ms) * (PLOT_RIGHT - PLOT_LEFT)
    }
}

/// The `<svg>` element's opening tag, the picture's `title`, its white background and the title
/// written at the top.
fn write_heading(svg: &mut String, title: &str, height: f64) {
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="{FONT_FAMILY}" font-size="{FONT_SIZE}" fill="{INK}">"#
    );
    let _ = writeln!(svg, "  <title>{}</title>", escape(title));
    let _ = writeln!(
        svg,
        r##"  <rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"  <text x="{}" y="26" text-anchor="middle" font-weight="bold" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
}

/// The time axis under the rows: a grid line and a number every `step` ms up to `axis_end`, the
/// axis line and its title.
fn write_axis(svg: &mut String, labels: &Labels, step: f64, axis_end: f64, rows_bottom: f64) {
    let _ = writeln!(svg, r#"  <g class="axis" font-size="{SMALL}">"#);
    let mut tick = 0.0;
    while tick <= axis_end + step / 2.0 {
        let tx = PLOT_LEFT + tick / axis_end * (PLOT_RIGHT - PLOT_LEFT);
        let _ = writeln!(
            svg,
            r#"    <line x1="{tx:.1}" y1="{ROWS_TOP}" x2="{tx:.1}" y2="{:.1}" stroke="{GRID}"/>"#,
            rows_bottom + 4.0
        );
        let _ = writeln!(
            svg,
            r#"    <text x="{tx:.1}" y="{:.1}" text-anchor="middle">{tick}</text>"#,
            rows_bottom + 18.0
        );
        tick += step;
    }
    let _ = writeln!(
        svg,
        r#"    <line x1="{PLOT_LEFT}" y1="{:.1}" x2="{PLOT_RIGHT}" y2="{:.1}" stroke="{INK}"/>"#,
        rows_bottom + 4.0,
        rows_bottom + 4.0
    );
    let _ = writeln!(
        svg,
        r#"    <text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="{FONT_SIZE}">{}</text>"#,
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        rows_bottom + 38.0,
        escape(labels.axis)
    );
    let _ = writeln!(svg, "  </g>");
}

/// Where a row's bars are drawn: the top of its bars and their middle line.
#[derive(Clone, Copy)]
struct Bar {
    top: f64,
    middle: f64,
}

/// One client's row (the `index`-th from the top): its name, its waiting and served bars, its
/// requests, the broadcasts it received and its three moments. `end` is when the demo's last
/// client left, for a client that never did.
fn write_row(
    svg: &mut String,
    labels: &Labels,
    row: &ClientTimeline,
    index: usize,
    end: Duration,
    time: &TimeAxis,
) {
    let top = ROWS_TOP + ROW_HEIGHT * index as f64;
    let bar_top = top + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
    let bar = Bar {
        top: bar_top,
        middle: bar_top + BAR_HEIGHT / 2.0,
    };
    let _ = writeln!(svg, r#"  <g class="client" data-client="{}">"#, row.client);
    write_row_label(svg, labels, row, bar);
    let Some(connected) = row.connected else {
        let _ = writeln!(
            svg,
            r#"    <text x="{PLOT_LEFT}" y="{:.1}">{}</text>"#,
            bar.middle + 4.0,
            escape(labels.no_connection)
        );
        let _ = writeln!(svg, "  </g>");
        return;
    };
    let left = row.left.unwrap_or(end).max(connected);
    let greeted = row.greeted.as_ref().map(|(at, _)| *at);
    write_wait(svg, labels, connected, greeted.unwrap_or(left), bar, time);
    if let Some(greeted) = greeted {
        write_service(svg, &row.requests, greeted, left, bar, time);
    }
    for &at in &row.broadcasts {
        let _ = writeln!(
            svg,
            r#"    <path class="broadcast" d="{}" fill="{CLIENT_STROKE}"/>"#,
            diamond(time.x(at), bar.top - 3.0)
        );
    }
    write_moments(svg, connected, greeted, left, bar, time);
    let _ = writeln!(svg, "  </g>");
}

/// The row's name on the left ("client 2"), and under it who served the client, once greeted.
fn write_row_label(svg: &mut String, labels: &Labels, row: &ClientTimeline, bar: Bar) {
    let label_y = if row.greeted.is_some() {
        bar.middle - 2.0
    } else {
        bar.middle + 4.0
    };
    let _ = writeln!(
        svg,
        r#"    <text x="10" y="{label_y:.1}" font-weight="bold">{}</text>"#,
        escape(&(labels.client)(row.client))
    );
    if let Some((_, served_by)) = &row.greeted {
        let _ = writeln!(
            svg,
            r##"    <text x="10" y="{:.1}" font-size="{SMALL}" fill="#666">{}</text>"##,
            bar.middle + 12.0,
            escape(served_by)
        );
    }
}

/// The waiting bar: connected, no HELLO yet, from `connected` to `wait_end`; labelled with how
/// long it lasted when the label fits inside.
fn write_wait(
    svg: &mut String,
    labels: &Labels,
    connected: Duration,
    wait_end: Duration,
    bar: Bar,
    time: &TimeAxis,
) {
    let (wx, ww) = span(time.x(connected), time.x(wait_end));
    let _ = writeln!(
        svg,
        r#"    <rect class="waiting" x="{wx:.1}" y="{:.1}" width="{ww:.1}" height="{BAR_HEIGHT}" fill="{WAIT_FILL}" stroke="{WAIT_STROKE}"/>"#,
        bar.top
    );
    let waited_ms = (wait_end - connected).as_millis() as u64;
    let waited = (labels.waited)(waited_ms);
    if text_width(&waited, SMALL) + 8.0 <= ww {
        let _ = writeln!(
            svg,
            r#"    <text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="{SMALL}">{}</text>"#,
            wx + ww / 2.0,
            bar.middle + 4.0,
            escape(&waited)
        );
    }
}

/// The served bar, from HELLO (`greeted`) until the client `left`, with each request's round trip
/// inside it, labelled with the request when the label fits.
fn write_service(
    svg: &mut String,
    requests: &[Request],
    greeted: Duration,
    left: Duration,
    bar: Bar,
    time: &TimeAxis,
) {
    let (sx, sw) = span(time.x(greeted), time.x(left.max(greeted)));
    let _ = writeln!(
        svg,
        r#"    <rect class="served" x="{sx:.1}" y="{:.1}" width="{sw:.1}" height="{BAR_HEIGHT}" fill="{SERVE_FILL}" stroke="{SERVE_STROKE}"/>"#,
        bar.top
    );
    for request in requests {
        let answered = request.answered.unwrap_or(left).max(request.sent);
        let (rx, rw) = span(time.x(request.sent), time.x(answered));
        let _ = writeln!(
            svg,
            r#"    <rect class="request" x="{rx:.1}" y="{:.1}" width="{rw:.1}" height="{:.1}" fill="{REQUEST_FILL}" stroke="{SERVE_STROKE}" stroke-width="0.5"><title>{}</title></rect>"#,
            bar.top + 3.0,
            BAR_HEIGHT - 6.0,
            escape(&request.text)
        );
        if text_width(&request.text, SMALL) + 6.0 <= rw {
            let _ = writeln!(
                svg,
                r#"    <text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="{SMALL}">{}</text>"#,
                rx + rw / 2.0,
                bar.middle + 4.0,
                escape(&request.text)
            );
        }
    }
}

/// The three moments under the bars: connected (open circle), greeted (filled circle), left
/// (square).
fn write_moments(
    svg: &mut String,
    connected: Duration,
    greeted: Option<Duration>,
    left: Duration,
    bar: Bar,
    time: &TimeAxis,
) {
    let _ = writeln!(
        svg,
        r##"    <circle class="connected" cx="{:.1}" cy="{:.1}" r="4" fill="#fff" stroke="{CLIENT_STROKE}" stroke-width="1.5"/>"##,
        time.x(connected),
        bar.top + BAR_HEIGHT + 5.0
    );
    if let Some(greeted) = greeted {
        let _ = writeln!(
            svg,
            r#"    <circle class="greeted" cx="{:.1}" cy="{:.1}" r="3.5" fill="{CLIENT_STROKE}"/>"#,
            time.x(greeted),
            bar.top + BAR_HEIGHT + 5.0
        );
    }
    let _ = writeln!(
        svg,
        r#"    <rect class="left" x="{:.1}" y="{:.1}" width="7" height="7" fill="{INK}"/>"#,
        time.x(left) - 3.5,
        bar.top + BAR_HEIGHT + 1.5
    );
}

/// The legend, laid out in lines that fit the width; returns it and how far below `top` its last
/// line's baseline is.
fn legend(labels: &Labels, top: f64) -> (String, f64) {
    // Each item: its mark (drawn with its baseline at y = 0), the mark's width, its text.
    let bar = 22.0;
    let dot = 12.0;
    let items = [
        (
            format!(
                r##"<circle cx="6" cy="-4" r="4" fill="#fff" stroke="{CLIENT_STROKE}" stroke-width="1.5"/>"##
            ),
            dot,
            labels.connected,
        ),
        (
            format!(
                r#"<rect x="0" y="-11" width="{bar}" height="14" fill="{WAIT_FILL}" stroke="{WAIT_STROKE}"/>"#
            ),
            bar,
            labels.waiting,
        ),
        (
            format!(r#"<circle cx="6" cy="-4" r="3.5" fill="{CLIENT_STROKE}"/>"#),
            dot,
            labels.greeted,
        ),
        (
            format!(
                r#"<rect x="0" y="-11" width="{bar}" height="14" fill="{SERVE_FILL}" stroke="{SERVE_STROKE}"/>"#
            ),
            bar,
            labels.served,
        ),
        (
            format!(
                r#"<rect x="0" y="-9" width="{bar}" height="10" fill="{REQUEST_FILL}" stroke="{SERVE_STROKE}" stroke-width="0.5"/>"#
            ),
            bar,
            labels.request,
        ),
        (
            format!(
                r#"<path d="{}" fill="{CLIENT_STROKE}"/>"#,
                diamond(6.0, -4.0)
            ),
            dot,
            labels.broadcast,
        ),
        (
            format!(r#"<rect x="2" y="-8" width="7" height="7" fill="{INK}"/>"#),
            dot,
            labels.left,
        ),
    ];
    let line_height = 22.0;
    let mut out = format!("  <g class=\"legend\" font-size=\"{SMALL}\">\n");
    let (mut x, mut y) = (10.0, top);
    for (shape, shape_width, text) in items {
        let width = shape_width + 6.0 + text_width(text, SMALL) + 16.0;
        if x + width > WIDTH - 10.0 {
            x = 10.0;
            y += line_height;
        }
        let _ = writeln!(
            out,
            r#"    <g transform="translate({x:.1},{y:.1})">{shape}<text x="{:.1}" y="0">{}</text></g>"#,
            shape_width + 6.0,
            escape(text)
        );
        x += width;
    }
    out.push_str("  </g>\n");
    (out, y - top)
}

/// A rectangle's x and width from two x positions, at least 1 px wide so a short phase shows.
fn span(from: f64, to: f64) -> (f64, f64) {
    (from, (to - from).max(1.0))
}

/// A small diamond centred on (x, y).
fn diamond(x: f64, y: f64) -> String {
    format!("M{:.1},{y:.1} l4,-5 l4,5 l-4,5 z", x - 4.0)
}

/// Where the axis ends and how far apart its ticks are, in ms: a round step (1, 2 or 5 times a
/// power of ten) giving at most 10 ticks, and the first multiple of it at or past `end_ms`.
fn axis_ticks(end_ms: f64) -> (f64, f64) {
    let end_ms = end_ms.max(1.0);
    let mut magnitude = 1.0;
    loop {
        for factor in [1.0, 2.0, 5.0] {
            let step = factor * magnitude;
            if end_ms / step <= 10.0 {
                return (step, (end_ms / step).ceil() * step);
            }
        }
        magnitude *= 10.0;
    }
}

/// Roughly how wide `text` is at `size` px: Hangul and other wide letters take a full em, the
/// rest about half of one. Enough to decide whether a label fits in a bar.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars()
        .map(|c| if c as u32 >= 0x1100 { 1.0 } else { 0.55 })
        .sum::<f64>()
        * size
}

/// `text` made safe inside an XML element or attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Three clients of an iterative server: the second and third wait for the one before.
    fn iterative_rows() -> Vec<ClientTimeline> {
        (0..3u64)
            .map(|i| {
                let greeted = ms(500 * i + 2);
                ClientTimeline {
                    client: i as u32 + 1,
                    connected: Some(ms(100 * i + 1)),
                    greeted: Some((greeted, "pid=10 tid=10".into())),
                    requests: vec![
                        Request {
                            text: "SLEEP 500".into(),
                            sent: greeted,
                            answered: Some(greeted + ms(500)),
                        },
                        Request {
                            text: "SAY <b> & \"q\"".into(),
                            sent: greeted + ms(500),
                            answered: Some(greeted + ms(501)),
                        },
                    ],
                    broadcasts: vec![greeted + ms(100)],
                    left: Some(greeted + ms(501)),
                }
            })
            .collect()
    }

    #[test]
    fn the_picture_is_well_formed_svg_with_a_row_per_client() {
        for language in [Language::English, Language::Korean] {
            let svg = render(Model::Iterative, &iterative_rows(), language);
            let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
            let root = doc.root_element();
            assert_eq!(root.tag_name().name(), "svg");
            assert_eq!(
                root.tag_name().namespace(),
                Some("http://www.w3.org/2000/svg")
            );
            let rows: Vec<_> = root
                .children()
                .filter(|n| n.attribute("class") == Some("client"))
                .collect();
            assert_eq!(rows.len(), 3);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row.attribute("data-client"), Some(&*(i + 1).to_string()));
                for class in [
                    "waiting",
                    "served",
                    "request",
                    "broadcast",
                    "connected",
                    "greeted",
                    "left",
                ] {
                    assert!(
                        row.descendants()
                            .any(|n| n.attribute("class") == Some(class)),
                        "row {} has no {class}",
                        i + 1
                    );
                }
            }
            // The escaped request text comes back intact.
            assert!(doc
                .descendants()
                .any(|n| n.text() == Some("SAY <b> & \"q\"")));
            let title = root
                .children()
                .find(|n| n.has_tag_name("title"))
                .and_then(|n| n.text())
                .unwrap();
            assert!(
                title.contains("iterative") && title.contains("--demo 3"),
                "{title}"
            );
        }
    }

    #[test]
    fn bars_sit_where_their_times_are_and_longer_waits_are_longer_bars() {
        let svg = render(Model::Iterative, &iterative_rows(), Language::English);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let widths: Vec<f64> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("waiting"))
            .map(|n| n.attribute("width").unwrap().parse().unwrap())
            .collect();
        assert_eq!(widths.len(), 3);
        assert!(widths[0] < widths[1] && widths[1] < widths[2], "{widths:?}");
        // Every shape lies inside the picture.
        let width: f64 = doc
            .root_element()
            .attribute("width")
            .unwrap()
            .parse()
            .unwrap();
        for rect in doc.descendants().filter(|n| n.has_tag_name("rect")) {
            let x: f64 = rect.attribute("x").unwrap().parse().unwrap();
            let w: f64 = rect.attribute("width").unwrap().parse().unwrap();
            assert!(x >= 0.0 && x + w <= width + 0.5, "{x} + {w} > {width}");
        }
        // The label of a long request (SLEEP 500) is written in its bar; a 1 ms one's is not
        // (only its tooltip has it).
        let labels = |text: &str| {
            doc.descendants()
                .filter(|n| n.has_tag_name("text") && n.text() == Some(text))
                .count()
        };
        assert_eq!(labels("SLEEP 500"), 3);
        assert_eq!(labels("SAY <b> & \"q\""), 0);
    }

    #[test]
    fn korean_labels_in_a_korean_picture() {
        let svg = render(Model::Thread, &iterative_rows(), Language::Korean);
        assert!(
            svg.contains("클라이언트 1") && svg.contains("HELLO 받음"),
            "{svg}"
        );
        assert!(svg.contains("sans-serif") && svg.contains("Noto Sans CJK KR"));
        let svg = render(Model::Thread, &iterative_rows(), Language::English);
        assert!(svg.contains("client 1") && !svg.contains("클라이언트"));
    }

    #[test]
    fn a_client_that_never_connected_still_gets_its_row() {
        let rows = vec![ClientTimeline {
            client: 1,
            ..Default::default()
        }];
        let svg = render(Model::Fork, &rows, Language::English);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert!(doc
            .descendants()
            .any(|n| n.text() == Some("could not connect")));
    }

    #[test]
    fn axis_ticks_are_round() {
        assert_eq!(axis_ticks(1506.0), (200.0, 1600.0));
        assert_eq!(axis_ticks(300.0), (50.0, 300.0));
        assert_eq!(axis_ticks(0.0), (1.0, 1.0));
        assert_eq!(axis_ticks(9_000.0), (1000.0, 9000.0));
    }

    /// The numbers of `n`'s attribute `name`.
    fn number(n: roxmltree::Node, name: &str) -> f64 {
        n.attribute(name)
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    }

    fn class<'a, 'i>(
        doc: &'a roxmltree::Document<'i>,
        class: &str,
    ) -> Vec<roxmltree::Node<'a, 'i>> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(class))
            .collect()
    }

    #[test]
    fn bars_are_where_their_times_are() {
        let svg = render(Model::Iterative, &iterative_rows(), Language::English);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let waiting = class(&doc, "waiting");
        let served = class(&doc, "served");
        let end = |n: roxmltree::Node| number(n, "x") + number(n, "width");
        // The axis: 0 at PLOT_LEFT, and one pixel per ms times a constant scale. Client 1 connected
        // at 1 ms and client 2 at 101 ms, client 3 at 201 ms: equal steps.
        let (x1, x2, x3) = (
            number(waiting[0], "x"),
            number(waiting[1], "x"),
            number(waiting[2], "x"),
        );
        assert!((x2 - x1 - (x3 - x2)).abs() < 0.2, "{x1} {x2} {x3}");
        // The rows end at 1,503 ms, so the axis ends at 1,600 (see the axis test).
        let scale = (PLOT_RIGHT - PLOT_LEFT) / 1600.0; // px per ms
        assert!((x1 - (PLOT_LEFT + scale)).abs() < 0.2, "{x1}");
        // Each client is served from the moment its wait ends until it leaves (501 ms later);
        // client 1's 1 ms wait is drawn 1 px wide, so that it shows.
        assert!((number(waiting[0], "width") - 1.0).abs() < 0.01);
        for i in 0..3 {
            if i > 0 {
                assert!((end(waiting[i]) - number(served[i], "x")).abs() < 0.2);
            }
            assert!((number(served[i], "width") - 501.0 * scale).abs() < 0.2);
        }
        // One at a time: client 2 is greeted at 502 ms, just as client 1 leaves (503 ms).
        assert!((number(served[1], "x") - (end(served[0]) - scale)).abs() < 0.2);
        // The broadcast mark of each client sits 100 ms into its service.
        for (i, mark) in class(&doc, "broadcast").iter().enumerate() {
            let d = mark.attribute("d").unwrap();
            let x: f64 = d[1..d.find(',').unwrap()].parse().unwrap();
            let centre = x + 4.0;
            assert!(
                (centre - (number(served[i], "x") + 100.0 * scale)).abs() < 0.2,
                "{d}"
            );
        }
        // The moments: connected at the wait's start, greeted at its end, left at the service's end.
        let cx = |n: roxmltree::Node| number(n, "cx");
        let moments = class(&doc, "connected")
            .into_iter()
            .zip(class(&doc, "greeted"))
            .zip(class(&doc, "left"));
        for (i, ((connected, greeted), left)) in moments.enumerate() {
            assert!((cx(connected) - x1 - (i as f64) * 100.0 * scale).abs() < 0.2);
            assert!((cx(greeted) - number(served[i], "x")).abs() < 0.2);
            assert!((number(left, "x") + number(left, "width") / 2.0 - end(served[i])).abs() < 0.2);
        }
    }

    #[test]
    fn the_axis_is_numbered_in_round_steps_to_its_end() {
        let svg = render(Model::Iterative, &iterative_rows(), Language::English);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let axis = class(&doc, "axis")[0];
        let ticks: Vec<&str> = axis
            .children()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        assert_eq!(
            ticks,
            [
                "0",
                "200",
                "400",
                "600",
                "800",
                "1000",
                "1200",
                "1400",
                "1600",
                "time since the demo started (ms)"
            ]
        );
        let xs: Vec<f64> = axis
            .children()
            .filter(|n| n.has_tag_name("line"))
            .map(|n| number(n, "x1"))
            .collect();
        assert_eq!(xs.first(), Some(&PLOT_LEFT));
        assert!(xs.iter().any(|&x| (x - PLOT_RIGHT).abs() < 0.2), "{xs:?}");
    }

    #[test]
    fn every_text_and_mark_lies_inside_the_picture() {
        for language in [Language::English, Language::Korean] {
            let svg = render(Model::Multiplex, &iterative_rows(), language);
            let doc = roxmltree::Document::parse(&svg).unwrap();
            let (width, height) = (
                number(doc.root_element(), "width"),
                number(doc.root_element(), "height"),
            );
            for n in doc.descendants().filter(|n| n.is_element()) {
                // Legend items are drawn in a translated group: add its offset.
                let (dx, dy) = n
                    .ancestors()
                    .filter_map(|a| a.attribute("transform"))
                    .filter_map(|t| t.strip_prefix("translate(")?.strip_suffix(')'))
                    .map(|t| {
                        let (x, y) = t.split_once(',').unwrap();
                        (x.parse::<f64>().unwrap(), y.parse::<f64>().unwrap())
                    })
                    .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
                for (xa, ya) in [("x", "y"), ("cx", "cy"), ("x1", "y1"), ("x2", "y2")] {
                    if let (Some(x), Some(y)) = (n.attribute(xa), n.attribute(ya)) {
                        let (x, y) = (
                            x.parse::<f64>().unwrap() + dx,
                            y.parse::<f64>().unwrap() + dy,
                        );
                        assert!(
                            (0.0..=width).contains(&x) && (0.0..=height).contains(&y),
                            "{:?} at ({x}, {y}) outside {width}x{height}",
                            n.tag_name().name()
                        );
                    }
                }
                if n.has_tag_name("text") {
                    let x = number(n, "x") + dx;
                    let w = text_width(n.text().unwrap_or_default(), FONT_SIZE);
                    let (from, to) = match n.attribute("text-anchor") {
                        Some("middle") => (x - w / 2.0, x + w / 2.0),
                        Some("end") => (x - w, x),
                        _ => (x, x + w),
                    };
                    assert!(
                        from >= 0.0 && to <= width,
                        "{:?} spans {from}..{to}, outside 0..{width}",
                        n.text()
                    );
                }
            }
            // The legend starts below the axis title and the picture ends below the legend.
            let legend = class(&doc, "legend")[0];
            let last_line = legend
                .children()
                .filter_map(|g| g.attribute("transform"))
                .map(|t| {
                    t.trim_end_matches(')')
                        .rsplit(',')
                        .next()
                        .unwrap()
                        .parse::<f64>()
                        .unwrap()
                })
                .fold(0.0, f64::max);
            assert!(last_line + 8.0 <= height, "{last_line} vs {height}");
            assert!(last_line > ROWS_TOP + 3.0 * ROW_HEIGHT + 40.0);
        }
    }

    #[test]
    fn the_locale_picks_the_language_in_posix_order() {
        let locale = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Language::from_vars(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        assert_eq!(locale(&[]), Language::English);
        assert_eq!(locale(&[("LANG", "ko_KR.UTF-8")]), Language::Korean);
        assert_eq!(locale(&[("LANG", "en_US.UTF-8")]), Language::English);
        // LC_ALL beats LC_MESSAGES beats LANG; an empty one does not count.
        assert_eq!(
            locale(&[("LC_ALL", "C"), ("LANG", "ko_KR.UTF-8")]),
            Language::English
        );
        assert_eq!(
            locale(&[("LC_ALL", ""), ("LC_MESSAGES", "ko_KR"), ("LANG", "C")]),
            Language::Korean
        );
        assert_eq!(
            locale(&[("LC_MESSAGES", "C"), ("LANG", "ko_KR")]),
            Language::English
        );
    }

    #[test]
    fn text_is_escaped_and_measured() {
        assert_eq!(escape("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
        assert!((text_width("ab", 10.0) - 11.0).abs() < 1e-9);
        assert!((text_width("가나", 10.0) - 20.0).abs() < 1e-9);
    }
    #[test]
    fn the_parts_are_stacked_in_order_without_gaps_or_overlaps() {
        for language in [Language::English, Language::Korean] {
            let svg = render(Model::Iterative, &iterative_rows(), language);
            let doc = roxmltree::Document::parse(&svg).unwrap();
            let height = number(doc.root_element(), "height");
            // Rows ROW_HEIGHT apart, from ROWS_TOP.
            let bars = class(&doc, "waiting");
            for (i, bar) in bars.iter().enumerate() {
                let expected = ROWS_TOP + ROW_HEIGHT * i as f64 + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
                assert!((number(*bar, "y") - expected).abs() < 0.2);
            }
            // Under the rows and their marks: the axis line, its numbers, its title, the legend.
            let lowest_mark = class(&doc, "connected")
                .iter()
                .map(|c| number(*c, "cy") + number(*c, "r"))
                .fold(0.0, f64::max);
            let axis = class(&doc, "axis")[0];
            let axis_line = axis
                .children()
                .filter(|n| n.has_tag_name("line"))
                .find(|n| number(*n, "x2") - number(*n, "x1") > 100.0)
                .unwrap();
            let texts: Vec<f64> = axis
                .children()
                .filter(|n| n.has_tag_name("text"))
                .map(|n| number(n, "y"))
                .collect();
            let (numbers, title) = (texts[0], *texts.last().unwrap());
            let legend_lines: Vec<f64> = class(&doc, "legend")[0]
                .children()
                .filter_map(|g| g.attribute("transform"))
                .map(|t| {
                    let y = t.trim_end_matches(')').rsplit(',').next().unwrap();
                    y.parse::<f64>().unwrap()
                })
                .collect();
            let (first, last) = (legend_lines[0], *legend_lines.last().unwrap());
            let y = number(axis_line, "y1");
            assert!(lowest_mark < y, "marks {lowest_mark} cross the axis {y}");
            assert!(
                y - lowest_mark < 10.0,
                "a gap between the rows and the axis"
            );
            assert!(
                y + SMALL <= numbers && numbers + FONT_SIZE <= title,
                "{y} {numbers} {title}"
            );
            assert!(
                title + FONT_SIZE <= first && first - title < 40.0,
                "{title} {first}"
            );
            assert!((8.0..=20.0).contains(&(height - last)), "{last} {height}");
        }
    }

    /// Checks a legend's items: side by side without overlapping, within the width, a new line
    /// starting at the left edge one line lower. Returns how many lines it has.
    fn check_legend(legend: roxmltree::Node) -> usize {
        let mut previous: Option<(f64, f64)> = None; // (line y, where the last item ended)
        let mut lines = 1;
        for item in legend.children().filter(|n| n.is_element()) {
            let t = item.attribute("transform").unwrap();
            let (x, y) = t
                .strip_prefix("translate(")
                .and_then(|t| t.strip_suffix(')'))
                .and_then(|t| t.split_once(','))
                .unwrap();
            let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
            let text = item.children().find(|n| n.has_tag_name("text")).unwrap();
            let end = x + number(text, "x") + text_width(text.text().unwrap(), SMALL);
            assert!(x >= 10.0 && end <= WIDTH - 10.0, "{t} ends at {end}");
            if let Some((line, ended)) = previous {
                if y == line {
                    assert!(
                        x >= ended,
                        "{t} overlaps the item before, which ends at {ended}"
                    );
                } else {
                    assert!((y - line - 22.0).abs() < 0.2 && x == 10.0, "{t}");
                    // It went to a new line because it did not fit on the last one (after the
                    // 16 px between items).
                    assert!(
                        ended + 16.0 + number(text, "x") + text_width(text.text().unwrap(), SMALL)
                            > WIDTH - 10.0
                    );
                    lines += 1;
                }
            }
            previous = Some((y, end));
        }
        lines
    }

    #[test]
    fn legend_items_do_not_overlap_and_fit_the_width() {
        for language in [Language::English, Language::Korean] {
            let svg = render(Model::Iterative, &iterative_rows(), language);
            let doc = roxmltree::Document::parse(&svg).unwrap();
            assert_eq!(check_legend(class(&doc, "legend")[0]), 1);
        }
        // Labels too long for one line wrap onto the next ones.
        let long = Labels {
            connected: "connected: the kernel finished the handshake",
            waiting: "waiting for HELLO, in the accept queue or elsewhere",
            served: "being served by a process or a thread",
            ..ENGLISH
        };
        let (legend, height) = legend(&long, 100.0);
        let svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg">{legend}</svg>"#);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lines = check_legend(class(&doc, "legend")[0]);
        assert!(lines >= 2);
        assert!(
            (height - 22.0 * (lines - 1) as f64).abs() < 0.2,
            "{height} for {lines} lines"
        );
    }

    #[test]
    fn a_wait_is_labelled_in_its_bar_when_the_label_fits() {
        let svg = render(Model::Iterative, &iterative_rows(), Language::English);
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let bars = class(&doc, "waiting");
        for (i, label) in ["waits 401 ms", "waits 801 ms"].iter().enumerate() {
            let text = doc
                .descendants()
                .find(|n| n.has_tag_name("text") && n.text() == Some(label))
                .unwrap_or_else(|| panic!("no {label:?}"));
            let bar = bars[i + 1];
            let centre = number(bar, "x") + number(bar, "width") / 2.0;
            assert!((number(text, "x") - centre).abs() < 0.2);
            let middle = number(bar, "y") + BAR_HEIGHT / 2.0;
            assert!((number(text, "y") - middle).abs() <= SMALL / 2.0);
        }
        // Client 1 waited 1 ms: a 1 px bar, no room for a label.
        assert!(!svg.contains("waits 1 ms"));
    }
}
