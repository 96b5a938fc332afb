//! What the agent may do through its Docker socket in `guarded` mode. Pure: a request's route and
//! body, and the objects it names as the engine resolved them, in; a decision out.
//!
//! - Read the engine and ordinary objects; act on ordinary containers (start, stop, restart, kill,
//!   pause, unpause, update, exec, attach, copy files), and connect ordinary containers to ordinary
//!   networks or disconnect them.
//! - Its own sandbox: read it and exec in it, nothing more (no stop, no update of its limits, no new
//!   networks).
//! - opslab's own objects (anything carrying an `opslab.dev/` label that is not the agent's own
//!   sandbox: the controller, its store volume and network, other sessions' sandboxes) and the
//!   controller's own container and volumes: hidden from lists, and not to be touched at all.
//! - Creating containers only when the operator allows it, and never privileged, with added
//!   capabilities, host paths, host namespaces, devices, or opslab's objects.
//! - Everything else (removal, images, builds, volumes, prunes, swarm, plugins…): refused.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::body::{field, is_set, string, strings};
use super::route::{Action, Kind, Object, Route};

/// Labels under this prefix mark opslab's own objects.
pub const PROTECTED_LABEL_PREFIX: &str = "opslab.dev/";

/// Whose socket this is, and what the operator allows.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// The session whose sandbox this socket serves, and that sandbox's container (full id).
    pub session_id: String,
    pub sandbox: String,
    /// Containers (full ids) and volumes (names) that are opslab's own without carrying a label: the
    /// controller's container and its volumes, when it runs in one.
    pub protected_containers: HashSet<String>,
    pub protected_volumes: HashSet<String>,
    /// Whether `POST /containers/create` may be used at all.
    pub allow_create: bool,
}

/// An object the engine knows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Known {
    /// The full id (a volume's name).
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// A volume whose driver options bind a host path (`o=bind`, `device=…`).
    pub host_path: bool,
}

/// What the engine answered when asked about a referenced object.
#[derive(Clone, Debug, PartialEq)]
pub enum Found {
    Object(Known),
    /// An exec instance (full id) and the container it belongs to, resolved under
    /// `Object::new(Kind::Container, container)`.
    Exec {
        id: String,
        container: String,
    },
    /// The engine did not answer with the object: its status and message.
    Missing {
        status: u16,
        message: String,
    },
}

/// The referenced objects, as the engine resolved them.
pub type Resolved = HashMap<Object, Found>;

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Forward the request; `target` is the resolved id of the object the path names.
    Allow { target: Option<String> },
    /// Answer `status` with `reason`, forward nothing.
    Deny { status: u16, reason: String },
}

impl Decision {
    fn forbidden(reason: impl Into<String>) -> Decision {
        Decision::Deny {
            status: 403,
            reason: reason.into(),
        }
    }

    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Whose an object is, for the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    OwnSandbox,
    Protected,
    Ordinary,
}

fn class(kind: Kind, known: &Known, scope: &Scope) -> Class {
    if kind == Kind::Container && known.id == scope.sandbox {
        return Class::OwnSandbox;
    }
    let labelled = known
        .labels
        .keys()
        .any(|key| key.to_ascii_lowercase().starts_with(PROTECTED_LABEL_PREFIX));
    let listed = match kind {
        Kind::Container => scope.protected_containers.contains(&known.id),
        Kind::Volume => scope.protected_volumes.contains(&known.id),
        Kind::Exec | Kind::Network => false,
    };
    if labelled || listed {
        Class::Protected
    } else {
        Class::Ordinary
    }
}

/// The objects the engine must be asked about before [`decide`] can judge the request: the one the
/// path names, then those the body names. (An exec's container is added once the exec is resolved.)
pub fn references(route: &Route, body: Option<&Value>) -> Vec<Object> {
    let mut objects: Vec<Object> = route.target.iter().cloned().collect();
    match (route.action, body) {
        (Action::NetworkConnect | Action::NetworkDisconnect, Some(body)) => {
            if let Some(container) = string(body, "container") {
                objects.push(Object::new(Kind::Container, container));
            }
        }
        (Action::ContainerCreate, Some(body)) => objects.extend(create_references(body)),
        _ => {}
    }
    objects.dedup();
    objects
}

/// Judges one request.
pub fn decide(route: &Route, body: Option<&Value>, resolved: &Resolved, scope: &Scope) -> Decision {
    use Action::*;
    match route.action {
        Ping | Version | Info | Events | SystemDf | ContainerList | NetworkList | VolumeList
        | ImageList | ImageInspect | ImageHistory => Decision::Allow { target: None },
        ContainerInspect
        | ContainerTop
        | ContainerLogs
        | ContainerChanges
        | ContainerStats
        | ContainerWait
        | ContainerArchiveRead
        | ContainerExport
        | ContainerAttach
        | ContainerResize
        | ContainerArchiveWrite => path_target(
            route,
            resolved,
            scope,
            &[Class::OwnSandbox, Class::Ordinary],
        ),
        ExecCreate => {
            if body.is_some_and(|body| is_set(body, "privileged")) {
                return Decision::forbidden("privileged exec is not allowed");
            }
            if body.is_none() {
                return Decision::forbidden("the exec has no configuration");
            }
            path_target(
                route,
                resolved,
                scope,
                &[Class::OwnSandbox, Class::Ordinary],
            )
        }
        ExecStart | ExecResize | ExecInspect => exec_target(route, resolved, scope),
        ContainerUpdate if body.is_some_and(|body| !update_problems(body).is_empty()) => {
            Decision::forbidden(format!(
                "this update may not be made: {}",
                body.map(update_problems).unwrap_or_default().join("; ")
            ))
        }
        ContainerStart | ContainerStop | ContainerRestart | ContainerKill | ContainerPause
        | ContainerUnpause | ContainerUpdate => {
            path_target(route, resolved, scope, &[Class::Ordinary])
        }
        NetworkInspect | VolumeInspect => path_target(route, resolved, scope, &[Class::Ordinary]),
        NetworkConnect | NetworkDisconnect => network_membership(route, body, resolved, scope),
        ContainerCreate if !scope.allow_create => Decision::forbidden(
            "creating containers is not allowed here (the operator can allow it with --docker-allow-create)",
        ),
        ContainerCreate => match body {
            Some(body) => create(body, resolved, scope),
            None => Decision::forbidden("the container has no configuration"),
        },
        ContainerRename | ContainerRemove | NetworkCreate | NetworkRemove | VolumeCreate
        | VolumeRemove | Other => Decision::forbidden(format!(
            "{} is not an action the agent may take",
            route.action.name()
        )),
    }
}

/// The object the path names, allowed when its class is one of `allowed`.
fn path_target(route: &Route, resolved: &Resolved, scope: &Scope, allowed: &[Class]) -> Decision {
    let Some(object) = &route.target else {
        return Decision::forbidden("the request names no object");
    };
    match judge(object, resolved, scope, allowed) {
        Ok(known) => Decision::Allow {
            target: Some(known.id.clone()),
        },
        Err(denied) => denied,
    }
}

/// An exec is judged by its container: the agent's own sandbox or an ordinary container.
fn exec_target(route: &Route, resolved: &Resolved, scope: &Scope) -> Decision {
    let Some(object) = &route.target else {
        return Decision::forbidden("the request names no exec");
    };
    match resolved.get(object) {
        Some(Found::Exec { id, container }) => {
            let container = Object::new(Kind::Container, container.clone());
            match judge(
                &container,
                resolved,
                scope,
                &[Class::OwnSandbox, Class::Ordinary],
            ) {
                Ok(_) => Decision::Allow {
                    target: Some(id.clone()),
                },
                Err(denied) => denied,
            }
        }
        Some(Found::Missing { status, message }) => Decision::Deny {
            status: *status,
            reason: message.clone(),
        },
        Some(Found::Object(_)) | None => Decision::forbidden(format!(
            "the exec {} could not be resolved",
            object.reference
        )),
    }
}

/// The resolved object, when the engine knows it and its class is allowed.
fn judge<'a>(
    object: &Object,
    resolved: &'a Resolved,
    scope: &Scope,
    allowed: &[Class],
) -> Result<&'a Known, Decision> {
    let known = match resolved.get(object) {
        Some(Found::Object(known)) => known,
        Some(Found::Missing { status, message }) => {
            return Err(Decision::Deny {
                status: *status,
                reason: message.clone(),
            });
        }
        Some(Found::Exec { .. }) | None => {
            return Err(Decision::forbidden(format!(
                "the {} {} could not be resolved",
                object.kind.name(),
                object.reference
            )));
        }
    };
    let class = class(object.kind, known, scope);
    if allowed.contains(&class) {
        return Ok(known);
    }
    let name = display_name(known);
    Err(Decision::forbidden(match class {
        Class::OwnSandbox => {
            format!("the agent's own sandbox ({name}) may be read and exec'd into, not changed")
        }
        Class::Protected => format!(
            "the {} {name} belongs to opslab (another session's sandbox or the controller's own) and is off limits",
            object.kind.name()
        ),
        Class::Ordinary => format!("the {} {name} may not be used this way", object.kind.name()),
    }))
}

fn display_name(known: &Known) -> String {
    if known.name.is_empty() {
        known.id.chars().take(12).collect()
    } else {
        known.name.trim_start_matches('/').to_string()
    }
}

/// `docker network connect/disconnect`: an ordinary network and an ordinary container.
fn network_membership(
    route: &Route,
    body: Option<&Value>,
    resolved: &Resolved,
    scope: &Scope,
) -> Decision {
    let Some(container) = body.and_then(|body| string(body, "container")) else {
        return Decision::forbidden("the request names no container");
    };
    let container = Object::new(Kind::Container, container);
    if let Some(Found::Object(_)) = resolved.get(&container)
        && let Err(denied) = judge(&container, resolved, scope, &[Class::Ordinary])
    {
        return denied;
    }
    if let Some(Found::Missing { status, message }) = resolved.get(&container)
        && *status != 404
    {
        return Decision::Deny {
            status: *status,
            reason: message.clone(),
        };
    }
    path_target(route, resolved, scope, &[Class::Ordinary])
}

/// Network modes that name no network object.
const BUILTIN_NETWORK_MODES: [&str; 4] = ["", "default", "bridge", "none"];

/// The objects a container configuration names: volumes it mounts, containers whose namespaces or
/// links it joins, networks it joins.
fn create_references(body: &Value) -> Vec<Object> {
    let mut objects = Vec::new();
    for host in host_configs(body) {
        for bind in strings(host, "binds") {
            if let Some(volume) = bind.split(':').next().filter(|_| bind.contains(':'))
                && is_volume_name(volume)
            {
                objects.push(Object::new(Kind::Volume, volume));
            }
        }
        for mount in field(host, "mounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if string(mount, "type") == Some("volume")
                && let Some(source) = string(mount, "source").filter(|s| !s.is_empty())
            {
                objects.push(Object::new(Kind::Volume, source));
            }
        }
        for mode in ["networkmode", "pidmode", "ipcmode"] {
            if let Some(container) = string(host, mode).and_then(|m| m.strip_prefix("container:")) {
                objects.push(Object::new(Kind::Container, container));
            }
        }
        if let Some(network) = string(host, "networkmode")
            && !network.starts_with("container:")
            && network != "host"
            && !BUILTIN_NETWORK_MODES.contains(&network)
        {
            objects.push(Object::new(Kind::Network, network));
        }
        for link in strings(host, "links") {
            let name = link
                .split(':')
                .next()
                .unwrap_or(link)
                .trim_start_matches('/');
            objects.push(Object::new(Kind::Container, name));
        }
    }
    let endpoints = field(body, "networkingconfig")
        .and_then(|config| field(config, "endpointsconfig"))
        .and_then(Value::as_object);
    for network in endpoints.into_iter().flat_map(|map| map.keys()) {
        if !BUILTIN_NETWORK_MODES.contains(&network.as_str()) {
            objects.push(Object::new(Kind::Network, network.clone()));
        }
    }
    objects
}

/// The engine reads host settings from `HostConfig` and, for old clients, from the top level too.
fn host_configs(body: &Value) -> Vec<&Value> {
    let mut hosts = vec![body];
    if let Some(host) = field(body, "hostconfig").filter(|host| host.is_object()) {
        hosts.push(host);
    }
    hosts
}

/// A volume name as the engine accepts it; anything else in a bind's source is a host path.
fn is_volume_name(source: &str) -> bool {
    let mut chars = source.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Judges a container configuration: every problem is named.
fn create(body: &Value, resolved: &Resolved, scope: &Scope) -> Decision {
    let mut problems: Vec<String> = Vec::new();
    if !body.is_object() {
        return Decision::forbidden("the container configuration is not a JSON object");
    }
    for host in host_configs(body) {
        problems.extend(host_problems(host));
    }
    let labels = field(body, "labels").and_then(Value::as_object);
    if labels.is_some_and(|labels| {
        labels
            .keys()
            .any(|key| key.to_ascii_lowercase().starts_with(PROTECTED_LABEL_PREFIX))
    }) {
        problems.push(format!(
            "labels under {PROTECTED_LABEL_PREFIX} are reserved for opslab"
        ));
    }
    for object in create_references(body) {
        match resolved.get(&object) {
            Some(Found::Object(known)) => {
                if class(object.kind, known, scope) != Class::Ordinary {
                    problems.push(format!(
                        "the {} {} belongs to opslab",
                        object.kind.name(),
                        display_name(known)
                    ));
                } else if known.host_path {
                    problems.push(format!("the volume {} is backed by a host path", known.id));
                }
            }
            // The engine creates a missing named volume, and refuses a missing container or network.
            Some(Found::Missing { status: 404, .. }) => {}
            Some(Found::Missing { message, .. }) => problems.push(message.clone()),
            Some(Found::Exec { .. }) | None => problems.push(format!(
                "the {} {} could not be resolved",
                object.kind.name(),
                object.reference
            )),
        }
    }
    if problems.is_empty() {
        Decision::Allow { target: None }
    } else {
        problems.dedup();
        Decision::forbidden(format!(
            "this container may not be created: {}",
            problems.join("; ")
        ))
    }
}

/// What `docker update` may not change: the engine ignores these today, and they would reach the
/// host if it did not.
fn update_problems(body: &Value) -> Vec<String> {
    [
        "devices",
        "devicerequests",
        "devicecgrouprules",
        "cgroupparent",
    ]
    .iter()
    .filter(|field| is_set(body, field))
    .map(|field| format!("{field} is not updated through opslab"))
    .collect()
}

/// What a host configuration may not ask for.
fn host_problems(host: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut refuse = |problem: &str| problems.push(problem.to_string());
    if is_set(host, "privileged") {
        refuse("privileged mode");
    }
    if is_set(host, "capadd") || is_set(host, "capabilities") {
        refuse("added capabilities");
    }
    for bind in strings(host, "binds") {
        let source = bind.split(':').next().unwrap_or(bind);
        if bind.contains(':') && !is_volume_name(source) {
            refuse("host-path mounts");
        }
    }
    for mount in field(host, "mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match string(mount, "type") {
            Some("volume") | Some("tmpfs") => {}
            _ => refuse("host-path mounts (only volume and tmpfs mounts)"),
        }
        if field(mount, "volumeoptions").is_some_and(|options| is_set(options, "driverconfig")) {
            refuse("volume driver options (they can bind host paths)");
        }
    }
    for (mode, what) in [
        ("networkmode", "the host's network namespace"),
        ("pidmode", "the host's pid namespace"),
        ("ipcmode", "the host's IPC namespace"),
        ("utsmode", "the host's UTS namespace"),
        ("usernsmode", "the host's user namespace"),
        ("cgroupnsmode", "the host's cgroup namespace"),
    ] {
        if string(host, mode) == Some("host") {
            refuse(what);
        }
    }
    if is_set(host, "devices")
        || is_set(host, "devicerequests")
        || is_set(host, "devicecgrouprules")
    {
        refuse("host devices");
    }
    for option in strings(host, "securityopt") {
        let option = option.to_ascii_lowercase();
        if !matches!(
            option.as_str(),
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true"
        ) {
            refuse(
                "security options other than no-new-privileges (seccomp, AppArmor and SELinux stay as the engine sets them)",
            );
        }
    }
    if is_set(host, "maskedpaths") || field(host, "maskedpaths").is_some_and(Value::is_array) {
        refuse("changed masked paths");
    }
    if is_set(host, "readonlypaths") || field(host, "readonlypaths").is_some_and(Value::is_array) {
        refuse("changed read-only paths");
    }
    if is_set(host, "cgroupparent") || is_set(host, "cgroup") {
        refuse("another cgroup");
    }
    if is_set(host, "volumesfrom") {
        refuse("volumes from other containers");
    }
    if string(host, "runtime").is_some_and(|runtime| !runtime.is_empty() && runtime != "runc") {
        refuse("another runtime");
    }
    if string(host, "volumedriver").is_some_and(|driver| !driver.is_empty() && driver != "local") {
        refuse("another volume driver");
    }
    // Network log drivers (syslog, gelf, fluentd…) connect from the engine, on the host's network.
    let log_driver = field(host, "logconfig").and_then(|config| string(config, "type"));
    if log_driver.is_some_and(|driver| !matches!(driver, "" | "json-file" | "local" | "none")) {
        refuse("another log driver");
    }
    problems
}

/// A list response without opslab's own objects (the agent's own sandbox stays); `system df`'s
/// containers and volumes too. Pure.
pub fn visible(action: Action, mut list: Value, scope: &Scope) -> Value {
    if action == Action::SystemDf {
        if let Some(containers) = list.get_mut("Containers") {
            *containers = visible(Action::ContainerList, containers.take(), scope);
        }
        if let Some(volumes) = list.get_mut("Volumes") {
            let wrapped = serde_json::json!({ "Volumes": volumes.take() });
            *volumes = visible(Action::VolumeList, wrapped, scope)["Volumes"].take();
        }
        return list;
    }
    let (kind, items) = match action {
        Action::ContainerList => (Kind::Container, list.as_array_mut()),
        Action::NetworkList => (Kind::Network, list.as_array_mut()),
        Action::VolumeList => (
            Kind::Volume,
            list.get_mut("Volumes").and_then(Value::as_array_mut),
        ),
        _ => return list,
    };
    if let Some(items) = items {
        items.retain(|item| {
            let id = item
                .get(if kind == Kind::Volume { "Name" } else { "Id" })
                .and_then(Value::as_str)
                .unwrap_or_default();
            let labels = item
                .get("Labels")
                .and_then(Value::as_object)
                .map(|labels| {
                    labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let known = Known {
                id: id.to_string(),
                labels,
                ..Known::default()
            };
            class(kind, &known, scope) != Class::Protected
        });
    }
    list
}

/// The containers (full ids) of a container list that are opslab's own, the agent's own sandbox
/// excepted: what must be left out of other answers that name containers. Pure.
pub fn protected_ids(containers: &Value, scope: &Scope) -> HashSet<String> {
    let mut ids = HashSet::new();
    let shown = visible(Action::ContainerList, containers.clone(), scope);
    let shown: HashSet<&str> = shown
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("Id").and_then(Value::as_str))
        .collect();
    for item in containers.as_array().into_iter().flatten() {
        if let Some(id) = item.get("Id").and_then(Value::as_str)
            && !shown.contains(id)
        {
            ids.insert(id.to_string());
        }
    }
    ids.extend(scope.protected_containers.iter().cloned());
    ids.remove(&scope.sandbox);
    ids
}

/// Whether one event of the engine's stream (a JSON line) may be shown: not when it is about one of
/// opslab's containers (by their labels, which container events carry, or by `protected`, which
/// learns each one the stream reveals), opslab's networks or volumes, or their membership. A line
/// that is not an event is shown. Pure but for `protected`, kept by the stream.
pub fn event_visible(line: &[u8], protected: &mut HashSet<String>, scope: &Scope) -> bool {
    let Ok(event) = serde_json::from_slice::<Value>(line) else {
        return true;
    };
    let kind = event
        .get("Type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let actor = event.get("Actor");
    let id = actor
        .and_then(|actor| actor.get("ID"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let attributes = actor
        .and_then(|actor| actor.get("Attributes"))
        .and_then(Value::as_object);
    let labelled = attributes.is_some_and(|attributes| {
        attributes
            .keys()
            .any(|key| key.to_ascii_lowercase().starts_with(PROTECTED_LABEL_PREFIX))
    });
    let member = attributes
        .and_then(|attributes| attributes.get("container"))
        .and_then(Value::as_str)
        .is_some_and(|container| protected.contains(container));
    match kind {
        "container" if id == scope.sandbox => true,
        "container" => {
            if labelled || scope.protected_containers.contains(id) {
                protected.insert(id.to_string());
            }
            !protected.contains(id)
        }
        "network" => !labelled && !member,
        "volume" => !labelled && !member && !scope.protected_volumes.contains(id),
        _ => true,
    }
}

/// A network (inspected, or an item of a list) without its members that are opslab's own: their
/// ids, names and addresses are not the agent's to see. Pure.
pub fn without_members(mut network: Value, protected: &HashSet<String>) -> Value {
    if let Some(members) = network.get_mut("Containers").and_then(Value::as_object_mut) {
        members.retain(|id, _| !protected.contains(id));
    }
    network
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::proxy::route;
    use crate::sandbox::{LABEL_INSTANCE, LABEL_MANAGED, LABEL_SANDBOX};
    use http::Method;
    use serde_json::json;

    const SESSION: &str = "s-1";

    fn scope() -> Scope {
        Scope {
            session_id: SESSION.into(),
            sandbox: "self".into(),
            protected_containers: HashSet::from(["c0ntr0ller".to_string()]),
            protected_volumes: HashSet::from(["store".to_string()]),
            allow_create: true,
        }
    }

    fn known(id: &str, labels: &[(&str, &str)]) -> Found {
        Found::Object(Known {
            id: id.into(),
            name: format!("/{id}-name"),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            host_path: false,
        })
    }

    /// The objects of the tests, by name: `web` (ordinary), `self` (this session's sandbox),
    /// `other` (another session's sandbox), `ctl` (labelled controller), `c0ntr0ller` (the
    /// controller, unlabelled but listed), `app` and `opsnet` networks, `data`, `store`, `hostvol`
    /// volumes, and execs in `web`, `self` and `other`.
    fn world() -> Resolved {
        let own = [
            (LABEL_MANAGED, "true"),
            (LABEL_INSTANCE, "opslab"),
            (LABEL_SANDBOX, "k-1"),
        ];
        let other = [
            (LABEL_MANAGED, "true"),
            (LABEL_INSTANCE, "opslab"),
            (LABEL_SANDBOX, "k-2"),
        ];
        let container = |name: &str| Object::new(Kind::Container, name);
        let mut world = Resolved::from([
            (container("web"), known("web", &[("app", "demo")])),
            (container("self"), known("self", &own)),
            (container("other"), known("other", &other)),
            (
                container("ctl"),
                known("ctl", &[("opslab.dev/component", "controller")]),
            ),
            (container("c0ntr0ller"), known("c0ntr0ller", &[])),
            (
                container("gone"),
                Found::Missing {
                    status: 404,
                    message: "No such container: gone".into(),
                },
            ),
            (Object::new(Kind::Network, "app"), known("app", &[])),
            (
                Object::new(Kind::Network, "opsnet"),
                known("opsnet", &[("opslab.dev/component", "controller")]),
            ),
            (Object::new(Kind::Volume, "data"), known("data", &[])),
            (Object::new(Kind::Volume, "store"), known("store", &[])),
            (
                Object::new(Kind::Volume, "hostvol"),
                Found::Object(Known {
                    id: "hostvol".into(),
                    host_path: true,
                    ..Known::default()
                }),
            ),
            (
                Object::new(Kind::Volume, "fresh"),
                Found::Missing {
                    status: 404,
                    message: "no such volume".into(),
                },
            ),
        ]);
        for name in ["web", "self", "other"] {
            world.insert(
                Object::new(Kind::Exec, format!("exec-{name}")),
                Found::Exec {
                    id: format!("exec-{name}-full"),
                    container: name.into(),
                },
            );
        }
        world
    }

    fn judge_with(scope: &Scope, method: Method, path: &str, body: Option<Value>) -> Decision {
        let route = route::parse(&method, path).expect("a valid path");
        let resolved = world();
        for object in references(&route, body.as_ref()) {
            assert!(
                resolved.contains_key(&object),
                "the test world lacks {object:?} for {path}"
            );
        }
        decide(&route, body.as_ref(), &resolved, scope)
    }

    fn judge(method: Method, path: &str, body: Option<Value>) -> Decision {
        judge_with(&scope(), method, path, body)
    }

    fn allowed(method: Method, path: &str) {
        let decision = judge(method.clone(), path, None);
        assert!(decision.is_allowed(), "{method} {path}: {decision:?}");
    }

    fn denied(method: Method, path: &str, body: Option<Value>) -> String {
        match judge(method.clone(), path, body) {
            Decision::Deny {
                status: 403,
                reason,
            } => reason,
            other => panic!("{method} {path} was not forbidden: {other:?}"),
        }
    }

    #[test]
    fn the_engine_and_ordinary_objects_can_be_read() {
        for path in [
            "/_ping",
            "/v1.41/version",
            "/info",
            "/events",
            "/system/df",
            "/containers/json",
            "/networks",
            "/volumes",
            "/images/json",
            "/images/debian:12/json",
            "/containers/web/json",
            "/containers/web/logs",
            "/containers/web/stats",
            "/containers/web/top",
            "/containers/web/changes",
            "/containers/web/archive",
            "/networks/app",
            "/volumes/data",
            "/exec/exec-web/json",
        ] {
            allowed(Method::GET, path);
        }
        allowed(Method::HEAD, "/_ping");
    }

    #[test]
    fn ordinary_containers_can_be_operated() {
        for action in [
            "start", "stop", "restart", "kill", "pause", "unpause", "update", "wait", "attach",
            "resize",
        ] {
            let path = format!("/v1.41/containers/web/{action}");
            assert_eq!(
                judge(Method::POST, &path, None),
                Decision::Allow {
                    target: Some("web".into())
                },
                "{path}"
            );
        }
        let exec = json!({"Cmd": ["sh"], "AttachStdout": true});
        assert!(judge(Method::POST, "/containers/web/exec", Some(exec)).is_allowed());
        assert_eq!(
            judge(Method::POST, "/exec/exec-web/start", None),
            Decision::Allow {
                target: Some("exec-web-full".into())
            }
        );
        allowed(Method::PUT, "/containers/web/archive");
        for action in ["connect", "disconnect"] {
            let body = json!({"Container": "web"});
            let path = format!("/networks/app/{action}");
            assert!(
                judge(Method::POST, &path, Some(body)).is_allowed(),
                "{path}"
            );
        }
    }

    #[test]
    fn the_own_sandbox_can_be_read_and_execd_into_only() {
        allowed(Method::GET, "/containers/self/json");
        allowed(Method::GET, "/containers/self/logs");
        let exec = json!({"Cmd": ["true"]});
        assert!(judge(Method::POST, "/containers/self/exec", Some(exec)).is_allowed());
        allowed(Method::POST, "/exec/exec-self/start");
        for action in ["stop", "kill", "update", "restart", "pause"] {
            let reason = denied(Method::POST, &format!("/containers/self/{action}"), None);
            assert!(reason.contains("own sandbox"), "{reason}");
        }
        let body = json!({"Container": "self"});
        denied(Method::POST, "/networks/app/connect", Some(body));
    }

    #[test]
    fn opslab_objects_are_off_limits() {
        for container in ["other", "ctl", "c0ntr0ller"] {
            for (method, action) in [
                (Method::GET, "json"),
                (Method::GET, "logs"),
                (Method::GET, "archive"),
                (Method::POST, "stop"),
                (Method::POST, "kill"),
                (Method::POST, "attach"),
            ] {
                let reason = denied(method, &format!("/containers/{container}/{action}"), None);
                assert!(reason.contains("off limits"), "{reason}");
            }
            let exec = json!({"Cmd": ["cat", "/proc/1/environ"]});
            denied(
                Method::POST,
                &format!("/containers/{container}/exec"),
                Some(exec),
            );
        }
        denied(Method::POST, "/exec/exec-other/start", None);
        denied(Method::GET, "/networks/opsnet", None);
        denied(Method::GET, "/volumes/store", None);
        let into_theirs = json!({"Container": "web"});
        denied(Method::POST, "/networks/opsnet/connect", Some(into_theirs));
        let theirs_out = json!({"Container": "ctl"});
        denied(Method::POST, "/networks/app/disconnect", Some(theirs_out));
    }

    #[test]
    fn a_missing_object_gets_the_engines_answer() {
        assert_eq!(
            judge(Method::GET, "/containers/gone/json", None),
            Decision::Deny {
                status: 404,
                reason: "No such container: gone".into()
            }
        );
    }

    #[test]
    fn everything_outside_the_list_is_refused() {
        for (method, path) in [
            (Method::DELETE, "/containers/web"),
            (Method::POST, "/containers/web/rename"),
            (Method::POST, "/containers/prune"),
            (Method::POST, "/images/create"),
            (Method::DELETE, "/images/debian"),
            (Method::POST, "/build"),
            (Method::POST, "/networks/create"),
            (Method::DELETE, "/networks/app"),
            (Method::POST, "/volumes/create"),
            (Method::DELETE, "/volumes/data"),
            (Method::POST, "/swarm/init"),
            (Method::POST, "/plugins/pull"),
            (Method::POST, "/commit"),
            (Method::GET, "/containers/web/attach/ws"),
        ] {
            let reason = denied(method.clone(), path, None);
            assert!(
                reason.contains("not an action"),
                "{method} {path}: {reason}"
            );
        }
    }

    #[test]
    fn updates_change_resources_only() {
        let memory = json!({"Memory": 314572800, "MemorySwap": 629145600, "RestartPolicy": {"Name": "always"}});
        assert!(judge(Method::POST, "/containers/web/update", Some(memory)).is_allowed());
        for body in [
            json!({"Devices": [{"PathOnHost": "/dev/sda"}]}),
            json!({"CgroupParent": "/"}),
            json!({"devicecgrouprules": ["a *:* rwm"]}),
        ] {
            let reason = denied(Method::POST, "/containers/web/update", Some(body));
            assert!(reason.contains("not updated"), "{reason}");
        }
    }

    #[test]
    fn privileged_exec_is_refused() {
        let body = json!({"Cmd": ["sh"], "privileged": true});
        denied(Method::POST, "/containers/web/exec", Some(body));
    }

    #[test]
    fn creating_is_off_unless_allowed() {
        let scope = Scope {
            allow_create: false,
            ..scope()
        };
        let body = json!({"Image": "debian"});
        let decision = judge_with(
            &scope,
            Method::POST,
            "/containers/create",
            Some(body.clone()),
        );
        assert!(
            matches!(decision, Decision::Deny { status: 403, ref reason } if reason.contains("--docker-allow-create")),
            "{decision:?}"
        );
        assert!(judge(Method::POST, "/containers/create", Some(body)).is_allowed());
    }

    #[test]
    fn a_plain_container_may_be_created_with_volumes_networks_and_tmpfs() {
        let body = json!({
            "Image": "debian",
            "Labels": {"app": "probe"},
            "HostConfig": {
                "Binds": ["data:/data", "fresh:/fresh:ro", "/anonymous"],
                "Mounts": [{"Type": "tmpfs", "Target": "/t"}, {"Type": "volume", "Source": "data", "Target": "/d"}],
                "NetworkMode": "app",
                "PidMode": "container:web",
                "SecurityOpt": ["no-new-privileges:true"],
                "CapDrop": ["ALL"],
                "AutoRemove": true,
                "Memory": 1000000
            },
            "NetworkingConfig": {"EndpointsConfig": {"app": {}}}
        });
        let decision = judge(Method::POST, "/containers/create", Some(body));
        assert_eq!(decision, Decision::Allow { target: None });
    }

    #[test]
    fn dangerous_containers_are_not_created() {
        let cases = [
            (json!({"HostConfig": {"Privileged": true}}), "privileged"),
            (json!({"privileged": true}), "privileged"),
            (
                json!({"HostConfig": {"CapAdd": ["SYS_ADMIN"]}}),
                "capabilities",
            ),
            (
                json!({"HostConfig": {"Capabilities": ["CAP_SYS_ADMIN"]}}),
                "capabilities",
            ),
            (json!({"HostConfig": {"Binds": ["/:/host"]}}), "host-path"),
            (json!({"Binds": ["/var/run/docker.sock:/s"]}), "host-path"),
            (json!({"HostConfig": {"Binds": ["./x:/x"]}}), "host-path"),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "bind", "Source": "/", "Target": "/h"}]}}),
                "host-path",
            ),
            (
                json!({"HostConfig": {"Mounts": [{"Type": "volume", "Target": "/h", "VolumeOptions": {"DriverConfig": {"Name": "local", "Options": {"o": "bind", "device": "/"}}}}]}}),
                "driver options",
            ),
            (
                json!({"HostConfig": {"Binds": ["hostvol:/h"]}}),
                "host path",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "host"}}),
                "network namespace",
            ),
            (json!({"HostConfig": {"PidMode": "host"}}), "pid namespace"),
            (json!({"HostConfig": {"IpcMode": "host"}}), "IPC"),
            (json!({"HostConfig": {"UTSMode": "host"}}), "UTS"),
            (
                json!({"HostConfig": {"UsernsMode": "host"}}),
                "user namespace",
            ),
            (
                json!({"HostConfig": {"CgroupnsMode": "host"}}),
                "cgroup namespace",
            ),
            (
                json!({"HostConfig": {"Devices": [{"PathOnHost": "/dev/sda"}]}}),
                "devices",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["seccomp=unconfined"]}}),
                "security options",
            ),
            (
                json!({"HostConfig": {"SecurityOpt": ["apparmor=unconfined"]}}),
                "security options",
            ),
            (json!({"HostConfig": {"MaskedPaths": []}}), "masked"),
            (json!({"HostConfig": {"CgroupParent": "/"}}), "cgroup"),
            (
                json!({"HostConfig": {"VolumesFrom": ["web"]}}),
                "volumes from",
            ),
            (json!({"HostConfig": {"Runtime": "runsc-debug"}}), "runtime"),
            (
                json!({"HostConfig": {"VolumeDriver": "sshfs"}}),
                "volume driver",
            ),
            (
                json!({"HostConfig": {"LogConfig": {"Type": "gelf", "Config": {"gelf-address": "udp://10.0.0.1:12201"}}}}),
                "log driver",
            ),
            (
                json!({"HostConfig": {"Binds": ["store:/store"]}}),
                "belongs to opslab",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "container:ctl"}}),
                "belongs to opslab",
            ),
            (
                json!({"HostConfig": {"PidMode": "container:other"}}),
                "belongs to opslab",
            ),
            (
                json!({"HostConfig": {"NetworkMode": "opsnet"}}),
                "belongs to opslab",
            ),
            (
                json!({"NetworkingConfig": {"EndpointsConfig": {"opsnet": {}}}}),
                "belongs to opslab",
            ),
            (
                json!({"HostConfig": {"Links": ["/ctl:db"]}}),
                "belongs to opslab",
            ),
            (
                json!({"Labels": {"opslab.dev/managed": "true"}}),
                "reserved",
            ),
        ];
        for (body, expected) in cases {
            let reason = denied(Method::POST, "/v1.41/containers/create", Some(body.clone()));
            assert!(reason.contains(expected), "{body}: {reason}");
        }
    }

    #[test]
    fn disk_usage_leaves_out_opslabs_containers_and_volumes() {
        let df = json!({
            "LayersSize": 1,
            "Containers": [
                {"Id": "self", "Labels": {LABEL_MANAGED: "true"}},
                {"Id": "other", "Labels": {LABEL_MANAGED: "true"}},
                {"Id": "web", "Labels": {}},
            ],
            "Volumes": [
                {"Name": "store", "Labels": null},
                {"Name": "data", "Labels": {}},
            ],
        });
        let shown = visible(Action::SystemDf, df, &scope());
        let ids: Vec<&str> = shown["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["self", "web"]);
        assert_eq!(shown["Volumes"], json!([{"Name": "data", "Labels": {}}]));
        assert_eq!(shown["LayersSize"], 1);
    }

    #[test]
    fn events_about_opslabs_objects_are_left_out() {
        let scope = scope();
        let mut protected = HashSet::from(["c0ntr0ller".to_string()]);
        let event = |kind: &str, id: &str, attributes: Value| {
            json!({"Type": kind, "Action": "start", "Actor": {"ID": id, "Attributes": attributes}})
                .to_string()
        };
        let mut shown = |line: String| event_visible(line.as_bytes(), &mut protected, &scope);
        // Another sandbox, by its labels; then, once learnt, by its id alone.
        assert!(!shown(event(
            "container",
            "other",
            json!({LABEL_MANAGED: "true", "name": "opslab-sbx-s2"})
        )));
        assert!(!shown(event(
            "container",
            "other",
            json!({"name": "opslab-sbx-s2"})
        )));
        assert!(!shown(event(
            "network",
            "app-net",
            json!({"container": "other", "name": "app"})
        )));
        assert!(!shown(event("container", "c0ntr0ller", json!({}))));
        assert!(!shown(event("volume", "store", json!({}))));
        assert!(!shown(event(
            "network",
            "own-net",
            json!({LABEL_SANDBOX: "k1"})
        )));
        // The agent's own sandbox, the application, and what is not an event.
        assert!(shown(event(
            "container",
            "self",
            json!({LABEL_MANAGED: "true"})
        )));
        assert!(shown(event("container", "web", json!({"name": "web"}))));
        assert!(shown(event(
            "network",
            "app-net",
            json!({"container": "web", "name": "app"})
        )));
        assert!(shown(event("image", "sha256:1", json!({}))));
        assert!(shown("not json".to_string()));
    }

    #[test]
    fn a_network_answer_leaves_out_opslabs_containers() {
        let scope = scope();
        let containers = json!([
            {"Id": "self", "Labels": {LABEL_MANAGED: "true"}},
            {"Id": "other-sandbox", "Labels": {LABEL_MANAGED: "true", LABEL_SANDBOX: "k2"}},
            {"Id": "web", "Labels": {"app": "web"}},
        ]);
        let protected = protected_ids(&containers, &scope);
        assert!(protected.contains("other-sandbox"));
        assert!(
            protected.contains("c0ntr0ller"),
            "the controller's own container"
        );
        assert!(!protected.contains("self"));
        assert!(!protected.contains("web"));
        let network = json!({"Name": "app", "Containers": {
            "self": {"Name": "opslab-sbx-s1"},
            "other-sandbox": {"Name": "opslab-sbx-s2", "IPv4Address": "172.20.0.3/16"},
            "web": {"Name": "web"},
        }});
        let shown = without_members(network, &protected);
        let members: Vec<&String> = shown["Containers"].as_object().unwrap().keys().collect();
        assert_eq!(members, vec!["self", "web"]);
        assert_eq!(shown["Name"], "app");
    }

    #[test]
    fn lists_hide_opslab_objects_but_not_the_own_sandbox() {
        let containers = json!([
            {"Id": "web", "Labels": {"app": "demo"}},
            {"Id": "self", "Labels": {"opslab.dev/managed": "true", "opslab.dev/instance": "opslab", "opslab.dev/sandbox": "k-1"}},
            {"Id": "other", "Labels": {"opslab.dev/managed": "true", "opslab.dev/instance": "opslab", "opslab.dev/sandbox": "k-2"}},
            {"Id": "c0ntr0ller", "Labels": {}},
            {"Id": "nolabels"}
        ]);
        let shown = visible(Action::ContainerList, containers, &scope());
        let ids: Vec<&str> = shown
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["web", "self", "nolabels"]);
        let volumes = json!({"Volumes": [{"Name": "store", "Labels": null}, {"Name": "data", "Labels": {}}], "Warnings": null});
        let shown = visible(Action::VolumeList, volumes, &scope());
        assert_eq!(shown["Volumes"].as_array().unwrap().len(), 1);
        let networks = json!([{"Id": "n1", "Labels": {"opslab.dev/component": "controller"}}, {"Id": "n2", "Labels": {}}]);
        let shown = visible(Action::NetworkList, networks, &scope());
        assert_eq!(shown.as_array().unwrap().len(), 1);
    }

    #[test]
    fn references_name_what_must_be_resolved() {
        let route = route::parse(&Method::POST, "/networks/app/connect").unwrap();
        let body = json!({"container": "web"});
        assert_eq!(
            references(&route, Some(&body)),
            vec![
                Object::new(Kind::Network, "app"),
                Object::new(Kind::Container, "web")
            ]
        );
        let route = route::parse(&Method::POST, "/containers/create").unwrap();
        let body =
            json!({"HostConfig": {"Binds": ["data:/d", "/h:/h"], "IpcMode": "container:web"}});
        assert_eq!(
            references(&route, Some(&body)),
            vec![
                Object::new(Kind::Volume, "data"),
                Object::new(Kind::Container, "web")
            ]
        );
    }
}
