//! Hostile input and abuse: query limits, batches, body sizes, introspection, CSRF, login
//! abuse, tokens, deactivation, leaks and panics.

use serde_json::{Value, json};

use crate::both_databases;
use crate::common::*;

both_databases!(
    deep_and_complex_queries_are_rejected_before_execution,
    json_array_batches_are_refused,
    oversized_graphql_bodies_get_413_before_parsing,
    introspection_is_for_admins_and_suggestions_are_off,
    mutations_need_a_json_post,
    aliases_and_separate_requests_count_against_the_login_limit,
    failures_from_one_address_lock_it_across_usernames,
    tokens_in_the_query_string_are_ignored,
    deactivating_an_account_takes_effect_on_its_next_request,
    error_bodies_never_leak_internals,
);

const SESSION_PAGE: &str = "query($id: ID!) { session(id: $id) { id date isActive closesAt course { code name } counts { present absent permission notYetScanned } records { id status lateMinutes scannedAt timestamp student { id studentCode firstName lastName section { name } } changes { oldStatus newStatus reason changedAt changedBy { username } } } } }";

#[tokio::test]
async fn the_heaviest_legitimate_query_fits_the_limits_with_room() {
    let (complexity, depth) = attendance::graphql::analyze(SESSION_PAGE).await;
    eprintln!(
        "session page: complexity {complexity} of {}, depth {depth} of {}",
        attendance::graphql::MAX_COMPLEXITY,
        attendance::graphql::MAX_DEPTH
    );
    assert!(complexity > 0 && complexity * 3 <= attendance::graphql::MAX_COMPLEXITY);
    assert!(depth + 3 <= attendance::graphql::MAX_DEPTH);
}

async fn deep_and_complex_queries_are_rejected_before_execution(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());
    let session = app.open_session(&school).await;
    let page = app
        .gql(Some(&school.teacher), SESSION_PAGE, json!({"id": session}))
        .await;
    assert!(page.get("errors").is_none(), "{page}");

    // Deep but cheap: one-to-one links only, so only the depth limit can stop it.
    let deep = "{ attendanceRecords(first: 1) { edges { node { session { course { teacher { account { teacher { account { teacher { id } } } } } } } } } } }";
    let before = app.statements.get();
    let body = app.gql(admin, deep, json!({})).await;
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too deep"),
        "{body}"
    );
    assert!(
        app.statements.get() - before <= 1,
        "only the token was checked"
    );

    let wide = "{ courses(first: 100) { edges { node { students { studentCode firstName lastName section { name depBatch { dep } } } } } } }";
    let before = app.statements.get();
    let body = app.gql(admin, wide, json!({})).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("too complex"),
        "{body}"
    );
    assert!(app.statements.get() - before <= 1);
}

async fn json_array_batches_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let batch = json!([
        {"query": "mutation { login(username: \"admin\", password: \"x\") { accessToken } }"},
        {"query": "mutation { login(username: \"admin\", password: \"y\") { accessToken } }"},
    ]);
    let res = app
        .client
        .post(format!("{}/graphql", app.address))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    // Nothing ran: the admin can still log in on the first try.
    app.admin_token().await;
}

async fn oversized_graphql_bodies_get_413_before_parsing(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        // A small limit, so an oversized body still fits the socket buffers and the client
        // reads the 413 instead of a reset while it is still writing.
        env.insert("MAX_BODY_BYTES".into(), "4096".into());
    })
    .await;
    let padding = "x".repeat(16 * 1024);
    let res = app
        .client
        .post(format!("{}/graphql", app.address))
        .header("content-type", "application/json")
        .body(format!(
            "{{\"query\": \"{{ me {{ id }} }}\", \"pad\": \"{padding}\"}}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 413);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
}

const INTROSPECT: &str = "{ __schema { queryType { name } } }";

async fn introspection_is_for_admins_and_suggestions_are_off(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = app.gql(Some(&school.admin), INTROSPECT, json!({})).await;
    assert_eq!(admin["data"]["__schema"]["queryType"]["name"], "QueryRoot");
    for token in [None, Some(school.teacher.as_str())] {
        let body = app.gql(token, INTROSPECT, json!({})).await;
        assert!(body["data"]["__schema"]["queryType"].is_null(), "{body}");
        assert!(!body.to_string().contains("QueryRoot"), "{body}");
    }
    // GraphiQL's schema query nests type references deeper than data queries may.
    let deep_introspection = "query IntrospectionQuery { __schema { queryType { name } types { name fields(includeDeprecated: true) { name type { ...TypeRef } } } } } \
        fragment TypeRef on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";
    let full = app
        .gql(Some(&school.admin), deep_introspection, json!({}))
        .await;
    assert!(full.get("errors").is_none(), "{full}");
    assert!(full["data"]["__schema"]["types"].as_array().unwrap().len() > 20);
    let refused = app
        .gql(Some(&school.teacher), deep_introspection, json!({}))
        .await;
    assert!(!refused.to_string().contains("QueryRoot"), "{refused}");
    let mixed = app
        .gql(Some(&school.admin), "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { ofType { ofType { name } } } } } } } } } } students { totalCount } }", json!({}))
        .await;
    assert!(
        mixed.get("errors").is_some(),
        "data fields keep the limits: {mixed}"
    );
    let typo = app
        .gql(Some(&school.admin), "{ studnts { totalCount } }", json!({}))
        .await;
    let message = typo["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.to_lowercase().contains("did you mean"),
        "{message}"
    );

    let debug = TestApp::spawn_with(backend, |env| {
        env.insert("DEBUG".into(), "true".into());
    })
    .await;
    let open = debug.gql(None, INTROSPECT, json!({})).await;
    assert_eq!(open["data"]["__schema"]["queryType"]["name"], "QueryRoot");
}

async fn mutations_need_a_json_post(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let mutation = "mutation { createDepBatch(input: {dep: \"CSRF\", batch: \"1\"}) { id } }";
    let url = reqwest::Url::parse_with_params(
        &format!("{}/graphql", app.address),
        &[("query", mutation)],
    )
    .unwrap();
    let get = app
        .client
        .get(url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 200);
    assert!(
        get.text().await.unwrap().contains("GraphiQL"),
        "GET only serves the playground"
    );
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let res = app
            .client
            .post(format!("{}/graphql", app.address))
            .header("content-type", content_type)
            .bearer_auth(&admin)
            .body(json!({"query": mutation}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 415, "{content_type}");
    }
    let batches = app
        .gql_ok(Some(&admin), "{ depBatches { dep } }", json!({}))
        .await;
    assert_eq!(batches["depBatches"], json!([]), "no mutation ran");
}

fn aliased_logins(n: usize, password: &str) -> String {
    let fields: Vec<String> = (0..n)
        .map(|i| format!("a{i}: login(username: \"{ADMIN_USER}\", password: \"{password}\") {{ accessToken }}"))
        .collect();
    format!("mutation {{ {} }}", fields.join(" "))
}

fn reasons(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["reason"].as_str().unwrap_or("-").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn aliases_and_separate_requests_count_against_the_login_limit(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("LOGIN_MAX_FAILURES".into(), "5".into());
    })
    .await;
    let body = app
        .gql(None, &aliased_logins(10, "wrong-password"), json!({}))
        .await;
    let reasons = reasons(&body);
    let evaluated = reasons
        .iter()
        .filter(|r| *r == "INVALID_CREDENTIALS")
        .count();
    let limited = reasons.iter().filter(|r| *r == "RATE_LIMITED").count();
    eprintln!("10 aliased logins in one request: {evaluated} evaluated, {limited} rate-limited");
    assert_eq!((evaluated, limited), (5, 5));

    // Locked out: even the right password is refused.
    let right = app
        .gql(None, &aliased_logins(1, ADMIN_PASSWORD), json!({}))
        .await;
    assert_eq!(error_reason(&right), "RATE_LIMITED");
    assert!(right["data"].is_null() || right["data"]["a0"].is_null());

    // A different username is not locked by the admin's failures.
    let other = TestApp::spawn_with(backend, |env| {
        env.insert("LOGIN_MAX_FAILURES".into(), "3".into());
    })
    .await;
    for _ in 0..3 {
        let body = other.gql(None, &aliased_logins(1, "nope"), json!({})).await;
        assert_eq!(error_reason(&body), "INVALID_CREDENTIALS");
    }
    let body = other
        .gql(None, &aliased_logins(1, ADMIN_PASSWORD), json!({}))
        .await;
    assert_eq!(
        error_reason(&body),
        "RATE_LIMITED",
        "separate requests count too"
    );
}

async fn failures_from_one_address_lock_it_across_usernames(backend: Backend) {
    let app = TestApp::spawn_with(backend, |env| {
        env.insert("LOGIN_MAX_FAILURES".into(), "100".into());
        env.insert("LOGIN_MAX_FAILURES_PER_ADDRESS".into(), "4".into());
    })
    .await;
    for n in 0..4 {
        let body = app
            .gql(None, "mutation($u: String!) { login(username: $u, password: \"wrong-one\") { accessToken } }", json!({"u": format!("user{n}")}))
            .await;
        assert_eq!(error_reason(&body), "INVALID_CREDENTIALS");
    }
    let body = app
        .gql(None, &aliased_logins(1, ADMIN_PASSWORD), json!({}))
        .await;
    assert_eq!(error_reason(&body), "RATE_LIMITED");
}

async fn tokens_in_the_query_string_are_ignored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.admin_token().await;
    for param in ["access_token", "token", "authorization"] {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/graphql", app.address),
            &[(param, token.as_str())],
        )
        .unwrap();
        let res = app
            .client
            .post(url)
            .json(&json!({"query": "{ me { id } }"}))
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(error_code(&body), "UNAUTHENTICATED", "{param}");
    }
}

async fn deactivating_an_account_takes_effect_on_its_next_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let login = app
        .gql_ok(None, "mutation { login(username: \"t001\", password: \"teacher-password-1\") { refreshToken } }", json!({}))
        .await;
    let account = app
        .gql_ok(
            Some(&school.admin),
            "query($id: ID!) { teacher(id: $id) { account { id } } }",
            json!({"id": school.teacher_id}),
        )
        .await;
    let user_id = account["teacher"]["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.gql_ok(Some(&school.teacher), "{ me { id } }", json!({}))
        .await;
    app.gql_ok(
        Some(&school.admin),
        "mutation($id: ID!) { setUserActive(userId: $id, active: false) { isActive } }",
        json!({"id": user_id}),
    )
    .await;
    let refused = app
        .gql(Some(&school.teacher), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&refused), "UNAUTHENTICATED");
    let refresh = app
        .gql(
            None,
            "mutation($t: String!) { refreshToken(refreshToken: $t) { accessToken } }",
            json!({"t": login["login"]["refreshToken"]}),
        )
        .await;
    assert_eq!(error_code(&refresh), "UNAUTHENTICATED");
    let relogin = app
        .gql(None, "mutation { login(username: \"t001\", password: \"teacher-password-1\") { accessToken } }", json!({}))
        .await;
    assert_eq!(error_code(&relogin), "UNAUTHENTICATED");
}

const LEAKS: [&str; 14] = [
    "select ",
    "insert ",
    "sqlx",
    "sqlite",
    "postgres",
    "constraint",
    "ux_",
    "fk_",
    "$argon2",
    "/src/",
    ".rs:",
    "panicked",
    "attendance_record",
    "database error",
];

fn assert_no_leak(body: &str) {
    let lower = body.to_lowercase();
    for needle in LEAKS {
        assert!(!lower.contains(needle), "response leaks {needle:?}: {body}");
    }
}

async fn error_bodies_never_leak_internals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = Some(school.admin.as_str());
    let failing: Vec<(&str, Value)> = vec![
        (
            "mutation($i: CreateStudentInput!) { createStudent(input: $i) { id } }",
            json!({"i": {"studentCode": "ST0000", "firstName": "A", "lastName": "B", "sectionId": school.sections[0]}}),
        ),
        (
            "mutation($i: CreateTeacherInput!) { createTeacher(input: $i) { id } }",
            json!({"i": {"teacherCode": "T001", "firstName": "A", "lastName": "B", "username": "t001", "password": "long-password"}}),
        ),
        (
            "mutation { createSection(input: {name: \"A\", depBatchId: \"2147483647\"}) { id } }",
            json!({}),
        ),
        (
            "mutation { deleteStudent(id: \"99999999999999\") }",
            json!({}),
        ),
        (
            "{ students(after: \"'; DROP TABLE student; --\") { totalCount } }",
            json!({}),
        ),
        (
            "{ students(search: \"' OR 1=1 --\") { totalCount } }",
            json!({}),
        ),
        (
            "mutation { editStatus(recordId: \"-1\", status: ABSENT) { id } }",
            json!({}),
        ),
        ("{ nonsense }", json!({})),
    ];
    for (query, variables) in failing {
        let body = app.gql(admin, query, variables).await;
        assert_no_leak(&body.to_string());
        if let Some(errors) = body["errors"].as_array() {
            for error in errors {
                if let Some(code) = error["extensions"]["code"].as_str() {
                    assert!(
                        [
                            "UNAUTHENTICATED",
                            "FORBIDDEN",
                            "NOT_FOUND",
                            "BAD_USER_INPUT",
                            "CONFLICT",
                            "INTERNAL"
                        ]
                        .contains(&code),
                        "{code}"
                    );
                }
            }
        }
    }
    for body in [
        "{\"student_id\": \"1; DROP TABLE\", \"date\": \"x\", \"time\": \"y\"}",
        "{{{{",
        "null",
    ] {
        let (_, response) = app.rest_scan(Some(&school.device_key), body).await;
        assert_no_leak(&response.to_string());
    }
}

#[tokio::test]
async fn a_panicking_handler_answers_500_internal_and_the_server_lives_on() {
    use axum::routing::get;
    let db = TestDb::create(Backend::Sqlite).await;
    let env = test_env(&db.url);
    let config = attendance::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let extra = axum::Router::new().route(
        "/test/panic",
        get(|| async {
            if std::hint::black_box(true) {
                panic!("boom in /src/secret.rs with SELECT * FROM app_user");
            }
            "unreachable"
        }),
    );
    let app = attendance::app::Application::build_with_routes(config, extra)
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let client = crate::common::http_client();
    let res = client
        .get(format!("{address}/test/panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 500);
    let body = res.text().await.unwrap();
    assert_no_leak(&body);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "INTERNAL");
    let health = client
        .get(format!("{address}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200, "the server lives on");
    server.abort();
}

#[tokio::test]
async fn a_request_past_the_timeout_is_cut_off() {
    use axum::routing::get;
    let db = TestDb::create(Backend::Sqlite).await;
    let mut env = test_env(&db.url);
    env.insert("REQUEST_TIMEOUT_SECONDS".into(), "1".into());
    let config = attendance::config::Config::from_lookup(|k| env.get(k).cloned()).unwrap();
    let extra = axum::Router::new().route(
        "/test/slow",
        get(|| async {
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
            "late"
        }),
    );
    let app = attendance::app::Application::build_with_routes(config, extra)
        .await
        .unwrap();
    let address = format!("http://127.0.0.1:{}", app.port());
    let server = tokio::spawn(app.run_until(std::future::pending()));
    let started = std::time::Instant::now();
    let res = crate::common::http_client()
        .get(format!("{address}/test/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 408);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    server.abort();
}
