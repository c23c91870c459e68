//! Exports of the history: CSV for a spreadsheet (JSON is the summaries
//! as they are).
//!
//! Every CSV cell goes through [`csv_field`], which also neutralises
//! formulas: a display name such as `=HYPERLINK("…")` is text the learner
//! chose, and a spreadsheet opening the instructor's export must show it,
//! not evaluate it.

use std::time::{Duration, UNIX_EPOCH};

use stacklab_api::{Quantity, RunSummary};

use super::classes::ClassRun;
use super::history::state_str;
use super::learning::Learning;

const SUMMARY_HEADER: &str = "seq,id,demo,state,accepted_at_utc,finished_at_utc,time_to_ready_ms,memory_mib,error_code,error_message,platform_ms,queue_wait_ms";

/// The history as CSV: one row per run, a header naming each column and its
/// unit. Text fields are quoted when they hold a comma, quote or newline.
pub fn to_csv(runs: &[RunSummary]) -> String {
    csv_header() + &csv_rows(runs)
}

/// The history CSV's header line (for an export written page by page).
pub fn csv_header() -> String {
    format!("{SUMMARY_HEADER}\n")
}

/// The history CSV's lines for `runs`, without the header.
pub fn csv_rows(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    for r in runs {
        push_row(&mut out, summary_fields(r));
    }
    out
}

/// The guess columns of a class export, one per quantity a card may ask
/// (`api/src/guess.rs`), its unit in the name: the column, and what one
/// unit of it is in the quantity's own unit (µs, bytes; the others are
/// written as guessed: percent, a ratio, counts, 1 yes / 0 no).
const GUESS_COLUMNS: [(Quantity, &str, f64); 8] = [
    (Quantity::Time, "guess_time_ms", 1000.0),
    (Quantity::Memory, "guess_memory_mib", 1048576.0),
    (Quantity::PlatformShare, "guess_platform_share_pct", 1.0),
    (Quantity::DensitySlope, "guess_density_slope_x", 1.0),
    (Quantity::Exits, "guess_exits", 1.0),
    (Quantity::SameKernel, "guess_same_kernel_1yes_0no", 1.0),
    (Quantity::SharedNamespaces, "guess_shared_namespaces", 1.0),
    (Quantity::PageFaults, "guess_page_faults", 1.0),
];

/// A class's runs as CSV: the history's columns, then whose run it was
/// (`(instructor)` for the instructor's own runs, which have no learner)
/// and how many other runs shared the host when it left the queue; then
/// the guesses sent with the run, one column per kind (empty: none sent;
/// `declined`: "I'd rather not guess") and its learner's quiz and reading
/// so far.
pub fn class_csv(runs: &[ClassRun], learning: &Learning) -> String {
    let guess_header: Vec<&str> = GUESS_COLUMNS.iter().map(|(_, name, _)| *name).collect();
    let mut out = format!(
        "{SUMMARY_HEADER},learner,display_name,other_runs_at_start,{},lessons_read,quiz_answered,quiz_first_try_right\n",
        guess_header.join(",")
    );
    for r in runs {
        let mut fields = summary_fields(&r.summary);
        let guess = |(q, _, scale): &(Quantity, &str, f64)| {
            learning
                .guesses_of_run(&r.summary.id)
                .find(|g| g.quantity == *q)
                .map(|g| match g.value {
                    // Time and memory to three decimals, as the history's
                    // own columns; the rest as the learner set them.
                    Some(v) if *scale != 1.0 => format!("{:.3}", v / scale),
                    Some(v) => v.to_string(),
                    None => "declined".to_owned(),
                })
                .unwrap_or_default()
        };
        let instructor = r.learner.is_empty();
        let member = learning.of(&r.learner);
        let count = |n: u32| {
            if instructor {
                String::new()
            } else {
                n.to_string()
            }
        };
        fields.extend([
            if instructor {
                "(instructor)".to_owned()
            } else {
                r.learner.clone()
            },
            r.display_name.clone().unwrap_or_default(),
            r.others_at_start.map(|n| n.to_string()).unwrap_or_default(),
        ]);
        fields.extend(GUESS_COLUMNS.iter().map(guess));
        fields.extend([
            count(member.lessons_read.len() as u32),
            count(member.answered),
            count(member.first_try_right),
        ]);
        push_row(&mut out, fields);
    }
    out
}

fn summary_fields(r: &RunSummary) -> Vec<String> {
    let ms = |us: Option<f64>| {
        us.map(|us| format!("{:.3}", us / 1000.0))
            .unwrap_or_default()
    };
    vec![
        r.seq.to_string(),
        r.id.clone(),
        r.demo.as_str().to_owned(),
        state_str(r.state).to_owned(),
        rfc3339(r.accepted_at_ms),
        r.finished_at_ms.map(rfc3339).unwrap_or_default(),
        ms(r.time_to_ready_us),
        r.memory_bytes
            .map(|b| format!("{:.3}", b / 1048576.0))
            .unwrap_or_default(),
        r.error
            .as_ref()
            .map(|e| e.code.to_string())
            .unwrap_or_default(),
        r.error
            .as_ref()
            .map(|e| e.message.clone())
            .unwrap_or_default(),
        ms(r.platform_us),
        ms(r.queue_wait_us),
    ]
}

fn push_row(out: &mut String, fields: Vec<String>) {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.push_str(&line.join(","));
    out.push('\n');
}

/// The characters that make a spreadsheet read a cell as a formula (or,
/// tab and CR, hide one behind them).
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One CSV cell: a cell that a spreadsheet would take for a formula gets a
/// leading `'` (shown as text, as OWASP advises); quoted when it holds a
/// comma, quote or newline. The exports' numbers are never negative, so no
/// number is changed by this.
fn csv_field(f: &str) -> String {
    let f = if f.starts_with(FORMULA_STARTS) {
        format!("'{f}")
    } else {
        f.to_owned()
    };
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::history::tests::record;
    use crate::store::{Filter, History};
    use stacklab_api::DemoId;

    #[tokio::test]
    async fn csv_quotes_what_needs_quoting_and_states_units() {
        let h = History::in_memory();
        h.accepted("a", DemoId::PostgresContainer, None, None)
            .await
            .unwrap();
        h.finished(&record("a", DemoId::PostgresContainer, true))
            .await
            .unwrap();
        h.accepted("b", DemoId::PostgresContainer, None, None)
            .await
            .unwrap();
        h.finished(&record("b", DemoId::PostgresContainer, false))
            .await
            .unwrap();
        let csv = to_csv(&h.all(&Filter::default()).await.unwrap());
        let lines: Vec<_> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("time_to_ready_ms,memory_mib"));
        assert!(
            lines[1].ends_with(",deadline,\"too slow, \"\"really\"\", sorry\",,"),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains(",812.345,32.000,,"), "{}", lines[2]);
        assert!(
            lines[2].ends_with(",1.500"),
            "the wait in line, in ms: {}",
            lines[2]
        );
    }

    #[tokio::test]
    async fn cells_a_spreadsheet_would_evaluate_start_with_a_quote() {
        for (cell, written) in [
            ("=1+1", "'=1+1"),
            ("+1", "'+1"),
            ("-1", "'-1"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            ("Ada", "Ada"),
            ("a=b", "a=b"),
            ("12.5", "12.5"),
        ] {
            assert_eq!(csv_field(cell), written, "{cell:?}");
        }
    }

    #[tokio::test]
    async fn a_display_name_formula_reaches_the_class_export_as_text() {
        let h = History::in_memory();
        h.accepted("a", DemoId::PostgresContainer, None, None)
            .await
            .unwrap();
        h.finished(&record("a", DemoId::PostgresContainer, true))
            .await
            .unwrap();
        let summary = h.all(&Filter::default()).await.unwrap().remove(0);
        let csv = class_csv(
            &[ClassRun {
                summary,
                learner: "learner-0001".into(),
                display_name: Some("=HYPERLINK(\"x\")".into()),
                others_at_start: Some(0),
            }],
            &Learning::default(),
        );
        let row = csv.lines().nth(1).unwrap();
        assert!(
            row.ends_with(",learner-0001,\"'=HYPERLINK(\"\"x\"\")\",0,,,,,,,,,0,0,0"),
            "{row}"
        );
        assert!(!row.contains(",=") && !row.contains(",\"="), "{row}");
    }

    /// Every kind of guess has its column, once (a kind added to the api
    /// without one fails here).
    #[test]
    fn every_guess_kind_has_one_column() {
        for q in Quantity::ALL {
            let n = GUESS_COLUMNS.iter().filter(|(c, ..)| c == q).count();
            assert_eq!(n, 1, "{q:?}");
        }
        let header = class_csv(&[], &Learning::default());
        for (q, name, _) in GUESS_COLUMNS {
            assert!(name.contains(q.as_str()), "{name} names {q:?}");
            assert!(header.contains(&format!(",{name},")), "{header}");
        }
    }

    #[tokio::test]
    async fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_737_600_000), "2026-11-27T00:00:00.000Z");
    }
}
