//! Every problem `type` the demo server answers resolves, on the same server, to the
//! documentation of that problem (RFC 9457 section 3.1.1; docs/problems.md).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use http::Method;
use idem_http::problem::CATALOGUE;
use support::{PAYMENT, Reply, Server, Setup, send};

/// docs/problems.md, the source of the page the server serves.
const PROBLEMS_MD: &str = include_str!("../../../docs/problems.md");

/// Answers that carry problems the test provokes over HTTP: (what, reply).
async fn provoke_problems(server: &Server) -> Vec<(&'static str, Reply)> {
    let addr = server.addr;
    let key = |key: &'static str| ("idempotency-key", key.as_bytes());
    let json = ("content-type", &b"application/json"[..]);
    let mut answers = vec![
        ("no route", server.get("/nowhere", None).await),
        ("wrong method", send(addr, Method::DELETE, "/payments", &[], "").await),
        ("bad authorization", send(addr, Method::GET, "/payments", &[("authorization", b"Basic eDp5")], "").await),
        ("unknown cursor", server.get("/payments?starting_after=pay_nothing", None).await),
        ("limit out of range", server.get("/payments?limit=0", None).await),
        ("unknown payment", server.get("/payments/pay_nothing", None).await),
        ("no key", server.post("/payments", None, PAYMENT).await),
        ("bad key", server.post("/payments", Some("has space"), PAYMENT).await),
        (
            "not json",
            send(addr, Method::POST, "/payments", &[key("k-text"), ("content-type", b"text/plain")], "x").await,
        ),
        ("malformed json", send(addr, Method::POST, "/payments", &[key("k-syntax"), json], "{").await),
        (
            "invalid amount",
            server
                .post("/payments", Some("k-amount"), r#"{"amount": -1, "currency": "USD", "destination": "m"}"#)
                .await,
        ),
    ];
    let long = "x".repeat(idem_server::app::BODY_BYTES_MAX + 1);
    answers.push(("body too large", send(addr, Method::POST, "/payments", &[key("k-long"), json], &long).await));
    assert_eq!(server.post("/payments", Some("k-reused"), PAYMENT).await.status, 201);
    let other = r#"{"amount": 2.00, "currency": "USD", "destination": "m"}"#;
    answers.push(("key reused", server.post("/payments", Some("k-reused"), other).await));
    // A store that cannot be used: the layer's claim fails, and readiness says so.
    server.store.as_ref().expect("a SQLite server").close().await;
    answers.push(("store closed", server.post("/payments", Some("k-closed"), PAYMENT).await));
    answers.push(("store closed, health", server.get("/healthz", None).await));
    answers
}

/// The path to GET and the fragment of a type URI, resolved against `http://addr/` (RFC 3986
/// section 5): the server's types are references with the full path, `/problems#<slug>`.
fn resolve(type_uri: &str) -> (String, String) {
    assert!(type_uri.starts_with('/') && !type_uri.starts_with("//"), "a full-path reference: {type_uri}");
    let (path, fragment) = type_uri.split_once('#').expect("a type names its section in the fragment");
    (path.to_owned(), fragment.to_owned())
}

/// The first line of the section `## slug` of docs/problems.md, escaped as HTML text.
fn first_documented_line(slug: &str) -> String {
    let mut lines = PROBLEMS_MD.lines().skip_while(|line| line.strip_prefix("## ") != Some(slug)).skip(1);
    let line =
        lines.find(|line| !line.trim().is_empty()).unwrap_or_else(|| panic!("docs/problems.md has no section {slug}"));
    line.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// GETs the documentation a type URI resolves to, and checks it is that problem's section.
async fn follow(addr: SocketAddr, type_uri: &str) {
    let (path, slug) = resolve(type_uri);
    let page = send(addr, Method::GET, &path, &[], "").await;
    assert_eq!(page.status, 200, "GET {path} for {type_uri}: {page:?}");
    assert!(page.header("content-type").is_some_and(|kind| kind.starts_with("text/html")), "{page:?}");
    let html = std::str::from_utf8(&page.body).expect("the page is UTF-8");
    let start = html.find(&format!("<section id=\"{slug}\">")).unwrap_or_else(|| panic!("no section for {type_uri}"));
    let section = &html[start..start + html[start..].find("</section>").expect("sections are closed")];
    assert!(section.contains(&first_documented_line(&slug)), "{type_uri}: the section holds the docs' text: {section}");
}

#[tokio::test]
async fn every_problem_type_the_server_answers_resolves_to_its_documentation() {
    // Goal: collect the type of every problem provoked over HTTP, plus every type of the
    // catalogue (the layer's and the server's, some too hard to provoke here: a store at its
    // limit, a handler panic); each is catalogued, and a GET of what it resolves to on the
    // same server answers 200 with that problem's section of docs/problems.md.
    let dir = tempfile::tempdir().expect("a temp dir can be made");
    let server = Server::sqlite(&dir.path().join("idem.db"), Setup::default()).await;
    let catalogued: BTreeSet<String> =
        CATALOGUE.iter().map(|kind| format!("{}{}", idem_http::problem::PROBLEM_TYPE_BASE, kind.slug)).collect();

    let mut provoked = BTreeSet::new();
    for (what, reply) in provoke_problems(&server).await {
        assert_eq!(reply.header("content-type"), Some("application/problem+json"), "{what}: {reply:?}");
        let problem = reply.json();
        let type_uri = problem["type"].as_str().unwrap_or_else(|| panic!("{what}: a type: {problem}")).to_owned();
        assert!(catalogued.contains(&type_uri), "{what}: {type_uri} is catalogued");
        assert_eq!(problem["status"], reply.status, "{what}");
        provoked.insert(type_uri);
    }
    for slug in [
        "not-found",
        "method-not-allowed",
        "unauthorized",
        "unknown-cursor",
        "invalid-request",
        "key-missing",
        "key-invalid",
        "unsupported-media-type",
        "malformed-json",
        "body-too-large",
        "key-reused",
        "store-unavailable",
        "not-ready",
    ] {
        assert!(provoked.iter().any(|type_uri| type_uri.ends_with(&format!("#{slug}"))), "{slug} was provoked");
    }
    for type_uri in provoked.union(&catalogued) {
        follow(server.addr, type_uri).await;
    }
}

#[tokio::test]
async fn the_documentation_page_takes_get_and_head_only() {
    // Goal: the page is a plain resource: HEAD answers GET's head without a body, and a
    // write method is refused with 405 and `Allow`, never claimed or recorded.
    let server = Server::memory(Setup::default()).await;
    let head = send(server.addr, Method::HEAD, "/problems", &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let post = send(server.addr, Method::POST, "/problems", &[("idempotency-key", b"k1")], "{}").await;
    assert_eq!(post.status, 405, "{post:?}");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    server.stop().await;
}

#[test]
fn the_server_builds_every_problem_from_the_catalogue() {
    // Goal: a problem the server answers cannot miss its documentation: every one is built
    // with `Problem::of(types::…)`, never from a free slug (`Problem::new`).
    let sources = [
        ("app.rs", include_str!("../src/app.rs")),
        ("bodies.rs", include_str!("../src/bodies.rs")),
        ("fairness.rs", include_str!("../src/fairness.rs")),
        ("principal.rs", include_str!("../src/principal.rs")),
        ("http_server.rs", include_str!("../src/http_server.rs")),
        ("serve.rs", include_str!("../src/serve.rs")),
        ("compose.rs", include_str!("../src/compose.rs")),
    ];
    for (file, source) in sources {
        assert!(!source.contains("Problem::new("), "{file} builds a problem from a free slug");
    }
}
