//! Which Docker Engine API endpoint a request calls, and which object it names. Pure.
//!
//! Paths are matched with and without the `/v1.xx` version prefix. Anything that is not a plain,
//! canonical path (percent-escapes, dot segments, empty segments) is refused: the engine decodes and
//! cleans paths, so a path the proxy did not parse exactly could reach another endpoint.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::LazyLock;

use http::Method;

/// The oldest API version the proxy forwards. Older versions let `POST /containers/{id}/start`
/// carry a host configuration (privileges, mounts) that the policy would not see.
pub const MIN_API_VERSION: (u32, u32) = (1, 24);

/// What a call does, as far as the policy is concerned. The name is the metric's `action` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Ping,
    Version,
    Info,
    Events,
    SystemDf,
    ContainerList,
    ContainerCreate,
    ContainerInspect,
    ContainerTop,
    ContainerLogs,
    ContainerChanges,
    ContainerStats,
    ContainerWait,
    ContainerArchiveRead,
    ContainerArchiveWrite,
    ContainerExport,
    ContainerStart,
    ContainerStop,
    ContainerRestart,
    ContainerKill,
    ContainerPause,
    ContainerUnpause,
    ContainerUpdate,
    ContainerRename,
    ContainerResize,
    ContainerAttach,
    ContainerRemove,
    ExecCreate,
    ExecStart,
    ExecResize,
    ExecInspect,
    NetworkList,
    NetworkInspect,
    NetworkConnect,
    NetworkDisconnect,
    NetworkCreate,
    NetworkRemove,
    VolumeList,
    VolumeInspect,
    VolumeCreate,
    VolumeRemove,
    ImageList,
    ImageInspect,
    ImageHistory,
    /// Any other endpoint (builds, pulls, prunes, plugins, swarm…), or a malformed path.
    Other,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Ping => "ping",
            Action::Version => "version",
            Action::Info => "info",
            Action::Events => "events",
            Action::SystemDf => "system_df",
            Action::ContainerList => "container_list",
            Action::ContainerCreate => "container_create",
            Action::ContainerInspect => "container_inspect",
            Action::ContainerTop => "container_top",
            Action::ContainerLogs => "container_logs",
            Action::ContainerChanges => "container_changes",
            Action::ContainerStats => "container_stats",
            Action::ContainerWait => "container_wait",
            Action::ContainerArchiveRead => "container_archive_read",
            Action::ContainerArchiveWrite => "container_archive_write",
            Action::ContainerExport => "container_export",
            Action::ContainerStart => "container_start",
            Action::ContainerStop => "container_stop",
            Action::ContainerRestart => "container_restart",
            Action::ContainerKill => "container_kill",
            Action::ContainerPause => "container_pause",
            Action::ContainerUnpause => "container_unpause",
            Action::ContainerUpdate => "container_update",
            Action::ContainerRename => "container_rename",
            Action::ContainerResize => "container_resize",
            Action::ContainerAttach => "container_attach",
            Action::ContainerRemove => "container_remove",
            Action::ExecCreate => "exec_create",
            Action::ExecStart => "exec_start",
            Action::ExecResize => "exec_resize",
            Action::ExecInspect => "exec_inspect",
            Action::NetworkList => "network_list",
            Action::NetworkInspect => "network_inspect",
            Action::NetworkConnect => "network_connect",
            Action::NetworkDisconnect => "network_disconnect",
            Action::NetworkCreate => "network_create",
            Action::NetworkRemove => "network_remove",
            Action::VolumeList => "volume_list",
            Action::VolumeInspect => "volume_inspect",
            Action::VolumeCreate => "volume_create",
            Action::VolumeRemove => "volume_remove",
            Action::ImageList => "image_list",
            Action::ImageInspect => "image_inspect",
            Action::ImageHistory => "image_history",
            Action::Other => "other",
        }
    }

    /// The kind of object the path names, if any.
    fn target_kind(self) -> Option<Kind> {
        use Action::*;
        match self {
            ContainerInspect
            | ContainerTop
            | ContainerLogs
            | ContainerChanges
            | ContainerStats
            | ContainerWait
            | ContainerArchiveRead
            | ContainerArchiveWrite
            | ContainerExport
            | ContainerStart
            | ContainerStop
            | ContainerRestart
            | ContainerKill
            | ContainerPause
            | ContainerUnpause
            | ContainerUpdate
            | ContainerRename
            | ContainerResize
            | ContainerAttach
            | ContainerRemove
            | ExecCreate => Some(Kind::Container),
            ExecStart | ExecResize | ExecInspect => Some(Kind::Exec),
            NetworkInspect | NetworkConnect | NetworkDisconnect | NetworkRemove => {
                Some(Kind::Network)
            }
            VolumeInspect | VolumeRemove => Some(Kind::Volume),
            _ => None,
        }
    }

    /// Whether the policy reads the request body (then it is buffered, and checked, before it is
    /// forwarded).
    pub fn inspects_body(self) -> bool {
        matches!(
            self,
            Action::ContainerCreate
                | Action::ContainerUpdate
                | Action::ExecCreate
                | Action::NetworkConnect
                | Action::NetworkDisconnect
        )
    }
}

/// Kinds of Docker objects the policy tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Container,
    Exec,
    Network,
    Volume,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Container => "container",
            Kind::Exec => "exec",
            Kind::Network => "network",
            Kind::Volume => "volume",
        }
    }
}

/// A Docker object as a request names it (an id, an id prefix or a name).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Object {
    pub kind: Kind,
    pub reference: String,
}

impl Object {
    pub fn new(kind: Kind, reference: impl Into<String>) -> Object {
        Object {
            kind,
            reference: reference.into(),
        }
    }
}

/// A parsed request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub action: Action,
    /// The object the path names.
    pub target: Option<Object>,
    /// Where that name sits in the path, to put the resolved id there.
    target_span: Option<Range<usize>>,
    path: String,
}

impl Route {
    /// The path with the target's name replaced by `id` (so the engine acts on the very object the
    /// policy judged).
    pub fn path_with_target(&self, id: &str) -> String {
        match &self.target_span {
            Some(span) => format!("{}{id}{}", &self.path[..span.start], &self.path[span.end..]),
            None => self.path.clone(),
        }
    }
}

type Table = HashMap<Method, matchit::Router<Action>>;

static ROUTES: LazyLock<Table> = LazyLock::new(|| {
    use Action::*;
    let routes: &[(Method, &str, Action)] = &[
        (Method::GET, "/_ping", Ping),
        (Method::HEAD, "/_ping", Ping),
        (Method::GET, "/version", Version),
        (Method::GET, "/info", Info),
        (Method::GET, "/events", Events),
        (Method::GET, "/system/df", SystemDf),
        (Method::GET, "/containers/json", ContainerList),
        (Method::POST, "/containers/create", ContainerCreate),
        (Method::GET, "/containers/{id}/json", ContainerInspect),
        (Method::GET, "/containers/{id}/top", ContainerTop),
        (Method::GET, "/containers/{id}/logs", ContainerLogs),
        (Method::GET, "/containers/{id}/changes", ContainerChanges),
        (Method::GET, "/containers/{id}/stats", ContainerStats),
        (Method::GET, "/containers/{id}/export", ContainerExport),
        (
            Method::GET,
            "/containers/{id}/archive",
            ContainerArchiveRead,
        ),
        (
            Method::HEAD,
            "/containers/{id}/archive",
            ContainerArchiveRead,
        ),
        (
            Method::PUT,
            "/containers/{id}/archive",
            ContainerArchiveWrite,
        ),
        (Method::POST, "/containers/{id}/wait", ContainerWait),
        (Method::POST, "/containers/{id}/start", ContainerStart),
        (Method::POST, "/containers/{id}/stop", ContainerStop),
        (Method::POST, "/containers/{id}/restart", ContainerRestart),
        (Method::POST, "/containers/{id}/kill", ContainerKill),
        (Method::POST, "/containers/{id}/pause", ContainerPause),
        (Method::POST, "/containers/{id}/unpause", ContainerUnpause),
        (Method::POST, "/containers/{id}/update", ContainerUpdate),
        (Method::POST, "/containers/{id}/rename", ContainerRename),
        (Method::POST, "/containers/{id}/resize", ContainerResize),
        (Method::POST, "/containers/{id}/attach", ContainerAttach),
        (Method::POST, "/containers/{id}/exec", ExecCreate),
        (Method::DELETE, "/containers/{id}", ContainerRemove),
        (Method::POST, "/exec/{id}/start", ExecStart),
        (Method::POST, "/exec/{id}/resize", ExecResize),
        (Method::GET, "/exec/{id}/json", ExecInspect),
        (Method::GET, "/networks", NetworkList),
        (Method::GET, "/networks/{id}", NetworkInspect),
        (Method::POST, "/networks/create", NetworkCreate),
        (Method::POST, "/networks/{id}/connect", NetworkConnect),
        (Method::POST, "/networks/{id}/disconnect", NetworkDisconnect),
        (Method::DELETE, "/networks/{id}", NetworkRemove),
        (Method::GET, "/volumes", VolumeList),
        (Method::GET, "/volumes/{id}", VolumeInspect),
        (Method::POST, "/volumes/create", VolumeCreate),
        (Method::DELETE, "/volumes/{id}", VolumeRemove),
        (Method::GET, "/images/json", ImageList),
        // Image names hold slashes: the suffix is read in `parse`.
        (Method::GET, "/images/{*name}", ImageInspect),
    ];
    let mut table: Table = HashMap::new();
    for (method, path, action) in routes {
        table
            .entry(method.clone())
            .or_default()
            .insert(*path, *action)
            .expect("the route table has no conflicts");
    }
    table
});

/// A request path the proxy refuses to route.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("the path {0:?} is not a plain API path (escapes, dot or empty segments)")]
    NotPlain(String),
    #[error(
        "API version {major}.{minor} is older than {}.{}, the oldest the proxy forwards",
        MIN_API_VERSION.0,
        MIN_API_VERSION.1
    )]
    VersionTooOld { major: u32, minor: u32 },
}

/// Parses a request path (without its query). A path the proxy does not know is `Action::Other`; a
/// malformed one, or one asking for an API version older than [`MIN_API_VERSION`], is an error.
pub fn parse(method: &Method, path: &str) -> Result<Route, RouteError> {
    if !is_canonical(path) {
        return Err(RouteError::NotPlain(path.to_string()));
    }
    let rest = strip_version(path)?;
    let offset = path.len() - rest.len();
    let other = Route {
        action: Action::Other,
        target: None,
        target_span: None,
        path: path.to_string(),
    };
    let Some(router) = ROUTES.get(method) else {
        return Ok(other);
    };
    let Ok(found) = router.at(rest) else {
        return Ok(other);
    };
    let mut action = *found.value;
    if action == Action::ImageInspect {
        let name = found.params.get("name").unwrap_or_default();
        action = if name.ends_with("/json") && name.len() > "/json".len() {
            Action::ImageInspect
        } else if name.ends_with("/history") && name.len() > "/history".len() {
            Action::ImageHistory
        } else {
            Action::Other
        };
        return Ok(Route { action, ..other });
    }
    let (target, target_span) = match (action.target_kind(), found.params.get("id")) {
        (Some(kind), Some(id)) => {
            // matchit's parameters are slices of the path it was given.
            let start = offset + (id.as_ptr() as usize - rest.as_ptr() as usize);
            (Some(Object::new(kind, id)), Some(start..start + id.len()))
        }
        _ => (None, None),
    };
    Ok(Route {
        action,
        target,
        target_span,
        path: path.to_string(),
    })
}

/// The path without its `/v1.xx` prefix; an error for versions the proxy does not forward.
fn strip_version(path: &str) -> Result<&str, RouteError> {
    let Some(after_v) = path.strip_prefix("/v") else {
        return Ok(path);
    };
    let (version, rest) = match after_v.find('/') {
        Some(slash) => (&after_v[..slash], &after_v[slash..]),
        None => return Ok(path),
    };
    let Some((major, minor)) = version.split_once('.') else {
        return Ok(path);
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Ok(path);
    };
    if (major, minor) < MIN_API_VERSION {
        return Err(RouteError::VersionTooOld { major, minor });
    }
    Ok(rest)
}

/// A path of plain segments: printable ASCII, no escapes, no `.`/`..` or empty segments.
fn is_canonical(path: &str) -> bool {
    path.starts_with('/')
        && path.len() > 1
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'%' && b != b'\\')
        && path[1..]
            .split('/')
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(method: Method, path: &str) -> Action {
        parse(&method, path).unwrap().action
    }

    #[test]
    fn paths_match_with_and_without_the_version_prefix() {
        for prefix in ["", "/v1.41", "/v1.24", "/v1.50"] {
            let route = parse(&Method::GET, &format!("{prefix}/containers/web/json")).unwrap();
            assert_eq!(route.action, Action::ContainerInspect);
            assert_eq!(route.target, Some(Object::new(Kind::Container, "web")));
            assert_eq!(
                route.path_with_target("abc123"),
                format!("{prefix}/containers/abc123/json")
            );
            assert_eq!(
                action(Method::POST, &format!("{prefix}/exec/e1/start")),
                Action::ExecStart
            );
        }
    }

    #[test]
    fn every_known_endpoint_is_recognised() {
        let cases = [
            (Method::GET, "/_ping", Action::Ping),
            (Method::HEAD, "/_ping", Action::Ping),
            (Method::GET, "/version", Action::Version),
            (Method::GET, "/info", Action::Info),
            (Method::GET, "/events", Action::Events),
            (Method::GET, "/system/df", Action::SystemDf),
            (Method::GET, "/containers/json", Action::ContainerList),
            (Method::POST, "/containers/create", Action::ContainerCreate),
            (Method::GET, "/containers/x/top", Action::ContainerTop),
            (Method::GET, "/containers/x/logs", Action::ContainerLogs),
            (
                Method::GET,
                "/containers/x/changes",
                Action::ContainerChanges,
            ),
            (Method::GET, "/containers/x/stats", Action::ContainerStats),
            (Method::GET, "/containers/x/export", Action::ContainerExport),
            (
                Method::GET,
                "/containers/x/archive",
                Action::ContainerArchiveRead,
            ),
            (
                Method::HEAD,
                "/containers/x/archive",
                Action::ContainerArchiveRead,
            ),
            (
                Method::PUT,
                "/containers/x/archive",
                Action::ContainerArchiveWrite,
            ),
            (Method::POST, "/containers/x/wait", Action::ContainerWait),
            (Method::POST, "/containers/x/start", Action::ContainerStart),
            (Method::POST, "/containers/x/stop", Action::ContainerStop),
            (
                Method::POST,
                "/containers/x/restart",
                Action::ContainerRestart,
            ),
            (Method::POST, "/containers/x/kill", Action::ContainerKill),
            (Method::POST, "/containers/x/pause", Action::ContainerPause),
            (
                Method::POST,
                "/containers/x/unpause",
                Action::ContainerUnpause,
            ),
            (
                Method::POST,
                "/containers/x/update",
                Action::ContainerUpdate,
            ),
            (
                Method::POST,
                "/containers/x/rename",
                Action::ContainerRename,
            ),
            (
                Method::POST,
                "/containers/x/resize",
                Action::ContainerResize,
            ),
            (
                Method::POST,
                "/containers/x/attach",
                Action::ContainerAttach,
            ),
            (Method::POST, "/containers/x/exec", Action::ExecCreate),
            (Method::DELETE, "/containers/x", Action::ContainerRemove),
            (Method::POST, "/exec/x/resize", Action::ExecResize),
            (Method::GET, "/exec/x/json", Action::ExecInspect),
            (Method::GET, "/networks", Action::NetworkList),
            (Method::GET, "/networks/n", Action::NetworkInspect),
            (Method::POST, "/networks/create", Action::NetworkCreate),
            (Method::POST, "/networks/n/connect", Action::NetworkConnect),
            (
                Method::POST,
                "/networks/n/disconnect",
                Action::NetworkDisconnect,
            ),
            (Method::DELETE, "/networks/n", Action::NetworkRemove),
            (Method::GET, "/volumes", Action::VolumeList),
            (Method::GET, "/volumes/v", Action::VolumeInspect),
            (Method::POST, "/volumes/create", Action::VolumeCreate),
            (Method::DELETE, "/volumes/v", Action::VolumeRemove),
            (Method::GET, "/images/json", Action::ImageList),
            (
                Method::GET,
                "/images/library/nginx:1/json",
                Action::ImageInspect,
            ),
            (Method::GET, "/images/debian/history", Action::ImageHistory),
            (Method::GET, "/images/debian/get", Action::Other),
            (Method::POST, "/images/create", Action::Other),
            (Method::POST, "/build", Action::Other),
            (Method::POST, "/containers/prune", Action::Other),
            (Method::GET, "/containers/x/attach/ws", Action::Other),
            (Method::POST, "/swarm/init", Action::Other),
            (Method::PATCH, "/containers/x/json", Action::Other),
            (Method::GET, "/v1.41", Action::Other),
        ];
        for (method, path, expected) in cases {
            assert_eq!(action(method.clone(), path), expected, "{method} {path}");
        }
    }

    #[test]
    fn targets_are_named_by_kind() {
        let exec = parse(&Method::POST, "/v1.41/exec/abc/start").unwrap();
        assert_eq!(exec.target, Some(Object::new(Kind::Exec, "abc")));
        let network = parse(&Method::POST, "/networks/front/connect").unwrap();
        assert_eq!(network.target, Some(Object::new(Kind::Network, "front")));
        assert_eq!(
            network.path_with_target("0123"),
            "/networks/0123/connect".to_string()
        );
        let volume = parse(&Method::GET, "/volumes/data").unwrap();
        assert_eq!(volume.target, Some(Object::new(Kind::Volume, "data")));
        assert_eq!(
            parse(&Method::GET, "/containers/json").unwrap().target,
            None
        );
    }

    #[test]
    fn malformed_paths_and_old_versions_are_refused() {
        for path in [
            "/containers/a%2Fb/json",
            "/containers/../containers/x/json",
            "/containers/./x/json",
            "/containers//json",
            "/containers/json/",
            "//containers/json",
            "/containers/x\\y/json",
            "/v1.23/containers/x/start",
            "/v1.12/containers/create",
            "",
            "/",
            "containers/json",
        ] {
            assert!(parse(&Method::POST, path).is_err(), "{path}");
        }
    }
}
