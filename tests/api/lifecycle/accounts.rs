//! Accounts: passwords changed and reset end refresh tokens, wrong current passwords count
//! toward the lockout, admins are created and listed, and the last admin stays.

use serde_json::{Value, json};

use super::{field, refused};
use crate::both_databases;
use crate::common::*;

both_databases!(
    a_changed_password_ends_every_refresh_token,
    wrong_current_passwords_count_toward_the_login_lockout,
    admins_reset_passwords_create_admins_and_list_accounts,
    the_last_active_admin_cannot_be_deactivated,
);

/// Logs in; returns (access token, refresh token).
async fn pair(app: &TestApp, username: &str, password: &str) -> (String, String) {
    let data = app
        .gql_ok(
            None,
            "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken refreshToken } }",
            json!({"u": username, "p": password}),
        )
        .await;
    (
        data["login"]["accessToken"].as_str().unwrap().to_owned(),
        data["login"]["refreshToken"].as_str().unwrap().to_owned(),
    )
}

async fn refresh(app: &TestApp, token: &str) -> Value {
    app.gql(
        None,
        "mutation($t: String!) { refreshToken(refreshToken: $t) { refreshToken } }",
        json!({"t": token}),
    )
    .await
}

async fn login(app: &TestApp, username: &str, password: &str) -> Value {
    app.gql(
        None,
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { accessToken } }",
        json!({"u": username, "p": password}),
    )
    .await
}

const CHANGE: &str =
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";

async fn a_changed_password_ends_every_refresh_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (access, first) = pair(&app, "t001", TEACHER_PASSWORD).await;
    let (_, second) = pair(&app, "t001", TEACHER_PASSWORD).await;

    let short = app
        .gql(
            Some(&access),
            CHANGE,
            json!({"c": TEACHER_PASSWORD, "n": "short"}),
        )
        .await;
    assert_eq!(
        (error_code(&short), field(&short)),
        ("BAD_USER_INPUT", "newPassword")
    );
    let wrong = app
        .gql(
            Some(&access),
            CHANGE,
            json!({"c": "not-my-password", "n": "brand-new-pass-1"}),
        )
        .await;
    assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    // Neither refusal changed anything: the refresh tokens still work.
    let renewed = refresh(&app, &second).await;
    let third = renewed["data"]["refreshToken"]["refreshToken"]
        .as_str()
        .unwrap_or_else(|| panic!("{renewed}"))
        .to_owned();

    let changed = app
        .gql_ok(
            Some(&access),
            CHANGE,
            json!({"c": TEACHER_PASSWORD, "n": "brand-new-pass-1"}),
        )
        .await;
    assert_eq!(changed["changePassword"], true);
    for token in [&first, &third] {
        assert_eq!(error_code(&refresh(&app, token).await), "UNAUTHENTICATED");
    }
    assert_eq!(
        error_code(&login(&app, "t001", TEACHER_PASSWORD).await),
        "UNAUTHENTICATED"
    );
    let (_, fresh) = pair(&app, "t001", "brand-new-pass-1").await;
    assert!(refresh(&app, &fresh).await["errors"].is_null());
    // The access token runs out on its own lifetime.
    let me = app
        .gql_ok(Some(&access), "{ me { username } }", json!({}))
        .await;
    assert_eq!(me["me"]["username"], "t001");
    let _ = school;
}

async fn wrong_current_passwords_count_toward_the_login_lockout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.seed_school(1).await;
    let access = app.login("t001", TEACHER_PASSWORD).await;
    for _ in 0..5 {
        let wrong = app
            .gql(
                Some(&access),
                CHANGE,
                json!({"c": "guess-guess-1", "n": "brand-new-pass-1"}),
            )
            .await;
        assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    }
    // Five failures (the default limit) lock the username: even the right password waits.
    let locked = app
        .gql(
            Some(&access),
            CHANGE,
            json!({"c": TEACHER_PASSWORD, "n": "brand-new-pass-1"}),
        )
        .await;
    assert_eq!(error_reason(&locked), "RATE_LIMITED", "{locked}");
    let login = login(&app, "t001", TEACHER_PASSWORD).await;
    assert_eq!(error_reason(&login), "RATE_LIMITED", "{login}");
}

async fn admins_reset_passwords_create_admins_and_list_accounts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    let (_, refresh_before) = pair(&app, "t001", TEACHER_PASSWORD).await;

    let teachers = app
        .gql_ok(
            Some(admin),
            "{ users(role: TEACHER) { totalCount nodes { id username role isActive teacher { teacherCode } } } }",
            json!({}),
        )
        .await;
    assert_eq!(teachers["users"]["totalCount"], 2);
    let t001 = teachers["users"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "t001")
        .unwrap()
        .clone();
    assert_eq!(t001["role"], "TEACHER");
    assert_eq!(t001["teacher"]["teacherCode"], "T001");

    let reset = app
        .gql_ok(
            Some(admin),
            "mutation($u: ID!) { setPassword(userId: $u, newPassword: \"reset-by-admin-1\") }",
            json!({"u": t001["id"]}),
        )
        .await;
    assert_eq!(reset["setPassword"], true);
    assert_eq!(
        error_code(&refresh(&app, &refresh_before).await),
        "UNAUTHENTICATED"
    );
    app.login("t001", "reset-by-admin-1").await;
    let short = refused(
        &app,
        admin,
        "mutation($u: ID!) { setPassword(userId: $u, newPassword: \"x\") }",
        json!({"u": t001["id"]}),
    )
    .await;
    assert_eq!(field(&short), "newPassword");
    let missing = refused(
        &app,
        admin,
        "mutation { setPassword(userId: \"999999\", newPassword: \"long-enough-1\") }",
        json!({}),
    )
    .await;
    assert_eq!(error_code(&missing), "NOT_FOUND");

    let created = app
        .gql_ok(
            Some(admin),
            "mutation { createAdmin(input: {username: \"registrar\", password: \"registrar-pass-1\"}) { username role isActive } }",
            json!({}),
        )
        .await;
    assert_eq!(
        created["createAdmin"],
        json!({"username": "registrar", "role": "ADMIN", "isActive": true})
    );
    let registrar = app.login("registrar", "registrar-pass-1").await;
    app.gql_ok(Some(&registrar), "{ devices { id } }", json!({}))
        .await;
    for (username, expected_field) in [("registrar", "username"), ("t001", "username")] {
        let taken = refused(
            &app,
            admin,
            "mutation($u: String!) { createAdmin(input: {username: $u, password: \"another-pass-1\"}) { id } }",
            json!({"u": username}),
        )
        .await;
        assert_eq!(
            (error_code(&taken), field(&taken)),
            ("CONFLICT", expected_field)
        );
    }
    let weak = refused(
        &app,
        admin,
        "mutation { createAdmin(input: {username: \"weak\", password: \"short\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        (error_code(&weak), field(&weak)),
        ("BAD_USER_INPUT", "password")
    );

    let admins = app
        .gql_ok(
            Some(admin),
            "{ users(role: ADMIN) { totalCount nodes { username } } }",
            json!({}),
        )
        .await;
    assert_eq!(admins["users"]["totalCount"], 2);
    let devices = app
        .gql_ok(
            Some(admin),
            "{ users(role: DEVICE) { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(devices["users"]["totalCount"], 0);

    // Every account, a page at a time.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .gql_ok(
                Some(admin),
                "query($a: String) { users(first: 2, after: $a) { totalCount pageInfo { hasNextPage endCursor } nodes { username } } }",
                json!({"a": after}),
            )
            .await;
        assert_eq!(page["users"]["totalCount"], 4);
        for node in page["users"]["nodes"].as_array().unwrap() {
            seen.push(node["username"].as_str().unwrap().to_owned());
        }
        if page["users"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["users"]["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, ["admin", "t001", "t002", "registrar"]);
}

async fn the_last_active_admin_cannot_be_deactivated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let admin = school.admin.as_str();
    let me = app.gql_ok(Some(admin), "{ me { id } }", json!({})).await;
    let admin_id = me["me"]["id"].as_str().unwrap().to_owned();
    const DEACTIVATE: &str =
        "mutation($u: ID!) { setUserActive(userId: $u, active: false) { isActive } }";

    let last = refused(&app, admin, DEACTIVATE, json!({"u": admin_id})).await;
    assert_eq!(
        (error_code(&last), error_reason(&last)),
        ("CONFLICT", "LAST_ADMIN")
    );
    app.gql_ok(Some(admin), "{ me { isActive } }", json!({}))
        .await;

    let second = app
        .gql_ok(
            Some(admin),
            "mutation { createAdmin(input: {username: \"deputy\", password: \"deputy-pass-1\"}) { id } }",
            json!({}),
        )
        .await["createAdmin"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deputy = app.login("deputy", "deputy-pass-1").await;
    let off = app
        .gql_ok(Some(&deputy), DEACTIVATE, json!({"u": admin_id}))
        .await;
    assert_eq!(off["setUserActive"]["isActive"], false);
    // Now the deputy is the last one.
    let last = refused(&app, &deputy, DEACTIVATE, json!({"u": second})).await;
    assert_eq!(error_reason(&last), "LAST_ADMIN");
    // Teachers are switched off freely.
    let teacher = app
        .gql_ok(
            Some(&deputy),
            "{ users(role: TEACHER) { nodes { id } } }",
            json!({}),
        )
        .await["users"]["nodes"][0]["id"]
        .clone();
    let off = app
        .gql_ok(Some(&deputy), DEACTIVATE, json!({"u": teacher}))
        .await;
    assert_eq!(off["setUserActive"]["isActive"], false);
}
