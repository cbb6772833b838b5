//! Helpers shared by the integration tests: the Python peer (lxml, signxml,
//! python-xmlsec), the `jumgw` binary, and throw-away PKIs.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use jum_gateway::config::{self, GatewayConfig, SimulatorConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jum_gateway::pki::{CertSpec, Issued, KeyKind, Role};

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python that `./tests/run` prepares. Missing means the suite
/// was started without its set-up: fail loudly rather than skip.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("JUMGW_PYTHON") {
        return PathBuf::from(p);
    }
    let p = manifest_dir().join("target/venv/bin/python");
    assert!(
        p.exists(),
        "{} not found: run ./tests/run, which creates the venv with lxml, signxml and xmlsec",
        p.display()
    );
    p
}

pub fn peer<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(python())
        .arg(manifest_dir().join("tests/py/xml_peer.py"))
        .args(args)
        .output()
        .expect("run python peer")
}

pub fn jumgw() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jumgw"))
}

/// An external tool from the test set-up (xmlsec1, xmllint).
pub fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).exists()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} not found on PATH: run ./tests/run, which installs it"
    );
    Command::new(name)
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A PKI in a temp folder: a CA, signers of both key types, and the wrong
/// ones (another CA, expired, not yet valid, encryption-only key usage).
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Issued,
    pub rsa: Issued,
    pub ec: Issued,
    pub other_ca: Issued,
    pub foreign: Issued,
    pub expired: Issued,
    pub encryption_only: Issued,
}

impl Pki {
    pub fn new() -> Pki {
        let ca = Issued::new(&CertSpec::new("Test CA", Role::Ca), KeyKind::Rsa2048, None).unwrap();
        let rsa = Issued::new(
            &CertSpec::new("registry signer rsa", Role::Signing),
            KeyKind::Rsa2048,
            Some(&ca),
        )
        .unwrap();
        let ec = Issued::new(
            &CertSpec::new("registry signer ec", Role::Signing),
            KeyKind::EcP256,
            Some(&ca),
        )
        .unwrap();
        let other_ca =
            Issued::new(&CertSpec::new("Other CA", Role::Ca), KeyKind::EcP256, None).unwrap();
        let foreign = Issued::new(
            &CertSpec::new("foreign signer", Role::Signing),
            KeyKind::EcP256,
            Some(&other_ca),
        )
        .unwrap();
        let mut exp = CertSpec::new("expired signer", Role::Signing);
        exp.not_before_days = -30;
        exp.not_after_days = -1;
        let expired = Issued::new(&exp, KeyKind::EcP256, Some(&ca)).unwrap();
        let encryption_only = Issued::new(
            &CertSpec::new("encryption only", Role::EncryptionOnly),
            KeyKind::Rsa2048,
            Some(&ca),
        )
        .unwrap();
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
            rsa,
            ec,
            other_ca,
            foreign,
            expired,
            encryption_only,
        };
        for (name, i) in [
            ("ca", &pki.ca),
            ("rsa", &pki.rsa),
            ("ec", &pki.ec),
            ("other-ca", &pki.other_ca),
            ("foreign", &pki.foreign),
            ("expired", &pki.expired),
            ("encryption-only", &pki.encryption_only),
        ] {
            std::fs::write(pki.path(&format!("{name}.key")), i.key_pem().unwrap()).unwrap();
            std::fs::write(pki.path(&format!("{name}.pem")), i.cert_pem().unwrap()).unwrap();
        }
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn key(&self, which: &Issued) -> jum_gateway::xml::SigningKey {
        jum_gateway::xml::SigningKey::from_pem(
            &which.key_pem().unwrap(),
            &which.cert_pem().unwrap(),
            None,
        )
        .unwrap()
    }

    pub fn trust(&self) -> jum_gateway::xml::TrustStore {
        jum_gateway::xml::TrustStore::from_pem(&self.ca.cert_pem().unwrap()).unwrap()
    }
}

pub fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// A request envelope as the gateway sends it, unsigned.
pub fn envelope() -> String {
    jum_gateway::bench::xml::small_envelope()
}

/// An in-process simulator on free ports with a fresh PKI, and a gateway
/// configuration pointing at it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: jum_gateway::sim::Simulator,
    pub gw: jum_gateway::config::GatewayConfig,
    pub control: reqwest::Client,
}

pub fn certs(dir: &Path) -> PathBuf {
    dir.join("certs")
}

pub async fn setup(faults: &str) -> Env {
    setup_with(faults, |_| {}).await
}

pub async fn setup_with(
    faults: &str,
    adjust: impl FnOnce(&mut jum_gateway::config::SimulatorConfig),
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    jum_gateway::pki::init_dev(&c, false).unwrap();
    let sim_text = std::fs::read_to_string(manifest_dir().join("config/simulator.toml")).unwrap();
    let mut sc: SimulatorConfig =
        config::parse(&sim_text, "simulator.toml", std::iter::empty()).unwrap();
    sc.control = "127.0.0.1:0".into();
    sc.client_ca = c.join("registry-trust.pem");
    sc.ca_cert = Some(c.join("ca.pem"));
    sc.ca_key = Some(c.join("ca.key"));
    sc.population = 100;
    sc.faults = faults.into();
    for (name, r) in sc.registries.iter_mut() {
        r.port = 0;
        r.tls_cert = c.join(format!("{name}-tls.pem"));
        r.tls_key = c.join(format!("{name}-tls.key"));
        r.sign_cert = c.join(format!("{name}-sign.pem"));
        r.sign_key = c.join(format!("{name}-sign.key"));
    }
    adjust(&mut sc);
    let sim = jum_gateway::sim::start(&sc).await.unwrap();
    let gw_text = std::fs::read_to_string(manifest_dir().join("config/gateway.toml")).unwrap();
    let mut gw: GatewayConfig =
        config::parse(&gw_text, "gateway.toml", std::iter::empty()).unwrap();
    gw.gateway.tls_cert = c.join("gateway-tls.pem");
    gw.gateway.tls_key = c.join("gateway-tls.key");
    gw.gateway.sign_cert = c.join("gateway-sign.pem");
    gw.gateway.sign_key = c.join("gateway-sign.key");
    for (name, r) in gw.registries.iter_mut() {
        r.url = format!("https://{}/", sim.addrs[name]);
        r.tls_ca = c.join("gateway-trust.pem");
        r.signer_ca = Some(c.join("gateway-trust.pem"));
        r.timeout = std::time::Duration::from_secs(3);
        r.connect_timeout = std::time::Duration::from_secs(2);
        // The development CA answers on the simulator's control endpoint.
        r.ocsp_url = Some(format!("http://{}/ocsp", sim.control));
        r.crl = Some(format!("http://{}/ca.crl", sim.control));
    }
    // And so does its time-stamping authority.
    gw.evidence.tsa_url = Some(format!("http://{}/tsa", sim.control));
    gw.evidence.tsa_trust = Some(c.join("ca.pem"));
    gw.evidence.seal_trust = Some(c.join("ca.pem"));
    gw.validate("test").unwrap();
    Env {
        dir,
        sim,
        gw,
        control: reqwest::Client::new(),
    }
}

/// [`setup`] with the simulator's X-Road security-server front on a free
/// port (signed documents wait far longer than a test runs for their
/// timestamp) and every registry reached over X-Road through it.
pub async fn setup_x_road(faults: &str) -> Env {
    let mut env = setup_with(faults, |sc| {
        let c = sc.client_ca.parent().unwrap().to_owned();
        sc.x_road = Some(jum_gateway::config::SimXRoad {
            port: 0,
            tls_cert: c.join("cadastre-tls.pem"),
            tls_key: c.join("cadastre-tls.key"),
            clients: vec![jum_gateway::config::Member {
                instance: "RS".into(),
                class: "GOV".into(),
                code: "08070431".into(),
                subsystem: Some("jum-becej".into()),
            }],
            asic_delay: std::time::Duration::from_secs(3600),
        });
    })
    .await;
    let front = env.sim.x_road.unwrap();
    for r in env.gw.registries.values_mut() {
        r.protocol = jum_gateway::config::RegistryProtocol::XRoad;
        r.url = format!("https://{front}/");
    }
    env.gw.validate("test").unwrap();
    env
}

/// The gateway's parts in-process on `env`: a store in its folder, a
/// fresh document key, and a dispatcher (not yet running).
pub struct Parts {
    pub store: std::sync::Arc<jum_gateway::store::SledStore>,
    pub cipher: std::sync::Arc<jum_gateway::store::crypt::DocumentCipher>,
    pub dispatcher: std::sync::Arc<jum_gateway::dispatch::Dispatcher>,
}

impl Env {
    pub fn exchange(&self) -> jum_gateway::exchange::Exchange {
        jum_gateway::exchange::Exchange::new(&self.gw, &manifest_dir().join("schemas")).unwrap()
    }

    /// Must run inside a tokio runtime (the store's committer is a task).
    pub fn parts(&self) -> Parts {
        use jum_gateway::store::crypt::DocumentCipher;
        let store =
            jum_gateway::store::SledStore::open(&self.dir.path().join("store"), 8 << 20).unwrap();
        let cipher = std::sync::Arc::new(
            DocumentCipher::from_hex(&DocumentCipher::generate_hex().unwrap()).unwrap(),
        );
        let dispatcher = jum_gateway::dispatch::Dispatcher::new(
            &self.gw,
            store.clone(),
            cipher.clone(),
            std::sync::Arc::new(self.exchange()),
            jum_gateway::delivery::CaseFolders::configured(&self.gw, self.dir.path()).unwrap(),
        );
        Parts {
            store,
            cipher,
            dispatcher,
        }
    }

    pub async fn faults(&self, spec: &str) {
        let r = self
            .control
            .put(format!("http://{}/faults", self.sim.control))
            .body(spec.to_owned())
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{spec}: {}",
            r.text().await.unwrap()
        );
    }

    pub async fn seen(&self) -> serde_json::Value {
        self.control
            .get(format!("http://{}/seen", self.sim.control))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// `jumgw serve --demo` as a child process; killed (SIGKILL) on drop.
/// The child, the embedded simulator's control URL, and the file its
/// stderr (the log) goes to.
pub struct Daemon(pub std::process::Child, pub String, pub PathBuf);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Its whole log so far (every start on the same log file appends).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.2).unwrap_or_default()
    }

    /// SIGKILL, confirmed: the process must end, and by signal 9, within
    /// 10 s; anything else (a kill that never happened, an exit of its
    /// own) fails the test.
    pub fn sigkill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let status = self.reap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the daemon did not die by SIGKILL: {status:?}"
        );
    }

    /// SIGTERM, and its exit status once it has stopped (within 30 s).
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.reap_within(std::time::Duration::from_secs(30))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("{sig} to {pid}: {e}"));
    }

    fn reap(&mut self) -> std::process::ExitStatus {
        self.reap_within(std::time::Duration::from_secs(10))
    }

    fn reap_within(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let end = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < end,
                "the daemon (pid {}) was still running {limit:?} after the signal",
                self.0.id()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Where a test daemon on `port` logs by default: beside its data folder,
/// in the test's own temporary folder, so no other run's log is read.
/// Where a demo daemon on `data` logs what its simulator answered (kept
/// across restarts of that daemon).
pub fn served_log(data: &Path) -> PathBuf {
    PathBuf::from(format!("{}.served.log", data.display()))
}

pub fn default_log(data: &Path, port: u16) -> PathBuf {
    data.parent().unwrap().join(format!("daemon-{port}.log"))
}

/// Starts `jumgw serve --demo` on `data` with fast retries and short
/// leases, and waits until it listens.
pub fn start_daemon(data: &Path, port: u16) -> Daemon {
    start_daemon_env(data, port, &[])
}

/// [`start_daemon`] with more environment (configuration overrides).
pub fn start_daemon_env(data: &Path, port: u16, env: &[(String, String)]) -> Daemon {
    start_daemon_logged(data, port, env, &default_log(data, port))
}

/// [`start_daemon_env`] logging to `log` (appended to).
pub fn start_daemon_logged(data: &Path, port: u16, env: &[(String, String)], log: &Path) -> Daemon {
    start_daemon_as(jumgw(), data, port, env, log)
}

/// [`start_daemon_logged`] run as `program` (`jumgw`, or `jumgw` under
/// `prlimit`).
pub fn start_daemon_as(
    mut program: Command,
    data: &Path,
    port: u16,
    env: &[(String, String)],
    log: &Path,
) -> Daemon {
    std::fs::create_dir_all(data.parent().unwrap()).unwrap();
    let mut child = program
        .args(["serve", "--demo", "--data-dir"])
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--sim-faults",
            "*:latency=2ms..40ms, *:503=0.1, *:reset=0.05, *:async=0.1, *:async-delay=300ms",
        ])
        .arg("--sim-log")
        .arg(served_log(data))
        // fast retries and short leases, so that the test ends in seconds
        .env("JUMGW_RETRY__BASE", "100ms")
        .env("JUMGW_RETRY__CAP", "1s")
        .env("JUMGW_RETRY__LEASE", "2s")
        .env("JUMGW_RETRY__MAX_ATTEMPTS", "40")
        .env("JUMGW_REGISTRIES__CIVIL__BREAKER_COOLDOWN", "200ms")
        .env("JUMGW_REGISTRIES__CADASTRE__BREAKER_COOLDOWN", "200ms")
        .env("JUMGW_REGISTRIES__TAX__BREAKER_COOLDOWN", "200ms")
        .env("JUMGW_LOG", "info")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(manifest_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        ))
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut d = Daemon(child, String::new(), log.to_owned());
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    loop {
        let Some(Ok(l)) = lines.next() else {
            panic!("daemon exited before listening: {}", d.log());
        };
        if let Some(url) = l.strip_prefix("embedded registry simulator: control on ") {
            d.1 = url.trim_end_matches('/').to_owned();
        }
        if l.starts_with("jumgw listening on") {
            break;
        }
    }
    // keep draining stdout so the child never blocks on a full pipe
    std::thread::spawn(move || for _ in lines {});
    d
}

pub use jum_gateway::bench::e2e::BODIES;

/// Files request number `i` (services in turn); the id if it got a 202.
pub async fn submit(http: &reqwest::Client, port: u16, i: usize) -> Option<String> {
    submit_as(http, port, i, "demo-backoffice").await
}

/// [`submit`] with the bearer token of another client.
pub async fn submit_as(http: &reqwest::Client, port: u16, i: usize, token: &str) -> Option<String> {
    let (service, subject) = BODIES[i % BODIES.len()];
    let body = format!(
        r#"{{"case":{{"number":"351-{}/2026-IV","legal_basis":"ZUP čl. 103","official":"test"}},"purpose":"ex officio data for the case","service":"{service}","subject":{subject}}}"#,
        i % 17
    );
    let r = http
        .post(format!("http://127.0.0.1:{port}/api/v1/requests"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if r.status().as_u16() != 202 {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// A loopback port that was free a moment ago. Taken below the kernel's
/// ephemeral range (32768–60999 on Linux): a port handed out by `bind(0)`
/// and released can be taken again, before our daemon binds it, as the
/// source port of any outgoing connection (PostgreSQL clients, HTTP
/// clients of other tests); ports below that range never are.
pub fn free_port() -> u16 {
    jum_gateway::bench::e2e::free_port().unwrap()
}

/// Waits (up to 30 s each) until every request is delivered, through the API.
pub async fn wait_delivered(http: &reqwest::Client, port: u16, ids: &[String]) {
    for id in ids {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let v: serde_json::Value = match http
                .get(format!("http://127.0.0.1:{port}/api/v1/requests/{id}"))
                .bearer_auth("demo-backoffice")
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            if v["state"] == "delivered" {
                break;
            }
            assert!(std::time::Instant::now() < end, "{id} not delivered: {v}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// A registry's saved answer must verify with xmlsec1 against `ca` and
/// validate with `xmllint --schema`: both independent of our code.
pub fn assert_xmlsec1_and_xmllint_accept(file: &Path, ca: &Path, what: &str) {
    assert_xmlsec1_accepts(file, ca, what);
    let o = tool("xmllint")
        .args(["--noout", "--schema"])
        .arg(manifest_dir().join("schemas/jum-gateway.xsd"))
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "xmllint on {what}: {}", text(&o));
}

/// A `jumgw simulate` process; killed when dropped.
pub struct Sim(pub std::process::Child);

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `jumgw simulate` with config/simulator.toml on free ports and the
/// PKI in `certs`; returns it and its ports: control, civil, cadastre, tax.
pub fn start_simulator(dir: &Path, certs: &Path) -> (Sim, [u16; 4]) {
    let ports = [free_port(), free_port(), free_port(), free_port()];
    let sim_cfg = std::fs::read_to_string(manifest_dir().join("config/simulator.toml"))
        .unwrap()
        .replace("certs/dev", &certs.display().to_string())
        .replace("127.0.0.1:9440", &format!("127.0.0.1:{}", ports[0]))
        .replace("port = 9441", &format!("port = {}", ports[1]))
        .replace("port = 9442", &format!("port = {}", ports[2]))
        .replace("port = 9443", &format!("port = {}", ports[3]));
    let sim_path = write(dir, "simulator.toml", sim_cfg.as_bytes());
    let mut child = jumgw()
        .args(["simulate", "--config"])
        .arg(&sim_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let sim = Sim(child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    loop {
        let l = lines.next().expect("simulator exited").unwrap();
        if l.starts_with("control on") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (sim, ports)
}

/// GET `url` (with a bearer token, if any) and its JSON body.
pub async fn get_json(http: &reqwest::Client, url: &str, token: Option<&str>) -> serde_json::Value {
    let mut r = http.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap().json().await.unwrap()
}

/// The environment that puts a test daemon on the PostgreSQL database `url`.
pub fn on_postgres(url: &str) -> Vec<(String, String)> {
    vec![
        ("JUMGW_STORE__BACKEND".to_owned(), "postgres".to_owned()),
        ("JUMGW_STORE__URL".to_owned(), url.to_owned()),
    ]
}

/// GET `url` with the admin token: its body, which must come with a 200.
pub async fn get_bytes(http: &reqwest::Client, url: &str) -> Vec<u8> {
    let r = http
        .get(url)
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    r.bytes().await.unwrap().to_vec()
}

/// The file in a case folder is its request's document, whole: byte for
/// byte the document the API on `base` serves, and verified by xmlsec1
/// against `ca`.
pub async fn assert_file_is_the_served_document(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    file: &Path,
    ca: &Path,
) {
    let on_disk = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let served = get_bytes(http, &format!("{base}/api/v1/documents/{id}/content")).await;
    assert!(
        on_disk == served,
        "{} differs from the stored document ({} bytes on disk, {} served)",
        file.display(),
        on_disk.len(),
        served.len()
    );
    assert_xmlsec1_accepts(file, ca, id);
}

/// A signed document must verify with xmlsec1 against `ca`.
pub fn assert_xmlsec1_accepts(file: &Path, ca: &Path, what: &str) {
    let o = tool("xmlsec1")
        .arg("--verify")
        .arg("--trusted-pem")
        .arg(ca)
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "xmlsec1 on {what}: {}", text(&o));
}

/// What the tests need of `GET /api/v1/requests/{id}`.
#[derive(Debug, Clone)]
pub struct RequestView {
    pub id: String,
    pub client: String,
    pub case: String,
    pub service: String,
    pub state: String,
}

impl RequestView {
    pub fn of(v: &serde_json::Value) -> RequestView {
        let s = |k: &str| {
            v[k].as_str()
                .unwrap_or_else(|| panic!("no {k} in {v}"))
                .to_owned()
        };
        RequestView {
            id: s("id"),
            client: s("client"),
            case: s("case"),
            service: s("service"),
            state: s("state"),
        }
    }

    /// Its document's file name in the case folder.
    pub fn file(&self) -> String {
        format!("{}.{}.xml", self.id, self.service)
    }

    /// Its case's folder under the case folders' root: in its client's.
    pub fn folder(&self) -> std::path::PathBuf {
        std::path::Path::new(&jum_gateway::delivery::case_folder(&self.client))
            .join(jum_gateway::delivery::case_folder(&self.case))
    }
}

pub fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The webhook receiver of `tests/py/webhook_receiver.py`; killed on drop.
pub struct Receiver(pub std::process::Child);

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the receiver on `port`, checking signatures under `secret`,
/// appending what it gets to `out`, refusing the first `fail` events.
pub fn start_receiver(port: u16, secret: &str, out: &Path, fail: usize) -> Receiver {
    let mut child = Command::new(python())
        .arg(manifest_dir().join("tests/py/webhook_receiver.py"))
        .arg(port.to_string())
        .arg(secret)
        .arg(out)
        .args(["--fail", &fail.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    assert_eq!(line.trim(), "listening");
    Receiver(child)
}

/// Every POST the receiver has written to `out` so far.
pub fn received(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Webhook events still waiting to be sent, from `/metrics`.
pub async fn webhook_backlog(http: &reqwest::Client, port: u16) -> u64 {
    metric(
        http,
        &format!("http://127.0.0.1:{port}"),
        "jumgw_webhook_backlog",
    )
    .await as u64
}

/// The value of the unlabelled metric `name` at `base`'s `/metrics`
/// (read with the admin token).
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    let body = http
        .get(format!("{base}/metrics"))
        .bearer_auth("demo-admin")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// The tests' own TSA: `openssl ts -reply` behind `tests/py/tsa.py`, with
/// a CA of its own in `dir` (`dir/ca.pem`); killed on drop.
pub struct TestTsa {
    pub dir: PathBuf,
    pub port: u16,
    /// `user:password` it asks for (HTTP basic), if any.
    pub auth: Option<String>,
    child: Option<std::process::Child>,
}

impl TestTsa {
    /// Reserves a port for it; it serves once [`TestTsa::start`]ed.
    pub fn new(dir: &Path) -> TestTsa {
        TestTsa {
            dir: dir.to_owned(),
            port: free_port(),
            auth: None,
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Starts it (making its CA and certificate the first time).
    pub fn start(&mut self) {
        let mut child = Command::new(python())
            .arg(manifest_dir().join("tests/py/tsa.py"))
            .arg(&self.dir)
            .arg(self.port.to_string())
            .args(self.auth.iter())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        assert_eq!(line.trim(), "listening", "tests/py/tsa.py did not start");
        self.child = Some(child);
    }
}

impl Drop for TestTsa {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `openssl ts -verify` of a token (DER) on `data`, against `ca`.
pub fn assert_openssl_ts_verifies(token: &[u8], data: &[u8], ca: &Path, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let t = write(dir.path(), "token.tst", token);
    let d = write(dir.path(), "data.bin", data);
    let o = tool("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(&t)
        .arg("-data")
        .arg(&d)
        .arg("-CAfile")
        .arg(ca)
        .output()
        .unwrap();
    assert!(
        o.status.success() && text(&o).contains("Verification: OK"),
        "openssl ts -verify on {what}: {}",
        text(&o)
    );
}

/// The decoded `ds:SignatureValue` of a signed document, read with lxml
/// (not our parser): what its timestamp's imprint is the SHA-256 of.
pub fn signature_value_by_lxml(doc: &Path) -> Vec<u8> {
    let o = Command::new(python())
        .args([
            "-c",
            "import sys,base64; from lxml import etree; \
             v=etree.parse(sys.argv[1]).find('.//{http://www.w3.org/2000/09/xmldsig#}SignatureValue').text; \
             sys.stdout.write(base64.b64encode(base64.b64decode(''.join(v.split()))).decode())",
        ])
        .arg(doc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(String::from_utf8(o.stdout).unwrap())
        .unwrap()
}

/// `tests/py/asice_check.py` (zipfile, pyasice, hashlib) on a container:
/// its JSON report, and whether every check passed.
pub fn asice_check(file: &Path) -> (bool, serde_json::Value) {
    let o = Command::new(python())
        .arg(manifest_dir().join("tests/py/asice_check.py"))
        .arg(file)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("asice_check.py: {}", text(&o)));
    (o.status.success() && v["ok"] == true, v)
}

/// `jumgw dossier verify` on a container: exit code and report.
pub fn dossier_verify(file: &Path, trust: &[&Path]) -> (i32, String) {
    let mut c = jumgw();
    c.args(["dossier", "verify"]).arg(file);
    for t in trust {
        c.arg("--trust").arg(t);
    }
    let o = c.output().unwrap();
    (o.status.code().unwrap_or(-1), text(&o))
}

/// The entries of a zip in order (name, bytes), as Python's zipfile reads
/// them.
pub fn unzip(file: &Path) -> Vec<(String, Vec<u8>)> {
    let o = Command::new(python())
        .args([
            "-c",
            "import sys,zipfile,json,base64\n\
             z=zipfile.ZipFile(sys.argv[1])\n\
             json.dump([[i.filename, base64.b64encode(z.read(i.filename)).decode()] for i in z.infolist()], sys.stdout)",
        ])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let entries: Vec<(String, String)> = serde_json::from_slice(&o.stdout).unwrap();
    entries
        .into_iter()
        .map(|(n, d)| (n, b64.decode(d).unwrap()))
        .collect()
}

/// Every entry of the zip `file` written under `out`, by Python's zipfile.
pub fn extract_zip(file: &Path, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let o = Command::new(python())
        .args([
            "-c",
            "import sys,zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
        ])
        .arg(file)
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// A copy of the zip `from` with `change` applied to its entries (name,
/// bytes), each written as it was stored (the mimetype stays first and
/// stored).
pub fn rezip(
    from: &Path,
    to: &Path,
    change: impl Fn(Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)>,
) {
    let entries = unzip(from);
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let out: Vec<(String, String)> = change(entries)
        .into_iter()
        .map(|(n, d)| (n, b64.encode(d)))
        .collect();
    let list = write(
        to.parent().unwrap(),
        "entries.json",
        serde_json::to_string(&out).unwrap().as_bytes(),
    );
    let o = Command::new(python())
        .args([
            "-c",
            "import sys,zipfile,json,base64\n\
             z=zipfile.ZipFile(sys.argv[2],'w')\n\
             for n,d in json.load(open(sys.argv[1])):\n\
             \x20   z.writestr(n, base64.b64decode(d), zipfile.ZIP_STORED if n=='mimetype' else zipfile.ZIP_DEFLATED)\n\
             z.close()",
        ])
        .arg(&list)
        .arg(to)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// Waits (up to `within`) until every document of `ids` has its timestamp.
pub async fn wait_stamped(
    http: &reqwest::Client,
    base: &str,
    ids: &[String],
    within: std::time::Duration,
) {
    let end = std::time::Instant::now() + within;
    for id in ids {
        loop {
            let v = get_json(
                http,
                &format!("{base}/api/v1/documents/{id}"),
                Some("demo-admin"),
            )
            .await;
            if v["timestamp"]["state"] == "stamped" {
                break;
            }
            assert!(std::time::Instant::now() < end, "{id} not stamped: {v}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The first line a helper process writes, which says it is ready.
fn first_line(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    line
}

/// The test mail server (tests/py/smtp_sink.py): STARTTLS and AUTH
/// required, each message a JSON line in its `out` file.
pub struct Smtp(pub std::process::Child, pub u16);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_smtp(cert: &Path, key: &Path, user: &str, password: &str, out: &Path) -> Smtp {
    let mut child = Command::new(python())
        .arg(manifest_dir().join("tests/py/smtp_sink.py"))
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["--user", user, "--password", password, "--out"])
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the mail server did not start: {line:?}"));
    Smtp(child, port)
}

/// The mails the test mail server has received so far.
pub fn mails(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The data folder's keys (documents at rest, audit subjects), as an
/// operator makes them with `openssl rand -hex 32`.
pub fn write_data_keys(data: &Path) {
    std::fs::create_dir_all(data.join("keys")).unwrap();
    for k in ["documents.key", "audit.key"] {
        std::fs::write(data.join("keys").join(k), "ab".repeat(32)).unwrap();
    }
}

/// `jumgw serve --config CONFIG --data-dir data` in `root`, as an operator
/// runs it against `jumgw simulate` on `ports` (control, civil, cadastre,
/// tax): the registries' and the TSA's addresses from the environment,
/// `args` and `env` besides, its log to `log` (None: discarded). Returns
/// once it listens, with what it printed until then.
pub fn serve_configured(
    root: &Path,
    config: &str,
    port: u16,
    ports: [u16; 4],
    args: &[String],
    env: &[(&str, String)],
    log: Option<&Path>,
) -> (Daemon, String) {
    serve_configured_as(jumgw(), root, config, port, ports, args, env, log)
}

/// [`serve_configured`] run as `program` (`jumgw`, or `jumgw` under
/// [`jumgw_limited`]).
#[allow(clippy::too_many_arguments)]
pub fn serve_configured_as(
    mut program: Command,
    root: &Path,
    config: &str,
    port: u16,
    ports: [u16; 4],
    args: &[String],
    env: &[(&str, String)],
    log: Option<&Path>,
) -> (Daemon, String) {
    let mut child = program
        .args(["serve", "--config", config, "--data-dir", "data"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env(
            "JUMGW_REGISTRIES__CIVIL__URL",
            format!("https://127.0.0.1:{}/", ports[1]),
        )
        .env(
            "JUMGW_REGISTRIES__CADASTRE__URL",
            format!("https://127.0.0.1:{}/", ports[2]),
        )
        .env(
            "JUMGW_REGISTRIES__TAX__URL",
            format!("https://127.0.0.1:{}/", ports[3]),
        )
        .env(
            "JUMGW_EVIDENCE__TSA_URL",
            format!("http://127.0.0.1:{}/tsa", ports[0]),
        )
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(match log {
            Some(l) => std::process::Stdio::from(std::fs::File::create(l).unwrap()),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let daemon = Daemon(
        child,
        String::new(),
        log.map(Path::to_owned).unwrap_or_default(),
    );
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let mut said = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        said.push_str(&l);
        said.push('\n');
        if l.starts_with("jumgw listening on") {
            // keep draining stdout so the child never blocks on a full pipe
            std::thread::spawn(move || for _ in lines {});
            return (daemon, said);
        }
    }
    panic!("the daemon ended before it listened: {said}");
}

/// `jumgw certs init --dir DIR`: the development PKI, as a newcomer makes it.
pub fn certs_init(dir: &Path) {
    let o = jumgw()
        .args(["certs", "init", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// tests/py/ocsp_responder.py: an OCSP responder and CRL issuer of
/// Python `cryptography` for the CA `ca` (its key `key`), honest or hostile
/// by the path asked (`/fresh`, `/replay`, `/old`, `/delegated`,
/// `/delegated-expired`, `/redirect/PORT`, `/huge`, `/chunked`,
/// `/crl-undated`); `args` are its `--revoked CERT` and `--victim CERT`.
/// Killed on drop.
pub struct PyResponder {
    pub port: u16,
    child: std::process::Child,
}

impl PyResponder {
    pub fn start(ca: &Path, key: &Path, args: &[(&str, &Path)]) -> PyResponder {
        let port = free_port();
        let mut c = Command::new(python());
        c.arg(manifest_dir().join("tests/py/ocsp_responder.py"))
            .arg(ca)
            .arg(key)
            .arg(port.to_string());
        for (flag, path) in args {
            c.arg(flag).arg(path);
        }
        let mut child = c.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let line = first_line(&mut child);
        assert_eq!(
            line.trim(),
            "listening",
            "tests/py/ocsp_responder.py did not start"
        );
        PyResponder { port, child }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for PyResponder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `prlimit --as=BYTES` around the `jumgw` binary: a run whose address
/// space is capped, so that memory a hostile input makes it take ends in
/// a failed allocation (an abort) rather than a slow machine. glibc gives
/// each thread that allocates at once an arena of its own, 64 MiB of
/// address space reserved each (up to 8 per core): two arenas keep what
/// the genuine run reserves steady, so that the limit measures what is
/// used, not how threads happened to meet.
pub fn jumgw_limited(bytes: u64) -> Command {
    let mut c = tool("prlimit");
    c.arg(format!("--as={bytes}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_jumgw"))
        .env("MALLOC_ARENA_MAX", "2");
    c
}

/// The peak resident memory of a running process (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A key and a certificate for `127.0.0.1` issued by the development CA
/// in `certs` with the openssl command line (which, unlike our issuer,
/// makes keys of any size): an RSA key of `bits`, or an EC P-256 key
/// when `bits` is 0; `usage` its extended key usage.
pub fn openssl_issued(
    certs: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    bits: u32,
    usage: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.pem"));
    let run = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new("openssl")
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    let os = |s: &str| std::ffi::OsString::from(s);
    let keygen: Vec<std::ffi::OsString> = if bits == 0 {
        [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ]
        .map(os)
        .to_vec()
    } else {
        vec![
            os("genpkey"),
            os("-algorithm"),
            os("RSA"),
            os("-pkeyopt"),
            os(&format!("rsa_keygen_bits:{bits}")),
            os("-out"),
        ]
    };
    let mut args = keygen;
    args.push(key.clone().into());
    run(&args.iter().map(|a| a.as_os_str()).collect::<Vec<_>>());
    let ext = write(
        dir,
        &format!("{name}.cnf"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment,nonRepudiation\n\
             extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        )
        .as_bytes(),
    );
    let csr = dir.join(format!("{name}.csr"));
    run(&[
        "req".as_ref(),
        "-new".as_ref(),
        "-key".as_ref(),
        key.as_os_str(),
        "-subj".as_ref(),
        format!("/O=jum-gateway development/CN={name}").as_ref(),
        "-out".as_ref(),
        csr.as_os_str(),
    ]);
    run(&[
        "x509".as_ref(),
        "-req".as_ref(),
        "-sha256".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-in".as_ref(),
        csr.as_os_str(),
        "-CA".as_ref(),
        certs.join("ca.pem").as_os_str(),
        "-CAkey".as_ref(),
        certs.join("ca.key").as_os_str(),
        "-CAcreateserial".as_ref(),
        "-extfile".as_ref(),
        ext.as_os_str(),
        "-out".as_ref(),
        cert.as_os_str(),
    ]);
    (cert, key)
}

/// A stand-in X-Road security server's metaservices
/// (tests/py/xroad_metaservices.py: Python's ssl and xml.etree), serving
/// with the development PKI's cadastre TLS certificate and requiring a
/// client certificate the registries trust; `listed` and `allowed` are its
/// answers to listMethods and allowedMethods. Killed on drop; its port.
pub fn start_xroad_metaservices(
    certs: &Path,
    listed: &[&str],
    allowed: &[&str],
) -> (Receiver, u16) {
    let mut child = Command::new(python())
        .arg(manifest_dir().join("tests/py/xroad_metaservices.py"))
        .arg(certs.join("cadastre-tls.pem"))
        .arg(certs.join("cadastre-tls.key"))
        .arg(certs.join("registry-trust.pem"))
        .arg(listed.join(","))
        .arg(allowed.join(","))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let line = first_line(&mut child);
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the stand-in security server said {line:?}"));
    (Receiver(child), port)
}
