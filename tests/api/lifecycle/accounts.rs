//! Accounts: passwords changed and reset, and deactivations, end every token at once;
//! wrong current passwords count toward the lockout, admins are created and listed, and
//! the last admin stays.

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use super::{field, refused};
use crate::both_databases;
use crate::common::*;

both_databases!(
    a_changed_password_ends_every_refresh_token,
    wrong_current_passwords_count_toward_the_login_lockout,
    admins_reset_passwords_create_admins_and_list_accounts,
    the_last_active_admin_cannot_be_deactivated,
    a_changed_password_ends_earlier_access_tokens_at_once,
    an_admin_reset_ends_the_accounts_access_tokens_at_once,
    a_deactivated_account_comes_back_only_through_a_new_login,
    a_refresh_that_raced_a_password_change_is_refused,
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

const ME: &str = "{ me { username } }";

/// The username `token` stands for, or the error code it earns.
async fn me(app: &TestApp, token: &str) -> String {
    let body = app.gql(Some(token), ME, json!({})).await;
    match body["data"]["me"]["username"].as_str() {
        Some(username) => username.to_owned(),
        None => error_code(&body).to_owned(),
    }
}

async fn a_changed_password_ends_earlier_access_tokens_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (used, _) = pair(&app, "t001", TEACHER_PASSWORD).await;
    let (other_device, _) = pair(&app, "t001", TEACHER_PASSWORD).await;
    assert_eq!(me(&app, &other_device).await, "t001");

    app.gql_ok(
        Some(&used),
        CHANGE,
        json!({"c": TEACHER_PASSWORD, "n": "brand-new-pass-1"}),
    )
    .await;
    // Within the same second: no wait for the tokens' lifetime.
    for token in [&used, &other_device] {
        assert_eq!(me(&app, token).await, "UNAUTHENTICATED");
    }
    // A token issued right after the change, in the same second, works.
    let (fresh, fresh_refresh) = pair(&app, "t001", "brand-new-pass-1").await;
    assert_eq!(me(&app, &fresh).await, "t001");
    let renewed = refresh(&app, &fresh_refresh).await;
    assert!(renewed["errors"].is_null(), "{renewed}");
    // Nobody else is signed out.
    assert_eq!(me(&app, &school.admin).await, "admin");
    assert_eq!(me(&app, &school.other_teacher).await, "t002");
}

async fn an_admin_reset_ends_the_accounts_access_tokens_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let t001 = app
        .gql_ok(Some(&school.teacher), "{ me { id } }", json!({}))
        .await["me"]["id"]
        .clone();

    app.gql_ok(
        Some(&school.admin),
        "mutation($u: ID!) { setPassword(userId: $u, newPassword: \"reset-by-admin-1\") }",
        json!({"u": t001}),
    )
    .await;
    assert_eq!(me(&app, &school.teacher).await, "UNAUTHENTICATED");
    assert_eq!(me(&app, &school.admin).await, "admin");
    let (fresh, _) = pair(&app, "t001", "reset-by-admin-1").await;
    assert_eq!(me(&app, &fresh).await, "t001");

    // The command line's reset of an admin's password does the same.
    let deputy = app
        .gql_ok(
            Some(&school.admin),
            "mutation { createAdmin(input: {username: \"deputy\", password: \"deputy-pass-1\"}) { id } }",
            json!({}),
        )
        .await;
    assert!(deputy["createAdmin"]["id"].is_string());
    let (deputy_access, deputy_refresh) = pair(&app, "deputy", "deputy-pass-1").await;
    app.service
        .create_or_reset_admin(
            &attendance::auth::Principal::System,
            "deputy",
            "deputy-pass-2",
        )
        .await
        .expect("reset from the command line");
    assert_eq!(me(&app, &deputy_access).await, "UNAUTHENTICATED");
    assert_eq!(
        error_code(&refresh(&app, &deputy_refresh).await),
        "UNAUTHENTICATED"
    );
    let (deputy_access, _) = pair(&app, "deputy", "deputy-pass-2").await;
    assert_eq!(me(&app, &deputy_access).await, "deputy");
}

async fn a_deactivated_account_comes_back_only_through_a_new_login(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let school = app.seed_school(1).await;
    let (access, refresh_token) = pair(&app, "t001", TEACHER_PASSWORD).await;
    let t001 = app.gql_ok(Some(&access), "{ me { id } }", json!({})).await["me"]["id"].clone();
    const SET_ACTIVE: &str =
        "mutation($u: ID!, $a: Boolean!) { setUserActive(userId: $u, active: $a) { isActive } }";

    let off = app
        .gql_ok(
            Some(&school.admin),
            SET_ACTIVE,
            json!({"u": t001, "a": false}),
        )
        .await;
    assert_eq!(off["setUserActive"]["isActive"], false);
    assert_eq!(me(&app, &access).await, "UNAUTHENTICATED");
    assert_eq!(
        error_code(&refresh(&app, &refresh_token).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&login(&app, "t001", TEACHER_PASSWORD).await),
        "UNAUTHENTICATED"
    );

    // Back again: the tokens from before stay dead; a new login works at once.
    app.gql_ok(
        Some(&school.admin),
        SET_ACTIVE,
        json!({"u": t001, "a": true}),
    )
    .await;
    assert_eq!(me(&app, &access).await, "UNAUTHENTICATED");
    assert_eq!(
        error_code(&refresh(&app, &refresh_token).await),
        "UNAUTHENTICATED"
    );
    let (fresh, fresh_refresh) = pair(&app, "t001", TEACHER_PASSWORD).await;
    assert_eq!(me(&app, &fresh).await, "t001");
    let renewed = refresh(&app, &fresh_refresh).await;
    assert!(renewed["errors"].is_null(), "{renewed}");
    assert_eq!(me(&app, &school.teacher).await, "UNAUTHENTICATED");
}

/// A refresh that found its token unrevoked just before a password change committed must
/// not hand out a pair that outlives the change: the raised version stops it.
async fn a_refresh_that_raced_a_password_change_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.seed_school(1).await;
    let (_, refresh_token) = pair(&app, "t001", TEACHER_PASSWORD).await;
    // The change's version raise has committed; its revocation of the refresh tokens is
    // what the racing refresh got ahead of.
    let raised = app
        .service
        .db
        .execute_unprepared(
            "UPDATE app_user SET token_version = token_version + 1 WHERE username = 't001'",
        )
        .await
        .expect("raise the version");
    assert_eq!(raised.rows_affected(), 1);
    assert_eq!(
        error_code(&refresh(&app, &refresh_token).await),
        "UNAUTHENTICATED"
    );
}
