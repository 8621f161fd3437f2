//! Strict patterns for every user-supplied value that reaches a Podman argv:
//! names, ids, image references, label and env keys, paths, git URLs and refs.
//!
//! Both sides check: the orchestrator to answer a bad request with a clear
//! 400 before anything is sent, the agent because it trusts no peer. Every
//! pattern refuses a leading `-`, so no value can be read as an option.

use crate::error::Invalid;

fn alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn bounded(field: &'static str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > max {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {max} bytes long"),
        ));
    }
    Ok(())
}

/// Container name: `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}` (Podman's, bounded).
pub fn container_name(s: &str) -> Result<(), Invalid> {
    bounded("name", s, 63)?;
    let b = s.as_bytes();
    if !alnum(b[0]) || !b.iter().all(|&c| alnum(c) || b"_.-".contains(&c)) {
        return Err(Invalid::new(
            "name",
            format!("{s:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ));
    }
    Ok(())
}

/// An id of ours (container, tenant, worker): `[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}`.
pub fn id(field: &'static str, s: &str) -> Result<(), Invalid> {
    bounded(field, s, 64)?;
    let b = s.as_bytes();
    if !alnum(b[0]) || !b.iter().all(|&c| alnum(c) || c == b'_' || c == b'-') {
        return Err(Invalid::new(
            field,
            format!("{s:?} must match [a-zA-Z0-9][a-zA-Z0-9_-]*"),
        ));
    }
    Ok(())
}

/// An image reference: `[domain[:port]/]path[:tag][@sha256:hex]`, where path
/// components are lower-case `[a-z0-9]+([._-][a-z0-9]+)*`.
pub fn image_ref(s: &str) -> Result<(), Invalid> {
    const F: &str = "image";
    bounded(F, s, 255)?;
    let bad = |why: &str| {
        Err(Invalid::new(
            F,
            format!("{s:?} is not an image reference: {why}"),
        ))
    };
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        let hex = d.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        {
            return bad("digest must be sha256:<64 lower-case hex>");
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let tb = t.as_bytes();
        if t.is_empty()
            || t.len() > 128
            || !(alnum(tb[0]) || tb[0] == b'_')
            || !tb.iter().all(|&c| alnum(c) || b"_.-".contains(&c))
        {
            return bad("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let domain = parts.remove(0);
        let (host, port) = domain.split_once(':').unwrap_or((domain, ""));
        let hb = host.as_bytes();
        if hb.is_empty() || !alnum(hb[0]) || !hb.iter().all(|&c| alnum(c) || c == b'.' || c == b'-')
        {
            return bad("bad registry host");
        }
        if !port.is_empty() && (port.len() > 5 || !port.bytes().all(|c| c.is_ascii_digit())) {
            return bad("bad registry port");
        }
    }
    for p in parts {
        if !path_component(p) {
            return bad("path components must be lower-case [a-z0-9]+([._-][a-z0-9]+)*");
        }
    }
    Ok(())
}

fn path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let lower = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !lower(b[0]) || !lower(b[b.len() - 1]) {
        return false;
    }
    let mut prev_sep = false;
    for &c in b {
        let sep = b"._-".contains(&c);
        if !(lower(c) || sep) || (sep && prev_sep && c != b'_') {
            return false;
        }
        prev_sep = sep;
    }
    true
}

/// A label key: `[a-zA-Z0-9][a-zA-Z0-9_./-]{0,127}`.
pub fn label_key(s: &str) -> Result<(), Invalid> {
    bounded("labels", s, 128)?;
    let b = s.as_bytes();
    if !alnum(b[0]) || !b.iter().all(|&c| alnum(c) || b"_./-".contains(&c)) {
        return Err(Invalid::new(
            "labels",
            format!("key {s:?} must match [a-zA-Z0-9][a-zA-Z0-9_./-]*"),
        ));
    }
    Ok(())
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]{0,127}`.
pub fn env_key(s: &str) -> Result<(), Invalid> {
    bounded("env", s, 128)?;
    let b = s.as_bytes();
    if !(b[0].is_ascii_alphabetic() || b[0] == b'_') || !b.iter().all(|&c| alnum(c) || c == b'_') {
        return Err(Invalid::new(
            "env",
            format!("name {s:?} must match [A-Za-z_][A-Za-z0-9_]*"),
        ));
    }
    Ok(())
}

/// A value that travels in argv (label or env value, command argument):
/// no NUL byte, at most `max` bytes.
pub fn argv_value(field: &'static str, s: &str, max: usize) -> Result<(), Invalid> {
    if s.len() > max {
        return Err(Invalid::new(field, format!("longer than {max} bytes")));
    }
    if s.contains('\0') {
        return Err(Invalid::new(field, "must not contain a NUL byte"));
    }
    Ok(())
}

/// A command line: 1 to 256 arguments, no NUL, at most 128 KiB in all.
pub fn command(field: &'static str, argv: &[String]) -> Result<(), Invalid> {
    if argv.is_empty() || argv.len() > 256 {
        return Err(Invalid::new(field, "must have 1 to 256 arguments"));
    }
    if argv[0].is_empty() {
        return Err(Invalid::new(field, "the program must not be empty"));
    }
    let total: usize = argv.iter().map(String::len).sum();
    if total > 128 * 1024 {
        return Err(Invalid::new(field, "longer than 128 KiB in all"));
    }
    argv.iter()
        .try_for_each(|a| argv_value(field, a, 128 * 1024))
}

/// A path relative to the workspace: no leading `/`, no `.` or `..`
/// components, no NUL, at most 4096 bytes.
pub fn relative_path(field: &'static str, s: &str) -> Result<(), Invalid> {
    bounded(field, s, 4096)?;
    if s.starts_with('/') || s.contains('\0') {
        return Err(Invalid::new(
            field,
            format!("{s:?} must be a relative path"),
        ));
    }
    if s.split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.len() > 255)
    {
        return Err(Invalid::new(
            field,
            format!("{s:?} must not contain empty, . or .. components"),
        ));
    }
    Ok(())
}

/// An absolute path inside a container (workdir): `/` then a relative path.
pub fn absolute_path(field: &'static str, s: &str) -> Result<(), Invalid> {
    match s.strip_prefix('/') {
        Some("") => Ok(()),
        Some(rest) => relative_path(field, rest.trim_end_matches('/')),
        None => Err(Invalid::new(
            field,
            format!("{s:?} must be an absolute path"),
        )),
    }
}

/// A git repository URL: `https://host/path`, no credentials, no whitespace.
pub fn git_url(s: &str) -> Result<(), Invalid> {
    const F: &str = "repository.url";
    bounded(F, s, 2048)?;
    let Some(rest) = s.strip_prefix("https://") else {
        return Err(Invalid::new(F, "must start with https://"));
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err(Invalid::new(
            F,
            "must name a host and carry no credentials (use token)",
        ));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Invalid::new(
            F,
            "must not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// A git branch or tag: `[A-Za-z0-9._/-]`, not starting with `-`, no `..`.
pub fn git_ref(s: &str) -> Result<(), Invalid> {
    const F: &str = "repository.branch";
    bounded(F, s, 255)?;
    let b = s.as_bytes();
    if b[0] == b'-'
        || s.contains("..")
        || s.ends_with(".lock")
        || s.ends_with('/')
        || !b.iter().all(|&c| alnum(c) || b"._/-".contains(&c))
    {
        return Err(Invalid::new(
            F,
            format!("{s:?} is not a plain branch or tag name"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "task-1", "A.b_c", &"x".repeat(63)] {
            assert!(container_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "--privileged",
            "-x",
            "a b",
            "a;rm",
            "a/b",
            &"x".repeat(64),
            "é",
        ] {
            assert!(container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn images() {
        for ok in [
            "busybox",
            "localhost/crops-test/busybox:latest",
            "docker.io/library/alpine:3.20",
            "registry.example.com:5000/team/app_x:v1.2-rc",
            "alpine@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(image_ref(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "--privileged",
            "Busybox",
            "busybox:",
            "a b",
            "busybox;reboot",
            "busybox:-x",
            "alpine@sha256:xyz",
            "/abs",
            "a//b",
        ] {
            assert!(image_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_paths_and_git() {
        assert!(label_key("crops.tenant").is_ok());
        assert!(label_key("-x").is_err());
        assert!(env_key("PATH").is_ok() && env_key("_X1").is_ok());
        assert!(env_key("1X").is_err() && env_key("A=B").is_err() && env_key("--rm").is_err());
        assert!(relative_path("p", "src/main.rs").is_ok());
        for bad in ["/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a\0b"] {
            assert!(relative_path("p", bad).is_err(), "{bad}");
        }
        assert!(absolute_path("w", "/workspace").is_ok() && absolute_path("w", "/").is_ok());
        assert!(absolute_path("w", "workspace").is_err() && absolute_path("w", "/a/../b").is_err());
        assert!(git_url("https://git.example.com/a/b.git").is_ok());
        for bad in [
            "http://x/y",
            "https://user:pw@x/y",
            "ext::sh -c x",
            "https://x/a b",
            "-u",
        ] {
            assert!(git_url(bad).is_err(), "{bad}");
        }
        assert!(git_ref("main").is_ok() && git_ref("feature/x-1").is_ok());
        for bad in ["-b", "--upload-pack=x", "a..b", "a b", "x.lock"] {
            assert!(git_ref(bad).is_err(), "{bad}");
        }
        assert!(command(
            "c",
            &["sh".into(), "-c".into(), "echo $(id); rm -rf /".into()]
        )
        .is_ok());
        assert!(command("c", &[]).is_err() && command("c", &["a\0".into()]).is_err());
    }
}
