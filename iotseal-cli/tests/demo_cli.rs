//! The README's main command, `iotseal demo --json`, as a user runs it: a gateway in the
//! process, a short mixed-suite simulation, the threat lab, a quick crypto pass and the report;
//! the JSON must say that nothing was lost, every reading was verified and every attack on the
//! readings was blocked (the flood of valid hellos is reported, not blocked), and the report
//! must open with results.

use std::process::Command;

#[test]
fn demo_stores_every_reading_and_blocks_every_attack_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_iotseal"))
        .args(["demo", "--json", "--duration", "3s", "--devices", "1"])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON object");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(n("readings_sent") > 0, "{v}");
    assert_eq!(n("readings_stored"), n("readings_sent"));
    assert_eq!(n("readings_verified"), n("readings_sent"));
    assert_eq!(n("lost"), 0);
    assert_eq!(n("duplicates"), 0);
    assert_eq!(
        v["suites"].as_array().unwrap().len(),
        5,
        "five suite groups"
    );
    let attacks = v["attacks"].as_array().unwrap();
    assert!(attacks.len() >= 20, "{} attacks", attacks.len());
    for a in attacks {
        assert!(!a["criterion"].as_str().unwrap().is_empty(), "{a}");
        assert_eq!(a["blocked"], true, "{a}");
    }
    // The floods are judged by the honest devices' traffic during them: measured and served.
    for name in ["handshake-flood", "hello-flood-addresses", "connection-hog"] {
        let flood = attacks.iter().find(|a| a["name"] == name).unwrap();
        let s = &flood["service"];
        assert!(s["handshakes_attempted"].as_u64().unwrap() > 0, "{flood}");
        assert!(s["readings_stored"].as_u64().unwrap() > 0, "{flood}");
        assert_eq!(s["requests_refused"].as_u64(), Some(0), "{flood}");
    }
    assert!(v["not_blocked"].as_array().unwrap().is_empty(), "{v}");
    // The report opens with results (the quick crypto pass fills the crypto sections) and
    // names what was not measured once, at its end.
    let report = v["report"].as_str().expect("a report path");
    let html = std::fs::read_to_string(report).unwrap();
    assert!(html.contains("<svg"));
    let first = html.split("<section id=\"").nth(1).unwrap();
    assert!(first.starts_with("handshakes\""), "{}", &first[..80]);
    assert!(
        first
            .split("</section>")
            .next()
            .unwrap()
            .contains("<figure")
    );
    assert_eq!(html.matches("Not measured in this run").count(), 1);
    let last = html.rsplit("<section id=\"").next().unwrap();
    assert!(last.starts_with("not-measured\""), "{last}");
    assert!(last.contains("gateway load test"), "{last}");
    assert!(html.contains("id=\"threats\"") && html.contains("id=\"simulation\""));
    assert_eq!(v["data_dir"].as_str().unwrap(), data.to_str().unwrap());
}
