//! PostgreSQL over TLS: each `sslmode` against the shared server (TLS on)
//! and against private clusters with a certificate from a CA the test makes,
//! or with TLS off. The server itself says whether a connection is
//! encrypted (`pg_stat_ssl`); where every connection must be, the private
//! cluster refuses plain TCP, so nothing (start-up included) can slip by.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use taskrunner::db::{self, ConnectOptions};

use crate::cluster::{PrivateCluster, ServerTls};
use crate::harness::TestDb;
use crate::process::{Launch, Process};
use crate::temp_dir::TempDir;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a process may take to start and open its connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A certificate authority of the test's own, its certificate in a PEM file.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    file: PathBuf,
    _dir: TempDir,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("self-signed CA");
        let dir = TempDir::new("ca");
        let file = dir.path().join("root.crt");
        std::fs::write(&file, cert.pem()).expect("write CA certificate");
        TestCa {
            issuer: Issuer::new(params, key),
            file,
            _dir: dir,
        }
    }

    /// A server certificate for `names` (host names or IP addresses).
    fn server_tls(&self, names: &[&str], only_tls: bool) -> ServerTls {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("server key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign server");
        ServerTls {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            only_tls,
        }
    }

    fn path(&self) -> String {
        self.file.to_string_lossy().into_owned()
    }
}

/// `url` with `params` (`key=value&…`) added to its query.
fn with_params(url: &str, params: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{params}")
}

/// Connects as the application would, and asks the server whether this
/// connection is encrypted.
async fn connect_and_ask_ssl(url: &str) -> Result<bool, String> {
    let options = ConnectOptions::parse(url).map_err(|e| e.to_string())?;
    let (client, connection) = options.connect(TIMEOUT).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The error `db::establish` (the pool's, the listener's and the writer's
/// way in) gives for `url`; fails the test if it connects.
async fn establish_error(url: &str) -> String {
    match db::establish(url, TIMEOUT).await {
        Ok(_) => panic!("{url} connected"),
        Err(error) => error.to_string(),
    }
}

/// The backends of `application` on database `name`: whether each is
/// encrypted, and its last statement.
async fn backends(
    client: &tokio_postgres::Client,
    name: &str,
    application: &str,
) -> Vec<(bool, String)> {
    client
        .query(
            "SELECT s.ssl, a.query FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = $1 AND a.application_name = $2",
            &[&name, &application],
        )
        .await
        .expect("read pg_stat_activity")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

/// Waits until `serve` is ready (its pool answers), then until its LISTEN
/// connection and at least one pooled connection are seen; returns them.
async fn serving_backends(
    process: &Process,
    client: &tokio_postgres::Client,
    name: &str,
    application: &str,
) -> Vec<(bool, String)> {
    let ready = format!("http://{}/readyz", process.address().await);
    let status = reqwest::get(&ready).await.expect("GET /readyz").status();
    assert_eq!(status, 200, "not ready; log:\n{}", process.tail(40));
    let deadline = tokio::time::Instant::now() + START_DEADLINE;
    loop {
        let seen = backends(client, name, application).await;
        let listening = seen.iter().any(|(_, query)| query.starts_with("LISTEN"));
        if listening && seen.len() >= 2 {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no LISTEN connection and pooled connection within {START_DEADLINE:?}: {seen:?}; log:\n{}",
            process.tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `serve` on a test database of the shared server with `sslmode`,
/// and returns its backends once it serves and listens.
async fn serve_on_shared_server(sslmode: &str) -> Vec<(bool, String)> {
    let db = TestDb::migrated().await;
    let application = format!("taskrunner-tls-{sslmode}");
    let url = with_params(
        &db.url,
        &format!("sslmode={sslmode}&application_name={application}"),
    );
    let server = Launch::serve().database(&url).spawn();
    let client = db.client().await;
    serving_backends(&server, &client, &db.name, &application).await
}

#[tokio::test]
async fn require_encrypts_the_pool_and_the_listener_of_the_real_binary() {
    let seen = serve_on_shared_server("require").await;
    assert!(
        seen.iter().all(|(ssl, _)| *ssl),
        "a connection went without TLS under sslmode=require: {seen:?}"
    );
}

#[tokio::test]
async fn disable_keeps_every_connection_plain() {
    let seen = serve_on_shared_server("disable").await;
    assert!(
        seen.iter().all(|(ssl, _)| !*ssl),
        "a connection used TLS under sslmode=disable: {seen:?}"
    );
}

/// Against a cluster that refuses plain TCP, the binary starts (creating its
/// database and migrating it), serves and listens: all of it over verified
/// TLS. Once with `sslrootcert` in a URL, once with libpq's default root
/// file in `$HOME` and a key=value string.
#[tokio::test]
async fn verify_full_carries_start_up_and_everything_after() {
    let ca = TestCa::new("taskrunner test CA");
    let cluster = PrivateCluster::start_with_tls(Some(&ca.server_tls(&["localhost"], true))).await;
    let admin = cluster.socket_client("postgres").await.expect("socket");
    // The guard is real: plain TCP is turned away.
    let plain = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=disable",
        cluster.port()
    );
    let refused = connect_and_ask_ssl(&plain)
        .await
        .expect_err("plain TCP refused");
    assert!(refused.contains("no encryption"), "{refused}");

    let application = "taskrunner-tls-full";
    let url = format!(
        "postgres://postgres@localhost:{}/tls_full?sslmode=verify-full&sslrootcert={}&application_name={application}",
        cluster.port(),
        ca.path()
    );
    let server = Launch::serve().database(&url).spawn();
    let seen = serving_backends(&server, &admin, "tls_full", application).await;
    assert!(seen.iter().all(|(ssl, _)| *ssl), "{seen:?}");
    drop(server);

    let home = TempDir::new("home");
    std::fs::create_dir(home.path().join(".postgresql")).expect("mkdir .postgresql");
    std::fs::copy(&ca.file, home.path().join(".postgresql/root.crt")).expect("copy root.crt");
    let application = "taskrunner-tls-default-root";
    let url = format!(
        "host=localhost port={} user=postgres dbname=tls_default sslmode=verify-full application_name={application}",
        cluster.port()
    );
    let server = Launch::serve()
        .database(&url)
        .env("HOME", &home.path().to_string_lossy())
        .spawn();
    let seen = serving_backends(&server, &admin, "tls_default", application).await;
    assert!(seen.iter().all(|(ssl, _)| *ssl), "{seen:?}");
}

#[tokio::test]
async fn certificates_are_checked_as_each_mode_says() {
    let ca = TestCa::new("taskrunner test CA");
    let other_ca = TestCa::new("some other CA");
    let cluster = PrivateCluster::start_with_tls(Some(&ca.server_tls(&["localhost"], false))).await;
    let port = cluster.port();
    let url =
        |host: &str, params: &str| format!("postgres://postgres@{host}:{port}/postgres?{params}");

    // The right CA and host.
    let full = url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", ca.path()),
    );
    assert_eq!(connect_and_ask_ssl(&full).await, Ok(true));
    db::establish(&full, TIMEOUT)
        .await
        .expect("diesel connection");

    // A host the certificate does not name.
    let wrong_host = url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca.path()),
    );
    let error = establish_error(&wrong_host).await;
    assert!(
        error.contains(
            "the server's certificate is not valid for host 127.0.0.1 (sslmode=verify-full)"
        ),
        "{error}"
    );
    assert!(error.contains("it names localhost"), "{error}");

    // verify-ca checks the chain only: any name passes, another CA does not.
    let ca_only = url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={}", ca.path()),
    );
    assert_eq!(connect_and_ask_ssl(&ca_only).await, Ok(true));
    let other = url(
        "localhost",
        &format!("sslmode=verify-ca&sslrootcert={}", other_ca.path()),
    );
    let error = establish_error(&other).await;
    assert!(
        error.contains("not signed by a trusted certificate authority")
            && error.contains("sslmode=verify-ca"),
        "{error}"
    );

    // require checks nothing, unless given a root file (libpq's rule).
    assert_eq!(
        connect_and_ask_ssl(&url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        connect_and_ask_ssl(&url("127.0.0.1", "sslmode=prefer")).await,
        Ok(true)
    );
    let require_other = url(
        "localhost",
        &format!("sslmode=require&sslrootcert={}", other_ca.path()),
    );
    let error = establish_error(&require_other).await;
    assert!(
        error.contains("not signed by a trusted certificate authority"),
        "{error}"
    );
    assert_eq!(
        connect_and_ask_ssl(&url("localhost", "sslmode=disable")).await,
        Ok(false)
    );
}

#[tokio::test]
async fn a_refused_certificate_ends_start_up_at_once_with_a_clear_message() {
    let ca = TestCa::new("taskrunner test CA");
    let cluster = PrivateCluster::start_with_tls(Some(&ca.server_tls(&["localhost"], true))).await;
    let url = format!(
        "postgres://postgres:s3cret@127.0.0.1:{}/tls_refused?sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        ca.path()
    );
    let mut server = Launch::serve().database(&url).spawn();
    // Not retried: waiting cannot change the certificate. (Ten tries would
    // take half a minute.)
    let exited = server
        .wait_for_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("still running; log:\n{}", server.tail(40)));
    assert!(!exited.status.success());
    let log = server.lines().join("\n");
    assert!(
        log.contains(
            "the server's certificate is not valid for host 127.0.0.1 (sslmode=verify-full)"
        ),
        "{log}"
    );
    assert!(!log.contains("retrying"), "{log}");
    assert!(!log.contains("s3cret"), "{log}");
}

#[tokio::test]
async fn without_tls_on_the_server_require_fails_and_prefer_goes_plain() {
    let cluster = PrivateCluster::start().await;
    let url = |params: &str| format!("{}?{params}", cluster.url("postgres"));

    let error = establish_error(&url("sslmode=require")).await;
    assert!(
        error.contains("the server does not support TLS, and sslmode=require requires it"),
        "{error}"
    );
    assert_eq!(connect_and_ask_ssl(&url("sslmode=prefer")).await, Ok(false));
    assert_eq!(connect_and_ask_ssl(&url("sslmode=allow")).await, Ok(false));
    // prefer is the default.
    assert_eq!(
        connect_and_ask_ssl(&cluster.url("postgres")).await,
        Ok(false)
    );
}

#[tokio::test]
async fn unix_sockets_ignore_sslmode() {
    let ca = TestCa::new("taskrunner test CA");
    let cluster = PrivateCluster::start_with_tls(Some(&ca.server_tls(&["localhost"], true))).await;
    let url = format!(
        "host={} port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        socket_dir_param(cluster.socket_dir()),
        cluster.port(),
        ca.path()
    );
    assert_eq!(connect_and_ask_ssl(&url).await, Ok(false));
}

/// A directory as a key=value value, quoted in case it holds spaces.
fn socket_dir_param(dir: &Path) -> String {
    format!(
        "'{}'",
        dir.to_string_lossy()
            .replace('\\', "\\\\")
            .replace('\'', "\\'")
    )
}
