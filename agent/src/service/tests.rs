//! Unit tests of the pure parts: the unit's text, `ExecStart` quoting, the
//! calls each verb makes; and the rendered units checked by the real
//! `systemd-analyze verify`, which needs no running systemd.

use std::process::Command;

use super::unit::exec_word;
use super::*;

fn words(cases: &[(&str, bool, &str)]) {
    for &(word, executable, want) in cases {
        assert_eq!(exec_word(word, executable).unwrap(), want, "{word:?}");
    }
}

#[test]
fn exec_words_are_escaped_for_systemd() {
    words(&[
        ("run", false, "run"),
        ("--label", false, "--label"),
        ("gpu=a100", false, "gpu=a100"),
        (
            "/usr/local/bin/crops-agent",
            true,
            "/usr/local/bin/crops-agent",
        ),
        ("", false, r#""""#),
        ("a b", false, r#""a b""#),
        ("100%", false, r#""100%%""#),
        ("$HOME", false, r#""$$HOME""#),
        (r#"say "hi""#, false, r#""say \"hi\"""#),
        (r"c:\dir\", false, r#""c:\\dir\\""#),
        ("it's", false, r#""it's""#),
        (";", false, r#"";""#),
        (
            "/opt/my agent/crops-agent",
            true,
            r#""/opt/my agent/crops-agent""#,
        ),
        // Specifiers apply to the path; variables do not.
        (
            "/opt/100%/$x/crops-agent",
            true,
            r#""/opt/100%%/$x/crops-agent""#,
        ),
    ]);
}

#[test]
fn exec_words_systemd_cannot_hold_are_refused() {
    for (word, executable) in [
        ("a\nb", false),
        ("tab\there", false),
        ("\u{7f}", false),
        ("crops-agent", true),
        ("./crops-agent", true),
        ("/opt/it's/crops-agent", true),
        (r#"/opt/"q"/crops-agent"#, true),
        (r"/opt/back\slash/crops-agent", true),
        ("/opt/new\nline/crops-agent", true),
    ] {
        let err = exec_word(word, executable).unwrap_err();
        assert!(
            matches!(err, ServiceError::Unwritable { .. }),
            "{word:?}: {err}"
        );
    }
}

fn unit(scope: Scope) -> Unit {
    Unit {
        scope,
        argv: [
            "/usr/local/bin/crops-agent",
            "run",
            "--config",
            "/home/pi/.cropscode/worker.json",
            "--label",
            "room=a 1",
        ]
        .map(str::to_owned)
        .to_vec(),
        env: vec![
            ("HTTPS_PROXY".into(), "http://u:p%41ss@proxy:3128".into()),
            ("NO_PROXY".into(), r#"local,"x"\y"#.into()),
        ],
    }
}

#[test]
fn a_system_unit_waits_for_the_network_and_restarts_on_failure() {
    assert_eq!(
        unit(Scope::System).render().unwrap(),
        r#"# Written by `crops-agent service install`; `crops-agent service uninstall` removes it.
[Unit]
Description=Crops agent: development containers for a Crops orchestrator
After=network-online.target
Wants=network-online.target

[Service]
Environment="HTTPS_PROXY=http://u:p%%41ss@proxy:3128"
Environment="NO_PROXY=local,\"x\"\\y"
ExecStart=/usr/local/bin/crops-agent run --config /home/pi/.cropscode/worker.json --label "room=a 1"
Restart=on-failure
RestartSec=5
KillMode=process

[Install]
WantedBy=multi-user.target
"#
    );
}

#[test]
fn a_user_unit_has_no_network_target_and_is_wanted_by_default() {
    let text = unit(Scope::User).render().unwrap();
    assert!(!text.contains("network-online"), "{text}");
    assert!(
        text.ends_with("[Install]\nWantedBy=default.target\n"),
        "{text}"
    );
    assert!(text.contains("\nRestart=on-failure\n"), "{text}");
}

#[test]
fn a_unit_with_an_unwritable_word_is_refused_whole() {
    let mut bad = unit(Scope::System);
    bad.argv.push("two\nlines".into());
    assert!(bad.render().is_err());
    let mut bad = unit(Scope::System);
    bad.env.push(("RUST_LOG".into(), "debug\n[Service]".into()));
    assert!(bad.render().is_err());
    bad.env.clear();
    bad.argv.clear();
    assert!(bad.render().is_err());
}

fn argv(calls: &[Call]) -> Vec<String> {
    calls.iter().map(Call::to_string).collect()
}

#[test]
fn install_reloads_enables_and_restarts_and_lingers_for_a_user() {
    assert_eq!(
        argv(&install_calls(Scope::System, 0)),
        [
            "systemctl daemon-reload",
            "systemctl enable crops-agent.service",
            "systemctl restart crops-agent.service",
        ]
    );
    assert_eq!(
        argv(&install_calls(Scope::User, 1000)),
        [
            "loginctl enable-linger 1000",
            "systemctl --user daemon-reload",
            "systemctl --user enable crops-agent.service",
            "systemctl --user restart crops-agent.service",
        ]
    );
    let (disable, reload) = uninstall_calls(Scope::User);
    assert_eq!(
        argv(&[disable, reload]),
        [
            "systemctl --user disable --now crops-agent.service",
            "systemctl --user daemon-reload"
        ]
    );
    assert_eq!(
        argv(&status_calls(Scope::System)),
        [
            "systemctl is-enabled crops-agent.service",
            "systemctl is-active crops-agent.service"
        ]
    );
    // Whether systemd runs is PID 1's question, whoever asks.
    assert_eq!(probe_call().to_string(), "systemctl is-system-running");
    assert_eq!(Scope::for_uid(0), Scope::System);
    assert_eq!(Scope::for_uid(1000), Scope::User);
}

#[test]
fn the_unit_directory_follows_the_scope() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| (*v).to_owned())
        }
    };
    let dir = |scope: Scope, e: &dyn Fn(&str) -> Option<String>| scope.default_dir(e);
    let home = env(&[("HOME", "/home/pi")]);
    let xdg = env(&[("HOME", "/home/pi"), ("XDG_CONFIG_HOME", "/cfg")]);
    let none = env(&[]);
    assert_eq!(
        dir(Scope::System, &none).unwrap(),
        Path::new("/etc/systemd/system")
    );
    assert_eq!(
        dir(Scope::User, &home).unwrap(),
        Path::new("/home/pi/.config/systemd/user")
    );
    assert_eq!(
        dir(Scope::User, &xdg).unwrap(),
        Path::new("/cfg/systemd/user")
    );
    assert!(matches!(dir(Scope::User, &none), Err(ServiceError::NoHome)));
}

#[test]
fn status_says_what_it_found_and_is_active_only_when_active() {
    let mut status = Status {
        unit_file: "/etc/systemd/system/crops-agent.service".into(),
        installed: true,
        no_systemd: None,
        enabled: "enabled".into(),
        active: "active".into(),
    };
    assert!(status.is_active());
    assert_eq!(
        status.to_string(),
        "unit file: /etc/systemd/system/crops-agent.service (installed: yes)\nenabled: enabled\nactive: active\n"
    );
    status.active = "failed".into();
    assert!(!status.is_active());
    status.no_systemd = Some("systemd is not running on this machine".into());
    status.active.clear();
    assert!(status
        .to_string()
        .ends_with("\nsystemd is not running on this machine\n"));
}

/// `systemd-analyze verify` on `text` as a unit of `scope`, in a scratch
/// directory; its exit status and words.
fn verify(scope: Scope, text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "crops-service-verify-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let runtime = dir.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let file = dir.join(UNIT);
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new("systemd-analyze");
    if scope == Scope::User {
        // A user manager's paths need a runtime directory, not a running one.
        cmd.arg("--user").env("XDG_RUNTIME_DIR", &runtime);
    }
    let out = cmd
        .args(["verify", "--man=no"])
        .arg(&file)
        .output()
        .expect("systemd-analyze (Debian: systemd) must be installed");
    std::fs::remove_dir_all(&dir).unwrap();
    let words = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), words)
}

#[test]
fn systemd_analyze_accepts_the_units_with_awkward_words() {
    // A real executable at a path with a space, `%n` and `$`: verify checks
    // that the path it reads back exists and is executable.
    let dir = std::env::temp_dir().join(format!(
        "crops service {}-{} %n $HOME",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("crops-agent");
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &exe).unwrap();
    let awkward = [
        "run",
        "a b",
        "100%",
        "$HOME",
        "${X}",
        r#"say "hi""#,
        r#"odd""#,
        r"back\slash",
        "it's",
        ";",
        "",
        "%n",
        "end\\",
    ];
    for scope in [Scope::System, Scope::User] {
        let unit = Unit {
            scope,
            argv: std::iter::once(exe.to_str().unwrap())
                .chain(awkward)
                .map(str::to_owned)
                .collect(),
            env: vec![("HTTPS_PROXY".into(), r#"http://u:p%$"\@h:1"#.into())],
        };
        let text = unit.render().unwrap();
        let (ok, words) = verify(scope, &text);
        assert!(ok && words.is_empty(), "{scope:?}: {words}\n{text}");
        // Its path with `%n` as typed names another file (%n: the unit
        // name): verify does look.
        let undoubled = format!("[Service]\nExecStart=\"{}\"\n", exe.display());
        let (ok, words) = verify(scope, &undoubled);
        assert!(!ok, "{scope:?}: verify accepted {undoubled}: {words}");
    }
    // And an unbalanced quote is refused, so a quoting slip would show.
    let (ok, words) = verify(Scope::System, "[Service]\nExecStart=/bin/true \"a\n");
    assert!(!ok && words.contains("Unbalanced quoting"), "{words}");
    std::fs::remove_dir_all(&dir).unwrap();
}
