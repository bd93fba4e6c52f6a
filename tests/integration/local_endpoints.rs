//! Local-only endpoints: the daemon's only TCP socket is the configured API
//! address; the control socket (autobackup timer), the mail auth socket and
//! the test-hooks socket are unix sockets with the documented owner and mode
//! that a user who is not root cannot connect to.

use crate::support::{Daemon, can_connect_as, gid_of, report};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The inodes of the sockets `pid` holds open.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// `0100007F:13BA` (tcp) or 32 hex digits and a port (tcp6): the kernel
/// prints each 32-bit word of the address in host byte order.
fn parse_address(field: &str) -> SocketAddr {
    let (ip, port) = field.split_once(':').unwrap();
    let port = u16::from_str_radix(port, 16).unwrap();
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).unwrap())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap())),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())),
    };
    SocketAddr::new(ip, port)
}

/// (local address, state) of each socket of `table` (tcp, tcp6, udp,
/// udp6) among `inodes`.
fn inet_sockets(pid: u32, table: &str, inodes: &BTreeSet<u64>) -> Vec<(SocketAddr, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/net/{table}"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            let inode: u64 = fields[9].parse().ok()?;
            inodes
                .contains(&inode)
                .then(|| (parse_address(fields[1]), fields[3].to_owned()))
        })
        .collect()
}

/// The paths the unix sockets among `inodes` that listen were bound at.
fn listening_unix_sockets(pid: u32, inodes: &BTreeSet<u64>) -> Vec<String> {
    const LISTENING: u32 = 0x10000; // __SO_ACCEPTCON
    std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<_> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields[3], 16).ok()?;
            let inode: u64 = fields[6].parse().ok()?;
            (inodes.contains(&inode) && flags & LISTENING != 0)
                .then(|| fields.get(7).unwrap_or(&"").to_string())
        })
        .collect()
}

fn assert_socket(path: &Path, mode: u32, gid: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(
        meta.file_type().is_socket(),
        "{} is a socket",
        path.display()
    );
    assert_eq!(meta.mode() & 0o7777, mode, "mode of {}", path.display());
    assert_eq!(meta.uid(), 0, "owner of {}", path.display());
    assert_eq!(meta.gid(), gid, "group of {}", path.display());
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    assert_eq!(
        parent.mode() & 0o002,
        0,
        "the directory of {} is not world-writable",
        path.display()
    );
}

#[tokio::test]
async fn the_api_port_is_the_only_network_socket_and_local_sockets_keep_others_out() {
    // Others may traverse the directory: only each socket's own mode and
    // owner stand in the way.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let control: PathBuf = dir.path().join("control.sock");
    let mail = dir.path().join("mail").join("mail-auth.sock");
    let daemon = Daemon::start_with_config(&format!(
        "rebuild_debounce_ms = 600000\ncontrol_socket = {control:?}\nmail_auth_socket = {mail:?}\nmail_auth_group = \"nogroup\"\n",
    ))
    .await;
    std::fs::set_permissions(
        daemon.state_dir.path(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let hooks = daemon.hooks_socket();
    let pid = daemon.child.as_ref().unwrap().id();
    let api: SocketAddr = daemon
        .base
        .strip_prefix("http://")
        .unwrap()
        .parse()
        .unwrap();

    // An open connection to the API, so that it is among the sockets seen.
    let client = reqwest::Client::new();
    let answer = client
        .get(format!("{}/api/version", daemon.base))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());

    let inodes = socket_inodes(pid);
    let mut tcp = inet_sockets(pid, "tcp", &inodes);
    tcp.extend(inet_sockets(pid, "tcp6", &inodes));
    let listening: Vec<_> = tcp
        .iter()
        .filter(|(_, state)| state == "0A")
        .map(|(address, _)| *address)
        .collect();
    assert_eq!(
        listening,
        [api],
        "the daemon listens on TCP only at the API address"
    );
    for (address, state) in &tcp {
        assert_eq!(
            *address, api,
            "every TCP socket of the daemon is the API's (state {state})"
        );
    }
    let mut udp = inet_sockets(pid, "udp", &inodes);
    udp.extend(inet_sockets(pid, "udp6", &inodes));
    assert!(udp.is_empty(), "no UDP sockets: {udp:?}");

    // Three listening unix sockets. The control and mail sockets are bound
    // in a private staging directory beside their paths (`.<name>-<pid>.tmp`)
    // and renamed into place, and the kernel keeps the path they were
    // bound at.
    let unix = listening_unix_sockets(pid, &inodes);
    assert_eq!(unix.len(), 3, "listening unix sockets: {unix:?}");
    assert!(unix.contains(&hooks.display().to_string()), "{unix:?}");
    for staged_for in [&control, &mail] {
        let prefix = format!(".{}-", staged_for.file_name().unwrap().to_string_lossy());
        assert!(
            unix.iter().any(|p| {
                let staging = Path::new(p).parent();
                staging.and_then(Path::parent) == staged_for.parent()
                    && staging
                        .and_then(Path::file_name)
                        .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
            }),
            "{} not among {unix:?}",
            staged_for.display()
        );
    }

    let nogroup = gid_of("nogroup");
    assert_socket(&control, 0o600, 0);
    assert_socket(&hooks, 0o600, 0);
    assert_socket(&mail, 0o660, nogroup);
    let mail_dir = std::fs::metadata(mail.parent().unwrap()).unwrap();
    assert_eq!(mail_dir.mode() & 0o7777, 0o750);

    // Root gets in everywhere; nobody (uid 65534) nowhere, except the mail
    // server's group into its own socket.
    let mut refused = 0;
    for socket in [&control, &hooks, &mail] {
        assert!(can_connect_as(socket, 0, 0), "root connects to {socket:?}");
        for gid in [4242, 65534] {
            let allowed = socket == &mail && gid == nogroup;
            assert_eq!(
                can_connect_as(socket, 65534, gid),
                allowed,
                "uid 65534 gid {gid} to {}",
                socket.display()
            );
            refused += usize::from(!allowed);
        }
    }
    report(format!(
        "local endpoints: TCP sockets {} (listening {}: {api}), UDP 0, listening unix sockets {}, \
         connections as a user who is not root refused {refused}",
        tcp.len(),
        listening.len(),
        unix.len()
    ));
}
