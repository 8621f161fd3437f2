//! `crops-agent doctor` against a real orchestrator and Podman, and against
//! deliberately broken set-ups: no Podman where it is told to look, an
//! orchestrator nobody answers at, and a certificate from a CA the agent
//! was not given. Each problem is a FAIL line with its fix, and the exit
//! status says whether anything failed.

use std::process::Output;

use crate::fleet::*;

fn doctor(f: &Fleet, args: &[&str]) -> Output {
    f.cmd.command().arg("doctor").args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_doctor_passes_a_good_box_and_names_each_broken_part_with_its_fix() {
    let f = Fleet::start("doctor");
    let config = f.config.display().to_string();

    // The enrolled box: its config's URL and CA file.
    let good = doctor(&f, &["--config", &config]);
    let said = text(&good);
    assert!(good.status.success(), "{said}");
    for line in [
        "ok    podman",
        "ok    orchestrator",
        "its certificate trusted",
        "ok    clock",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}");
    }
    assert!(!said.contains("FAIL"), "{said}");

    // No Podman where it is told to look.
    let no_podman = doctor(
        &f,
        &["--config", &config, "--podman", "/nonexistent/podman"],
    );
    let said = text(&no_podman);
    assert!(!no_podman.status.success(), "{said}");
    assert!(said.contains("FAIL  podman"), "{said}");
    assert!(said.contains("fix: install Podman"), "{said}");
    assert!(said.contains("1 check(s) failed"), "{said}");

    // Nobody answers at the URL.
    let nowhere = doctor(
        &f,
        &[
            "--config",
            "/nonexistent.json",
            "--url",
            "https://127.0.0.1:1",
        ],
    );
    let said = text(&nowhere);
    assert!(!nowhere.status.success(), "{said}");
    assert!(
        said.contains("FAIL  orchestrator") && said.contains("cannot reach 127.0.0.1:1"),
        "{said}"
    );
    assert!(said.contains("fix: check the URL"), "{said}");

    // The orchestrator's certificate is from the test CA, which is not given.
    let untrusted = doctor(&f, &["--config", "/nonexistent.json", "--url", &f.orch.url]);
    let said = text(&untrusted);
    assert!(!untrusted.status.success(), "{said}");
    assert!(said.contains("FAIL  CA trust"), "{said}");
    assert!(said.contains("--ca-file"), "{said}");
}
