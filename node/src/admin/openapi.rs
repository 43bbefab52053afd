//! The admin API as an OpenAPI 3 document, generated from the handlers' annotations and
//! the request and response types (utoipa), served at `GET /v1/openapi.json`. CI fuzzes a
//! live node against it with schemathesis.
//!
//! The structs here describe answers the handlers build as JSON objects in place; the
//! schemathesis run checks that the two agree.

#![allow(dead_code)]

use actix_web::HttpResponse;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, ToSchema};

use super::views::KeyView;

/// Every error: a stable code, a message, and for validation failures each broken field.
#[derive(ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

#[derive(ToSchema)]
pub(crate) struct ErrorDetail {
    code: String,
    message: String,
    details: Option<Vec<FieldProblem>>,
}

#[derive(ToSchema)]
pub(crate) struct FieldProblem {
    field: String,
    reason: String,
}

#[derive(ToSchema)]
pub(crate) struct KeyPage {
    keys: Vec<KeyView>,
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct Deleted {
    id: String,
    deleted: bool,
}

#[derive(ToSchema)]
pub(crate) struct Health {
    status: String,
    node_id: u64,
}

#[derive(ToSchema)]
pub(crate) struct Ready {
    ready: bool,
    stale: bool,
    leader_contact_ms: Option<u64>,
    node_id: u64,
    leader_id: Option<u64>,
    last_applied: Option<u64>,
    last_log_index: Option<u64>,
}

#[derive(ToSchema)]
pub(crate) struct RequestsByClass {
    #[schema(rename = "1xx")]
    c1: u64,
    #[schema(rename = "2xx")]
    c2: u64,
    #[schema(rename = "3xx")]
    c3: u64,
    #[schema(rename = "4xx")]
    c4: u64,
    #[schema(rename = "5xx")]
    c5: u64,
}

#[derive(ToSchema)]
pub(crate) struct Usage {
    key_id: String,
    requests: RequestsByClass,
    total: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    /// AI route traffic by `provider/model`.
    models: std::collections::BTreeMap<String, ModelUsageView>,
    /// Items of personal data masked in prompts, by kind.
    pii_masked: std::collections::BTreeMap<String, u64>,
    last_used_at: Option<String>,
    updated_at: Option<String>,
}

/// Usage summed over a tenant's keys, or a provider's traffic over every key (a provider's
/// totals have no request counts or masked data: those belong to keys).
#[derive(ToSchema)]
pub(crate) struct GroupUsage {
    tenant: Option<String>,
    provider: Option<String>,
    /// Keys counted.
    keys: u64,
    requests: Option<RequestsByClass>,
    total: Option<u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    models: std::collections::BTreeMap<String, ModelUsageView>,
    pii_masked: Option<std::collections::BTreeMap<String, u64>>,
}

#[derive(ToSchema)]
pub(crate) struct ModelUsageView {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
}

#[derive(ToSchema)]
pub(crate) struct AuditEntry {
    seq: u64,
    at: String,
    actor: String,
    action: String,
    target: String,
    outcome: String,
    /// More about it when there is more, such as counts of masked personal data.
    details: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntry>,
    next_before: Option<u64>,
}

#[derive(ToSchema)]
pub(crate) struct Settings {
    stale_policy: String,
    updated_at: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct MemberAdded {
    id: u64,
    peer_addr: String,
    voter: bool,
    log_index: u64,
}

#[derive(ToSchema)]
pub(crate) struct MemberRemoved {
    id: u64,
    removed: bool,
    log_index: u64,
}

#[derive(ToSchema)]
pub(crate) struct RouteList {
    routes: Vec<super::routes::RouteView>,
}

#[derive(ToSchema)]
pub(crate) struct TenantList {
    tenants: Vec<super::limits::TenantView>,
}

#[derive(ToSchema)]
pub(crate) struct KeyLimits {
    id: String,
    limits: Vec<super::limits::LimitView>,
}

#[derive(ToSchema)]
pub(crate) struct RevocationList {
    revocations: Vec<super::revocations::RevocationView>,
}

#[derive(ToSchema)]
pub(crate) struct AdminTokenList {
    admin_tokens: Vec<super::admin_tokens::TokenView>,
}

/// Declares bearer authentication for every operation.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Gives every string `{id}` path segment the form the API accepts (`validate::id`), so
/// that clients and generated tests learn it from the document rather than from a 400.
struct IdPathParameters;

impl Modify for IdPathParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let parameters = operation.parameters.iter_mut().flatten();
                for parameter in parameters.filter(|p| is_string_path_id(p)) {
                    parameter.schema = Some(RefOr::T(Schema::Object(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .min_length(Some(1))
                            .max_length(Some(cluster::validate::MAX_ID_LEN))
                            .pattern(Some(cluster::validate::ID_PATTERN))
                            .build(),
                    )));
                }
            }
        }
    }
}

fn is_string_path_id(parameter: &Parameter) -> bool {
    parameter.name == "id"
        && parameter.parameter_in == ParameterIn::Path
        && matches!(
            &parameter.schema,
            Some(RefOr::T(Schema::Object(object))) if object.schema_type == SchemaType::Type(Type::String)
        )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "credentialflow admin API", description = "Cluster administration of a credentialflow gateway."),
    security(("bearer" = [])),
    modifiers(&BearerAuth, &IdPathParameters),
    components(schemas(super::Consistency)),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::cluster::show,
        super::settings::show,
        super::settings::replace,
        super::keys::create,
        super::keys::list,
        super::keys::get,
        super::limits::patch_key,
        super::keys::delete,
        super::keys::rotate,
        super::keys::revoke,
        super::activity::usage,
        super::activity::tenant_usage,
        super::activity::provider_usage,
        super::limits::key_limits,
        super::activity::audit,
        super::routes::list,
        super::routes::get,
        super::routes::put,
        super::routes::delete,
        super::limits::list_tenants,
        super::limits::get_tenant,
        super::limits::put_tenant,
        super::limits::delete_tenant,
        super::revocations::revoke,
        super::revocations::list,
        super::admin_tokens::create,
        super::admin_tokens::list,
        super::admin_tokens::revoke,
        super::providers::list,
        super::providers::get,
        super::providers::put,
        super::providers::delete,
        super::cluster::add_member,
        super::cluster::remove_member,
    )
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`: the document (no credential needed; it holds no secret).
pub async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn id_parameter(document: &Value, path: &str, method: &str) -> Value {
        document["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|parameters| parameters.iter().find(|p| p["name"] == "id"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    #[test]
    fn string_path_ids_carry_the_accepted_form_and_node_ids_stay_integers() {
        let document = serde_json::to_value(ApiDoc::openapi()).expect("document as JSON");
        for (path, method) in [
            ("/v1/keys/{id}", "get"),
            ("/v1/routes/{id}", "put"),
            ("/v1/tenants/{id}", "delete"),
        ] {
            let schema = &id_parameter(&document, path, method)["schema"];
            assert_eq!(
                schema["pattern"],
                cluster::validate::ID_PATTERN,
                "{method} {path}"
            );
            assert_eq!(
                schema["maxLength"],
                cluster::validate::MAX_ID_LEN,
                "{method} {path}"
            );
        }
        let node_id = &id_parameter(&document, "/v1/cluster/members/{id}", "delete")["schema"];
        assert_eq!(node_id["type"], "integer");
        assert!(node_id.get("pattern").is_none());
    }

    #[test]
    fn the_id_pattern_accepts_what_the_id_check_accepts() {
        let pattern = regex::Regex::new(cluster::validate::ID_PATTERN).expect("pattern compiles");
        for candidate in [
            "key_1Bz3", "a", "A-b_c.d", "-x", "_", "9", ".hidden", "a/b", "a b", "", "é", "a.", "x\n",
        ] {
            assert_eq!(
                pattern.is_match(candidate),
                cluster::validate::id("id", candidate).is_ok(),
                "{candidate:?}"
            );
        }
    }
}
