//! A real Kubernetes API server for the tests of Kubernetes mode: etcd and kube-apiserver v1.20
//! (built once by `scripts/kube-apiserver` from Debian's source package) on loopback, with free
//! ports and a temporary folder each; a static admin token, the server's self-signed serving
//! certificate, a service-account signing key made here, RBAC authorization; the Incident CRD from
//! `crds/` applied. Both processes are killed when dropped.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use opslab::incident::Incident;

use super::controller::Options;

/// The version `scripts/kube-apiserver` builds.
const VERSION: &str = "v1.20.2";
/// How long the API server may take to be ready (about 5 s when the machine is idle).
const START_TIMEOUT: Duration = Duration::from_secs(120);

pub struct KubeApi {
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
    /// An admin client.
    pub client: kube::Client,
    /// An admin kubeconfig, for the controller (`--kubeconfig`).
    pub kubeconfig: PathBuf,
}

/// The kube-apiserver binary: `OPSLAB_KUBE_APISERVER`, or where `scripts/kube-apiserver` caches it.
fn apiserver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OPSLAB_KUBE_APISERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    cache
        .join("opslab")
        .join(format!("kube-apiserver-{VERSION}"))
        .join("kube-apiserver")
}

fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OPSLAB_ETCD") {
        return PathBuf::from(path);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("etcd"))
}

/// A port nothing listens on now at `address` (the OS's pick).
fn free_port(address: IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(address, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl KubeApi {
    /// Starts etcd and the API server on the loopback, and applies the CRD; fails the test, saying
    /// how to get them, when either binary is missing.
    pub async fn start() -> KubeApi {
        KubeApi::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// As [`KubeApi::start`], with the API server on `address` (a test network's gateway, for
    /// containers on it to reach; its serving certificate names that address). Etcd stays on the
    /// loopback.
    pub async fn start_on(address: IpAddr) -> KubeApi {
        let apiserver = apiserver_binary();
        assert!(
            apiserver.is_file(),
            "no kube-apiserver at {}: run scripts/kube-apiserver once (it builds {VERSION} from \
             Debian's kubernetes source package and caches it there), or set OPSLAB_KUBE_APISERVER",
            apiserver.display()
        );
        let etcd = etcd_binary();
        assert!(
            etcd.is_file(),
            "no etcd found (looked on PATH and in /usr/bin): install Debian's etcd-server \
             (scripts/kube-apiserver does), or set OPSLAB_ETCD"
        );
        // Ports picked here may be taken by another test before the servers bind them: try again.
        let mut last = String::new();
        for _ in 0..3 {
            match KubeApi::try_start(&apiserver, &etcd, address).await {
                Ok(api) => return api,
                Err(error) => last = error,
            }
        }
        panic!("the API server did not start:\n{last}");
    }

    async fn try_start(
        apiserver_bin: &Path,
        etcd_bin: &Path,
        address: IpAddr,
    ) -> Result<KubeApi, String> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = |name: &str| dir.path().join(name);
        let (client_port, peer_port) = (
            free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        );
        let secure_port = free_port(address);
        let server = SocketAddr::new(address, secure_port);

        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Command::new(etcd_bin)
            .args(["--name", "test", "--data-dir"])
            .arg(path("etcd"))
            .args(["--listen-client-urls", &etcd_url])
            .args(["--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(path("etcd.log")).unwrap())
            .stderr(std::fs::File::create(path("etcd.err.log")).unwrap())
            .spawn()
            .map_err(|error| format!("etcd: {error}"))?;

        // The admin's static token; a service-account signing key of our own.
        let token = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(
            path("tokens.csv"),
            format!("{token},admin,admin,system:masters\n"),
        )
        .unwrap();
        run(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(path("sa.key"))
                .arg("2048"),
            "openssl genrsa (the service-account key)",
        );
        run(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(path("sa.key"))
                .arg("-out")
                .arg(path("sa.pub")),
            "openssl rsa -pubout",
        );
        let log = path("apiserver.log");
        let apiserver = Command::new(apiserver_bin)
            .arg(format!("--etcd-servers={etcd_url}"))
            .arg(format!("--bind-address={address}"))
            .arg(format!("--advertise-address={address}"))
            .arg(format!("--secure-port={secure_port}"))
            .arg("--insecure-port=0")
            .arg(format!("--cert-dir={}", path("certs").display()))
            .arg(format!(
                "--token-auth-file={}",
                path("tokens.csv").display()
            ))
            .arg("--authorization-mode=RBAC")
            .arg(format!(
                "--service-account-key-file={}",
                path("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--service-cluster-ip-range=10.0.0.0/24")
            .arg("--profiling=false")
            .arg("--v=1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|error| format!("kube-apiserver: {error}"))?;
        let mut api = KubeApi {
            kubeconfig: path("kubeconfig"),
            client: kube::Client::try_from(kube::Config::new(
                format!("https://{server}").parse().unwrap(),
            ))
            .unwrap(),
            dir,
            etcd,
            apiserver,
        };
        api.wait_ready(server, &token).await?;
        api.apply_crd().await;
        Ok(api)
    }

    /// Waits for the serving certificate, writes the kubeconfig, and waits for `/readyz` and the
    /// `default` namespace.
    async fn wait_ready(&mut self, server: SocketAddr, token: &str) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let ca = self.dir.path().join("certs").join("apiserver.crt");
        let mut last = String::new();
        loop {
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{name} exited with {status}\nkube-apiserver:\n{}\netcd:\n{}",
                        tail(&self.dir.path().join("apiserver.log"), 30),
                        tail(&self.dir.path().join("etcd.err.log"), 10)
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not ready after {START_TIMEOUT:?} ({last})\nkube-apiserver:\n{}",
                    tail(&self.dir.path().join("apiserver.log"), 40)
                ));
            }
            if ca.is_file() && !self.kubeconfig.is_file() {
                std::fs::write(&self.kubeconfig, kubeconfig(server, &ca, token)).unwrap();
                let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .expect("the kubeconfig written is valid");
                self.client = kube::Client::try_from(config).expect("a client");
            }
            if self.kubeconfig.is_file() {
                let request = http::Request::get("/readyz").body(Vec::new()).unwrap();
                match self.client.request_text(request).await {
                    Ok(text) if text.trim() == "ok" => {
                        let namespaces: Api<Namespace> = Api::all(self.client.clone());
                        match namespaces.get_opt("default").await {
                            Ok(Some(_)) => return Ok(()),
                            Ok(None) => last = "no default namespace yet".into(),
                            Err(error) => last = error.to_string(),
                        }
                    }
                    Ok(text) => last = text,
                    Err(error) => last = error.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Applies `crds/incident.yaml` (as a user would) and waits until it is established and served.
    async fn apply_crd(&self) {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds/incident.yaml");
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap())
                .expect("crds/incident.yaml is a CRD");
        let name = crd.metadata.name.clone().unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.patch(
            &name,
            &PatchParams::apply("opslab-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the API server accepts the CRD");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds, &name, conditions::is_crd_established()),
        )
        .await
        .expect("the CRD is established in time")
        .unwrap();
        let incidents: Api<Incident> = Api::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(error) = incidents.list(&Default::default()).await {
            assert!(
                Instant::now() < deadline,
                "Incidents are not served: {error}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The controller's options for Kubernetes mode on this API server (the admin's kubeconfig).
    pub fn controller_mode(&self) -> impl FnOnce(Options) -> Options + '_ {
        move |options| {
            options
                .arg("--source", "kube")
                .arg("--kubeconfig", self.kubeconfig.display())
        }
    }

    /// A kubeconfig for this server with another bearer token (a ServiceAccount's), written beside
    /// the admin's.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> PathBuf {
        let admin = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let config: String = admin
            .lines()
            .map(|line| match line.strip_prefix("    token: ") {
                Some(_) => format!("    token: {token}\n"),
                None => format!("{line}\n"),
            })
            .collect();
        let path = self.dir.path().join(name);
        std::fs::write(&path, config).unwrap();
        path
    }

    /// The Incidents of the `default` namespace.
    pub fn incidents(&self) -> Api<Incident> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// The API server's log, for failure messages.
    /// Creates the Incident `name` in `default` with `spec`, as `kubectl create` would.
    pub async fn create_incident(&self, name: &str, spec: serde_json::Value) -> Incident {
        let incident: Incident = serde_json::from_value(serde_json::json!({
            "apiVersion": "opslab.dev/v1alpha1",
            "kind": "Incident",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .expect("a valid Incident");
        self.incidents()
            .create(&kube::api::PostParams::default(), &incident)
            .await
            .expect("the API server takes the Incident")
    }

    /// A controller's log with the API server's after it, for a failure's message.
    pub fn beside(&self, controller_log: String) -> String {
        format!("{controller_log}\n--- kube-apiserver ---\n{}", self.log())
    }

    pub fn log(&self) -> String {
        tail(&self.dir.path().join("apiserver.log"), 40)
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kubeconfig(server: SocketAddr, ca: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://{server}
    certificate-authority: {ca}
users:
- name: admin
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: admin
    namespace: default
current-context: test
",
        ca = ca.display()
    )
}

/// Polls the Incident until `check` passes; fails with its last state and `logs()` otherwise.
pub async fn wait_for_incident(
    api: &Api<Incident>,
    name: &str,
    what: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
    check: impl Fn(&Incident) -> bool,
) -> Incident {
    let deadline = Instant::now() + timeout;
    loop {
        let current = api.get_opt(name).await.ok().flatten();
        if let Some(incident) = &current
            && check(incident)
        {
            return current.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {name}: {what}\nlast: {:#?}\nlogs:\n{}",
            current.and_then(|incident| incident.status),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
