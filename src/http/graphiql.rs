//! GraphiQL, the in-browser IDE whose docs pane is the API reference.
//!
//! The page is our own template (`graphiql.html`, beside this file) rather
//! than async-graphql's, which loads React's development builds and runs no
//! subscriptions. It loads React's production builds and a pinned GraphiQL
//! from a configurable CDN (`--graphiql-cdn`), each file checked against its
//! Subresource Integrity hash, and points GraphiQL's subscriptions at a
//! WebSocket on `/graphql` of whatever host served the page.
//!
//! To change a version, change it in the template and in
//! `tests/clients/package.json` together (a test compares them), and take each
//! file's hash from the npm package: `openssl dgst -sha384 -binary FILE | base64`.
//! GraphiQL 4 is the last line with a browser (UMD) build, which keeps the
//! page free of a build step, and it bundles the graphql-ws client; React 18
//! is the last line with UMD production builds.

use std::fmt;
use std::str::FromStr;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::response::Html;

use crate::http::HttpState;

/// Where GraphiQL's files come from unless `--graphiql-cdn` says otherwise:
/// a public CDN that serves every npm package as `/{package}@{version}/{path}`.
pub const DEFAULT_GRAPHIQL_CDN: &str = "https://unpkg.com";

/// The page, with `{{cdn}}` where the CDN's base URL goes.
const TEMPLATE: &str = include_str!("graphiql.html");

/// The base URL GraphiQL's files are loaded from: `{cdn}/{package}@{version}/{path}`.
///
/// Only an absolute `http` or `https` URL with no query or fragment is
/// accepted, so the page cannot be pointed at a script URL by mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphiqlCdn(String);

impl GraphiqlCdn {
    /// The base URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for GraphiqlCdn {
    fn default() -> Self {
        GraphiqlCdn(DEFAULT_GRAPHIQL_CDN.to_owned())
    }
}

impl fmt::Display for GraphiqlCdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for GraphiqlCdn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim().trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|_| format!("{text:?} is not a URL"))?;
        let scheme_is_web = matches!(uri.scheme_str(), Some("http" | "https"));
        if !scheme_is_web || uri.authority().is_none() {
            return Err(format!(
                "{text:?} is not an http:// or https:// URL with a host"
            ));
        }
        if uri.query().is_some() || trimmed.contains('#') {
            return Err(format!(
                "{text:?} has a query or fragment: give the base URL that package paths follow"
            ));
        }
        Ok(GraphiqlCdn(trimmed.to_owned()))
    }
}

/// The GraphiQL page, rendered once at start-up and shared by every request.
#[derive(Clone)]
pub struct GraphiqlPage(Bytes);

impl GraphiqlPage {
    /// The page with its assets loaded from `cdn`.
    pub fn new(cdn: &GraphiqlCdn) -> Self {
        GraphiqlPage(Bytes::from(
            TEMPLATE.replace("{{cdn}}", &escape_html(cdn.as_str())),
        ))
    }

    /// The page's HTML.
    pub fn body(&self) -> &Bytes {
        &self.0
    }
}

impl Default for GraphiqlPage {
    fn default() -> Self {
        GraphiqlPage::new(&GraphiqlCdn::default())
    }
}

/// `GET /` and `GET /graphiql`.
pub async fn graphiql(State(state): State<HttpState>) -> Html<Bytes> {
    Html(state.graphiql.0.clone())
}

/// `text` made safe inside an HTML attribute or element. A valid URL holds
/// none of `<>"` but may hold `&` and `'`.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdn_is_an_absolute_web_url_without_trailing_slash() {
        let cdn: GraphiqlCdn = "http://127.0.0.1:9000/npm/".parse().unwrap();
        assert_eq!(cdn.as_str(), "http://127.0.0.1:9000/npm");
        for bad in [
            "",
            "unpkg",
            "/assets",
            "ftp://mirror/npm",
            "javascript:alert(1)",
            "https://cdn.example/npm?v=1",
            "https://cdn.example/npm#x",
            "https://cdn.example/\"><script>",
        ] {
            assert!(bad.parse::<GraphiqlCdn>().is_err(), "{bad:?} is accepted");
        }
    }

    #[test]
    fn the_cdn_is_escaped_where_it_is_filled_in() {
        let cdn: GraphiqlCdn = "https://mirror.example/a&b'c".parse().unwrap();
        let page = GraphiqlPage::new(&cdn);
        let text = std::str::from_utf8(&page.0).unwrap();
        assert!(text.contains("https://mirror.example/a&amp;b&#39;c/react@"));
        assert!(!text.contains("{{cdn}}"));
    }
}
