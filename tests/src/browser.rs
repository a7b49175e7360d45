//! Headless Chromium driven through ChromeDriver (the W3C WebDriver protocol,
//! JSON over HTTP): Debian's `chromium` and `chromium-driver`, which
//! `scripts/setup.sh browser` installs.
//!
//! Chromium runs with the flags this kind of machine needs (no sandbox as
//! root, no GPU, no background connections to a network that is closed) and
//! a fresh profile in a temporary folder. [`Browser`] quits it when dropped.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::process::Supervised;
use crate::wait::eventually;

/// Debian's Chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long ChromeDriver and Chromium may take to start.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium with one WebDriver session.
pub struct Browser {
    http: reqwest::Client,
    driver_addr: SocketAddr,
    session: String,
    profile: tempfile::TempDir,
    // Dropped last: ChromeDriver is stopped after the session is closed.
    driver: Supervised,
}

/// An element of the page, as WebDriver refers to it.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts ChromeDriver on a free loopback port and a headless Chromium
    /// session. Fails, saying how to install them, when they are missing.
    pub async fn start() -> anyhow::Result<Self> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            anyhow::ensure!(
                Path::new(binary).exists(),
                "{binary} is missing: the dashboard's browser test needs Debian's chromium and \
                 chromium-driver; run `scripts/setup.sh browser` (`make test` runs it)"
            );
        }
        let profile = tempfile::Builder::new()
            .prefix("weir-chromium-")
            .tempdir()?;
        let log = profile.path().join("chromedriver.log");
        let mut command = Command::new(CHROMEDRIVER);
        command.args(["--port=0", "--allowed-ips=127.0.0.1"]);
        let mut driver = Supervised::spawn("chromedriver", command, &log)?;
        let port = eventually("ChromeDriver to listen", STARTUP_DEADLINE, || {
            let found = match driver.exited() {
                Some(status) => Some(Err(anyhow::anyhow!("chromedriver exited: {status}"))),
                None => started_port(&driver.log()).map(Ok),
            };
            async move { found }
        })
        .await??;
        let driver_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let http = crate::http_client();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ]
            }
        }}});
        let response = http
            .post(format!("http://{driver_addr}/session"))
            .json(&capabilities)
            .timeout(STARTUP_DEADLINE)
            .send()
            .await?;
        let body: Value = response.json().await?;
        let Some(session) = body["value"]["sessionId"].as_str() else {
            driver.print_log();
            anyhow::bail!("ChromeDriver started no Chromium session: {body}");
        };
        Ok(Self {
            http,
            driver_addr,
            session: session.to_owned(),
            profile,
            driver,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let url = format!("http://{}/session/{}{path}", self.driver_addr, self.session);
        let mut request = self.http.request(method.clone(), url);
        if method != reqwest::Method::GET {
            request = request.json(&body);
        }
        let response = request.timeout(Duration::from_secs(30)).send().await?;
        let ok = response.status().is_success();
        let body: Value = response.json().await?;
        if !ok {
            anyhow::bail!(
                "WebDriver {path}: {}: {}",
                body["value"]["error"].as_str().unwrap_or("error"),
                body["value"]["message"].as_str().unwrap_or_default()
            );
        }
        Ok(body["value"].clone())
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", json!({"url": url}))
            .await
            .map(drop)
    }

    /// The page's title.
    pub async fn title(&self) -> anyhow::Result<String> {
        let title = self
            .command(reqwest::Method::GET, "/title", Value::Null)
            .await?;
        Ok(title.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching the CSS selector.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await?;
        found[ELEMENT]
            .as_str()
            .map(|id| Element(id.to_owned()))
            .ok_or_else(|| anyhow::anyhow!("no element id for {css}: {found}"))
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) -> anyhow::Result<()> {
        let path = format!("/element/{}/click", element.0);
        self.command(reqwest::Method::POST, &path, json!({}))
            .await
            .map(drop)
    }

    /// Empties an input or a text area.
    pub async fn clear(&self, element: &Element) -> anyhow::Result<()> {
        let path = format!("/element/{}/clear", element.0);
        self.command(reqwest::Method::POST, &path, json!({}))
            .await
            .map(drop)
    }

    /// Types `text` into `element`, as a user would (a new line is Enter).
    pub async fn type_text(&self, element: &Element, text: &str) -> anyhow::Result<()> {
        let path = format!("/element/{}/value", element.0);
        self.command(reqwest::Method::POST, &path, json!({"text": text}))
            .await
            .map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page
    /// and returns what it returns.
    pub async fn execute(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Polls `script` until it returns something other than `null`, or fails
    /// after `deadline`.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        script: &str,
    ) -> anyhow::Result<Value> {
        eventually(what, deadline, || async move {
            self.execute(script, json!([]))
                .await
                .ok()
                .filter(|value| !value.is_null())
        })
        .await
    }

    /// ChromeDriver's log, for a failing test to print.
    pub fn log(&self) -> String {
        self.driver.log()
    }
}

/// The port of ChromeDriver's "started successfully on port N" line.
fn started_port(log: &str) -> Option<u16> {
    let (_, rest) = log.split_once("started successfully on port ")?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session quits Chromium; drop cannot wait on the async
        // client, so this one request is written by hand.
        let request = format!(
            "DELETE /session/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.session, self.driver_addr
        );
        if let Ok(mut stream) =
            TcpStream::connect_timeout(&self.driver_addr, Duration::from_secs(2))
        {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            if stream.write_all(request.as_bytes()).is_ok() {
                let mut answer = Vec::new();
                let _ = stream.read_to_end(&mut answer);
            }
        }
        // Whatever Chromium left behind is known by its profile folder.
        kill_processes_using(self.profile.path());
    }
}

/// Kills the processes whose command line names `dir` (this browser's own
/// profile folder, which no other process uses).
fn kill_processes_using(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_chromedriver_s_log() {
        let log = "Starting ChromeDriver 156.0 on port 0\nOnly local connections are allowed.\n\
                   ChromeDriver was started successfully on port 42361.\n";
        assert_eq!(started_port(log), Some(42_361));
        assert_eq!(started_port("Starting ChromeDriver"), None);
    }
}
