//! The Docker engine the integration tests need. A test that needs it and finds none fails, saying
//! why: it never passes silently.

use std::process::Command;

/// The sandbox image `scripts/build-images` builds (and `scripts/test` builds before the tests).
pub const SANDBOX_IMAGE: &str = "opslab-sandbox:latest";

/// Fails the test unless the Docker engine answers.
pub fn require_engine() {
    let output = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match output {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "these tests need a running Docker engine, and `docker info` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => {
            panic!("these tests need the docker CLI and a running Docker engine: {error}")
        }
    }
}

/// Fails the test unless the engine answers and holds the sandbox image.
pub fn require_sandbox_image() {
    require_engine();
    let found = Command::new("docker")
        .args(["image", "inspect", SANDBOX_IMAGE])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(
        found,
        "the image {SANDBOX_IMAGE} is missing: run scripts/build-images (scripts/test does)"
    );
}

/// A Docker network for one test, removed when dropped.
pub struct TestNetwork {
    pub name: String,
}

impl TestNetwork {
    pub fn create(prefix: &str) -> TestNetwork {
        let name = format!("opslab-test-{prefix}-{}", uuid::Uuid::new_v4().simple());
        let output = Command::new("docker")
            .args(["network", "create", &name])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docker network create failed: {output:?}"
        );
        TestNetwork { name }
    }

    /// The host's address on this network (its bridge's gateway): what its containers reach the
    /// host by, and what a test server listens on for them, reaching nothing beyond.
    pub fn gateway(&self) -> std::net::IpAddr {
        let output = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
            ])
            .arg(&self.name)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docker network inspect failed: {output:?}"
        );
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .find_map(|address| address.parse::<std::net::Ipv4Addr>().ok())
            .map(std::net::IpAddr::V4)
            .unwrap_or_else(|| panic!("the network {} has no IPv4 gateway", self.name))
    }
}

impl Drop for TestNetwork {
    /// Removes the network, first taking off it the containers still there (a test's sandboxes are
    /// often removed after its network is dropped): a network with endpoints cannot be removed.
    fn drop(&mut self) {
        let attached = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{range $id, $_ := .Containers}}{{$id}} {{end}}",
            ])
            .arg(&self.name)
            .output();
        if let Ok(attached) = attached {
            for container in String::from_utf8_lossy(&attached.stdout).split_whitespace() {
                let _ = Command::new("docker")
                    .args(["network", "disconnect", "-f", &self.name, container])
                    .output();
            }
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// The containers (running or not) carrying this label.
pub fn containers_with_label(label: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!("label={label}"))
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker ps failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The session's sandbox (running or not), found by its name.
pub fn sandbox_of(session_id: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--no-trunc", "--filter"])
        .arg(format!(
            "name={}",
            opslab::sandbox::sandbox_name(session_id)
        ))
        .output()
        .expect("the docker CLI runs");
    assert!(output.status.success(), "docker ps failed: {output:?}");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Fails the test unless the engine holds every named image.
pub fn require_images(images: &[&str]) {
    require_engine();
    for image in images {
        let found = Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|output| output.status.success());
        assert!(
            found,
            "the image {image} is missing: run scripts/build-images (scripts/test does)"
        );
    }
}

/// The demo application's images, built by scripts/build-images.
pub const DEMO_IMAGES: [&str; 3] = [
    "opslab-demo-web:latest",
    "opslab-demo-api:latest",
    "opslab-demo-store:latest",
];

/// What watches the compose demo (Prometheus, Alertmanager, the blackbox exporter) and the sink of
/// its notifications, built by scripts/build-images.
pub const MONITORING_IMAGES: [&str; 2] =
    ["opslab-demo-monitoring:latest", "opslab-demo-sink:latest"];

/// The etcd demo's image (members and kv service), built by scripts/build-images demo.
pub const ETCD_IMAGE: &str = "opslab-demo-etcd:latest";

/// `docker compose` (v2) or `docker-compose` (1.29), whichever runs; fails the test when neither.
pub fn compose_command() -> Vec<String> {
    for command in [vec!["docker", "compose"], vec!["docker-compose"]] {
        let runs = Command::new(command[0])
            .args(&command[1..])
            .arg("version")
            .output()
            .is_ok_and(|output| output.status.success());
        if runs {
            return command.into_iter().map(String::from).collect();
        }
    }
    panic!(
        "these tests need Docker Compose: `docker compose` or `docker-compose` (apt-get install docker-compose)"
    );
}

/// Removes every container, network and volume whose name starts with `prefix`.
pub fn remove_named(prefix: &str) {
    let filter = format!("name={prefix}");
    for (kind, list) in [
        ("container", vec!["ps", "-aq", "--filter"]),
        ("network", vec!["network", "ls", "-q", "--filter"]),
        ("volume", vec!["volume", "ls", "-q", "--filter"]),
    ] {
        let Ok(output) = Command::new("docker").args(&list).arg(&filter).output() else {
            continue;
        };
        for id in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = Command::new("docker").args([kind, "rm", "-f", id]).output();
        }
    }
}
