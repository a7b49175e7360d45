//! A real Prometheus on loopback that scrapes `weir`'s `/metrics` every
//! second, with the shipped alert rules (`deploy/prometheus/weir-rules.yaml`)
//! loaded, and answers PromQL through its HTTP API.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::paths::{packaging_tool, repo_root};
use crate::process::Supervised;
use crate::wait::eventually;
use crate::{free_port, http_client};

/// Prometheus, stopped when dropped.
pub struct Prometheus {
    addr: SocketAddr,
    process: Supervised,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (weir's admin address) as job
    /// `weir`; ready once it has scraped it.
    pub async fn scraping(target: SocketAddr) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let rules = repo_root().join("deploy/prometheus/weir-rules.yaml");
        let config = format!(
            "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
             rule_files: [{rules:?}]\n\
             scrape_configs:\n  - job_name: weir\n    static_configs: [{{ targets: [\"{target}\"] }}]\n",
            rules = rules.display().to_string()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let addr = free_port()?;
        let mut command = Command::new(packaging_tool("prometheus"));
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let process = Supervised::spawn("prometheus", command, &dir.path().join("prometheus.log"))?;
        let prometheus = Self {
            addr,
            process,
            _dir: dir,
        };
        let scraped = eventually(
            "Prometheus to scrape weir",
            Duration::from_secs(30),
            || async {
                let up = prometheus.query(r#"up{job="weir"}"#).await.ok()?;
                (up.first()?["value"][1] == "1").then_some(())
            },
        )
        .await;
        if let Err(err) = scraped {
            prometheus.process.print_log();
            return Err(err);
        }
        Ok(prometheus)
    }

    /// The result vector of an instant query; an error if it does not parse
    /// or fails.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let url = format!("http://{}/api/v1/query", self.addr);
        let url = reqwest::Url::parse_with_params(&url, &[("query", expr)])?;
        let answer: Value = http_client().get(url).send().await?.json().await?;
        anyhow::ensure!(answer["status"] == "success", "{expr}: {answer}");
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The rules Prometheus loaded, as `GET /api/v1/rules` lists them.
    pub async fn rules(&self) -> anyhow::Result<Value> {
        let url = format!("http://{}/api/v1/rules", self.addr);
        Ok(http_client().get(url).send().await?.json().await?)
    }

    /// Its log, for a failing test.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
