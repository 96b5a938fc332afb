//! The controller's own container, when it runs in one: opslab's own, to be protected like anything
//! labelled, even when nobody labelled it.

use serde_json::Value;

/// The id of the Docker container this process runs in, read from `/proc/self/mountinfo`: Docker
/// bind-mounts the container's `hostname`, `hosts` and `resolv.conf` from
/// `…/containers/<id>/`. (cgroup paths do not show the id under cgroup v2.) Pure.
pub fn container_id_from_mountinfo(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        line.split_whitespace().find_map(|field| {
            let (_, after) = field.split_once("/containers/")?;
            let id = after.split('/').next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| id.to_ascii_lowercase())
        })
    })
}

/// The named volumes a container mounts, from its inspect answer. Pure.
pub fn volume_names(inspect: &Value) -> Vec<String> {
    inspect
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|mount| mount.get("Type").and_then(Value::as_str) == Some("volume"))
        .filter_map(|mount| mount.get("Name").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_id_is_read_from_mountinfo() {
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";
        let inside = format!(
            "601 583 0:52 / / rw,relatime master:1 - overlay overlay rw\n\
             612 601 254:1 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&inside), Some(id.to_string()));
        let host = "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n\
                    40 22 0:36 / /var/lib/docker/containers rw - ext4 /dev/vda1 rw\n";
        assert_eq!(container_id_from_mountinfo(host), None);
        assert_eq!(container_id_from_mountinfo(""), None);
    }

    #[test]
    fn named_volumes_are_listed() {
        let inspect = serde_json::json!({"Mounts": [
            {"Type": "volume", "Name": "opslab-store", "Destination": "/data"},
            {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock"}
        ]});
        assert_eq!(volume_names(&inspect), vec!["opslab-store".to_string()]);
    }
}
