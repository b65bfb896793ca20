//! The tool registry: every [`ModelTool`] the assistant can offer, by name,
//! in the order they are offered; and [`Offered`], the tools offered to one
//! request with their specs, which the agent loop calls by name. Nowhere
//! else is a tool chosen by its name.

use std::sync::Arc;

use quarry_llm::ToolSpec;

use super::ModelTool;
use crate::caller::AskCaller;

/// The tools the assistant can offer, in registration order (the order the
/// model sees them in).
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn ModelTool>>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.tools.iter().map(|t| t.name()))
            .finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `tool`; one with the same name is replaced in its place.
    pub fn register(&mut self, tool: Arc<dyn ModelTool>) {
        match self.tools.iter_mut().find(|t| t.name() == tool.name()) {
            Some(slot) => *slot = tool,
            None => self.tools.push(tool),
        }
    }

    /// The registry with `tool` added (see [`Self::register`]).
    #[must_use]
    pub fn with(mut self, tool: Arc<dyn ModelTool>) -> Self {
        self.register(tool);
        self
    }

    /// The names of the registered tools, in order.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    /// The tools that can serve `caller` now, each with its spec, in
    /// registration order: those whose [`ModelTool::scope`] the caller's
    /// grant holds and that give a spec. Specs are asked for all at once.
    pub async fn offer(&self, caller: &AskCaller) -> Offered {
        // each tool's spec may read its service (ListCollections, …): all at
        // once, kept in registration order
        let specs = futures::future::join_all(self.tools.iter().map(|tool| async move {
            if tool
                .scope()
                .is_some_and(|scope| !caller.caller.grant.has_scope(scope))
            {
                return None;
            }
            let spec = tool.spec(caller).await?;
            Some((Arc::clone(tool), spec))
        }))
        .await;
        Offered {
            tools: specs.into_iter().flatten().collect(),
        }
    }
}

/// The tools offered to one request, with their specs.
#[derive(Clone, Default)]
pub struct Offered {
    tools: Vec<(Arc<dyn ModelTool>, ToolSpec)>,
}

impl std::fmt::Debug for Offered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Offered {
    /// The specs, for the model's requests.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|(_, spec)| spec.clone()).collect()
    }

    /// The names offered, in order.
    pub fn names(&self) -> Vec<&str> {
        self.tools
            .iter()
            .map(|(_, spec)| spec.name.as_str())
            .collect()
    }

    /// The offered tool the model calls `name`; `None` when no tool of that
    /// name was offered (unknown, or unavailable for this caller).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ModelTool>> {
        self.tools
            .iter()
            .find(|(_, spec)| spec.name == name)
            .map(|(tool, _)| tool)
    }

    /// The offered tools' guidance for the system prompt, in order.
    pub fn guidance(&self) -> String {
        self.tools
            .iter()
            .filter_map(|(tool, _)| tool.guidance())
            .collect()
    }

    /// A call of `name`, which was not offered, refused: the message (for
    /// the client and the model) naming the tools offered.
    pub fn refusal(&self, name: &str) -> String {
        format!(
            "tool {name:?} is not offered; the tools offered are: {}",
            self.names().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use futures::future::BoxFuture;
    use quarry_auth::{Caller, Principal};
    use quarry_llm::ToolCall;

    use super::*;
    use crate::tools::{ToolContext, ToolOutcome};

    /// A tool offered only when `available`.
    struct Fake {
        name: &'static str,
        available: bool,
        note: &'static str,
        scope: Option<&'static str>,
    }

    impl ModelTool for Fake {
        fn name(&self) -> &str {
            self.name
        }

        fn scope(&self) -> Option<&'static str> {
            self.scope
        }

        fn spec<'a>(&'a self, _caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
            Box::pin(async move {
                self.available.then(|| ToolSpec {
                    name: self.name.to_string(),
                    description: self.note.to_string(),
                    parameters: serde_json::json!({"type": "object"}),
                })
            })
        }

        fn guidance(&self) -> Option<String> {
            Some(format!("{}\n", self.note))
        }

        fn call<'a>(
            &'a self,
            call: &'a ToolCall,
            _cx: ToolContext<'a>,
        ) -> BoxFuture<'a, ToolOutcome> {
            Box::pin(async move { ToolOutcome::failed(&call.id, self.note) })
        }
    }

    fn fake(name: &'static str, available: bool, note: &'static str) -> Arc<dyn ModelTool> {
        Arc::new(Fake {
            name,
            available,
            note,
            scope: None,
        })
    }

    fn caller() -> AskCaller {
        AskCaller {
            caller: Caller::new(Principal {
                tenant: "acme".to_owned(),
                subject: "alice".to_owned(),
                roles: vec![],
                scopes: vec![],
            }),
            authorization: None,
            verified: None,
            dependencies: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_tool_is_offered_only_to_a_caller_with_its_scope() {
        let scoped = Arc::new(Fake {
            name: "query_database",
            available: true,
            note: "sql",
            scope: Some(quarry_auth::scopes::SQL_QUERY),
        });
        let registry = ToolRegistry::new()
            .with(fake("open", true, "open"))
            .with(scoped);
        // Caller::new holds a grant that allows nothing
        let offered = registry.offer(&caller()).await;
        assert_eq!(offered.names(), ["open"]);
        assert!(offered.get("query_database").is_none());
        let operator = AskCaller {
            caller: Caller::operator(caller().caller.principal),
            authorization: None,
            verified: None,
            dependencies: Default::default(),
        };
        let offered = registry.offer(&operator).await;
        assert_eq!(offered.names(), ["open", "query_database"]);
    }

    #[tokio::test]
    async fn only_available_tools_are_offered_and_found_by_name() {
        let registry = ToolRegistry::new()
            .with(fake("a", true, "first"))
            .with(fake("b", false, "never"))
            .with(fake("c", true, "third"));
        assert_eq!(registry.names(), ["a", "b", "c"]);
        let offered = registry.offer(&caller()).await;
        assert_eq!(offered.names(), ["a", "c"]);
        assert_eq!(offered.specs().len(), 2);
        assert_eq!(offered.guidance(), "first\nthird\n");
        assert!(offered.get("c").is_some());
        assert!(offered.get("b").is_none(), "registered but unavailable");
        assert!(offered.get("zzz").is_none());
        assert_eq!(
            offered.refusal("b"),
            "tool \"b\" is not offered; the tools offered are: a, c"
        );
    }

    #[tokio::test]
    async fn a_tool_registered_again_replaces_the_first_in_its_place() {
        let registry = ToolRegistry::new()
            .with(fake("a", true, "old"))
            .with(fake("b", true, "b"))
            .with(fake("a", true, "new"));
        assert_eq!(registry.names(), ["a", "b"]);
        let offered = registry.offer(&caller()).await;
        assert_eq!(offered.guidance(), "new\nb\n");
    }
}
