//! The page every problem `type` URI resolves to: [`ProblemDocs`], a tower service that
//! answers `GET` with the sections of `docs/problems.md` (embedded at build time), one HTML
//! section per problem type, whose `id` is the slug.
//!
//! RFC 9457 section 3.1.1 asks that a type URI, "when dereferenced", give "human-readable
//! documentation for the problem type". The layer's default type base,
//! [`crate::problem::PROBLEM_TYPE_BASE`] (`/problems#`), is a relative reference with the
//! full path: a client resolves `/problems#key-reused` against the URL it asked, gets this
//! page from the same server, and its fragment names the section. So mount the service at
//! [`PROBLEM_DOCS_PATH`] on the server the layer runs in; a server that does not, sets
//! [`crate::IdempotencyBuilder::problem_type_base`] to where it publishes the page, or to
//! [`crate::problem::ABOUT_BLANK`].
//!
//! # Examples
//!
//! ```
//! use std::sync::Arc;
//! use axum::{Router, routing::post};
//! use http::{Request, StatusCode};
//! use idem_core::MemoryStore;
//! use idem_http::IdempotencyLayer;
//! use idem_http::problem_docs::{PROBLEM_DOCS_PATH, ProblemDocs};
//! use tower::ServiceExt;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let app = Router::new()
//!     .route("/payments", post(|| async { "ok" }))
//!     .layer(IdempotencyLayer::new(Arc::new(MemoryStore::default())))
//!     .route_service(PROBLEM_DOCS_PATH, ProblemDocs::new());
//!
//! // A POST without a key gets a problem whose type is `/problems#key-missing` ...
//! let refused = app.clone().oneshot(Request::post("/payments").body(axum::body::Body::empty()).unwrap());
//! assert_eq!(refused.await.unwrap().status(), StatusCode::BAD_REQUEST);
//! // ... and that URI resolves on the same server, to the page with its section.
//! let page = app.oneshot(Request::get("/problems").body(axum::body::Body::empty()).unwrap()).await.unwrap();
//! assert_eq!(page.status(), StatusCode::OK);
//! let html = axum::body::to_bytes(page.into_body(), usize::MAX).await.unwrap();
//! assert!(std::str::from_utf8(&html).unwrap().contains(r#"<section id="key-missing">"#));
//! # });
//! ```

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::problem::{ABOUT_BLANK, CATALOGUE, Origin, PROBLEM_TYPE_BASE, Problem, ProblemType};

/// Where [`ProblemDocs`] is meant to be mounted, and what the default type base
/// ([`PROBLEM_TYPE_BASE`], this path plus `#`) points at.
pub const PROBLEM_DOCS_PATH: &str = "/problems";

// The default type base is this path plus `#`, so every default type resolves to the page.
const _: () = {
    let (path, base) = (PROBLEM_DOCS_PATH.as_bytes(), PROBLEM_TYPE_BASE.as_bytes());
    assert!(base.len() == path.len() + 1 && base[path.len()] == b'#');
    let mut i = 0;
    while i < path.len() {
        assert!(path[i] == base[i]);
        i += 1;
    }
};

/// `docs/problems.md`, the source of the page.
const PROBLEMS_MD: &str = include_str!("../../../docs/problems.md");

/// The documentation page of the problem types, as a tower service; see the module docs.
///
/// `GET` and `HEAD` answer 200 `text/html` with one `<section id="<slug>">` per type it
/// serves (the section of `docs/problems.md`, its Markdown text kept as written); any other
/// method answers 405 (problem `about:blank`, `Allow: GET, HEAD`). The page is built once,
/// in [`ProblemDocs::new`]; cloning shares it.
#[derive(Clone, Debug)]
pub struct ProblemDocs {
    page: Bytes,
}

impl Default for ProblemDocs {
    fn default() -> Self {
        ProblemDocs::new()
    }
}

impl ProblemDocs {
    /// The page of the layer's problem types ([`Origin::Layer`]).
    #[must_use]
    pub fn new() -> ProblemDocs {
        ProblemDocs::of(&[Origin::Layer])
    }

    /// The page of the types that come from `origins` (idem-server serves both origins).
    #[must_use]
    pub fn of(origins: &[Origin]) -> ProblemDocs {
        let served: Vec<ProblemType> = CATALOGUE.into_iter().filter(|kind| origins.contains(&kind.origin)).collect();
        ProblemDocs { page: Bytes::from(page(&served)) }
    }

    /// The page's HTML.
    #[must_use]
    pub fn html(&self) -> &str {
        std::str::from_utf8(&self.page).expect("the page is built from a String")
    }

    fn answer(&self, method: &Method) -> Response<Body> {
        if method != Method::GET && method != Method::HEAD {
            let detail = format!("{method} is not allowed here: the page answers GET and HEAD");
            let mut refused =
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "", "", detail).into_response_at(ABOUT_BLANK);
            refused.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return refused;
        }
        let length = self.page.len();
        let body = if method == Method::HEAD { full(Bytes::new()) } else { full(self.page.clone()) };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        // The page is fixed at build time: clients and caches may keep it for a day.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=86400"));
        response
    }
}

impl<B> tower::Service<Request<B>> for ProblemDocs {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.answer(request.method())))
    }
}

/// The section of `docs/problems.md` under `## <slug>`: its lines up to the next `## `
/// heading. `None` if the page has no such section (the catalogue's tests rule that out).
fn section(slug: &str) -> Option<String> {
    let mut lines = PROBLEMS_MD.lines().skip_while(|line| line.strip_prefix("## ") != Some(slug)).skip(1);
    let body: Vec<&str> = lines.by_ref().take_while(|line| !line.starts_with("## ")).collect();
    (!body.is_empty()).then(|| body.join("\n").trim().to_owned())
}

/// The HTML page: a title, a table of contents, one section per served type.
fn page(served: &[ProblemType]) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>Problem types</title></head>\n<body>\n\
         <h1>Problem types</h1>\n<p>Each error is an <code>application/problem+json</code> body (RFC 9457) whose \
         <code>type</code> names one section below. Each section says when the problem is answered, what a \
         client should do, and which headers come with it.</p>\n<ul>\n",
    );
    for kind in served {
        html.push_str(&format!("<li><a href=\"#{0}\">{0}</a>: {1}</li>\n", kind.slug, escape(kind.title)));
    }
    html.push_str("</ul>\n");
    for kind in served {
        let text = section(kind.slug).unwrap_or_default();
        html.push_str(&format!(
            "<section id=\"{0}\">\n<h2>{0}</h2>\n<p><strong>{1}</strong></p>\n<pre>{2}</pre>\n</section>\n",
            kind.slug,
            escape(kind.title),
            escape(&text)
        ));
    }
    html.push_str("</body>\n</html>\n");
    html
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_a_section_with_the_docs_text_for_each_served_type_only() {
        // Goal: each served slug's section is on the page, with the text of its section in
        // docs/problems.md; a type of another origin is not.
        let layer = ProblemDocs::new();
        for kind in CATALOGUE {
            let id = format!("<section id=\"{}\">", kind.slug);
            let documented = section(kind.slug).expect("every catalogued type has a section");
            assert!(documented.contains("**Status:**") || documented.contains("**When:**"), "{}", kind.slug);
            let first_line = escape(documented.lines().next().expect("a section has text"));
            let served = layer.html().contains(&id) && layer.html().contains(&first_line);
            assert_eq!(served, kind.origin == Origin::Layer, "{}", kind.slug);
        }
        let everything = ProblemDocs::of(&[Origin::Layer, Origin::DemoServer, Origin::Admin]);
        assert!(CATALOGUE.iter().all(|kind| everything.html().contains(&format!("<section id=\"{}\">", kind.slug))));
    }

    #[test]
    fn text_is_escaped() {
        // Goal: `<`, `&` and quotes in the docs cannot become markup.
        assert_eq!(escape(r#"<a href="x">&</a>"#), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
    }

    #[test]
    fn only_get_and_head_are_answered() {
        // Goal: HEAD has GET's headers and no body; other methods are 405 with Allow.
        let docs = ProblemDocs::new();
        let get = docs.answer(&Method::GET);
        let head = docs.answer(&Method::HEAD);
        assert_eq!((get.status(), head.status()), (StatusCode::OK, StatusCode::OK));
        assert_eq!(get.headers(), head.headers());
        let post = docs.answer(&Method::POST);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
    }
}
