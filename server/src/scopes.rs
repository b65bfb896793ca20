//! Which scope each Quarry RPC needs ([`rpc_scope`]), for
//! [`quarry_auth::PolicyLayer`].

use quarry_auth::scopes;

/// The scope `path` (`/quarry.v1.Service/Method`) needs, or `None` for a
/// path not listed here, which the policy layer refuses: an RPC added to a
/// proto without an entry here is unreachable until someone decides who may
/// call it (default deny). Health and reflection never reach this table.
pub fn rpc_scope(path: &str) -> Option<&'static str> {
    Some(match path {
        "/quarry.v1.AssistantService/Ask"
        | "/quarry.v1.AssistantService/ListConversations"
        | "/quarry.v1.AssistantService/GetConversation"
        | "/quarry.v1.AssistantService/DeleteConversation" => scopes::ASK,
        "/quarry.v1.SqlService/ValidateSql"
        | "/quarry.v1.SqlService/ExecuteSql"
        | "/quarry.v1.SqlService/GenerateSql" => scopes::SQL_QUERY,
        "/quarry.v1.SqlService/ExplainSql" => scopes::SQL_EXPLAIN,
        "/quarry.v1.SqlService/DescribeSchema" => scopes::SCHEMA_READ,
        "/quarry.v1.SqlService/AddGoldenPair" => scopes::GOLDEN_WRITE,
        "/quarry.v1.SqlService/ListAuditEntries" => scopes::AUDIT_READ,
        "/quarry.v1.UsageService/GetUsage" => scopes::USAGE_READ,
        "/quarry.v1.SearchService/Search" | "/quarry.v1.SearchService/ListCollections" => {
            scopes::SEARCH
        }
        "/quarry.v1.SummaryService/GetSummaries"
        | "/quarry.v1.SummaryService/SearchSummaries"
        | "/quarry.v1.SummaryService/ListSummaryKinds" => scopes::SUMMARIES,
        "/quarry.v1.SummaryService/BuildSummaries" => scopes::SUMMARIES_BUILD,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::rpc_scope;

    /// Every RPC of every Quarry service has a scope: the test that fails
    /// when an RPC is added to a proto without deciding who may call it.
    #[test]
    fn every_rpc_has_a_scope() {
        let set = FileDescriptorSet::decode(quarry_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut count = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(rpc_scope(&path).is_some(), "{path} has no scope");
                    count += 1;
                }
            }
        }
        assert!(count >= 18, "only {count} RPCs found");
        assert_eq!(rpc_scope("/quarry.v1.SqlService/DropTable"), None);
    }
}
