//! `crops-agent doctor` against a real orchestrator and Podman, and against
//! deliberately broken set-ups: no Podman where it is told to look, an
//! orchestrator nobody answers at, and a certificate from a CA the agent
//! was not given; as the rig's rootless user, and as `nobody`, who has no
//! subordinate ids. Each problem is a FAIL line with its fix, and the exit
//! status says whether anything failed.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Output;

use crate::fleet::*;
use crate::harness::*;
use crate::lifecycle::cgroup_v1;

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

/// As the rig's rootless user, the rootless checks pass and the cgroup
/// verdict says what will not apply; as `nobody`, who has no subordinate
/// ids, they fail with the command that adds them.
#[test]
fn the_doctor_checks_a_rootless_box_and_names_missing_subordinate_ids() {
    let f = Fleet::start_as("doctor-rootless", AgentKind::Rootless);
    let config = f.config.display().to_string();
    let out = doctor(&f, &["--config", &config]);
    let said = text(&out);
    let user = crops_e2e::rootless::NAME;
    for line in [
        format!("ok    rootless ids     /etc/subuid has a range for {user}"),
        format!("ok    rootless ids     /etc/subgid has a range for {user}"),
        "ok    rootless ids     newuidmap and newgidmap found".to_owned(),
        "ok    rootless network slirp4netns or pasta found".to_owned(),
        "ok    orchestrator".to_owned(),
    ] {
        assert!(said.contains(&line), "no {line:?} in:\n{said}");
    }
    if cgroup_v1() {
        assert!(
            said.contains(
                "WARN  cgroups          v1, rootless: memory, CPU and PIDs limits are ignored"
            ),
            "{said}"
        );
    }
    assert!(out.status.success(), "warnings do not fail the box: {said}");

    // A copy `nobody` can run: the checkout may not be readable to it.
    let place = std::env::temp_dir().join(format!("crops-doctor-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&place).unwrap();
    std::fs::set_permissions(&place, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = AgentCmd::native();
    cmd.program = place.join("crops-agent");
    std::fs::copy(agent_bin(), &cmd.program).unwrap();
    let mut nobody = cmd.command();
    nobody.uid(65534).gid(65534).env("HOME", "/tmp").args([
        "doctor",
        "--config",
        "/nonexistent.json",
        "--url",
        &f.orch.url,
    ]);
    let out = nobody.output().unwrap();
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("FAIL  rootless ids     /etc/subuid has no range for nobody"),
        "{said}"
    );
    assert!(
        said.contains(
            "fix: as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody"
        ),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&place);
}
