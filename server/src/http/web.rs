//! Wiring of the web pages: server-side rendering of the Leptos app, its server functions
//! under `/ui/`, the built assets under `/pkg/`, the login requirement of every page but the
//! login page, and a same-origin check on every form post.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use pairwise_app::backend::ApiRouter;
use pairwise_app::{App, shell};
use tower::ServiceExt;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

/// The pages and their server functions; `api` is the REST router they call in-process.
pub fn router(api: Router, site_root: &str) -> Router {
    let pkg = Path::new(site_root).join("pkg");
    if !pkg.join("pairwise_bg.wasm").exists() {
        tracing::warn!(
            path = %pkg.display(),
            "web assets not built (run scripts/build-site.sh): pages render but stay static"
        );
    }
    let options = LeptosOptions::builder().output_name("pairwise").site_root(site_root).site_pkg_dir("pkg").build();
    let context = ApiRouter(api.clone());
    let provide = move || provide_context(context.clone());
    let server_fns = {
        let provide = provide.clone();
        move |request: Request<Body>| handle_server_fns_with_context(provide.clone(), request)
    };
    // Asset names carry no hash: browsers revalidate (Last-Modified) instead of caching blindly.
    let assets = Router::new()
        .fallback_service(ServeDir::new(pkg).precompressed_gzip())
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
    let pages = Router::new()
        .leptos_routes_with_context(&options, generate_route_list(App), provide, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .layer(middleware::from_fn_with_state(api, login_required));
    Router::new()
        .route("/ui/{*fn_name}", post(server_fns.clone()).get(server_fns))
        .merge(pages)
        .nest("/pkg", assets)
        .layer(middleware::from_fn(same_origin_posts))
        .layer(TraceLayer::new_for_http())
        .with_state(options)
}

/// Every page but `/login` needs a session: a visitor without a valid one is sent there with
/// `303 See Other` and `?next=` the page asked for, where the login form returns them after
/// logging in. Validity is asked of the API (`/api/v1/auth/me`), so pages and API never
/// disagree on who is logged in.
async fn login_required(State(api): State<Router>, request: Request, next: Next) -> Response {
    // Only page views: server functions (`/ui/…`, login among them) answer for themselves.
    let page_view = matches!(*request.method(), Method::GET | Method::HEAD);
    if !page_view || request.uri().path() == "/login" || request.uri().path().starts_with("/ui/") {
        return next.run(request).await;
    }
    let credentials: Vec<_> = [header::COOKIE, header::AUTHORIZATION]
        .into_iter()
        .filter_map(|name| request.headers().get(&name).map(|value| (name, value.clone())))
        .collect();
    if !credentials.is_empty() {
        let mut me = Request::builder().uri("/api/v1/auth/me");
        for (name, value) in credentials {
            me = me.header(name, value);
        }
        let status = match me.body(Body::empty()) {
            Ok(me) => api.oneshot(me).await.map_or(StatusCode::INTERNAL_SERVER_ERROR, |reply| reply.status()),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Anything but "not logged in" (a database hiccup, say) is left to the page to report.
        if status != StatusCode::UNAUTHORIZED {
            return next.run(request).await;
        }
    }
    let location = match request.uri().path_and_query().map(|p| p.as_str()) {
        None | Some("/") => "/login".to_string(),
        Some(wanted) => {
            format!("/login?next={}", form_urlencoded::byte_serialize(wanted.as_bytes()).collect::<String>())
        }
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

/// Cross-site request forgery guard for the pages' forms: a state-changing request that
/// a browser marks as coming from another origin is refused. (The session cookie is also
/// `SameSite=Lax`, so such a request would carry no session; this makes the refusal
/// explicit and covers older browsers.)
async fn same_origin_posts(request: Request, next: Next) -> Response {
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && let Some(origin) = request.headers().get(header::ORIGIN) {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
        let origin_host = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, rest)| rest);
        if origin_host.is_none() || origin_host != host {
            return (StatusCode::FORBIDDEN, "cross-origin form post refused").into_response();
        }
    }
    next.run(request).await
}
