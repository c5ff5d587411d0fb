//! GraphiQL's page: React's production builds and a pinned GraphiQL, every
//! file from the configured CDN as `{cdn}/{package}@{version}/{path}` with an
//! integrity hash, the same versions the client checks install, and a
//! subscription URL on the page's own host. That the page really runs (a
//! query, a subscription) is shown in a browser by `tests/clients/run.sh`.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::Value;
use taskrunner::http::{DEFAULT_GRAPHIQL_CDN, HttpOptions};

use crate::harness::{TestApp, TestDb};
use crate::http::send;
use crate::process::Launch;

/// One file the page loads.
#[derive(Debug)]
struct Asset {
    url: String,
    integrity: Option<String>,
    crossorigin: bool,
}

/// The scripts and stylesheets of `page`, in order.
fn assets(page: &str) -> Vec<Asset> {
    let mut found = Vec::new();
    for (open, attribute) in [("<script", "src"), ("<link", "href")] {
        for tag in page.split(open).skip(1) {
            let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
            if open == "<link" && !tag.contains("rel=\"stylesheet\"") {
                continue; // the icon is inline: no request
            }
            if let Some(url) = attribute_value(tag, attribute) {
                found.push(Asset {
                    url,
                    integrity: attribute_value(tag, "integrity"),
                    crossorigin: tag.contains("crossorigin=\"anonymous\""),
                });
            }
        }
    }
    found
}

fn attribute_value(tag: &str, name: &str) -> Option<String> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = start + tag[start..].find('"')?;
    Some(tag[start..end].to_owned())
}

/// `url` split as `{cdn}/{package}@{version}/{path}` for a known `cdn`.
fn package_of<'a>(url: &'a str, cdn: &str) -> (&'a str, &'a str, &'a str) {
    let rest = url
        .strip_prefix(cdn)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or_else(|| panic!("{url} is not under {cdn}"));
    // A scoped package's name starts with '@': the version's '@' is after it.
    let at = rest[1..]
        .find('@')
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{url} names no version"));
    let slash = rest[at..]
        .find('/')
        .map(|i| i + at)
        .unwrap_or_else(|| panic!("{url} names no file"));
    (&rest[..at], &rest[at + 1..slash], &rest[slash + 1..])
}

async fn page(router: axum::Router, path: &str) -> String {
    let (status, headers, body) =
        send(router, Request::get(path).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{path}");
    let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    String::from_utf8(body).unwrap()
}

#[tokio::test]
async fn the_page_loads_production_builds_pinned_from_the_default_cdn() {
    let app = TestApp::new().await;
    for path in ["/", "/graphiql"] {
        let page = page(app.router(), path).await;
        let assets = assets(&page);
        let urls: Vec<&str> = assets.iter().map(|asset| asset.url.as_str()).collect();
        for package in ["react", "react-dom", "graphiql"] {
            assert!(
                urls.iter()
                    .any(|url| package_of(url, DEFAULT_GRAPHIQL_CDN).0 == package),
                "{path} loads {package}: {urls:?}"
            );
        }
        for asset in &assets {
            let (package, version, file) = package_of(&asset.url, DEFAULT_GRAPHIQL_CDN);
            assert!(
                !version.is_empty() && version.split('.').all(|n| n.parse::<u32>().is_ok()),
                "{package} is pinned to an exact version, not {version:?}"
            );
            assert!(
                file.ends_with(".min.js") || file.ends_with(".min.css"),
                "{} is a minified production build",
                asset.url
            );
            let integrity = asset.integrity.as_deref().unwrap_or_default();
            assert!(
                integrity.starts_with("sha384-") && integrity.len() == 7 + 64,
                "{} has an integrity hash: {integrity:?}",
                asset.url
            );
            assert!(asset.crossorigin, "{} is fetched with CORS", asset.url);
        }
        assert!(
            urls.contains(&"https://unpkg.com/react@18.3.1/umd/react.production.min.js")
                && urls.contains(
                    &"https://unpkg.com/react-dom@18.3.1/umd/react-dom.production.min.js"
                ),
            "React's production builds: {urls:?}"
        );
        assert!(!page.contains("development"), "no development build");
        assert!(!page.contains("{{"), "every placeholder is filled in");
    }
}

#[tokio::test]
async fn every_asset_comes_from_the_configured_cdn() {
    let app = TestApp::new().await;
    let cdn = "http://127.0.0.1:9/npm-mirror";
    let options = HttpOptions {
        graphiql_cdn: format!("{cdn}/").parse().unwrap(),
        ..HttpOptions::default()
    };
    let page = page(
        taskrunner::http::router_with(app.state.clone(), options),
        "/",
    )
    .await;
    let assets = assets(&page);
    assert_eq!(assets.len(), 4, "{assets:?}");
    for asset in &assets {
        package_of(&asset.url, cdn);
    }
    assert!(
        !page.contains(DEFAULT_GRAPHIQL_CDN),
        "nothing else is loaded"
    );
    assert!(
        page.contains(&format!("could not be loaded from {cdn}.")),
        "a page whose scripts fail names where it looked"
    );
}

#[tokio::test]
async fn subscriptions_use_a_websocket_on_the_pages_own_host() {
    let app = TestApp::new().await;
    let page = page(app.router(), "/graphiql").await;
    let script = page
        .rsplit("<script>")
        .next()
        .and_then(|script| script.split("</script>").next())
        .expect("an inline script");
    // The URL is computed in the browser from `location`: the page works on
    // any host, and behind TLS the WebSocket is wss.
    for expected in [
        "new URL('/graphql', window.location.href)",
        "window.location.protocol === 'https:' ? 'wss:' : 'ws:'",
        "subscriptionUrl: subscriptionUrl.href",
        "url: url.href",
    ] {
        assert!(script.contains(expected), "the script has {expected:?}");
    }
    assert!(!script.contains("127.0.0.1") && !script.contains("localhost"));
}

#[test]
fn the_page_pins_the_versions_the_client_checks_install() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/package.json");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(manifest).unwrap())
        .expect("tests/clients/package.json is JSON");
    let page = taskrunner::http::GraphiqlPage::default();
    let page = String::from_utf8(page.body().to_vec()).unwrap();
    for asset in assets(&page) {
        let (package, version, _) = package_of(&asset.url, DEFAULT_GRAPHIQL_CDN);
        assert_eq!(
            manifest["devDependencies"][package].as_str(),
            Some(version),
            "tests/clients/package.json pins {package} as the page does"
        );
    }
}

#[tokio::test]
async fn serve_takes_the_cdn_from_its_environment() {
    let db = TestDb::named_fresh();
    let server = Launch::serve()
        .database(&db.url)
        .args(["--workers", "0"])
        .env("TASKRUNNER_GRAPHIQL_CDN", "https://mirror.example/npm/")
        .spawn();
    let address = server.address().await;
    let page = reqwest::get(format!("http://{address}/graphiql"))
        .await
        .expect("GET /graphiql")
        .text()
        .await
        .expect("the page");
    let urls: Vec<String> = assets(&page).into_iter().map(|asset| asset.url).collect();
    assert_eq!(urls.len(), 4, "{page}");
    for url in &urls {
        package_of(url, "https://mirror.example/npm");
    }
}
