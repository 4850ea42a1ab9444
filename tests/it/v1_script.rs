//! An actual Python Whispr v1 client (`tests/clients/whispr_v1_client.py`: PyNaCl,
//! requests, websockets, written from the v1 API document) runs one whole session
//! against a relay started here: polls, both socket forms, offline queueing, sender
//! copies, errors, attachments and a `/signal` call.

use std::process::Stdio;
use std::time::Duration;

use crate::support::TestRelay;

/// Debian's interpreter, where `python3-nacl`, `python3-requests` and
/// `python3-websockets` install their modules.
const PYTHON: &str = "/usr/bin/python3";

/// Whether the interpreter and the client's modules are there; missing: a loud skip,
/// or a failure under `WHISPR_TEST_STRICT=1`.
fn have_python_client() -> bool {
    let ok = std::process::Command::new(PYTHON)
        .args(["-c", "import nacl, requests, websockets"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let what = "python3 with PyNaCl, requests and websockets \
                    (apt-get install python3-nacl python3-requests python3-websockets)";
        if std::env::var("WHISPR_TEST_STRICT").as_deref() == Ok("1") {
            panic!("{what} is missing and WHISPR_TEST_STRICT=1: install it (see .ci/run)");
        }
        eprintln!("\n*** SKIPPED: {what} is missing; this test needs it ***\n");
    }
    ok
}

#[tokio::test]
async fn the_python_v1_client_runs_its_whole_session() {
    if !have_python_client() {
        return;
    }
    let relay = TestRelay::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/whispr_v1_client.py"
    );
    let child = tokio::process::Command::new(PYTHON)
        .arg(script)
        .arg(&relay.base)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the python client");
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the python client finishes within 60 s")
        .expect("python client output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("v1 client session OK"),
        "the v1 client failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    relay.stop().await;
}
