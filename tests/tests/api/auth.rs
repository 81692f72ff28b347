//! Authentication and authorisation rules.

use pairwise_server::accounts::Role;
use pairwise_tests::{Backend, TestServer, both_backends, create_campaign};
use serde_json::json;

async fn auth_rules(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.login_attempts_per_minute = 3).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let annotator = server.client_for("ann", Role::Annotator).await;
    let campaign = create_campaign(&admin, json!({"name": "auth", "status": "active"})).await;
    let draft = create_campaign(&admin, json!({"name": "draft"})).await;

    // No credentials: every API route is closed.
    let anonymous = server.anonymous();
    for path in ["/api/v1/campaigns", "/api/v1/auth/me", &format!("/api/v1/campaigns/{campaign}/next")] {
        assert_eq!(anonymous.get(path).await.status, 401, "{path}");
    }
    assert_eq!(anonymous.get("/healthz").await.status, 200);

    // Annotators are refused every admin route.
    let admin_only = [
        ("POST", "/api/v1/campaigns".to_string()),
        ("PATCH", format!("/api/v1/campaigns/{campaign}")),
        ("POST", format!("/api/v1/campaigns/{campaign}/import")),
        ("GET", format!("/api/v1/campaigns/{campaign}/export?format=trl")),
        ("GET", format!("/api/v1/campaigns/{campaign}/leaderboard")),
        ("GET", "/api/v1/users".to_string()),
        ("POST", "/api/v1/users".to_string()),
    ];
    for (method, path) in &admin_only {
        let reply = match *method {
            "GET" => annotator.get(path).await,
            "PATCH" => annotator.patch(path, &json!({"status": "closed"})).await,
            _ if path.ends_with("/import") => annotator.post_body(path, "{}").await,
            _ => {
                annotator
                    .post(path, &json!({"name": "x", "username": "x", "password": "long-enough", "role": "admin"}))
                    .await
            }
        };
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text);
    }
    // Annotators see active campaigns only.
    let listed = annotator.get("/api/v1/campaigns").await.json;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(annotator.get(&format!("/api/v1/campaigns/{draft}")).await.status, 404);
    assert_eq!(annotator.get(&format!("/api/v1/campaigns/{draft}/stats")).await.status, 404);
    // Malformed ids get the JSON error shape, not a plain-text rejection.
    let malformed = annotator.get("/api/v1/campaigns/abc/next").await;
    assert_eq!(malformed.status, 422, "{}", malformed.text);
    assert!(malformed.json["message"].as_str().unwrap().starts_with("invalid path"));
    assert_eq!(admin.get("/api/v1/campaigns").await.json.as_array().unwrap().len(), 2);

    // Tokens: a revoked token stops working at once; users revoke only their own.
    let created = annotator.post("/api/v1/tokens", &json!({"name": "laptop"})).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let second = created.json["token"].as_str().unwrap().to_string();
    let mut with_second = annotator.clone();
    with_second.token = Some(second);
    assert_eq!(with_second.get("/api/v1/auth/me").await.json["username"], "ann");
    let other = server.client_for("other", Role::Annotator).await;
    let token_id = created.json["id"].as_i64().unwrap();
    assert_eq!(other.delete(&format!("/api/v1/tokens/{token_id}")).await.status, 404);
    assert_eq!(annotator.delete(&format!("/api/v1/tokens/{token_id}")).await.status, 204);
    assert_eq!(with_second.get("/api/v1/auth/me").await.status, 401);
    // The rating endpoints refuse it too.
    let next = format!("/api/v1/campaigns/{campaign}/next");
    let vote = json!({"assignment_id": 1, "choice": "left", "client_key": "k1"});
    assert_eq!(annotator.get(&next).await.status, 200);
    assert_eq!(with_second.get(&next).await.status, 401);
    assert_eq!(with_second.post("/api/v1/votes", &vote).await.status, 401);
    assert_eq!(with_second.post("/api/v1/assignments/1/skip", &json!({})).await.status, 401);
    let listed = annotator.get("/api/v1/tokens").await.json;
    assert!(listed.as_array().unwrap().iter().all(|t| t.get("token").is_none()), "secrets are never listed");

    // Sessions: login sets an HttpOnly cookie; logout ends the session.
    let browser = server.anonymous();
    let login = browser.post("/api/v1/auth/login", &json!({"username": "ann", "password": "password-123"})).await;
    assert_eq!(login.status, 200, "{}", login.text);
    let cookie = login.headers["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert_eq!(browser.get("/api/v1/auth/me").await.json["role"], "annotator");
    assert_eq!(browser.get(&next).await.status, 200);
    assert_eq!(browser.post("/api/v1/auth/logout", &json!({})).await.status, 200);
    assert_eq!(browser.get("/api/v1/auth/me").await.status, 401);
    assert_eq!(browser.get(&next).await.status, 401);
    assert_eq!(browser.post("/api/v1/votes", &vote).await.status, 401);

    // Disabling a user cuts off both their tokens and their sessions.
    let login = browser.post("/api/v1/auth/login", &json!({"username": "other", "password": "password-123"})).await;
    assert_eq!(login.status, 200);
    let disabled = admin.patch(&format!("/api/v1/users/{}", other.user_id), &json!({"active": false})).await;
    assert_eq!(disabled.status, 200, "{}", disabled.text);
    assert_eq!(other.get("/api/v1/auth/me").await.status, 401);
    assert_eq!(browser.get("/api/v1/auth/me").await.status, 401);
    assert_eq!(other.get(&next).await.status, 401);
    assert_eq!(browser.get(&next).await.status, 401);
    assert_eq!(
        browser.post("/api/v1/auth/login", &json!({"username": "other", "password": "password-123"})).await.status,
        401
    );

    // Login is rate limited (3 failures per minute in this test's config).
    let guesser = server.anonymous();
    for _ in 0..3 {
        let reply = guesser.post("/api/v1/auth/login", &json!({"username": "admin", "password": "wrong-guess"})).await;
        assert_eq!(reply.status, 401);
    }
    let blocked = guesser.post("/api/v1/auth/login", &json!({"username": "admin", "password": "password-123"})).await;
    assert_eq!(blocked.status, 429, "{}", blocked.text);
    assert!(blocked.headers.contains_key("retry-after"));

    // Admin user management: create, reset password, refuse self-demotion.
    let made = admin.post("/api/v1/users", &json!({"username": "new", "password": "short", "role": "annotator"})).await;
    assert_eq!(made.status, 422);
    let made =
        admin.post("/api/v1/users", &json!({"username": "new", "password": "long-enough", "role": "annotator"})).await;
    assert_eq!(made.status, 201, "{}", made.text);
    let dup =
        admin.post("/api/v1/users", &json!({"username": "new", "password": "long-enough", "role": "annotator"})).await;
    assert_eq!(dup.status, 409);
    let reset = admin.patch(&format!("/api/v1/users/{}", made.json["id"]), &json!({"password": "another-one"})).await;
    assert_eq!(reset.status, 200);
    let fresh = server.anonymous();
    assert_eq!(
        fresh.post("/api/v1/auth/login", &json!({"username": "new", "password": "another-one"})).await.status,
        200
    );
    assert_eq!(
        admin.patch(&format!("/api/v1/users/{}", admin.user_id), &json!({"role": "annotator"})).await.status,
        422
    );
    // A password reset also revokes the user's API tokens; tokens for unknown users are refused.
    assert_eq!(annotator.get("/api/v1/auth/me").await.status, 200);
    let reset =
        admin.patch(&format!("/api/v1/users/{}", annotator.user_id), &json!({"password": "brand-new-pass"})).await;
    assert_eq!(reset.status, 200);
    assert_eq!(annotator.get("/api/v1/auth/me").await.status, 401);
    assert_eq!(admin.post("/api/v1/tokens", &json!({"name": "x", "user_id": 9999})).await.status, 404);
    server.stop().await;
}
both_backends!(auth_rules);
