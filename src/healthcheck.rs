//! `taskrunner healthcheck`: the client side of `/healthz`, so that a
//! container image can check its own server without curl in it. It reads no
//! database and no provider settings, and gives up after a short timeout: it
//! runs every few seconds in every container.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Url;

use crate::config::HealthcheckArgs;
use crate::http::HEALTHZ_PATH;

/// Asks the server, prints one line saying why on stdout (healthy) or stderr
/// (not), and returns the exit code a container health check expects: 0
/// healthy, 1 not.
pub async fn run(args: &HealthcheckArgs) -> ExitCode {
    let timeout = Duration::from_secs(args.timeout_seconds);
    let outcome = match target(args) {
        Ok(url) => check(&url, timeout).await,
        Err(reason) => Err(reason),
    };
    match outcome {
        Ok(healthy) => {
            println!("{healthy}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// The URL to ask: the one given (at `/healthz` if it names no path), else
/// `/healthz` at the bind address, an unspecified one (0.0.0.0, [::]) read
/// as the loopback of its family, where a server bound to it answers too.
pub fn target(args: &HealthcheckArgs) -> Result<Url, String> {
    match &args.url {
        Some(given) => url_from(given),
        None => url_at(args.bind),
    }
}

fn url_at(bind: SocketAddr) -> Result<Url, String> {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let address = SocketAddr::new(ip, bind.port());
    Url::parse(&format!("http://{address}{HEALTHZ_PATH}"))
        .map_err(|error| format!("{address} makes no URL: {error}"))
}

fn url_from(given: &str) -> Result<Url, String> {
    let mut url = Url::parse(given).map_err(|error| {
        format!("{given:?} is not a URL ({error}); give one such as http://127.0.0.1:8000/healthz")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{given:?} is not an http:// or https:// URL"));
    }
    if !names_a_path(given) {
        url.set_path(HEALTHZ_PATH);
    }
    Ok(url)
}

/// Whether the text of a URL has a path after its host, be it only `/`
/// (a parsed URL always has one, so the text is what tells).
fn names_a_path(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme
        .find(['/', '?', '#'])
        .is_some_and(|at| after_scheme[at..].starts_with('/'))
}

/// GETs `url` and calls a 2xx answer within `timeout` healthy; anything
/// else (no connection, no answer in time, a redirect, an error status) is
/// the reason it is not.
pub async fn check(url: &Url, timeout: Duration) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        // The server is asked directly: a proxy from the environment would
        // answer for it, or not reach its loopback at all.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|error| format!("could not make an HTTP client: {error}"))?;
    let response = client.get(url.clone()).send().await.map_err(|error| {
        if error.is_timeout() {
            format!("{url} did not answer within {} s", timeout.as_secs())
        } else {
            format!("could not reach {url}: {}", root_cause(&error))
        }
    })?;
    let status = response.status();
    if status.is_success() {
        Ok(format!("healthy: {url} answered {status}"))
    } else {
        Err(format!("{url} answered {status}"))
    }
}

/// The innermost error, which names what went wrong (`Connection refused`)
/// where the outer ones only say what was being done.
fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: Option<&str>, bind: &str) -> HealthcheckArgs {
        HealthcheckArgs {
            url: url.map(str::to_owned),
            bind: bind.parse().unwrap(),
            timeout_seconds: 5,
        }
    }

    fn target_of(url: Option<&str>, bind: &str) -> Result<String, String> {
        target(&args(url, bind)).map(String::from)
    }

    #[test]
    fn the_bind_address_gives_the_url() {
        let cases = [
            ("127.0.0.1:8000", "http://127.0.0.1:8000/healthz"),
            ("0.0.0.0:8000", "http://127.0.0.1:8000/healthz"),
            ("[::]:9000", "http://[::1]:9000/healthz"),
            ("[::1]:9000", "http://[::1]:9000/healthz"),
            ("10.1.2.3:80", "http://10.1.2.3/healthz"),
        ];
        for (bind, expected) in cases {
            assert_eq!(target_of(None, bind).as_deref(), Ok(expected), "{bind}");
        }
    }

    #[test]
    fn a_given_url_wins_and_gets_healthz_when_it_names_no_path() {
        let cases = [
            ("http://api:8000", "http://api:8000/healthz"),
            ("http://api:8000?verbose", "http://api:8000/healthz?verbose"),
            ("http://api:8000/", "http://api:8000/"),
            ("http://api:8000/readyz", "http://api:8000/readyz"),
            (
                "https://tasks.example.com",
                "https://tasks.example.com/healthz",
            ),
        ];
        for (url, expected) in cases {
            assert_eq!(
                target_of(Some(url), "0.0.0.0:1").as_deref(),
                Ok(expected),
                "{url}"
            );
        }
    }

    #[test]
    fn a_url_that_is_not_http_is_refused_with_a_reason() {
        for url in [
            "api:8000",
            "127.0.0.1:8000",
            "ftp://api/healthz",
            "not a url",
            "",
        ] {
            let refused = target_of(Some(url), "127.0.0.1:8000").unwrap_err();
            assert!(refused.contains(&format!("{url:?}")), "{url}: {refused}");
        }
    }
}
