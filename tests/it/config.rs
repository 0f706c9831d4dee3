//! `validate`: every shipped config is valid; a bad one lists every problem and exits 64.

use crate::util::*;

#[test]
fn every_shipped_config_validates() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            ok(&trailwatch(&["--config", path.to_str().unwrap(), "validate"]));
            n += 1;
        }
    }
    assert!(n >= 1, "no config files under {}", dir.display());
    ok(&trailwatch(&["validate"]));
}

#[test]
fn invalid_config_lists_every_problem_and_exits_64() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[intake]\nkind = \"carrier-pigeon\"\n[pipeline]\nbatch_max_files = 0\n[http]\nlisten = \"everywhere\"\n[colours]\nred = 1\n",
    )
    .unwrap();
    let out = trailwatch(&["--config", bad.to_str().unwrap(), "validate"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["carrier-pigeon", "`pipeline.batch_max_files`", "`http.listen`", "`colours`"] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    // The same config stops every command before it does anything.
    let out = trailwatch(&["--config", bad.to_str().unwrap(), "run"]);
    assert_eq!(out.status.code(), Some(64));
    let out = trailwatch(&["--config", tmp.path().join("missing.toml").to_str().unwrap(), "validate"]);
    assert_eq!(out.status.code(), Some(64));
    let out = trailwatch(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(64));
}
