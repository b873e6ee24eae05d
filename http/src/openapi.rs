//! The OpenAPI 3.1 document of kite's HTTP API (`GET /api/openapi.json`), generated from
//! the code: every route is registered with `utoipa_axum::routes!` from its handler's
//! `#[utoipa::path]`, so a route and its documentation are one declaration, and the request
//! and answer schemas are derived from the types the handlers read and write.

use std::sync::Arc;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, PartialSchema, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{api, hooks, s2s, stream, AppState};

/// The document's frame: what kite is, how callers authenticate, the tags. The operations
/// come from the routes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "kite",
        description = "kite, a webhook federation relay: provider and peer webhooks in, \
            every matching peer out, exactly once per instance. Admin routes take a team's \
            API key (`Authorization: Bearer kite_...`); the teams routes the operator key. \
            Every error answers `{\"error\":{\"code\",\"message\"}}` with a stable code."
    ),
    modifiers(&Security),
    security(("api_key" = [])),
    tags(
        (name = "hooks", description = "Webhooks in: providers and peers"),
        (name = "stream", description = "The live event stream `kite listen` reads"),
        (name = "peers", description = "Where a team's events go"),
        (name = "federation", description = "Trust: tokens, senders, identity, policy, invitations"),
        (name = "server-to-server", description = "Signed calls between handshake peers"),
        (name = "events", description = "Stored events, the outbox and every event's story"),
        (name = "sources", description = "Signed provider sources"),
        (name = "keys", description = "API keys"),
        (name = "teams", description = "Teams, for the operator"),
        (name = "operational", description = "kite's own events about a team's peers, deliveries and identity, sent to the team's operational endpoint"),
        (name = "operations", description = "Health and this document"),
    )
)]
struct ApiDoc;

/// The security schemes the operations name.
struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut OpenApi) {
        let bearer = |what: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(what))
                    .build(),
            )
        };
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "api_key",
            bearer("A team's API key (`kite_...`): read, write or admin."),
        );
        c.add_security_scheme(
            "operator_key",
            bearer("The instance's operator key (KITE_OPERATOR_KEY)."),
        );
    }
}

/// Every route kite's HTTP listener serves, each with its operation.
pub(crate) fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(<ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(crate::health))
        .routes(routes!(crate::metrics_text))
        .routes(routes!(crate::openapi_json))
        .routes(routes!(crate::ui::page))
        .routes(routes!(crate::ui::script))
        .routes(routes!(crate::ui::style))
        .routes(routes!(hooks::receive))
        .routes(routes!(stream::ws))
        .routes(routes!(s2s::descriptor))
        .routes(routes!(s2s::accept))
        .routes(routes!(s2s::heartbeat))
        .routes(routes!(s2s::keys_query))
        .routes(routes!(s2s::backfill))
        .merge(api::routes())
}

/// Completes the generated document: every operation answers errors in the one documented
/// form (a `default` response with [`kite_wire::ErrorBody`]), and the version is kite's.
pub(crate) fn finish(mut api: OpenApi) -> String {
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    let error: RefOr<Response> = ResponseBuilder::new()
        .description("An error: `{\"error\":{\"code\",\"message\"}}` with a stable code")
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    kite_wire::ErrorBody::name(),
                ))))
                .build(),
        )
        .into();
    for item in api.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            op.responses
                .responses
                .entry("default".to_string())
                .or_insert_with(|| error.clone());
        }
    }
    // A hook takes an empty body too (a form post or bytes with nothing in them: stored as
    // empty `data_base64`); saying so also keeps client generators from typing the hook's
    // several bodies wrongly.
    if let Some(body) = api
        .paths
        .paths
        .get_mut("/hooks/{team}/{source}")
        .and_then(|item| item.post.as_mut())
        .and_then(|op| op.request_body.as_mut())
    {
        body.required = Some(utoipa::openapi::Required::False);
    }
    let c = api.components.get_or_insert_with(Default::default);
    let mut schemas = vec![(
        kite_wire::ErrorBody::name().to_string(),
        kite_wire::ErrorBody::schema(),
    )];
    kite_wire::ErrorBody::schemas(&mut schemas);
    for (name, schema) in schemas {
        c.schemas.entry(name).or_insert(schema);
    }
    serde_json::to_string(&api).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    #[test]
    fn the_document_is_openapi_3_1_with_every_schema_it_names() {
        let doc: Value =
            serde_json::from_str(&super::finish(super::routes().into_openapi())).expect("JSON");
        assert!(doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        // Every `$ref` points at a schema the document holds.
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "{name} is named but missing");
        }
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                assert!(
                    op["responses"]["default"].is_object(),
                    "{method} {path} has no error answer"
                );
            }
        }
    }

    #[test]
    fn every_operation_has_its_own_id() {
        let doc: Value =
            serde_json::from_str(&super::finish(super::routes().into_openapi())).expect("JSON");
        let mut seen = std::collections::HashMap::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                let id = op["operationId"]
                    .as_str()
                    .expect("an operationId")
                    .to_string();
                if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                    panic!("{id} names both {other} and {method} {path}");
                }
            }
        }
    }
}
