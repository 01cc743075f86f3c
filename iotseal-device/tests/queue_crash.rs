//! The queue journal under SIGKILL at arbitrary points: a child process pushes readings and
//! acknowledges some, printing each id once the call returned; the parent kills it at a random
//! moment, reopens the journal and checks that no accepted reading was lost, none appears twice
//! or altered, no acknowledged one came back, and no message id is ever reused. Twenty rounds
//! on one file, so recovery after recovery is exercised.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use iotseal_device::{DurableQueue, SyncPolicy};

const CHILD_ENV: &str = "IOTSEAL_QUEUE_CRASH_CHILD";

fn reading_of(id: u64) -> (Vec<(u8, f32)>, Vec<u8>) {
    (
        vec![(1, id as f32)],
        id.to_le_bytes()[..(id % 8) as usize].to_vec(),
    )
}

/// The child: runs only when the parent starts this test binary with CHILD_ENV set.
#[test]
fn queue_crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let sync = if std::env::var("IOTSEAL_QUEUE_CRASH_SYNC").as_deref() == Ok("never") {
        SyncPolicy::Never
    } else {
        SyncPolicy::Always
    };
    let mut q = DurableQueue::open(&PathBuf::from(path), 1_000_000, sync).unwrap();
    let out = std::io::stdout();
    let mut n = 0u64;
    loop {
        let id = q.next_msg_id();
        let (values, extra) = reading_of(id);
        let got = q.push(id, values, extra).unwrap();
        assert_eq!(got, id);
        writeln!(out.lock(), "P {id}").unwrap();
        n += 1;
        if n.is_multiple_of(7) {
            let acked: HashSet<u64> = q.front(5).map(|r| r.msg_id).collect();
            let mut ids = String::new();
            for id in &acked {
                ids.push_str(&format!(" {id}"));
            }
            // Announced before (a kill in between may or may not have removed them), confirmed
            // after.
            writeln!(out.lock(), "R{ids}").unwrap();
            q.remove(&acked).unwrap();
            writeln!(out.lock(), "A{ids}").unwrap();
        }
    }
}

#[test]
fn the_queue_journal_survives_sigkill_at_any_point() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queue.journal");
    let exe = std::env::current_exe().unwrap();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    seed ^= u64::from(std::process::id()) << 32;
    println!("seed {seed:#x}");
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // What must be in the journal: pushed (printed) and not acknowledged (printed).
    let mut expected: BTreeSet<u64> = BTreeSet::new();
    let mut highest_printed = 0u64;
    let mut total_pushed = 0usize;
    for round in 0..20 {
        let sync = if round % 2 == 0 { "always" } else { "never" };
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "queue_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &file)
            .env("IOTSEAL_QUEUE_CRASH_SYNC", sync)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a random number of printed lines (the child keeps writing meanwhile, so
        // the kill lands anywhere in push, remove or compaction).
        let stop_after = 20 + next() % 1500;
        // Ids whose removal was announced and not confirmed: they may be gone or not.
        let mut in_doubt: BTreeSet<u64> = BTreeSet::new();
        let mut seen = 0u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut apply = |line: &str, expected: &mut BTreeSet<u64>, in_doubt: &mut BTreeSet<u64>| {
            // libtest prints "test queue_crash_child ... " without a newline before the
            // child's first line.
            let line = line.rsplit_once("... ").map_or(line, |(_, rest)| rest);
            let mut parts = line.split_whitespace();
            match parts.next() {
                Some("P") => {
                    let id: u64 = parts.next().unwrap().parse().unwrap();
                    assert!(id > highest_printed, "message id {id} reused");
                    highest_printed = id;
                    expected.insert(id);
                    total_pushed += 1;
                }
                Some("R") => {
                    in_doubt.clear();
                    in_doubt.extend(parts.map(|id| id.parse::<u64>().unwrap()));
                }
                Some("A") => {
                    for id in parts {
                        expected.remove(&id.parse::<u64>().unwrap());
                    }
                    in_doubt.clear();
                }
                _ => {} // test harness noise ("running 1 test" ...)
            }
        };
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            apply(&line, &mut expected, &mut in_doubt);
            seen += 1;
            if seen >= stop_after || Instant::now() > deadline {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Whatever the child printed before it died happened.
        for line in lines {
            let Ok(line) = line else { break };
            apply(&line, &mut expected, &mut in_doubt);
        }

        let q = DurableQueue::open(&file, 1_000_000, SyncPolicy::Always).unwrap();
        let present: Vec<u64> = q.front(usize::MAX).map(|r| r.msg_id).collect();
        let present_set: BTreeSet<u64> = present.iter().copied().collect();
        assert_eq!(present.len(), present_set.len(), "a reading appears twice");
        let missing: Vec<_> = expected
            .difference(&present_set)
            .filter(|id| !in_doubt.contains(id))
            .collect();
        assert!(missing.is_empty(), "round {round}: lost {missing:?}");
        // Beyond what was printed: at most the one push the kill interrupted after it reached
        // the file. An acknowledged reading never comes back.
        let extra: Vec<_> = present_set.difference(&expected).copied().collect();
        assert!(
            extra.is_empty() || extra == [highest_printed + 1],
            "round {round}: {extra:?} present but acknowledged or never pushed (highest {highest_printed})"
        );
        for r in q.front(usize::MAX) {
            let (values, extra) = reading_of(r.msg_id);
            assert_eq!(
                (r.values.clone(), r.extra.clone()),
                (values, extra),
                "altered"
            );
        }
        assert!(q.next_msg_id() > highest_printed, "ids would be reused");
        // The parent's view becomes the journal's (an interrupted push or acknowledgement that
        // reached the file counts from now on).
        expected = present_set;
        highest_printed = highest_printed.max(q.next_msg_id() - 1);
    }
    assert!(
        total_pushed > 1000,
        "too few pushes to mean anything: {total_pushed}"
    );
    println!("{total_pushed} pushes over 20 kills");
}
