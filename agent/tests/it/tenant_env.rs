//! A tenant's env is the container's data, never the worker's configuration.
//! The agent binary, over the in-test socket, against the real Podman: every
//! variable the host side of a container command reads (Podman and its
//! libraries, conmon, runc, Go's runtime, the dynamic loader and libc), set
//! by a create, an exec and a background exec, reaches the container exactly
//! (`env` inside prints it) and changes nothing on the host: CONTAINER_HOST
//! names a listener this test owns, which sees no connection, and values
//! that would break the host's podman if it obeyed them (PATH,
//! CONTAINERS_CONF, LD_TRACE_LOADED_OBJECTS …) leave every command working.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::container::{ContainerCreate, ContainerRef, Profile};
use protocol::exec::{BackgroundCapture, Exec, ExecBackground};
use protocol::{Body, Envelope, ErrorCode};

use crate::support;
use crate::{accept_ws, listen, register_and_accept, scratch_dir, send, wait_for, within, Ws};

/// What the host side of `podman create`/`exec` reads from its environment.
/// Sources: podman(1) ENVIRONMENT, containers.conf(5), containers-storage.conf(5),
/// containers-registries.conf(5), containers-auth.json(5), podman-build(1),
/// podman-system-service(1) (socket activation), the names in the podman
/// 4.3, conmon 2.1 and runc 1.1 binaries (`strings`), Go's runtime, net/http
/// (proxies) and crypto/x509, glib (conmon), ld.so(8), and glibc's malloc,
/// locale, iconv, resolver and time-zone variables.
const HOST_READ: &[&str] = &[
    // Podman: remote mode and its connections.
    "CONTAINER_HOST",
    "CONTAINER_CONNECTION",
    "CONTAINER_SSHKEY",
    "CONTAINER_PASSPHRASE",
    "DOCKER_HOST",
    "PODMAN_CONNECTIONS_CONF",
    "SSH_AUTH_SOCK",
    // containers/common, storage, image.
    "CONTAINERS_CONF",
    "CONTAINERS_CONF_OVERRIDE",
    "CONTAINERS_STORAGE_CONF",
    "CONTAINERS_REGISTRIES_CONF",
    "CONTAINERS_RUNROOT",
    "REGISTRIES_CONFIG_PATH",
    "REGISTRY_AUTH_FILE",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "STORAGE_DRIVER",
    "STORAGE_OPTS",
    "BUILDAH_ISOLATION",
    "BUILDAH_FORMAT",
    "BUILDAH_LAYERS",
    "BUILDAH_RUNTIME",
    "PODMAN_USERNS",
    "PODMAN_SYSTEMD_UNIT",
    "_CONTAINERS_USERNS_CONFIGURED",
    "_CONTAINERS_ROOTLESS_UID",
    "_CONTAINERS_ROOTLESS_GID",
    "_PODMAN_PAUSE",
    // Directories and identity.
    "PATH",
    "HOME",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "SHELL",
    "XDG_RUNTIME_DIR",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_DIRS",
    "XDG_DATA_DIRS",
    // systemd and D-Bus.
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "DBUS_SESSION_BUS_ADDRESS",
    "DBUS_SYSTEM_BUS_ADDRESS",
    // Go runtime and standard library.
    "GODEBUG",
    "GOGC",
    "GOMAXPROCS",
    "GOMEMLIMIT",
    "GOTRACEBACK",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    // conmon and glib.
    "_OCI_SYNCPIPE",
    "_OCI_STARTPIPE",
    "_OCI_ATTACHPIPE",
    "CONMON_SECCOMP_NOTIFY_PLUGINS",
    "G_MESSAGES_DEBUG",
    "G_DEBUG",
    "G_SLICE",
    // runc.
    "_LIBCONTAINER_INITPIPE",
    "_LIBCONTAINER_LOGPIPE",
    "_LIBCONTAINER_LOGLEVEL",
    "_LIBCONTAINER_INITTYPE",
    "_LIBCONTAINER_FIFOFD",
    "_LIBCONTAINER_CONSOLE",
    "_LIBCONTAINER_STATEDIR",
    "_LIBCONTAINER_CLONED_BINARY",
    "_LIBCONTAINER_MOUNT_FDS",
    // The dynamic loader, ld.so(8).
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "LD_ASSUME_KERNEL",
    "LD_BIND_NOT",
    "LD_BIND_NOW",
    "LD_DEBUG",
    "LD_DEBUG_OUTPUT",
    "LD_DYNAMIC_WEAK",
    "LD_HWCAP_MASK",
    "LD_ORIGIN_PATH",
    "LD_POINTER_GUARD",
    "LD_PREFER_MAP_32BIT_EXEC",
    "LD_PROFILE",
    "LD_PROFILE_OUTPUT",
    "LD_SHOW_AUXV",
    "LD_TRACE_LOADED_OBJECTS",
    "LD_TRACE_PRELINKING",
    "LD_USE_LOAD_BIAS",
    "LD_VERBOSE",
    "LD_WARN",
    "GLIBC_TUNABLES",
    // glibc.
    "MALLOC_CHECK_",
    "MALLOC_PERTURB_",
    "MALLOC_ARENA_MAX",
    "MALLOC_TRACE",
    "LANG",
    "LC_ALL",
    "LOCPATH",
    "NLSPATH",
    "GCONV_PATH",
    "LOCALDOMAIN",
    "RES_OPTIONS",
    "HOSTALIASES",
    "TZ",
    "TZDIR",
    "POSIXLY_CORRECT",
];

/// The value a tenant gives `name` in phase `phase`: hostile where the host
/// would notice (a remote Podman at the test's listener, a PATH without
/// podman, a missing containers.conf, ld.so tracing instead of running …),
/// and otherwise text with `=`, spaces and shell syntax, to arrive verbatim.
fn value(name: &str, phase: &str, listener: &str) -> String {
    match name {
        "CONTAINER_HOST" | "DOCKER_HOST" => format!("tcp://{listener}"),
        "PATH" => format!("/{phase}/tenant/bin"),
        "LD_TRACE_LOADED_OBJECTS" | "LD_SHOW_AUXV" | "LD_BIND_NOW" => "1".into(),
        "LD_PRELOAD" | "LD_AUDIT" => format!("/{phase}/tenant/evil.so"),
        "CONTAINERS_CONF" | "CONTAINERS_STORAGE_CONF" => format!("/{phase}/tenant/nope.conf"),
        _ => format!(" {phase} {name}=a==b $(id) `x` 'q' \"d\" # not a comment "),
    }
}

fn tenant_env(phase: &str, listener: &str) -> BTreeMap<String, String> {
    HOST_READ
        .iter()
        .map(|n| ((*n).to_owned(), value(n, phase, listener)))
        .collect()
}

/// Every `NAME=VALUE` of `env` is a line of `printed` (busybox `env`).
fn assert_arrived(what: &str, printed: &str, env: &BTreeMap<String, String>) {
    let lines: Vec<&str> = printed.lines().collect();
    for (k, v) in env {
        let want = format!("{k}={v}");
        assert!(
            lines.contains(&want.as_str()),
            "{what}: {want:?} did not arrive exactly; the container saw:\n{printed}"
        );
    }
}

async fn ask(ws: &mut Ws, id: &str, body: Body) -> Body {
    send(ws, &Envelope::request(id.to_owned(), body).encode()).await;
    wait_for(ws, |e| e.request_id.as_deref() == Some(id))
        .await
        .body
}

#[test]
fn tenant_env_reaches_only_the_container_for_create_exec_and_background() {
    support::ensure_image();
    // The listener a tenant's CONTAINER_HOST names: nothing may dial it.
    let canary = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    canary.set_nonblocking(true).unwrap();
    let canary_addr = canary.local_addr().unwrap().to_string();
    smol::block_on(within(240, "tenant env over the socket", async {
        let (listener, port) = listen().await;
        let data = scratch_dir("tenant-env");
        let mut agent = smol::process::Command::new(env!("CARGO_BIN_EXE_crops-agent"))
            .args(["run", "--url", &format!("ws://127.0.0.1:{port}/v1/agent")])
            .args(["--credential", "crops_wkr_test", "--name", "env-worker"])
            .arg("--data-dir")
            .arg(&data)
            .env("CROPS_CONFIG", "/nonexistent/crops/worker.json")
            .env("CONTAINERS_CONF", support::containers_conf())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let (mut ws, _) = accept_ws(&listener).await;
        register_and_accept(&mut ws, 10).await;

        let id = support::unique("tenant-env");
        let _cleanup = Cleanup(id.clone());
        let create_env = tenant_env("create", &canary_addr);
        let create = ContainerCreate {
            container_id: id.clone(),
            tenant_id: support::unique("env-tenant"),
            name: id.clone(),
            image: support::IMAGE.into(),
            env: create_env.clone(),
            labels: BTreeMap::new(),
            // By absolute path: the tenant's PATH is the container's.
            command: Some(vec!["/bin/sleep".into(), "600".into()]),
            workspace: false,
            profile: Profile::Standard,
            allowed_domains: Vec::new(),
        };
        let reply = ask(&mut ws, "c-1", Body::ContainerCreate(create)).await;
        assert!(matches!(reply, Body::ContainerCreated(_)), "{reply:?}");
        let container = ContainerRef {
            container_id: id.clone(),
        };
        let reply = ask(&mut ws, "s-1", Body::ContainerStart(container)).await;
        assert!(matches!(reply, Body::ContainerStarted(_)), "{reply:?}");

        let exec = |env: BTreeMap<String, String>| Exec {
            container_id: id.clone(),
            command: vec!["/usr/bin/env".into()],
            env,
            workdir: None,
            timeout_secs: Some(60),
        };
        // The create's env is the container's own.
        let reply = ask(&mut ws, "e-1", Body::Exec(exec(BTreeMap::new()))).await;
        let Body::ExecDone(done) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(done.exit_code, Some(0), "{done:?}");
        assert_arrived("create", &done.stdout, &create_env);

        // An exec's env, over it.
        let exec_env = tenant_env("exec", &canary_addr);
        let reply = ask(&mut ws, "e-2", Body::Exec(exec(exec_env.clone()))).await;
        let Body::ExecDone(done) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(done.exit_code, Some(0), "{done:?}");
        assert_arrived("exec", &done.stdout, &exec_env);

        // A background exec's env.
        let bg_env = tenant_env("background", &canary_addr);
        let background = ExecBackground {
            container_id: id.clone(),
            command: vec!["/usr/bin/env".into()],
            env: bg_env.clone(),
            workdir: None,
        };
        let reply = ask(&mut ws, "b-1", Body::ExecBackground(background)).await;
        let Body::BackgroundStarted(started) = reply else {
            panic!("{reply:?}")
        };
        let mut output = String::new();
        let mut offset = 0;
        for n in 0.. {
            let capture = BackgroundCapture {
                container_id: id.clone(),
                handle: started.handle.clone(),
                offset,
            };
            let reply = ask(&mut ws, &format!("k-{n}"), Body::BackgroundCapture(capture)).await;
            let Body::BackgroundOutput(out) = reply else {
                panic!("{reply:?}")
            };
            output.push_str(&out.output);
            offset = out.next_offset;
            if !out.running {
                assert_eq!(out.exit_code, Some(0), "{output}");
                break;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        assert_arrived("background", &output, &bg_env);

        // A line break cannot travel in an env file: refused, named, not altered.
        let mut bad = BTreeMap::new();
        bad.insert("PEM".to_owned(), "-----BEGIN\nKEY-----".to_owned());
        let reply = ask(&mut ws, "e-3", Body::Exec(exec(bad))).await;
        let Body::Error(e) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
        assert!(e.message.contains("PEM"), "{}", e.message);

        // Every command answered: had any tenant variable reached a podman
        // process, it would have dialled the canary (CONTAINER_HOST) or
        // failed. The connection would be in the listen backlog by now.
        match canary.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a tenant's CONTAINER_HOST was dialled from the host: {other:?}"),
        }
        let _ = agent.kill();
        let _ = agent.status().await;
        let _ = std::fs::remove_dir_all(data);
    }));
}

/// Removes the test's container by its crops.container-id label, even on failure.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for id in support::engine_ids_labelled(&self.0) {
            support::podman(&["rm", "--force", "-t", "0", "--", &id], false);
        }
    }
}
