//! The `moor` binary as a user runs it: a small demo with piped output, over TCP and TLS, and
//! bad arguments.

use std::process::{Command, Output};

fn moor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moor"))
        .args(args)
        .output()
        .expect("the moor binary runs")
}

/// The report's `pool: ` line and the numbers in it, in order.
fn pool_stats(stdout: &str) -> (&str, Vec<usize>) {
    let stats = stdout
        .lines()
        .find(|l| l.starts_with("pool: "))
        .expect("a stats line");
    let numbers = stats
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (stats, numbers)
}

#[test]
fn a_small_demo_reports_both_rates_and_the_pool_stats_without_a_progress_bar_when_piped() {
    let out = moor(&[
        "demo",
        "--exchanges",
        "300",
        "--tasks",
        "3",
        "--pool-size",
        "2",
    ]);
    let stdout = String::from_utf8(out.stdout).expect("utf-8 report");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "moor demo: 300 ",
        "pooled: ",
        "fresh connection each: ",
        "speedup: ",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    // Piped output is the report only: no bar redraws, no escape sequences.
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "{stdout:?}"
    );
    // 300 exchanges through a pool of 2: at most 2 connects, every other checkout a hit.
    let (stats, numbers) = pool_stats(&stdout);
    let [hits, immediate, deferred, fresh, open, idle] = numbers[..] else {
        panic!("unexpected stats line: {stats}");
    };
    assert_eq!(hits, immediate + deferred, "{stats}");
    assert!((1..=2).contains(&fresh), "{stats}");
    assert_eq!(hits + fresh, 300, "{stats}");
    assert!(open <= 2 && idle == open, "{stats}");
}

#[test]
fn the_tls_demo_pools_verified_tls_connections() {
    let out = moor(&[
        "demo",
        "--tls",
        "--exchanges",
        "200",
        "--tasks",
        "2",
        "--pool-size",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("moor demo: 200 request/response exchanges over TLS"),
        "{stdout}"
    );
    assert!(stdout.contains("speedup: "), "{stdout}");
    // Every exchange was answered (the echo is checked), at most 2 TLS connections made.
    let (stats, numbers) = pool_stats(&stdout);
    let [hits, _, _, fresh, ..] = numbers[..] else {
        panic!("unexpected stats line: {stats}");
    };
    assert!((1..=2).contains(&fresh), "{stats}");
    assert_eq!(hits + fresh, 200, "{stats}");
}

#[test]
fn zero_or_oversized_counts_are_refused_with_a_usage_error() {
    for (flag, value) in [
        ("--exchanges", "0"),
        ("--tasks", "0"),
        ("--pool-size", "5000"),
    ] {
        let out = moor(&["demo", flag, value]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
}

#[test]
fn verbose_prints_the_pools_events_on_stderr_and_keeps_stdout_the_report() {
    let out = moor(&["demo", "--exchanges", "50", "--pool-size", "2", "-v"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("speedup: "), "{stdout}");
    assert!(
        !stdout.contains("DEBUG"),
        "events leaked into the report:\n{stdout}"
    );
    let connects = stderr
        .lines()
        .filter(|l| l.contains(" connecting "))
        .count();
    assert!((1..=2).contains(&connects), "{stderr}");
    assert!(stderr.contains("connected conn="), "{stderr}");
    assert!(stderr.contains("reason=Shutdown"), "{stderr}");
}
