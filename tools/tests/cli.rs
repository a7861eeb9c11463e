//! Command-line behaviour that needs no servers: clear one-line errors.
use std::process::Command;

fn l7tap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_l7tap"))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn capture_without_privileges_says_what_is_missing() {
    // As root, drop to nobody with no capabilities; otherwise we already lack them.
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_l7tap"));
        c
    } else {
        l7tap()
    };
    let out = cmd
        .args(["capture", "--duration", "1s", "--out", "/tmp/l7tap-noperm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs root, or the capabilities CAP_BPF and CAP_PERFMON"),
        "{err}"
    );
}

#[test]
fn replay_of_a_file_that_is_not_a_recording_is_a_clear_error() {
    let path = std::env::temp_dir().join(format!("l7tap-not-a-recording-{}", std::process::id()));
    std::fs::write(&path, b"PAR1 something else entirely").unwrap();
    let out = l7tap().arg("replay").arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not an l7tap recording"), "{err}");
}
