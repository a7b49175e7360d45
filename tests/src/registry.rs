//! Debian's `docker-registry` on loopback: storage in a temporary folder, no
//! auth, plain HTTP on a port picked at run time. What the packaging tests
//! push the images to and pull them back from.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::paths::packaging_tool;
use crate::process::Supervised;
use crate::wait::eventually;
use crate::{free_port, http_client};

/// A registry, stopped when dropped.
pub struct Registry {
    addr: SocketAddr,
    _process: Supervised,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts it; ready once its API answers.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let addr = free_port()?;
        let config = format!(
            "version: 0.1\nlog: {{ level: warn }}\nstorage:\n  filesystem: {{ rootdirectory: {:?} }}\nhttp: {{ addr: \"{addr}\" }}\n",
            dir.path().join("storage").display().to_string()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new(packaging_tool("docker-registry"));
        command.arg("serve").arg(&config_path);
        let process = Supervised::spawn("registry", command, &dir.path().join("registry.log"))?;
        let url = format!("http://{addr}/v2/");
        let ready = eventually("the registry's API", Duration::from_secs(20), || async {
            let response = http_client().get(&url).send().await.ok()?;
            response.status().is_success().then_some(())
        })
        .await;
        if let Err(err) = ready {
            process.print_log();
            return Err(err);
        }
        Ok(Self {
            addr,
            _process: process,
            _dir: dir,
        })
    }

    /// `host:port`, as image references name it.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
