//! Starting `latchfree serve` as a real process and connecting rmcp clients
//! to it over stdio (the child's stdin/stdout) and Streamable HTTP.

#![allow(dead_code)] // Each test file uses a part.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::ServiceExt as _;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::task::JoinHandle;

/// A running client session.
pub type Client = RunningService<RoleClient, ()>;

/// A `latchfree serve` child process.
pub struct Server {
    pub child: Child,
    /// `Some` unless started with `--no-stdio` or taken by a stdio client.
    pub stdin: Option<ChildStdin>,
    pub stdout: Option<ChildStdout>,
    /// `127.0.0.1:PORT`; empty with `--no-http`.
    pub addr: String,
    /// The rest of stderr, collected until the process closes it.
    pub stderr: JoinHandle<String>,
}

impl Server {
    /// Starts `latchfree serve --bind 127.0.0.1:0 --audit-dir DIR ARGS..`
    /// (no `--bind` of its own when ARGS have one) and waits for its address
    /// line on stderr.
    pub async fn start(audit_dir: &Path, args: &[&str]) -> Server {
        Self::start_with_env(Some(audit_dir), args, &[]).await
    }

    /// [`Server::start`] with extra environment variables; without
    /// `--audit-dir` when `audit_dir` is `None`.
    pub async fn start_with_env(
        audit_dir: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let bind: &[&str] = if args.contains(&"--bind") {
            &[]
        } else {
            &["--bind", "127.0.0.1:0"]
        };
        let mut full = bind.to_vec();
        if let Some(dir) = audit_dir {
            full.push("--audit-dir");
            full.push(dir.to_str().expect("a UTF-8 temporary path"));
        }
        full.extend_from_slice(args);
        let mut child = spawn(&full, env);
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let addr = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                seen.push_str(&line);
                seen.push('\n');
                if let Some(rest) = line.split("MCP on http://").nth(1) {
                    return rest.split('/').next().unwrap().to_owned();
                }
                if line.contains("MCP on stdio (HTTP off)") {
                    return String::new();
                }
            }
            panic!("server exited before printing its address; stderr:\n{seen}");
        })
        .await
        .expect("server address line");
        let stderr = tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        });
        Server {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            child,
            addr,
            stderr,
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// An rmcp client over the child's stdin/stdout (one MCP session).
    pub async fn stdio_client(&mut self) -> Client {
        let transport = (self.stdout.take().unwrap(), self.stdin.take().unwrap());
        ().serve(transport).await.expect("stdio client initialize")
    }

    /// A new rmcp client session over Streamable HTTP.
    pub async fn http_client(&self) -> Client {
        let transport = StreamableHttpClientTransport::from_uri(self.mcp_url());
        ().serve(transport).await.expect("http client initialize")
    }

    /// A new rmcp client session over Streamable HTTP with a bearer token.
    pub async fn http_client_with_token(&self, token: &str) -> Client {
        let config =
            StreamableHttpClientTransportConfig::with_uri(self.mcp_url()).auth_header(token);
        let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
        ().serve(transport).await.expect("http client initialize")
    }

    /// Sends SIGTERM to the server.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the server is running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .expect("GET /metrics");
        assert!(response.status().is_success());
        response.text().await.unwrap()
    }

    /// Waits (bounded) for the process to exit; returns its success and stderr.
    pub async fn wait(mut self) -> (bool, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("server exits within 60 s of shutdown")
            .unwrap();
        let stderr = self.stderr.await.unwrap();
        (status.success(), stderr)
    }
}

/// Calls a tool with JSON arguments.
pub async fn call(
    client: &Client,
    tool: &str,
    args: serde_json::Value,
) -> Result<CallToolResult, ServiceError> {
    let serde_json::Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await
}

/// The text of a successful tool result, parsed as JSON.
pub fn json_of(result: &CallToolResult) -> serde_json::Value {
    assert_eq!(result.is_error, Some(false), "tool error: {result:?}");
    let text = result.content[0].as_text().expect("text content");
    serde_json::from_str(&text.text).expect("tool text is JSON")
}

/// The value of an unlabelled sample `name` in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name} is not a scalar"),
        })
}

/// Runs `latchfree serve ARGS..` with `env` until it exits (bounded; it must
/// refuse to start); returns its success and stderr.
pub async fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let child = spawn(args, env);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the server refuses to start within 30 s")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns `latchfree serve ARGS..` with piped stdio, `LATCHFREE_TOKEN` unset
/// unless `env` sets it.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_latchfree"))
        .arg("serve")
        .args(args)
        .env_remove("LATCHFREE_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn latchfree serve")
}
