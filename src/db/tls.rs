//! TLS to PostgreSQL over rustls: libpq's `sslmode` and `sslrootcert`, the
//! certificate checks each mode asks for, and plain words for a refusal.
//!
//! rustls with the `ring` provider, as the HTTP client already uses: no
//! OpenSSL, no C toolchain beyond what `ring` needs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// How much TLS a connection insists on, and what it checks: libpq's
/// `sslmode`, with the same names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Taken as `Prefer`: TLS when the server offers it. (libpq tries plain
    /// first and TLS only if the server insists; the difference shows only
    /// against a server that offers TLS and also accepts plain connections.)
    Allow,
    /// TLS when the server offers it, else plain; the certificate is not
    /// checked. The default.
    Prefer,
    /// TLS or no connection. The certificate is checked as for `VerifyCa`
    /// when a root certificate file is given (or libpq's default one
    /// exists), else not at all.
    Require,
    /// TLS, with the server's certificate chain checked against the root
    /// certificates.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a connection fails rather than go without TLS.
    pub fn requires_tls(self) -> bool {
        matches!(
            self,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
        )
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = TlsSetupError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(TlsSetupError::UnknownSslMode(other.to_owned())),
        })
    }
}

/// Where the trusted root certificates come from: libpq's `sslrootcert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// None named: libpq's default file, `~/.postgresql/root.crt`, if it exists.
    Default,
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trust store.
    System,
}

impl RootCerts {
    /// Reads an `sslrootcert` value.
    pub fn from_param(value: &str) -> RootCerts {
        if value == "system" {
            RootCerts::System
        } else {
            RootCerts::File(PathBuf::from(value))
        }
    }
}

/// Why the TLS settings of a connection string cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    UnknownSslMode(String),
    #[error(
        "root certificate file {path} does not exist; give one with sslrootcert, use the \
         platform's trusted roots with sslrootcert=system, or choose sslmode=require or \
         prefer to skip the certificate check (sslmode={mode})"
    )]
    NoRootFile { path: String, mode: SslMode },
    #[error("could not read root certificate file {path} (sslrootcert): {reason}")]
    UnreadableRootFile { path: String, reason: String },
    #[error("root certificate file {path} (sslrootcert) holds no usable PEM certificate")]
    EmptyRootFile { path: String },
    #[error("weak sslmode \"{0}\" may not be used with sslrootcert=system (use \"verify-full\")")]
    WeakModeWithSystemRoots(SslMode),
    #[error("the platform's trust store (sslrootcert=system) holds no usable certificate")]
    NoSystemRoots,
    #[error("could not set up TLS: {0}")]
    Rustls(String),
}

/// The rustls client settings for `mode` with roots from `roots`. `home` is
/// the user's home directory, where libpq's default root file lives. Under
/// `disable` the driver never starts TLS, so its settings (which check
/// nothing) go unused.
///
/// Files are read here, once, so a missing or broken file is a start-up
/// error rather than a failure of every later connection.
pub fn client_config(
    mode: SslMode,
    roots: &RootCerts,
    home: Option<&Path>,
) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let trusted = match mode {
        // libpq checks nothing here, whatever root file there is.
        SslMode::Disable | SslMode::Allow | SslMode::Prefer => None,
        SslMode::Require => match roots {
            RootCerts::System => return Err(TlsSetupError::WeakModeWithSystemRoots(mode)),
            RootCerts::File(path) => Some(read_root_file(path)?),
            RootCerts::Default => match default_root_file(home) {
                Some(path) if path.exists() => Some(read_root_file(&path)?),
                _ => None,
            },
        },
        SslMode::VerifyCa | SslMode::VerifyFull => Some(match roots {
            RootCerts::System if mode == SslMode::VerifyCa => {
                return Err(TlsSetupError::WeakModeWithSystemRoots(mode));
            }
            RootCerts::System => system_roots()?,
            RootCerts::File(path) => read_root_file(path)?,
            RootCerts::Default => match default_root_file(home) {
                Some(path) if path.exists() => read_root_file(&path)?,
                path => {
                    return Err(TlsSetupError::NoRootFile {
                        path: path.map_or_else(
                            || "~/.postgresql/root.crt".to_owned(),
                            |path| path.display().to_string(),
                        ),
                        mode,
                    });
                }
            },
        }),
    };
    let verifier: Arc<dyn ServerCertVerifier> = match trusted {
        Some(store) if mode == SslMode::VerifyFull => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        }
        trusted => Arc::new(WithoutHostCheck {
            roots: trusted.map(Arc::new),
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

/// libpq's default root certificate file under `home`.
fn default_root_file(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|home| home.join(".postgresql").join("root.crt"))
}

fn read_root_file(path: &Path) -> Result<RootCertStore, TlsSetupError> {
    let shown = path.display().to_string();
    let unreadable = |reason: String| TlsSetupError::UnreadableRootFile {
        path: shown.clone(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| unreadable(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(certs);
    if store.is_empty() {
        return Err(TlsSetupError::EmptyRootFile { path: shown });
    }
    Ok(store)
}

fn system_roots() -> Result<RootCertStore, TlsSetupError> {
    // Certificates that fail to load are skipped, as libpq's OpenSSL does.
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    store.add_parsable_certificates(loaded.certs);
    if store.is_empty() {
        return Err(TlsSetupError::NoSystemRoots);
    }
    Ok(store)
}

/// The checks of the modes that do not look at the host name: none at all
/// (`prefer`, and `require` without root certificates, as libpq: the
/// connection is encrypted, but nothing proves who the server is), or the
/// chain only (`verify-ca`, and `require` with root certificates: any holder
/// of a certificate from those CAs passes). Either way the handshake's
/// signatures are verified, so the server must hold the key of the
/// certificate it sent.
#[derive(Debug)]
struct WithoutHostCheck {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for WithoutHostCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Plain words for a TLS refusal found among `error`'s causes: the server
/// offered no TLS where `mode` requires it, or its certificate did not pass.
/// `None` when TLS is not what failed.
pub fn explain_refusal(error: &tokio_postgres::Error, mode: SslMode) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.to_string() == "server does not support TLS" {
            return Some(format!(
                "the server does not support TLS, and sslmode={mode} requires it"
            ));
        }
        if let Some(rustls_error) = as_rustls_error(cause) {
            return Some(describe_rustls_error(rustls_error, mode));
        }
        source = cause.source();
    }
    None
}

fn as_rustls_error<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    cause.downcast_ref::<rustls::Error>().or_else(|| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    })
}

fn describe_rustls_error(error: &rustls::Error, mode: SslMode) -> String {
    let rustls::Error::InvalidCertificate(problem) = error else {
        return format!("the TLS handshake with the server failed: {error} (sslmode={mode})");
    };
    match problem {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let names = if presented.is_empty() {
                "no host names".to_owned()
            } else {
                presented
                    .iter()
                    .map(|name| plain_name(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "the server's certificate is not valid for host {} (sslmode={mode}); \
                 it names {names}",
                expected.to_str()
            )
        }
        CertificateError::NotValidForName => format!(
            "the server's certificate is not valid for the host connected to (sslmode={mode})"
        ),
        CertificateError::UnknownIssuer => format!(
            "the server's certificate is not signed by a trusted certificate authority \
             (sslrootcert) (sslmode={mode})"
        ),
        other => format!("the server's certificate was refused: {other} (sslmode={mode})"),
    }
}

/// A name as webpki shows it (`DnsName("db.internal")`, `IpAddress(10.0.0.5)`),
/// without the wrapping.
fn plain_name(shown: &str) -> &str {
    shown
        .strip_prefix("DnsName(\"")
        .and_then(|rest| rest.strip_suffix("\")"))
        .or_else(|| {
            shown
                .strip_prefix("IpAddress(")
                .and_then(|rest| rest.strip_suffix(')'))
        })
        .unwrap_or(shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_wrapping() {
        assert_eq!(plain_name("DnsName(\"db.internal\")"), "db.internal");
        assert_eq!(plain_name("IpAddress(10.0.0.5)"), "10.0.0.5");
        assert_eq!(plain_name("DirectoryName"), "DirectoryName");
    }

    #[test]
    fn every_libpq_mode_reads_and_nothing_else() {
        for name in [
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ] {
            let mode: SslMode = name.parse().expect(name);
            assert_eq!(mode.as_str(), name);
        }
        for bad in ["", "Require", "verify_full", "on", "true"] {
            let error = bad.parse::<SslMode>().expect_err(bad);
            assert!(error.to_string().contains("is not one of"), "{error}");
        }
    }

    #[test]
    fn verification_without_a_root_file_says_what_to_do() {
        let home = std::env::temp_dir().join("taskrunner-no-such-home");
        let error = client_config(SslMode::VerifyFull, &RootCerts::Default, Some(&home))
            .expect_err("no root file");
        let text = error.to_string();
        assert!(text.contains(".postgresql/root.crt"), "{text}");
        assert!(text.contains("sslmode=verify-full"), "{text}");
        // require goes on without a check when the default file is missing.
        client_config(SslMode::Require, &RootCerts::Default, Some(&home))
            .expect("require without roots");
    }

    #[test]
    fn a_missing_or_empty_root_file_is_a_clear_error() {
        let missing = RootCerts::File("/nonexistent/ca.pem".into());
        let error = client_config(SslMode::VerifyCa, &missing, None).expect_err("missing");
        assert!(
            error
                .to_string()
                .starts_with("could not read root certificate file /nonexistent/ca.pem"),
            "{error}"
        );
        let empty =
            std::env::temp_dir().join(format!("taskrunner-empty-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = client_config(SslMode::Require, &RootCerts::File(empty.clone()), None)
            .expect_err("empty");
        let _ = std::fs::remove_file(&empty);
        assert!(
            error
                .to_string()
                .contains("holds no usable PEM certificate"),
            "{error}"
        );
    }

    #[test]
    fn system_roots_demand_verify_full() {
        for mode in [SslMode::Require, SslMode::VerifyCa] {
            let error = client_config(mode, &RootCerts::System, None).expect_err("weak");
            assert!(error.to_string().contains("use \"verify-full\""), "{error}");
        }
    }

    #[test]
    fn disable_and_prefer_read_no_root_file() {
        // Neither checks a certificate, so neither needs one.
        let missing = RootCerts::File("/nonexistent/ca.pem".into());
        for mode in [SslMode::Disable, SslMode::Allow, SslMode::Prefer] {
            if let Err(error) = client_config(mode, &missing, None) {
                panic!("{mode}: {error}");
            }
        }
    }
}
