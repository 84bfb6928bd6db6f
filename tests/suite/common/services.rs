//! The outside services the scale-out tests need, started by the tests themselves on free
//! loopback ports: one PostgreSQL cluster per test process (each test server gets its own
//! database in it) and Redis servers. They die with the test process (parent-death signal).

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::Duration;

/// Which database the test servers use: PostgreSQL when `HUDDLE_TEST_DATABASE=postgres`
/// (how the test command runs the chat suite a second time), else SQLite in the data folder.
pub fn postgres_selected() -> bool {
    std::env::var("HUDDLE_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What PostgreSQL and Redis both log once they take connections (LC_ALL=C keeps it English).
const READY_LINE: &str = "ready to accept connections";

/// Starts `program` so that it is killed when this test process ends, as `user` when we are
/// root and it refuses to run as root, and returns once it logs that it is ready. The
/// spawning thread lives as long as the process: the parent-death signal fires when the
/// *thread* that forked exits.
fn spawn_tied_to_process(program: &Path, args: &[String], as_postgres_user: bool) -> Child {
    static SPAWNER: OnceLock<mpsc::Sender<(Command, mpsc::Sender<Child>)>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<Child>)>();
        std::thread::spawn(move || {
            for (mut command, reply) in rx {
                let _ = reply.send(command.spawn().expect("start service"));
            }
            loop {
                std::thread::park();
            }
        });
        tx
    });
    let mut command = Command::new("setpriv");
    if as_postgres_user && nix::unistd::geteuid().is_root() {
        command.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]);
    }
    command
        .arg("--pdeathsig=KILL")
        .arg("--")
        .arg(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (reply, child) = mpsc::channel();
    spawner.send((command, reply)).unwrap();
    let mut child: Child = child.recv().unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    watch_log(stdout, ready_tx.clone());
    watch_log(stderr, ready_tx);
    let what = program.display();
    ready
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} did not say it was ready within 30 s"));
    child
}

/// Reads a service's log to its end (so the service never blocks on a full pipe), saying
/// on `ready` when it logs [`READY_LINE`].
fn watch_log(output: impl Read + Send + 'static, ready: mpsc::Sender<()>) {
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if line.to_lowercase().contains(READY_LINE) {
                let _ = ready.send(());
            }
        }
    });
}

fn postgres_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/setup.sh installs it)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL version").join(name)
}

/// A PostgreSQL cluster of the test process.
pub struct Postgres {
    port: u16,
    dir: ClusterDir,
    server: Mutex<Option<Child>>,
    /// Databases made so far (their names count up); held while making one.
    databases: Mutex<u32>,
}

impl Postgres {
    /// The cluster, started on first use.
    pub fn shared() -> &'static Postgres {
        static CLUSTER: OnceLock<Postgres> = OnceLock::new();
        CLUSTER.get_or_init(Postgres::start)
    }

    /// A cluster of its own, for a test that stops and restarts it.
    pub fn start() -> Postgres {
        let dir = ClusterDir::new();
        let data = dir.path().join("data");
        if nix::unistd::geteuid().is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster folder");
        }
        let mut initdb = Command::new("setpriv");
        if nix::unistd::geteuid().is_root() {
            initdb.args(["--reuid=postgres", "--regid=postgres", "--clear-groups"]);
        }
        let status = initdb
            .arg(postgres_bin("initdb"))
            .args([
                "--auth=trust",
                "--username=huddle",
                "--encoding=UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb failed");
        let postgres = Postgres {
            port: free_port(),
            dir,
            server: Mutex::new(None),
            databases: Mutex::new(0),
        };
        postgres.restart();
        postgres
    }

    /// Kills the server at once (SIGKILL, as a crash): the database is down.
    pub fn kill(&self) {
        if let Some(mut server) = self.server.lock().unwrap().take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts the server (again) on the same folder and port.
    pub fn restart(&self) {
        self.kill();
        let dir = self.dir.path();
        let args: Vec<String> = [
            "-D",
            dir.join("data").to_str().unwrap(),
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-k",
            dir.to_str().unwrap(),
            "-c",
            "max_connections=300",
            "-c",
            // Only an operating-system crash would lose data; the tests kill processes.
            "fsync=off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        *self.server.lock().unwrap() = Some(spawn_tied_to_process(&postgres_bin("postgres"), &args, true));
    }

    /// A new, empty database; its URL.
    pub fn new_database(&self) -> String {
        // One at a time: concurrent CREATE DATABASE statements copying the same template
        // can refuse each other. The server is up: `restart` waited for it to say so.
        let mut created = self.databases.lock().unwrap();
        let name = format!("huddle_{created}");
        *created += 1;
        let output = Command::new(postgres_bin("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "huddle",
                &name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            output.status.success(),
            "createdb {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        format!("postgres://huddle@127.0.0.1:{}/{name}", self.port)
    }
}

/// A cluster's folder, named after this process. The shared
/// cluster lives in a static, which is never dropped, so each start also removes the folders
/// of test processes that have ended.
struct ClusterDir(PathBuf);

impl ClusterDir {
    fn new() -> ClusterDir {
        static SEQUENCE: AtomicU32 = AtomicU32::new(0);
        // Under the system temporary folder: the postgres user must be able to reach it.
        let root = std::env::temp_dir().join("huddle-test-postgres");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = root.join(format!(
            "{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        ClusterDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ClusterDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Redis server of one test, on a free port; killed when dropped.
pub struct Redis {
    pub port: u16,
    server: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = free_port();
        let mut redis = Redis { port, server: None };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (no shutdown).
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.kill();
            let _ = server.wait();
        }
    }

    /// Starts it (again) on the same port, empty: Redis keeps nothing across restarts here.
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        self.server = Some(spawn_tied_to_process(
            Path::new("/usr/bin/redis-server"),
            &args,
            false,
        ));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill();
    }
}
