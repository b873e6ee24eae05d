//! A network namespace of a test's own, linked to this one by a veth pair: processes run in
//! it reach this side only through the link, which the test cuts and heals (a partition).
//! Made with Debian's `ip` (iproute2); removed, with its link, when dropped.

use crate::cmd::{self, CommandError};

/// Why the namespace could not be made or changed: `ip` failed.
pub type NetnsError = CommandError;

/// A namespace and its link: `host_ip` on this side, `ns_ip` inside.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME ...`).
    pub name: String,
    host_if: String,
    /// This side's address on the link (what a process inside reaches this side at).
    pub host_ip: String,
    /// The address inside.
    pub ns_ip: String,
}

async fn ip(args: &[&str]) -> Result<(), NetnsError> {
    cmd::run(tokio::process::Command::new("ip").args(args)).await
}

impl Netns {
    /// Makes a namespace with its loopback up and a /30 link to this side, in
    /// 10.231.0.0/16 (one subnet a namespace, chosen from its id).
    pub async fn create() -> Result<Self, NetnsError> {
        let n = cmd::unique() % 16_000;
        let name = format!("kitens{n}");
        let host_if = format!("kh{n}");
        let ns_if = format!("kn{n}");
        // Subnet n of 10.231.0.0/16, 4 addresses each: .1 this side, .2 inside.
        let base = n * 4;
        let addr = |k: u64| format!("10.231.{}.{}", (base + k) / 256, (base + k) % 256);
        // Made only once the name is ours: dropping it deletes the namespace, and a name
        // another test holds must not be deleted.
        ip(&["netns", "add", &name]).await?;
        let me = Self {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip: addr(1),
            ns_ip: addr(2),
        };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])
        .await?;
        ip(&["link", "set", &ns_if, "netns", &name]).await?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", me.host_ip),
            "dev",
            &host_if,
        ])
        .await?;
        ip(&["link", "set", &host_if, "up"]).await?;
        let inside = format!("{}/30", me.ns_ip);
        for args in [
            &["addr", "add", &inside, "dev", &ns_if][..],
            &["link", "set", &ns_if, "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["netns", "exec", name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all).await?;
        }
        Ok(me)
    }

    /// Cuts the link: nothing crosses it until [`Netns::heal`] (packets are dropped, as on a
    /// partition; connections are not reset).
    pub async fn cut(&self) -> Result<(), NetnsError> {
        ip(&["link", "set", &self.host_if, "down"]).await
    }

    /// Restores the link.
    pub async fn heal(&self) -> Result<(), NetnsError> {
        ip(&["link", "set", &self.host_if, "up"]).await
    }

    /// A script that runs `program` inside the namespace with its arguments (for a caller
    /// that starts a program by path, such as `KiteProcess`); written to `path`.
    pub fn wrapper(
        &self,
        program: &std::path::Path,
        path: &std::path::Path,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            path,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
                self.name,
                program.display()
            ),
        )?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the link, and so the link.
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", &self.host_if])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
