//! The MCP server: one handler, whatever the transport, over the same
//! [`AppState`] as the GraphQL API.

use rmcp::ServerHandler;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{Implementation, ServerCapabilities, ServerConfig};
use rmcp::tool_handler;

use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::ApiError;

/// What the server tells a client about itself when it connects.
const INSTRUCTIONS: &str = "taskrunner queues AI tasks (a prompt for a model) in PostgreSQL \
    and runs them on background workers. Create a task with `create_task` (see `list_models` \
    for the models), then `wait_for_task` for its answer, or check on it with `get_task`. \
    Errors come back as tool results with a `code` (BAD_USER_INPUT, NOT_FOUND, CONFLICT, \
    SERVICE_UNAVAILABLE, ...) and a `message`.";

/// The MCP server's handler. Cheap to clone: the streamable HTTP transport
/// makes one per request, from a prototype whose tool list (and the JSON
/// Schemas in it) was built once.
#[derive(Clone)]
pub struct TaskRunnerMcp {
    pub(super) state: AppState,
    /// Who a call acts as when its HTTP request carries no principal (the
    /// authentication layer of `/mcp` puts one there): the `--tenant` of
    /// stdio, or the operator when tokens are off. `None`: such a call is
    /// refused UNAUTHENTICATED.
    fallback: Option<Principal>,
    tool_router: ToolRouter<Self>,
}

impl TaskRunnerMcp {
    /// A handler serving `state`, whose calls act as `fallback` unless their
    /// HTTP request names a principal.
    pub fn new(state: AppState, fallback: Option<Principal>) -> Self {
        TaskRunnerMcp {
            state,
            fallback,
            tool_router: Self::tool_router(),
        }
    }

    /// Who the call `request` acts as.
    pub(super) fn principal(
        &self,
        request: &RequestContext<RoleServer>,
    ) -> Result<Principal, ApiError> {
        request
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .or(self.fallback.as_ref())
            .cloned()
            .ok_or(ApiError::Unauthenticated("a bearer token is required"))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for TaskRunnerMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("taskrunner", env!("CARGO_PKG_VERSION"))
                    .with_title("taskrunner: an async AI task runner"),
            )
            .with_instructions(INSTRUCTIONS)
    }
}
