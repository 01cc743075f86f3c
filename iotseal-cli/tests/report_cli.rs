//! `iotseal report` and `iotseal bench` as commands: the fixture directory of iotseal-bench's
//! report test becomes one HTML file with a PNG per chart beside it.

use std::path::Path;
use std::process::Command;

fn iotseal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_iotseal"))
}

#[test]
fn report_from_the_fixture_directory() {
    let input =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../iotseal-bench/tests/fixtures/report-in");
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("out/report.html");
    let out = iotseal()
        .args(["report", "--input"])
        .arg(&input)
        .arg("--out")
        .arg(&html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("charts"), "{stdout}");
    // No database given: the sensor section is the only one not measured.
    assert!(
        stdout.contains("not measured in this run: sensor time series"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    let svgs = page.matches("<svg").count();
    assert!(svgs >= 15, "{svgs} charts");
    let pngs = std::fs::read_dir(html.parent().unwrap())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, svgs);

    let bad = iotseal()
        .args(["report", "--input"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn bench_has_crypto_and_load() {
    let out = iotseal().args(["bench", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("crypto") && help.contains("load"), "{help}");
    let out = iotseal()
        .args(["bench", "crypto", "--provider", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
