//! The web pages over plain HTTP, on both databases: server-side rendering with the
//! visitor's session, the login redirect (303 to `/login?next=…` and back after login), the 403 for annotators, the cross-origin form
//! guard, and a vote posted as a plain HTML form (what a browser without JavaScript does).

use pairwise_server::accounts::Role;
use pairwise_server::accounts::users;
use pairwise_tests::{Backend, TestServer, both_backends, create_campaign, import};
use serde_json::json;

/// A client with a cookie jar that does not follow redirects. Each request has a minute: one
/// run of this suite once waited forever on a page here (not seen again), and a timeout names
/// the request that did not come back instead of holding the suite until CI's limit.
fn browser_like() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The value of `name="…" value="…"` in a rendered form.
fn form_value(page: &str, name: &str) -> String {
    let start = page.find(&format!("name=\"{name}\" value=\"")).unwrap_or_else(|| panic!("no field {name}"));
    let rest = &page[start + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

async fn pages_render_and_forms_post(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.client_for("admin", Role::Admin).await;
    let campaign = create_campaign(&admin, json!({"name": "Pages", "status": "active", "overlap": 1})).await;
    import(&admin, campaign, &[json!({"prompt": "Say *hi*", "response_a": "**hi**", "response_b": "hello"})]).await;
    users::create_user(&server.db, "erin", "erin-password", Role::Annotator).await.unwrap();
    let http = browser_like();

    // No session: the page sends the visitor to the login page.
    let reply = http.get(server.url(&format!("/rate/{campaign}"))).header("accept", "text/html").send().await.unwrap();
    assert_eq!(reply.status(), 303);
    let wanted = format!("/login?next=%2Frate%2F{campaign}");
    assert_eq!(reply.headers()["location"], wanted.as_str());
    // Whatever the client accepts, and for every page; a stale cookie counts as none.
    for page in ["/admin", "/admin/users", "/admin/campaigns/1?tab=export"] {
        let reply = http.get(server.url(page)).header("cookie", "pairwise_session=stale").send().await.unwrap();
        assert_eq!(reply.status(), 303, "{page}");
        let expected = format!("/login?next={}", page.replace('/', "%2F").replace('?', "%3F").replace('=', "%3D"));
        assert_eq!(reply.headers()["location"], expected.as_str(), "{page}");
    }
    let login_page = http.get(server.url(&wanted)).send().await.unwrap();
    assert_eq!(login_page.status(), 200);
    let login_html = login_page.text().await.unwrap();
    assert!(login_html.contains("/pkg/pairwise.js"), "the page loads the WASM bundle");
    assert_eq!(form_value(&login_html, "next"), format!("/rate/{campaign}"), "the form carries next along");

    // A next that leaves the site is ignored: the login goes to the visitor's home page.
    let login = http
        .post(server.url("/ui/login"))
        .header("accept", "text/html")
        .form(&[("username", "erin"), ("password", "erin-password"), ("next", "//evil.example/")])
        .send();
    let reply = login.await.unwrap();
    assert_eq!(reply.status(), 302, "{:?}", reply.headers());
    assert_eq!(reply.headers()["location"], "/");

    // Log in with the login form's server function (a plain form post): back to the page.
    let login = http
        .post(server.url("/ui/login"))
        .header("accept", "text/html")
        .form(&[("username", "erin"), ("password", "erin-password"), ("next", &format!("/rate/{campaign}"))])
        .send();
    let reply = login.await.unwrap();
    assert_eq!(reply.status(), 302, "{:?}", reply.headers());
    assert_eq!(reply.headers()["location"], format!("/rate/{campaign}").as_str());

    // The rating page, rendered on the server with the pair and its Markdown.
    let page = http.get(server.url(&format!("/rate/{campaign}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<strong>hi</strong>") || page.contains("hello"), "{page}");
    assert!(page.contains("Say <em>hi</em>"), "prompt rendered");
    let assignment = form_value(&page, "assignment_id");
    let shown_at = form_value(&page, "shown_at");

    // A form post from another site is refused before it reaches the server function.
    let forged = http
        .post(server.url("/ui/submit_vote"))
        .header("origin", "http://evil.example")
        .form(&[("campaign_id", campaign.to_string()), ("assignment_id", assignment.clone())])
        .send();
    assert_eq!(forged.await.unwrap().status(), 403);

    // The vote form, posted without JavaScript: stored, and back to the page.
    let fields = [
        ("campaign_id", campaign.to_string()),
        ("assignment_id", assignment),
        ("shown_at", shown_at),
        ("choice", "tie".to_string()),
        ("strength", "2".to_string()),
        ("rationale", "".to_string()),
    ];
    let reply = http
        .post(server.url("/ui/submit_vote"))
        .header("accept", "text/html")
        .header("origin", server.base.clone())
        .header("referer", server.url(&format!("/rate/{campaign}")))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 302);
    // (leptos leaves an empty query string after stripping earlier error info.)
    let location = reply.headers()["location"].to_str().unwrap().trim_end_matches('?').to_string();
    assert_eq!(location, server.url(&format!("/rate/{campaign}")));
    let stored: (String, Option<i64>) =
        sqlx::query_as("SELECT choice, time_ms FROM comparisons").fetch_one(&server.sql).await.unwrap();
    assert_eq!(stored.0, "tie");
    assert!(stored.1.is_some_and(|t| t >= 0));
    let page = http.get(server.url(&format!("/rate/{campaign}"))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("All done"), "nothing left to rate");

    // Annotators get a real 403 on admin pages.
    let reply = http.get(server.url("/admin/users")).send().await.unwrap();
    assert_eq!(reply.status(), 403);
    let reply = http.get(server.url("/no/such/page")).send().await.unwrap();
    assert_eq!(reply.status(), 404);
    server.stop().await;
}
both_backends!(pages_render_and_forms_post);
