//! A private PostgreSQL cluster a test starts, stops and restarts at will,
//! never the shared server other tests use.
//!
//! `initdb` makes it in a temporary directory; it listens on a free port of
//! 127.0.0.1 (and a socket in that directory), trusts every local connection,
//! and trades durability for start-up speed (`fsync=off` and friends: a test
//! cluster has nothing to keep). PostgreSQL refuses to run as root, so when
//! the tests run as root its programs run as the `postgres` user, owner of
//! the directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use tokio_postgres::NoTls;

use crate::temp_dir::TempDir;

/// How long one `initdb` or `pg_ctl` may take on a busy machine.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// What a private cluster needs to serve TLS.
pub struct ServerTls {
    /// The server's certificate (PEM), with any intermediates after it.
    pub cert_pem: String,
    /// Its private key (PEM).
    pub key_pem: String,
    /// Whether plain TCP connections are refused.
    pub only_tls: bool,
}

/// A running (or deliberately stopped) PostgreSQL of the test's own.
pub struct PrivateCluster {
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    as_postgres: bool,
    dir: TempDir,
}

impl PrivateCluster {
    /// Creates a cluster and starts it; returns once it accepts connections.
    pub async fn start() -> PrivateCluster {
        PrivateCluster::start_with_tls(None).await
    }

    /// [`PrivateCluster::start`], with TLS on (`ssl = on`) when `tls` is
    /// given: the server presents its certificate, and may refuse plain TCP.
    pub async fn start_with_tls(tls: Option<&ServerTls>) -> PrivateCluster {
        let dir = TempDir::new("pg");
        let as_postgres = running_as_root();
        if as_postgres {
            run_checked(std::process::Command::new("chown").args([
                "-R",
                "postgres:",
                &dir.path().to_string_lossy(),
            ]));
        }
        let cluster = PrivateCluster {
            bin: postgres_bindir(),
            data: dir.path().join("data"),
            log: dir.path().join("postgres.log"),
            port: free_port(),
            as_postgres,
            dir,
        };
        let data = cluster.data.to_string_lossy().into_owned();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
            )
            .await;
        let socket_dir = cluster.dir.path().to_string_lossy().into_owned();
        let settings = format!(
            "\n# A throwaway cluster for one test.\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 16MB\n\
             max_connections = 100\n",
            cluster.port
        );
        let conf = cluster.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str(&settings);
        std::fs::write(&conf, text).expect("write postgresql.conf");
        if let Some(tls) = tls {
            cluster.configure_tls(tls);
        }
        cluster.start_again().await;
        cluster
    }

    /// Installs the server's certificate and key (the key owned by the
    /// server's user, mode 0600, or PostgreSQL refuses it), turns `ssl` on,
    /// and with `only_tls` rejects plain TCP connections in `pg_hba.conf`
    /// (the Unix socket stays open, plain, for the test's own checks).
    fn configure_tls(&self, tls: &ServerTls) {
        use std::os::unix::fs::PermissionsExt;
        let cert = self.data.join("server.crt");
        let key = self.data.join("server.key");
        std::fs::write(&cert, &tls.cert_pem).expect("write server.crt");
        std::fs::write(&key, &tls.key_pem).expect("write server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .expect("chmod server.key");
        if self.as_postgres {
            run_checked(std::process::Command::new("chown").args([
                "postgres:",
                &cert.to_string_lossy(),
                &key.to_string_lossy(),
            ]));
        }
        let conf = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("read postgresql.conf");
        text.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text).expect("write postgresql.conf");
        if tls.only_tls {
            // The first matching line decides, so these go before initdb's.
            let hba = self.data.join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            let reject = "hostnossl all all 127.0.0.1/32 reject\n\
                          hostnossl all all ::1/128 reject\n";
            std::fs::write(&hba, format!("{reject}{rules}")).expect("write pg_hba.conf");
        }
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A plain driver connection to database `db` over the Unix socket,
    /// which stays open when TCP demands TLS.
    pub async fn socket_client(
        &self,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .user("postgres")
            .dbname(db);
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// A URL for database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A plain driver connection to database `db`.
    pub async fn client(&self, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url(db), NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// Stops the server the way an administrator's restart does (`-m fast`:
    /// sessions are ended, nothing waits for clients); returns once it is down.
    pub async fn stop(&self) {
        let data = self.data.to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["stop", "-D", &data, "-m", "fast", "-w", "-t", "60"],
        )
        .await;
    }

    /// Starts the (stopped) server again; returns once it accepts connections.
    pub async fn start_again(&self) {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.log.to_string_lossy().into_owned();
        self.run(
            "pg_ctl",
            &["start", "-D", &data, "-l", &log, "-w", "-t", "60"],
        )
        .await;
    }

    /// Stops and starts the server.
    pub async fn restart(&self) {
        self.stop().await;
        self.start_again().await;
    }

    /// The server's own log so far, for failure messages.
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn command(&self, program: &str) -> std::process::Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            std::process::Command::new(program)
        }
    }

    async fn run(&self, program: &str, args: &[&str]) {
        let mut command = tokio::process::Command::from(self.command(program));
        command
            .args(args)
            .current_dir(self.dir.path())
            .kill_on_drop(true);
        let output = tokio::time::timeout(COMMAND_DEADLINE, command.output())
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} took over {COMMAND_DEADLINE:?}"))
            .unwrap_or_else(|error| panic!("could not run {program}: {error}"));
        check(&format!("{program} {args:?}"), &output, || {
            self.server_log()
        });
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        // Immediate: nothing to keep, and the test is over.
        let data = self.data.to_string_lossy().into_owned();
        let stopped = self
            .command("pg_ctl")
            .args(["stop", "-D", &data, "-m", "immediate", "-w", "-t", "30"])
            .current_dir(self.dir.path())
            .output();
        // "No server running" is fine: the test may have left it stopped.
        if let Ok(output) = stopped
            && !output.status.success()
            && self.data.join("postmaster.pid").exists()
        {
            eprintln!(
                "warning: could not stop the private cluster in {}: {}",
                self.data.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Whether this process runs as root (PostgreSQL's programs refuse to).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: what `pg_config
/// --bindir` says, else the newest `/usr/lib/postgresql/<version>/bin`.
pub fn postgres_bindir() -> PathBuf {
    let has_tools = |dir: &Path| dir.join("initdb").exists() && dir.join("pg_ctl").exists();
    if let Ok(output) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        && output.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if has_tools(&dir) {
            return dir;
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's server programs (initdb, pg_ctl) are installed")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

fn run_checked(command: &mut std::process::Command) {
    let output = command.output().expect("run a setup command");
    check(&format!("{command:?}"), &output, String::new);
}

fn check(what: &str, output: &Output, server_log: impl Fn() -> String) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}{}\nserver log:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server_log()
    );
}
