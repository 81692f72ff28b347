//! Wiring of the web pages: server-side rendering of the Leptos app, its server functions
//! under `/ui/`, the built assets under `/pkg/`, and a same-origin check on every form post.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use pairwise_app::backend::ApiRouter;
use pairwise_app::{App, shell};
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
    let context = ApiRouter(api);
    let provide = move || provide_context(context.clone());
    let server_fns = {
        let provide = provide.clone();
        move |request: Request<Body>| handle_server_fns_with_context(provide.clone(), request)
    };
    // Asset names carry no hash: browsers revalidate (Last-Modified) instead of caching blindly.
    let assets = Router::new()
        .fallback_service(ServeDir::new(pkg).precompressed_gzip())
        .layer(SetResponseHeaderLayer::overriding(header::CACHE_CONTROL, HeaderValue::from_static("no-cache")));
    Router::new()
        .route("/ui/{*fn_name}", post(server_fns.clone()).get(server_fns))
        .leptos_routes_with_context(&options, generate_route_list(App), provide, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .nest("/pkg", assets)
        .layer(middleware::from_fn(same_origin_posts))
        .layer(TraceLayer::new_for_http())
        .with_state(options)
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
