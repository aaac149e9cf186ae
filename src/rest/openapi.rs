//! The OpenAPI 3.1 description of the device endpoints, derived from the handlers'
//! `#[utoipa::path]` attributes and the bodies they read and write, and served at
//! `GET /api/openapi.json`.

use axum::Json;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::body::{
    BatchAnswer, BatchBody, BatchItem, HealthBody, ItemStatus, RecordJson, ScanBody,
};
use crate::error::{ErrorBody, ErrorDetail};

struct DeviceKey;

impl Modify for DeviceKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "device_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("attdev_<64 hex digits>")
                    .description(Some(
                        "The device's API key, issued once by registerDevice or rotateDeviceKey",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Attendance device API",
        description = "The REST endpoints face-recognition terminals use. People use GraphQL at /graphql."
    ),
    paths(super::scan, super::scan_batch, super::health, super::ready),
    components(schemas(ScanBody, BatchBody, BatchAnswer, BatchItem, ItemStatus, RecordJson, ErrorBody, ErrorDetail, HealthBody)),
    modifiers(&DeviceKey),
    tags((name = "devices", description = "Scans from terminals"), (name = "operations", description = "Health checks"))
)]
pub struct ApiDoc;

/// `GET /api/openapi.json`.
pub async fn openapi_json() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
