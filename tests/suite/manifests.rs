//! Malformed manifests in a watched folder: each gets a clear error naming the file and the problem,
//! in the log and in `opslab get incidents`, and the good Incident beside them carries on.

use std::time::{Duration, Instant};

use opslab::incident::Phase;

use crate::support::controller::{Controller, Options, manifest};
use crate::support::docker;
use crate::support::fake_llm::{FakeLlm, Protocol, Turn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_malformed_ones_fail_alone() {
    docker::require_sandbox_image();
    let llm = FakeLlm::start(
        Protocol::Anthropic,
        vec![
            Turn::shell("echo ok", "look"),
            Turn::report("resolved", "fine"),
        ],
    )
    .await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    let good = manifest("good", "a real problem", "");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "bad-yaml.yaml",
            b"apiVersion: [unclosed\nkind: Incident\n".to_vec(),
            "invalid YAML",
        ),
        (
            "wrong-kind.yaml",
            good.replace("kind: Incident", "kind: Deployment")
                .replace("name: good", "name: wk")
                .into_bytes(),
            "kind is \"Deployment\"; expected \"Incident\"",
        ),
        (
            "wrong-version.yaml",
            good.replace("opslab.dev/v1alpha1", "opslab.dev/v9")
                .replace("name: good", "name: wv")
                .into_bytes(),
            "apiVersion is \"opslab.dev/v9\"",
        ),
        (
            "no-title.yaml",
            good.replace("  title: \"a real problem\"\n", "")
                .replace("name: good", "name: nt")
                .into_bytes(),
            "missing field `title`",
        ),
        (
            "unknown-field.yaml",
            format!("{}  sevrity: low\n", good.replace("name: good", "name: uf")).into_bytes(),
            "unknown field(s): spec.sevrity",
        ),
        (
            "duplicate.yaml",
            manifest("good", "same name again", "").into_bytes(),
            "duplicate Incident default/good",
        ),
        (
            "huge.yaml",
            vec![b'#'; 2 * 1024 * 1024],
            "manifests are limited to",
        ),
        (
            "junk.yaml",
            (0..8192u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            "not UTF-8",
        ),
    ];
    // The good one first, so that the duplicate (a later file name) is the one refused.
    controller.write_manifest("a-good.yaml", &good);
    for (file, bytes, _) in &cases {
        std::fs::write(controller.incidents().join(file), bytes).unwrap();
    }
    controller.wait_for_phase("good", Phase::Resolved, Duration::from_secs(120));

    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let table = controller.cli(&["get", "incidents", "-A"]);
        if cases.iter().all(|(file, _, _)| table.contains(file)) || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = controller.logs();
    for (file, _, problem) in &cases {
        let line = table
            .lines()
            .find(|line| line.contains(file) && line.contains(problem))
            .unwrap_or_else(|| {
                panic!("`opslab get incidents` does not show {file}: {problem}\n{table}")
            });
        assert!(line.contains(file));
        assert!(
            logs.lines()
                .any(|line| line.contains(file) && line.contains("invalid Incident manifest")),
            "the log does not name {file}:\n{logs}"
        );
    }
    let good_row = table
        .lines()
        .find(|line| line.contains(" good "))
        .expect("the good Incident");
    assert!(good_row.contains("Resolved"), "{table}");

    // Fixing a file clears its error.
    controller.write_manifest("no-title.yaml", &manifest("nt", "now with a title", ""));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let table = controller.cli(&["get", "incidents", "-A"]);
        if !table.contains("no-title.yaml#1") && table.contains(" nt ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fixed manifest still shows an error:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Entries named like manifests that are not files of the folder — a link out of it, a link to a
/// device, a dangling link, a FIFO, a directory — are each refused with a clear error, without being
/// read: the controller never blocks, and what a link points at is never shown. A link that stays
/// inside the folder is read as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_links_out_fifos_and_directories_are_refused_unread() {
    docker::require_sandbox_image();
    let llm =
        FakeLlm::start_each(Protocol::Anthropic, vec![Turn::report("resolved", "fine")]).await;
    let controller =
        Controller::start(Options::new("anthropic", llm.base_url()).arg("--summary-model", "off"));
    let incidents = controller.incidents();
    // Outside the folder: a valid manifest whose title must never be shown or run.
    let outside = controller.dir.path().join("outside.yaml");
    std::fs::write(
        &outside,
        manifest("outside", "OUTSIDE-MARKER-3f9a", "").replace("name: outside", "name: leaked"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, incidents.join("out.yaml")).unwrap();
    std::os::unix::fs::symlink("/proc/self/status", incidents.join("proc.yaml")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", incidents.join("device.yaml")).unwrap();
    std::os::unix::fs::symlink(incidents.join("nowhere"), incidents.join("dangling.yaml")).unwrap();
    std::fs::create_dir(incidents.join("dir.yaml")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(incidents.join("fifo.yaml"))
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo");
    // Inside: a hidden folder's manifest, linked in.
    std::fs::create_dir(incidents.join(".kept")).unwrap();
    std::fs::write(
        incidents.join(".kept/inside.yaml"),
        manifest("inside", "linked from inside", ""),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        incidents.join(".kept/inside.yaml"),
        incidents.join("in.yaml"),
    )
    .unwrap();
    controller.write_manifest("good.yaml", &manifest("good", "a real problem", ""));
    controller.wait_for_phase("good", Phase::Resolved, Duration::from_secs(120));
    controller.wait_for_phase("inside", Phase::Resolved, Duration::from_secs(120));

    let cases = [
        ("out.yaml", "a symbolic link out of the Incidents folder"),
        ("proc.yaml", "a symbolic link out of the Incidents folder"),
        ("device.yaml", "a symbolic link out of the Incidents folder"),
        ("dangling.yaml", "a symbolic link to nothing"),
        ("dir.yaml", "a directory, not a manifest file"),
        ("fifo.yaml", "a FIFO (named pipe), not a manifest file"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let table = controller.cli(&["get", "incidents", "-A"]);
        if cases.iter().all(|(file, _)| table.contains(file)) || Instant::now() > deadline {
            break table;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let logs = controller.logs();
    for (file, problem) in cases {
        assert!(
            table
                .lines()
                .any(|line| line.contains(file) && line.contains(problem)),
            "`opslab get incidents` does not show {file}: {problem}\n{table}"
        );
        assert!(
            logs.lines()
                .any(|line| line.contains(file) && line.contains(problem)),
            "the log does not name {file}:\n{logs}"
        );
    }
    for shown in [&table, &logs] {
        assert!(!shown.contains("OUTSIDE-MARKER"), "{shown}");
        assert!(!shown.contains("VmRSS"), "a /proc file was read:\n{shown}");
    }
    assert!(controller.incident("leaked").is_none());
}
