//! systemd's readiness protocol (`sd_notify`): a datagram such as `READY=1` sent to the unix
//! socket named by `NOTIFY_SOCKET`. A path, or an abstract name written with a leading `@`.
//! Without `NOTIFY_SOCKET` (not started by systemd with `Type=notify`) it does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `"READY=1"`) to systemd if it asked for notifications.
/// Returns `Ok(false)` when `NOTIFY_SOCKET` is unset.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        send_abstract(&socket, name, state)?;
    } else {
        socket.send_to(state.as_bytes(), &target)?;
    }
    Ok(true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_socket: &UnixDatagram, _name: &str, _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets exist only on Linux",
    ))
}

/// Sends `state` and logs (without failing) if systemd cannot be told.
pub fn notify_logged(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(state, "notified systemd"),
        Ok(false) => {}
        Err(error) => tracing::warn!(state, %error, "cannot notify systemd"),
    }
}

#[cfg(test)]
mod tests {
    // The environment is process-wide, so one test covers both socket forms in sequence.
    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(super::notify("READY=1").expect("send"));
        let mut buffer = [0u8; 64];
        let n = receiver.recv(&mut buffer).expect("recv");
        assert_eq!(&buffer[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("raftlockd-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .expect("abstract name");
            let receiver = std::os::unix::net::UnixDatagram::bind_addr(&addr).expect("bind");
            std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
            assert!(super::notify("STOPPING=1").expect("send"));
            let n = receiver.recv(&mut buffer).expect("recv");
            assert_eq!(&buffer[..n], b"STOPPING=1");
        }

        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!super::notify("READY=1").expect("no socket is not an error"));
    }
}
