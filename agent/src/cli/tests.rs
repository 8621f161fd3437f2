//! Unit tests of the command line: parsing, and where each setting comes
//! from (flag, then environment, then config file, then default).

use super::*;
use std::collections::HashMap;

fn parse(args: &[&str]) -> Result<Cli, argh::EarlyExit> {
    Cli::from_args(&["crops-agent"], args)
}

fn run_args(args: &[&str]) -> RunArgs {
    match parse(&[&["run"], args].concat()).unwrap().command {
        Command::Run(r) => r,
        other => panic!("parsed {other:?}"),
    }
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn write_config(tag: &str) -> PathBuf {
    let path = std::env::temp_dir()
        .join(format!(
            "crops-agent-cli-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
        .join("worker.json");
    Config {
        worker_id: "w1".into(),
        tenant_id: "t1".into(),
        tenant_name: "acme".into(),
        url: "wss://from-config:8443/v1/agent".into(),
        credential: "cred-config".into(),
        name: Some("config-name".into()),
        ca_file: Some("/etc/config-ca.pem".into()),
        mode: None,
    }
    .save(&path)
    .unwrap();
    path
}

#[test]
fn enroll_parses_its_flags() {
    let cli = parse(&[
        "enroll",
        "--url",
        "https://o:1",
        "--token",
        "tok",
        "--ca-file",
        "/ca.pem",
    ])
    .unwrap();
    let Command::Enroll(args) = cli.command else {
        panic!()
    };
    let opts = enroll_options(args, &env_of(&[(ENV_CONFIG, "/tmp/x.json")])).unwrap();
    assert_eq!(opts.config_path, PathBuf::from("/tmp/x.json"));
    assert_eq!(opts.ca_file, Some(PathBuf::from("/ca.pem")));
    assert_eq!(opts.name, None);
    assert!(
        parse(&["enroll", "--url", "https://o:1"]).is_err(),
        "the token is required"
    );
}

#[test]
fn mode_accepts_only_byom_and_fleet() {
    assert_eq!(run_args(&["--mode", "fleet"]).mode, Some(Mode::Fleet));
    assert!(parse(&["run", "--mode", "cloud"]).is_err());
}

#[test]
fn the_config_supplies_what_nothing_else_does() {
    let path = write_config("cfg");
    let s = run_settings(
        run_args(&["--config", path.to_str().unwrap()]),
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(s.url, "wss://from-config:8443/v1/agent");
    assert_eq!(s.credential, "cred-config");
    assert_eq!(s.name, "config-name");
    assert_eq!(s.ca_file, Some(PathBuf::from("/etc/config-ca.pem")));
    assert_eq!(s.podman, PathBuf::from("podman"));
    assert_eq!(s.mode, Mode::Byom);
    assert_eq!(
        s.data_dir,
        path.parent().unwrap(),
        "data dir: the config's directory"
    );
    assert_eq!(s.security_floor, Profile::Open);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn rotations_go_to_the_file_the_credential_came_from_and_the_mode_follows_enrolment() {
    let path = write_config("rotation");
    let mut config = Config::load(&path).unwrap();
    config.mode = Some(Mode::Fleet);
    config.save(&path).unwrap();
    let args = || run_args(&["--config", path.to_str().unwrap()]);
    let s = run_settings(args(), &env_of(&[])).unwrap();
    assert_eq!(s.credential_file.as_deref(), Some(path.as_path()));
    assert_eq!(s.mode, Mode::Fleet, "the enrolment's mode by default");
    let s = run_settings(
        run_args(&["--config", path.to_str().unwrap(), "--mode", "byom"]),
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(s.mode, Mode::Byom, "a flag still wins");
    let s = run_settings(args(), &env_of(&[(ENV_CREDENTIAL, "cred-env")])).unwrap();
    assert_eq!(
        (s.credential.as_str(), s.credential_file),
        ("cred-env", None),
        "a credential from the environment has no file to rotate into"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn env_beats_the_config_and_flags_beat_env() {
    let path = write_config("env");
    let env = env_of(&[
        (ENV_CONFIG, path.to_str().unwrap()),
        (ENV_URL, "wss://from-env/v1/agent"),
        (ENV_CREDENTIAL, "cred-env"),
        (ENV_NAME, "env-name"),
        (ENV_PODMAN, "/opt/podman"),
    ]);
    let s = run_settings(run_args(&[]), &env).unwrap();
    assert_eq!(
        (s.url.as_str(), s.credential.as_str(), s.name.as_str()),
        ("wss://from-env/v1/agent", "cred-env", "env-name")
    );
    assert_eq!(s.podman, PathBuf::from("/opt/podman"));
    let s = run_settings(
        run_args(&["--url", "ws://127.0.0.1:1/v1/agent", "--name", "flag-name"]),
        &env,
    )
    .unwrap();
    assert_eq!(
        (s.url.as_str(), s.name.as_str()),
        ("ws://127.0.0.1:1/v1/agent", "flag-name")
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn without_a_config_flags_alone_suffice_and_the_name_is_the_hostname() {
    let env = env_of(&[(ENV_CONFIG, "/nonexistent/crops/worker.json")]);
    let s = run_settings(
        run_args(&["--url", "ws://127.0.0.1:1/v1/agent", "--credential", "c"]),
        &env,
    )
    .unwrap();
    assert_eq!(s.name, agent::sysinfo::hostname().unwrap());
    let err = run_settings(run_args(&["--url", "ws://127.0.0.1:1/v1/agent"]), &env).unwrap_err();
    assert!(
        matches!(err, CliError::Config(ConfigError::NotFound { .. })),
        "{err}"
    );
}

#[test]
fn data_dir_and_floor_come_from_flags_then_env() {
    let env = env_of(&[
        (ENV_CONFIG, "/nonexistent/crops/worker.json"),
        (ENV_DATA_DIR, "/srv/crops"),
        (ENV_SECURITY_FLOOR, "strict"),
    ]);
    let base = ["--url", "ws://h/", "--credential", "c"];
    let s = run_settings(run_args(&base), &env).unwrap();
    assert_eq!(s.data_dir, PathBuf::from("/srv/crops"));
    assert_eq!(s.security_floor, Profile::Strict);
    let flags = [
        &base[..],
        &["--data-dir", "/d", "--security-floor", "offline"],
    ]
    .concat();
    let s = run_settings(run_args(&flags), &env).unwrap();
    assert_eq!(
        (s.data_dir, s.security_floor),
        (PathBuf::from("/d"), Profile::Offline)
    );
    assert!(parse(&["run", "--security-floor", "lax"]).is_err());
    let bad = env_of(&[
        (ENV_CONFIG, "/nonexistent/crops/worker.json"),
        (ENV_SECURITY_FLOOR, "lax"),
    ]);
    let err = run_settings(run_args(&base), &bad).unwrap_err();
    assert!(matches!(err, CliError::BadEnv { .. }), "{err}");
}

#[test]
fn bad_names_are_refused_early() {
    let env = env_of(&[(ENV_CONFIG, "/nonexistent/crops/worker.json")]);
    let long = "n".repeat(65);
    let err = run_settings(
        run_args(&["--url", "ws://h/", "--credential", "c", "--name", &long]),
        &env,
    )
    .unwrap_err();
    assert!(matches!(err, CliError::BadName { .. }), "{err}");
}

#[test]
fn the_terminal_grace_period_defaults_to_five_minutes_and_has_a_flag() {
    let env = env_of(&[("CROPS_URL", "wss://o/v1/agent"), ("CROPS_CREDENTIAL", "c")]);
    let path = ["--config", "/nonexistent/crops/worker.json"];
    let default = run_settings(run_args(&path), &env).unwrap();
    assert_eq!(default.terminal_grace, std::time::Duration::from_secs(300));
    let args = run_args(&[&path[..], &["--terminal-grace-secs", "30"]].concat());
    let set = run_settings(args, &env).unwrap();
    assert_eq!(set.terminal_grace, std::time::Duration::from_secs(30));
    assert!(parse(&["run", "--terminal-grace-secs", "soon"]).is_err());
}

#[test]
fn labels_come_from_flags_then_env_and_bad_ones_stop_the_agent() {
    let env = env_of(&[
        (ENV_CONFIG, "/nonexistent/crops/worker.json"),
        (ENV_LABELS, "gpu=a100, disk=ssd"),
    ]);
    let base = ["--url", "ws://h/", "--credential", "c"];
    let s = run_settings(run_args(&base), &env).unwrap();
    let want: Vec<(String, String)> =
        vec![("disk".into(), "ssd".into()), ("gpu".into(), "a100".into())];
    assert_eq!(s.labels.into_iter().collect::<Vec<_>>(), want);
    let flags = [&base[..], &["--label", "rack=3", "--label", "zone="]].concat();
    let s = run_settings(run_args(&flags), &env).unwrap();
    assert_eq!(s.labels.get("rack").map(String::as_str), Some("3"));
    assert_eq!(s.labels.get("zone").map(String::as_str), Some(""));
    assert!(
        !s.labels.contains_key("gpu"),
        "flags replace the env's labels"
    );
    let none = env_of(&[(ENV_CONFIG, "/nonexistent/crops/worker.json")]);
    assert!(run_settings(run_args(&base), &none)
        .unwrap()
        .labels
        .is_empty());
    for bad in ["novalue", "--privileged=1", "a=b\u{7}", "k=1"] {
        let flags = [&base[..], &["--label", bad, "--label", "k=2"]].concat();
        let err = run_settings(run_args(&flags), &none).unwrap_err();
        assert!(matches!(err, CliError::BadLabel { .. }), "{bad}: {err}");
    }
}

#[test]
fn help_says_how_rust_log_picks_what_is_logged() {
    let help = parse(&["--help"]).unwrap_err().output;
    assert!(help.contains("RUST_LOG"), "{help}");
    assert!(help.contains("agent=debug,warn"), "{help}");
}

fn install_args(args: &[&str]) -> service::InstallArgs {
    match parse(&[&["service", "install"], args].concat())
        .unwrap()
        .command
    {
        Command::Service(service::ServiceArgs {
            action: service::Action::Install(a),
        }) => a,
        other => panic!("parsed {other:?}"),
    }
}

#[test]
fn service_install_writes_runs_options_from_flags_and_environment_as_flags() {
    let config = write_config("service");
    let config = config.to_str().unwrap();
    let args = install_args(&["--config", config, "--podman", "podman", "--mode", "fleet"]);
    let env = env_of(&[
        ("CROPS_LABELS", "gpu=a100, disk=ssd"),
        ("CROPS_SECURITY_FLOOR", "strict"),
        ("CROPS_CA_FILE", "ca.pem"),
        ("CROPS_CREDENTIAL", "crops_wkr_never_in_a_unit"),
        ("HTTPS_PROXY", "http://proxy:3128"),
    ]);
    let exe = std::path::Path::new("/usr/local/bin/crops-agent");
    let unit = service::unit(args, exe, crate::service::Scope::System, &env).unwrap();
    let ca = std::env::current_dir().unwrap().join("ca.pem");
    assert_eq!(
        unit.argv,
        [
            "/usr/local/bin/crops-agent",
            "run",
            "--config",
            config,
            "--ca-file",
            ca.to_str().unwrap(),
            "--podman",
            "podman",
            "--mode",
            "fleet",
            "--security-floor",
            "strict",
            "--label",
            "gpu=a100",
            "--label",
            "disk=ssd",
        ]
    );
    assert_eq!(
        unit.env,
        [("HTTPS_PROXY".to_owned(), "http://proxy:3128".to_owned())]
    );
    // What run would refuse is refused before anything is written.
    for bad in [&["--mode", "cloud"][..], &["--security-floor", "lax"]] {
        let args = install_args(&[&["--config", config][..], bad].concat());
        let err = service::unit(args, exe, crate::service::Scope::User, &env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("these options would not start `crops-agent run`: "),
            "{err}"
        );
    }
}
