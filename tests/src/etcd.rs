//! Real etcd on loopback: one member, or a cluster of several, each on client
//! and peer ports picked at run time with its data in a temporary folder.
//! A member can be stopped (SIGKILL) and started again on the same data, for
//! the failure tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::free_port;
use crate::paths::etcd_binary;
use crate::process::Supervised;
use crate::wait::eventually;

/// How long a member may take to say it is healthy.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// An etcd cluster owned by a test; every member is killed on drop.
pub struct Etcd {
    members: Vec<Member>,
    token: String,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    process: Option<Supervised>,
}

impl Etcd {
    /// One member, ready.
    pub async fn start() -> anyhow::Result<Self> {
        Self::cluster(1).await
    }

    /// `size` members forming one cluster, all ready.
    pub async fn cluster(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("weir-etcd-").tempdir()?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client: free_port()?,
                peer: free_port()?,
                process: None,
            });
        }
        let token = format!(
            "weir-test-{}",
            dir.path().file_name().map_or_else(
                || "cluster".into(),
                |name| name.to_string_lossy().into_owned()
            )
        );
        let mut etcd = Self {
            members,
            token,
            dir,
        };
        for i in 0..size {
            etcd.spawn(i, "new")?;
        }
        for i in 0..size {
            etcd.wait_healthy(i).await?;
        }
        Ok(etcd)
    }

    /// The client endpoints, `127.0.0.1:port` each.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.members.iter().map(|m| m.client).collect()
    }

    /// `weir serve --store`'s value for this cluster.
    pub fn store_url(&self) -> String {
        let hosts: Vec<String> = self.endpoints().iter().map(ToString::to_string).collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// Kills member `i` (SIGKILL): its data stays for [`Etcd::restart`].
    pub fn kill(&mut self, i: usize) {
        if let Some(member) = self.members.get_mut(i) {
            member.process = None;
        }
    }

    /// Starts member `i` again on its data, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i, "existing")?;
        self.wait_healthy(i).await
    }

    fn spawn(&mut self, i: usize, state: &str) -> anyhow::Result<()> {
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect();
        let initial_cluster = initial_cluster.join(",");
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("log");
        let member = self
            .members
            .get_mut(i)
            .ok_or_else(|| anyhow::anyhow!("no etcd member {i}"))?;
        let data_dir: PathBuf = data.join(&member.name);
        let mut command = Command::new(etcd_binary());
        command
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg(format!("--listen-client-urls=http://{}", member.client))
            .arg(format!("--advertise-client-urls=http://{}", member.client))
            .arg(format!("--listen-peer-urls=http://{}", member.peer))
            .arg(format!(
                "--initial-advertise-peer-urls=http://{}",
                member.peer
            ))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr");
        std::fs::create_dir_all(&log)?;
        let log_path = log.join(format!("{}.log", member.name));
        member.process = Some(Supervised::spawn(
            &format!("etcd {}", member.name),
            command,
            &log_path,
        )?);
        Ok(())
    }

    async fn wait_healthy(&mut self, i: usize) -> anyhow::Result<()> {
        let member = self
            .members
            .get_mut(i)
            .ok_or_else(|| anyhow::anyhow!("no etcd member {i}"))?;
        let url = format!("http://{}/health", member.client);
        let client = crate::http_client();
        let result = eventually(
            &format!("etcd {} to be healthy", member.name),
            READY_DEADLINE,
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let body = client.get(&url).send().await.ok()?.text().await.ok()?;
                    body.contains("\"health\":\"true\"").then_some(())
                }
            },
        )
        .await;
        if result.is_err()
            && let Some(process) = &member.process
        {
            process.print_log();
        }
        result
    }
}
