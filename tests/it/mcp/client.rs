//! rmcp's own client, over streamable HTTP or over the stdio of a real
//! `taskrunner mcp`, recording the progress notifications it receives.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation,
    ProgressNotificationParam,
};
use rmcp::service::{NotificationContext, RunningService, ServiceError};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::process::Launch;
use crate::temp_dir::TempDir;

/// What the client keeps of the server's notifications.
#[derive(Clone, Default)]
pub struct Recorder {
    progress: Arc<Mutex<Vec<ProgressNotificationParam>>>,
}

impl Recorder {
    /// Every progress notification received so far.
    pub fn progress(&self) -> Vec<ProgressNotificationParam> {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ClientHandler for Recorder {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(params);
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("taskrunner-tests", "0"),
        )
    }
}

/// A connected client.
pub struct Client {
    pub service: RunningService<RoleClient, Recorder>,
    pub recorder: Recorder,
    /// The `taskrunner mcp` child's stderr lines and working directory, for a
    /// client over stdio.
    stderr: Arc<Mutex<Vec<String>>>,
    _workdir: Option<TempDir>,
}

impl Client {
    /// A client of the MCP endpoint at `url` (`http://…/mcp`).
    pub async fn http(url: &str) -> Client {
        let recorder = Recorder::default();
        let service = recorder
            .clone()
            .serve(StreamableHttpClientTransport::from_uri(url))
            .await
            .expect("the MCP handshake over HTTP succeeds");
        Client {
            service,
            recorder,
            stderr: Arc::default(),
            _workdir: None,
        }
    }

    /// A client of `taskrunner mcp` started with `launch`, over its stdio.
    pub async fn stdio(launch: Launch) -> Client {
        let (command, workdir) = launch.into_command();
        let (transport, stderr) = TokioChildProcess::builder(command)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start taskrunner mcp");
        let lines = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = stderr {
            let lines = Arc::clone(&lines);
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let recorder = Recorder::default();
        let service = match recorder.clone().serve(transport).await {
            Ok(service) => service,
            Err(error) => panic!(
                "the MCP handshake over stdio failed: {error}; its log:\n{}",
                lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
            ),
        };
        Client {
            service,
            recorder,
            stderr: lines,
            _workdir: Some(workdir),
        }
    }

    /// What the child logged on stderr so far (stdio clients only).
    pub fn log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Calls `tool` with `arguments` (a JSON object); a protocol error is
    /// returned as such.
    pub async fn try_call(
        &self,
        tool: &str,
        arguments: Value,
    ) -> Result<CallToolResult, ServiceError> {
        let Value::Object(arguments) = arguments else {
            panic!("tool arguments are an object: {arguments}");
        };
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        self.service.call_tool(params).await
    }

    /// Calls `tool`, which must answer without a protocol error.
    pub async fn call(&self, tool: &str, arguments: Value) -> CallToolResult {
        match self.try_call(tool, arguments).await {
            Ok(result) => result,
            Err(error) => panic!("{tool} failed: {error}; log:\n{}", self.log()),
        }
    }

    /// Calls `tool`, which must succeed; returns its structured content,
    /// after checking the text content says the same.
    pub async fn ok(&self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments).await;
        assert_eq!(result.is_error, Some(false), "{tool}: {result:?}");
        structured(&result)
    }

    /// Calls `tool`, which must fail as a tool error; returns its structured
    /// content (`{code, message, field?}`).
    pub async fn tool_error(&self, tool: &str, arguments: Value) -> Value {
        let result = self.call(tool, arguments).await;
        assert_eq!(result.is_error, Some(true), "{tool}: {result:?}");
        structured(&result)
    }
}

/// A result's structured content, checked against its text rendering.
pub fn structured(result: &CallToolResult) -> Value {
    let content = result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("structured content in {result:?}"));
    let text = result
        .content
        .first()
        .and_then(|block| block.as_text())
        .unwrap_or_else(|| panic!("a text block in {result:?}"));
    let rendered: Value = serde_json::from_str(&text.text).expect("the text is JSON");
    assert_eq!(rendered, content, "the text says what the structure does");
    content
}
