//! Reaching PostgreSQL: `DATABASE_URL` read once into the driver's settings
//! and ours (TLS), and connections opened with both.
//!
//! tokio-postgres reads `sslmode` itself but knows only disable, prefer and
//! require, and nothing of `sslrootcert`. So those two are taken out of the
//! connection string here, the rest is left to tokio-postgres, and the
//! driver is told only whether to ask for TLS; what the certificate must
//! prove is the rustls verifier's job (`tls.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use tokio_postgres::config::Host;
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Config, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls::{self, RootCerts, SslMode, TlsSetupError};

/// The driver's half of an open connection; it must be polled (spawned) for
/// the [`Client`] to work.
pub type DriverConnection =
    tokio_postgres::Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// How to reach the database: everything `DATABASE_URL` says, checked and
/// with its files read, so that connecting later cannot fail on the settings.
#[derive(Clone)]
pub struct ConnectOptions {
    config: Config,
    mode: SslMode,
    tls: MakeRustlsConnect,
}

/// Why `DATABASE_URL` cannot be used. The text never holds the URL itself
/// (it may carry a password); callers name the server with `redact_url`.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("not a valid PostgreSQL connection string: {0}")]
    Invalid(String),
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(
        "sslmode={0} cannot be met by a Unix-socket host, which never uses TLS; \
         list socket directories and TCP hosts in separate connection strings"
    )]
    SocketAmongTcpHosts(SslMode),
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("timed out connecting to the database")]
    TimedOut,
    /// TLS refused the server: it offered none where it is required, or its
    /// certificate did not pass. Trying again will not change that.
    #[error("{0}")]
    TlsRefused(String),
    /// Anything else; shown with its causes, as the driver's own text is
    /// only "db error" when the server refused.
    #[error("{}", crate::error::error_chain(.0))]
    Postgres(#[from] tokio_postgres::Error),
}

impl ConnectError {
    /// The server's SQLSTATE, when the server refused the connection.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            ConnectError::Postgres(error) => error.code(),
            ConnectError::TimedOut | ConnectError::TlsRefused(_) => None,
        }
    }
}

impl ConnectOptions {
    /// Reads a connection string, in URL form
    /// (`postgres://user@host/db?sslmode=verify-full&sslrootcert=ca.pem`) or
    /// key=value form (`host=db sslmode=require`), and reads any root
    /// certificate file it names. libpq's default root file is looked for in
    /// `$HOME`.
    pub fn parse(url: &str) -> Result<ConnectOptions, DatabaseUrlError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        ConnectOptions::parse_with_home(url, home.as_deref())
    }

    fn parse_with_home(url: &str, home: Option<&Path>) -> Result<ConnectOptions, DatabaseUrlError> {
        let split = split_tls_params(url)?;
        let mut config: Config = split
            .rest
            .parse()
            .map_err(|e: tokio_postgres::Error| DatabaseUrlError::Invalid(e.to_string()))?;
        let roots = split
            .sslrootcert
            .as_deref()
            .map_or(RootCerts::Default, RootCerts::from_param);
        let mut mode = match split.sslmode.as_deref() {
            Some(mode) => mode.parse()?,
            // As libpq: trusting the platform's roots means checking the host too.
            None if roots == RootCerts::System => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        // tokio-postgres checks the certificate against `host`; given only
        // `hostaddr`, libpq checks it against the address.
        if config.get_hosts().is_empty() {
            for address in config.get_hostaddrs().to_vec() {
                config.host(address.to_string());
            }
        }
        let hosts = config.get_hosts();
        let sockets = hosts.iter().filter(|h| matches!(h, Host::Unix(_))).count();
        if sockets > 0 && sockets == hosts.len() {
            // As libpq: sslmode does not apply to Unix sockets.
            mode = SslMode::Disable;
        } else if sockets > 0 && mode.requires_tls() {
            return Err(DatabaseUrlError::SocketAmongTcpHosts(mode));
        }
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Allow | SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let tls = MakeRustlsConnect::new(tls::client_config(mode, &roots, home)?);
        Ok(ConnectOptions { config, mode, tls })
    }

    /// The driver's settings (database, user, hosts...).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The `sslmode` in force (`disable` for Unix-socket hosts, whatever was asked).
    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// The same server and settings, on database `name`.
    pub fn with_database(&self, name: &str) -> ConnectOptions {
        let mut other = self.clone();
        other.config.dbname(name);
        other
    }

    /// Opens a driver connection, giving up after `timeout`.
    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<(Client, DriverConnection), ConnectError> {
        tokio::time::timeout(timeout, self.connect_unbounded())
            .await
            .map_err(|_| ConnectError::TimedOut)?
    }

    /// Opens a diesel connection, giving up after `timeout`.
    pub async fn establish(&self, timeout: Duration) -> Result<AsyncPgConnection, ConnectionError> {
        let establish = async {
            let (client, connection) = self
                .connect_unbounded()
                .await
                .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        };
        tokio::time::timeout(timeout, establish)
            .await
            .map_err(|_| ConnectionError::BadConnection(ConnectError::TimedOut.to_string()))?
    }

    async fn connect_unbounded(&self) -> Result<(Client, DriverConnection), ConnectError> {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(|error| match tls::explain_refusal(&error, self.mode) {
                Some(explained) => ConnectError::TlsRefused(explained),
                None => ConnectError::Postgres(error),
            })
    }
}

/// A connection string with `sslmode` and `sslrootcert` taken out.
#[derive(Debug, PartialEq, Eq)]
struct TlsParams {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

impl TlsParams {
    /// Keeps `value` if `key` is ours (a later one wins, as in libpq);
    /// returns whether it was.
    fn take(&mut self, key: &str, value: String) -> bool {
        match key {
            "sslmode" => self.sslmode = Some(value),
            "sslrootcert" => self.sslrootcert = Some(value),
            _ => return false,
        }
        true
    }
}

fn split_tls_params(url: &str) -> Result<TlsParams, DatabaseUrlError> {
    let mut params = TlsParams {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
    };
    let is_url = ["postgres://", "postgresql://"]
        .iter()
        .any(|prefix| url.starts_with(prefix));
    if is_url {
        // tokio-postgres takes everything up to the first `@` as credentials,
        // so the query starts at the first `?` after it.
        let after_credentials = url.find('@').map_or(0, |at| at + 1);
        let Some(question) = url[after_credentials..].find('?') else {
            params.rest = url.to_owned();
            return Ok(params);
        };
        let (base, query) = url.split_at(after_credentials + question);
        let mut kept = Vec::new();
        for pair in query[1..].split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !params.take(&decode(key)?, decode(value)?) {
                kept.push(pair);
            }
        }
        params.rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
    } else {
        let mut kept = Vec::new();
        for pair in KeyValuePairs::new(url) {
            let pair = pair?;
            if !params.take(pair.key, pair.value) {
                kept.push(&url[pair.span]);
            }
        }
        params.rest = kept.join(" ");
    }
    Ok(params)
}

fn decode(text: &str) -> Result<String, DatabaseUrlError> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| DatabaseUrlError::Invalid("a query parameter is not UTF-8".into()))
}

/// One `key = value` of a key=value connection string, as libpq reads it.
struct KeyValue<'a> {
    key: &'a str,
    value: String,
    /// Where the pair stands in the string, to pass the others on untouched.
    span: std::ops::Range<usize>,
}

/// The pairs of a key=value connection string: keys end at `=` or white
/// space; values are single-quoted (with `\` escapes) or run to white space.
struct KeyValuePairs<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> KeyValuePairs<'a> {
    fn new(text: &'a str) -> Self {
        KeyValuePairs { text, at: 0 }
    }

    fn skip_space(&mut self) {
        let rest = &self.text[self.at..];
        self.at += rest.len() - rest.trim_start().len();
    }

    fn pair(&mut self) -> Result<KeyValue<'a>, DatabaseUrlError> {
        let start = self.at;
        let rest = &self.text[start..];
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        self.at += key_len;
        self.skip_space();
        if !self.text[self.at..].starts_with('=') {
            return Err(DatabaseUrlError::Invalid(format!(
                "expected `=` after `{key}`"
            )));
        }
        self.at += 1;
        self.skip_space();
        let mut value = String::new();
        let mut chars = self.text[self.at..].char_indices();
        let quoted = self.text[self.at..].starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut closed = !quoted;
        let mut end = self.text.len() - self.at;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '\'' if quoted => {
                    closed = true;
                    end = i + 1;
                    break;
                }
                c if c.is_whitespace() && !quoted => {
                    end = i;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(DatabaseUrlError::Invalid(format!(
                "the value of `{key}` has no closing quote"
            )));
        }
        if !quoted && value.is_empty() {
            return Err(DatabaseUrlError::Invalid(format!("`{key}` has no value")));
        }
        self.at += end;
        Ok(KeyValue {
            key,
            value,
            span: start..self.at,
        })
    }
}

impl<'a> Iterator for KeyValuePairs<'a> {
    type Item = Result<KeyValue<'a>, DatabaseUrlError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.skip_space();
        if self.at >= self.text.len() {
            return None;
        }
        let pair = self.pair();
        if pair.is_err() {
            // One error ends the reading.
            self.at = self.text.len();
        }
        Some(pair)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> TlsParams {
        split_tls_params(url).expect(url)
    }

    #[test]
    fn url_parameters_of_ours_come_out_and_the_rest_stays() {
        let params = split(
            "postgres://app:pw@db:5432/tasks?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20dir%2Fca.pem&connect_timeout=3",
        );
        assert_eq!(params.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/ca dir/ca.pem"));
        assert_eq!(
            params.rest,
            "postgres://app:pw@db:5432/tasks?application_name=x&connect_timeout=3"
        );
        let params = split("postgresql://db/tasks?sslmode=require");
        assert_eq!(params.rest, "postgresql://db/tasks");
        assert_eq!(split("postgres://db/tasks").rest, "postgres://db/tasks");
        // A `?` in the password is not the query.
        let params = split("postgres://app:p?w@db/tasks?sslmode=disable");
        assert_eq!(params.rest, "postgres://app:p?w@db/tasks");
        assert_eq!(params.sslmode.as_deref(), Some("disable"));
    }

    #[test]
    fn key_value_pairs_of_ours_come_out_and_the_rest_stays() {
        let params = split(
            "host=db  user=app password='a b\\'c' sslmode = verify-ca sslrootcert='/etc/my ca.pem' dbname=tasks",
        );
        assert_eq!(params.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(params.sslrootcert.as_deref(), Some("/etc/my ca.pem"));
        assert_eq!(
            params.rest,
            "host=db user=app password='a b\\'c' dbname=tasks"
        );
        let config: Config = params.rest.parse().expect("the rest parses");
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
        // The last of a repeated key wins, as in libpq.
        let params = split("host=db sslmode=disable sslmode=require");
        assert_eq!(params.sslmode.as_deref(), Some("require"));
    }

    #[test]
    fn broken_key_value_strings_are_refused() {
        for bad in ["host=db sslmode", "host='db", "host= "] {
            let error = split_tls_params(bad).expect_err(bad);
            assert!(
                matches!(error, DatabaseUrlError::Invalid(_)),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn modes_reach_the_driver_as_it_knows_them() {
        use tokio_postgres::config::SslMode as Driver;
        let home = Path::new("/nonexistent");
        for (given, mode, driver) in [
            ("", SslMode::Prefer, Driver::Prefer),
            ("?sslmode=disable", SslMode::Disable, Driver::Disable),
            ("?sslmode=allow", SslMode::Allow, Driver::Prefer),
            ("?sslmode=require", SslMode::Require, Driver::Require),
        ] {
            let url = format!("postgres://app@db/tasks{given}");
            let options = ConnectOptions::parse_with_home(&url, Some(home)).expect(&url);
            assert_eq!(options.ssl_mode(), mode, "{url}");
            assert_eq!(options.config().get_ssl_mode(), driver, "{url}");
            assert_eq!(options.config().get_dbname(), Some("tasks"));
        }
    }

    #[test]
    fn bad_tls_settings_are_clear_errors() {
        let home = Some(Path::new("/nonexistent"));
        let error = ConnectOptions::parse_with_home("postgres://db/x?sslmode=verify_full", home)
            .err()
            .expect("bad mode");
        assert!(
            error.to_string().contains("\"verify_full\" is not one of"),
            "{error}"
        );
        let error = ConnectOptions::parse_with_home(
            "host=db sslmode=verify-ca sslrootcert=/nonexistent/ca.pem",
            home,
        )
        .err()
        .expect("missing file");
        assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");
        let error = ConnectOptions::parse_with_home("host=db sslmode=verify-full", home)
            .err()
            .expect("no default root file");
        assert!(
            error
                .to_string()
                .contains("/nonexistent/.postgresql/root.crt"),
            "{error}"
        );
        let error = ConnectOptions::parse_with_home("postgres://db/x?port=many", home)
            .err()
            .expect("bad port");
        assert!(matches!(error, DatabaseUrlError::Invalid(_)), "{error}");
    }

    #[test]
    fn system_roots_default_to_verify_full() {
        // The trust store may be empty on a bare machine; either way the
        // mode was taken as verify-full, which is all that is checked here.
        match ConnectOptions::parse_with_home("postgres://db/x?sslrootcert=system", None) {
            Ok(options) => assert_eq!(options.ssl_mode(), SslMode::VerifyFull),
            Err(error) => assert!(
                matches!(error, DatabaseUrlError::Tls(TlsSetupError::NoSystemRoots)),
                "{error}"
            ),
        }
        let error = ConnectOptions::parse_with_home(
            "postgres://db/x?sslrootcert=system&sslmode=require",
            None,
        )
        .err()
        .expect("weak mode");
        assert!(error.to_string().contains("use \"verify-full\""), "{error}");
    }

    #[test]
    fn unix_sockets_never_use_tls() {
        let options = ConnectOptions::parse_with_home(
            "host=/var/run/postgresql sslmode=verify-full sslrootcert=/nonexistent/ca.pem",
            None,
        )
        .expect("sockets ignore sslmode");
        assert_eq!(options.ssl_mode(), SslMode::Disable);
        assert_eq!(
            options.config().get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        let error =
            ConnectOptions::parse_with_home("host=/var/run/postgresql,db sslmode=require", None)
                .err()
                .expect("mixed hosts");
        assert!(
            matches!(error, DatabaseUrlError::SocketAmongTcpHosts(_)),
            "{error}"
        );
        // Mixed hosts are fine when TLS is optional.
        ConnectOptions::parse_with_home("host=/var/run/postgresql,db sslmode=prefer", None)
            .expect("prefer with mixed hosts");
    }

    #[test]
    fn an_address_alone_is_the_name_checked() {
        let options = ConnectOptions::parse_with_home("hostaddr=127.0.0.1 sslmode=require", None)
            .expect("hostaddr");
        assert_eq!(
            options.config().get_hosts(),
            &[Host::Tcp("127.0.0.1".to_owned())]
        );
    }
}
