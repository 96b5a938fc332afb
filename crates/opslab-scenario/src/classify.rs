//! Which commands change the state of the system: the control case must show none. Conservative by
//! design: a command counts as state-changing unless every step of it is known to only read. Pure.

/// Docker subcommands that only read (with `container`, `image`, `network`, `volume`, `system`
/// taking a further word).
const DOCKER_READS: [&str; 13] = [
    "ps", "inspect", "logs", "stats", "top", "events", "images", "info", "version", "port", "diff",
    "history", "search",
];
const DOCKER_GROUP_READS: [&str; 9] = [
    "ls", "list", "ps", "inspect", "logs", "stats", "top", "port", "df",
];
const DOCKER_GROUPS: [&str; 5] = ["container", "image", "network", "volume", "system"];

/// Programs that only read, whatever their arguments (curl is judged by its method).
const READ_ONLY_PROGRAMS: [&str; 36] = [
    "cat", "head", "tail", "grep", "egrep", "less", "ls", "df", "du", "ps", "free", "uptime",
    "echo", "printf", "sleep", "date", "jq", "wc", "sort", "uniq", "cut", "tr", "awk", "sed",
    "getent", "dig", "nslookup", "host", "ping", "ip", "ss", "netstat", "env", "true", "test",
    // A `for` loop's header (`for i in 1 2 3`) runs nothing by itself.
    "for",
];
/// Shell words that only structure a command line.
const SHELL_WORDS: [&str; 8] = ["do", "done", "then", "fi", "if", "else", "while", "["];

/// Whether `command` (a bash command line) may change state.
pub fn changes_state(command: &str) -> bool {
    !changing_steps(command).is_empty()
}

/// The parts of `command` that may change state: each simple command that may, or the whole line
/// when it writes a file (`sed -i`, output redirection); none when it only reads.
pub fn changing_steps(command: &str) -> Vec<String> {
    if command.contains("sed -i") || has_file_redirect(command) {
        return vec![command.to_string()];
    }
    steps(command)
        .into_iter()
        .filter(|step| step_changes_state(step))
        .map(|step| step.join(" "))
        .collect()
}

/// The simple commands of a command line: split at `;`, `&&`, `||`, `|`, newlines and `$(`.
fn steps(command: &str) -> Vec<Vec<String>> {
    let mut steps = Vec::new();
    // Descriptor duplications (`2>&1`) hold an `&` that separates nothing.
    let duplications = regex::Regex::new(r"\d*>&\d+").expect("a valid pattern");
    let normalised = duplications
        .replace_all(command, " ")
        .replace("$(", ";")
        .replace([')', '`', '\n', '|', '&'], ";");
    for part in normalised.split(';') {
        let words: Vec<String> = part
            .split_whitespace()
            .map(|word| word.trim_matches(|c| c == '\'' || c == '"').to_string())
            .collect();
        if !words.is_empty() {
            steps.push(words);
        }
    }
    steps
}

fn step_changes_state(words: &[String]) -> bool {
    // Leading variable assignments and structure words (`for i in 1 2 3`, `do`) are skipped.
    let mut rest = words
        .iter()
        .skip_while(|w| SHELL_WORDS.contains(&w.as_str()) || is_assignment(w));
    let Some(program) = rest.next() else {
        return false;
    };
    let args: Vec<&str> = rest.map(String::as_str).collect();
    match program.rsplit('/').next().unwrap_or(program) {
        "docker" => docker_changes_state(&args),
        "curl" => curl_changes_state(&args),
        "etcdctl" => etcdctl_changes_state(&args),
        other => !READ_ONLY_PROGRAMS.contains(&other) && !is_assignment(other),
    }
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn docker_changes_state(args: &[&str]) -> bool {
    // Global options before the subcommand (`-H host`, `--context x`) are skipped.
    let mut words = args.iter().copied();
    let verb = loop {
        match words.next() {
            Some("-H" | "--host" | "--context" | "-c" | "--config" | "-l" | "--log-level") => {
                words.next();
            }
            Some(option) if option.starts_with('-') => {}
            Some(verb) => break verb,
            None => return false,
        }
    };
    if verb == "exec" || (verb == "container" && words.clone().next() == Some("exec")) {
        if verb == "container" {
            words.next();
        }
        return exec_changes_state(words.collect());
    }
    if DOCKER_GROUPS.contains(&verb) {
        return match words.next() {
            Some(sub) => !DOCKER_GROUP_READS.contains(&sub),
            None => false,
        };
    }
    !DOCKER_READS.contains(&verb)
}

/// `docker exec [OPTIONS] CONTAINER COMMAND…` changes what its command changes.
fn exec_changes_state(args: Vec<&str>) -> bool {
    let mut words = args.into_iter();
    loop {
        match words.next() {
            Some(
                "-e" | "--env" | "--env-file" | "-u" | "--user" | "-w" | "--workdir"
                | "--detach-keys",
            ) => {
                words.next();
            }
            Some(option) if option.starts_with('-') => {}
            Some(_container) => break,
            // Not a whole command: judged as the rest are, when unknown.
            None => return true,
        }
    }
    let command: Vec<String> = words.map(str::to_string).collect();
    command.is_empty() || step_changes_state(&command)
}

/// etcdctl subcommands that only read (with `member`, `endpoint`, `alarm`… taking a further word).
const ETCDCTL_READS: [&str; 3] = ["get", "version", "watch"];
const ETCDCTL_GROUP_READS: [(&str, &[&str]); 6] = [
    ("member", &["list"]),
    ("endpoint", &["health", "status", "hashkv"]),
    ("alarm", &["list"]),
    ("lease", &["list", "timetolive"]),
    ("user", &["list", "get"]),
    ("role", &["list", "get"]),
];

fn etcdctl_changes_state(args: &[&str]) -> bool {
    // Global flags (`--endpoints=…`, `-w table`) come before the subcommand.
    let mut words = args.iter().copied();
    let verb = loop {
        match words.next() {
            Some(
                "--endpoints" | "-w" | "--write-out" | "--command-timeout" | "--dial-timeout"
                | "--user" | "--cacert" | "--cert" | "--key",
            ) => {
                words.next();
            }
            Some(option) if option.starts_with('-') => {}
            Some(verb) => break verb,
            None => return false,
        }
    };
    if ETCDCTL_READS.contains(&verb) {
        return false;
    }
    match ETCDCTL_GROUP_READS.iter().find(|(group, _)| *group == verb) {
        Some((_, reads)) => !words.next().is_some_and(|sub| reads.contains(&sub)),
        None => true,
    }
}

fn curl_changes_state(args: &[&str]) -> bool {
    args.iter().enumerate().any(|(i, arg)| {
        let method = match *arg {
            "-X" | "--request" => args.get(i + 1).copied(),
            _ => arg.strip_prefix("-X").filter(|m| !m.is_empty()),
        };
        let writes_body = matches!(
            *arg,
            "-d" | "--data"
                | "--data-raw"
                | "--data-binary"
                | "--json"
                | "-F"
                | "--form"
                | "-T"
                | "--upload-file"
        );
        writes_body || method.is_some_and(|m| !matches!(m, "GET" | "HEAD" | "OPTIONS"))
    })
}

/// `>` or `>>` to a file; `2>&1` and `>/dev/null` write nothing that lasts.
fn has_file_redirect(command: &str) -> bool {
    let bytes = command.as_bytes();
    let mut quote: Option<u8> = None;
    for (i, &byte) in bytes.iter().enumerate() {
        match (quote, byte) {
            (Some(q), b) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(byte),
            (None, b'>') => {
                let target = command[i + 1..].trim_start_matches('>').trim_start();
                if !(target.starts_with('&') || target.starts_with("/dev/null")) {
                    return true;
                }
            }
            (None, _) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{changes_state, changing_steps};

    #[test]
    fn the_changing_steps_are_told_apart() {
        assert_eq!(
            changing_steps(
                "docker ps; docker start x-etcd2 && docker exec x-etcd1 etcdctl member list"
            ),
            vec!["docker start x-etcd2"]
        );
        assert_eq!(
            changing_steps("echo x > /tmp/f; docker ps"),
            vec!["echo x > /tmp/f; docker ps"]
        );
        assert!(changing_steps("docker logs x 2>&1 | tail").is_empty());
    }

    #[test]
    fn reads_are_not_changes() {
        for command in [
            "docker exec demo-store df -h /data",
            "docker exec -e ETCDCTL_API=3 x-etcd1 etcdctl --endpoints=http://etcd1:2379 -w table endpoint status --cluster",
            "docker container exec x-etcd1 etcdctl member list",
            "docker exec x-etcd2 etcdctl get /kv/a",
            "docker ps -a --format 'table {{.Names}}\\t{{.Status}}'",
            "docker logs --tail 5 demo-api 2>&1",
            "docker logs x 2>&1 | tail -n 3 >&2",
            "docker inspect -f '{{.State.Status}}' x | grep running",
            "docker network inspect demo-net",
            "docker -H unix:///var/run/docker.sock container ls",
            "for i in 1 2 3; do curl -sS -o /dev/null -w '%{http_code}\\n' http://web:8080/; done",
            "curl -X GET http://web:8080/api/visits",
            "docker stats --no-stream demo-api",
            "getent hosts store || echo missing",
            "sleep 2; df -h",
        ] {
            assert!(!changes_state(command), "{command}");
        }
    }

    #[test]
    fn writes_are_changes() {
        for command in [
            "docker start demo-store",
            "docker ps && docker restart demo-api",
            "docker network connect --alias store demo-net demo-store",
            "docker network disconnect demo-net demo-store",
            "docker update --memory 128m demo-api",
            "docker exec demo-store rm /data/x",
            "docker exec -it demo-store sh -c 'ls'",
            "docker exec x-etcd1 etcdctl member remove 8e9e05c52164694d",
            "docker exec x-etcd1 etcdctl --endpoints http://etcd1:2379 put k v",
            "docker exec x-etcd1 etcdctl endpoint",
            "docker exec x-etcd1",
            "docker cp /tmp/etcd x-etcd3:/etc/default/etcd",
            "docker container stop x",
            "curl -X POST http://web:8080/api/visits",
            "curl -sS -XPOST http://web/",
            "curl -d x=1 http://web/",
            "echo hi > /tmp/file",
            "rm -rf /tmp/x",
            "sed -i s/a/b/ file",
            "FOO=1 docker kill x",
            "x=$(docker rm -f y)",
        ] {
            assert!(changes_state(command), "{command}");
        }
    }
}
