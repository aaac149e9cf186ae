//! The served OpenAPI document: well-formed, and true to the handlers.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(the_openapi_document_is_valid_and_matches_the_handlers);

/// Every `$ref` in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_owned());
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// Checks `body` against a component schema's required properties, recursively through refs.
fn conforms(doc: &Value, schema: &Value, body: &Value, path: &str) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
        None => schema,
    };
    if let Some(required) = schema["required"].as_array() {
        for key in required {
            let key = key.as_str().unwrap();
            assert!(
                body.get(key).is_some(),
                "{path}: missing required {key:?} in {body}"
            );
        }
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (key, value) in body.as_object().into_iter().flatten() {
            assert!(
                properties.contains_key(key),
                "{path}: undocumented field {key:?} in {body}"
            );
            if value.is_object() {
                conforms(doc, &properties[key], value, &format!("{path}.{key}"));
            }
        }
    }
}

fn documented(doc: &Value, path: &str, method: &str, status: u16) -> Value {
    let responses = &doc["paths"][path][method]["responses"];
    let response = &responses[status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which is not documented"
    );
    response["content"]["application/json"]["schema"].clone()
}

async fn the_openapi_document_is_valid_and_matches_the_handlers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        // A small limit, so an oversized body still fits the socket buffers and the client
        // reads the 413 instead of a reset while it is still writing.
        env.insert("MAX_BODY_BYTES".into(), "4096".into());
    })
    .await;
    let school = app.seed_school(2).await;
    let doc: Value = app
        .client
        .get(format!("{}/api/openapi.json", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["device_key"]["scheme"],
        "bearer"
    );
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("local schema refs only");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }

    // Every documented operation exists with that method (nothing answers 404 or 405).
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/api/attendance/scan"));
    assert!(paths.contains_key("/api/attendance/scans/batch"));
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let request = app.client.request(
                method.to_uppercase().parse().unwrap(),
                format!("{}{path}", app.address),
            );
            let status = request.send().await.unwrap().status().as_u16();
            assert!(status != 404 && status != 405, "{method} {path}: {status}");
            documented(&doc, path, method, status);
        }
    }

    // The scan endpoint's real answers are documented, bodies included.
    app.open_session(&school).await;
    let today = app.today();
    let key = school.device_key.as_str();
    let student = |i: usize| school.students[i].parse::<i64>().unwrap();
    let cases: Vec<(Option<&str>, String)> = vec![
        (Some(key), json!({"student_id": student(0), "date": today, "time": "08:00:00"}).to_string()),
        (Some(key), json!({"student_id": student(0), "date": today, "time": "08:00:00"}).to_string()),
        (Some(key), json!({"student_id": 987654, "date": today, "time": "08:00:00"}).to_string()),
        (Some(key), json!({"student_id": school.outsider.parse::<i64>().unwrap(), "date": today, "time": "08:00:00"}).to_string()),
        (Some(key), json!({"student_id": student(1), "date": "2001-01-01", "time": "08:00:00"}).to_string()),
        (Some(key), json!({"student_id": student(1), "date": today, "time": "08:00:00", "extra": 1}).to_string()),
        (Some(key), "{oops".to_owned()),
        (None, json!({"student_id": student(1), "date": today, "time": "08:00:00"}).to_string()),
        (Some(&school.admin), json!({"student_id": student(1), "date": today, "time": "08:00:00"}).to_string()),
        (Some(key), format!("{{\"pad\": \"{}\"}}", "x".repeat(16 * 1024))),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (token, body) in cases {
        let (status, answer) = app.rest_scan(token, &body).await;
        seen.insert(status);
        let schema = documented(&doc, "/api/attendance/scan", "post", status);
        conforms(&doc, &schema, &answer, &format!("scan {status}"));
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [201, 400, 401, 403, 404, 409, 413, 422]
    );

    let batch = json!([{"student_id": student(2), "date": today, "time": "08:00:00"}, {"student_id": 1, "date": "bad"}]);
    let (status, answer) = app.scan_batch(key, &batch).await;
    let schema = documented(&doc, "/api/attendance/scans/batch", "post", status);
    conforms(&doc, &schema, &answer, "batch");
    for item in answer["results"].as_array().unwrap() {
        conforms(
            &doc,
            &json!({"$ref": "#/components/schemas/BatchItem"}),
            item,
            "batch item",
        );
    }
}
