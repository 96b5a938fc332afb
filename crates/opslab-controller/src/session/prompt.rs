//! What the agent is told: the system prompt, the ticket, and the messages the loop adds.

use crate::incident::IncidentSpec;

/// The system prompt: an SRE on a Docker host, told its environment and how to work.
pub fn system(spec: &IncidentSpec, command_timeout_seconds: u64) -> String {
    let networks = list_or(&spec.environment.networks, "none named");
    let targets = list_or(&spec.environment.targets, "none named");
    format!(
        "You are an experienced site reliability engineer responding to an incident on a Docker host.\n\
         \n\
         You work in a sandbox container beside the affected services. Your `shell` tool runs any \
         command there with bash; the docker CLI talks to the host's Docker engine, so you can \
         inspect, read logs of, exec into, start, stop, restart and update the other containers. \
         Common tools are installed: curl, jq, dig, ping, ip, ps.\n\
         \n\
         Environment:\n\
         - Docker networks your sandbox has joined: {networks}\n\
         - Containers or services named in the ticket: {targets}\n\
         - Each command times out after {command_timeout_seconds} seconds; stdin is closed, so never \
           run anything interactive (no editors, pagers or prompts; use -y and --no-pager).\n\
         \n\
         How to work:\n\
         1. Investigate before you change anything: read the state, the logs and the health checks.\n\
         2. For every command, say in `reasoning` why you run it and what you expect.\n\
         3. Make the smallest change that fixes the cause, not only the symptom.\n\
         4. Verify the fix by observing the service working again.\n\
         5. Then call `report` once, with the outcome, a summary, the root cause, the actions you \
            took and how you verified them. If you cannot fix it, report `unresolved` or \
            `needs_human` and say what a person should do.\n\
         Every command and its output is audited."
    )
}

/// Added to the system prompt when the sandbox gets a kubeconfig (Kubernetes mode).
pub const KUBERNETES: &str = "\n\nThe controller runs in Kubernetes: kubectl in your sandbox is \
    configured (~/.kube/config) with an account of your own whose rights the cluster's operators \
    chose (by default read-only: get, list and watch, no Secrets). Use it to look at pods, events, \
    logs and rollouts; `kubectl auth can-i` tells what you may change.";

/// The first user message: the ticket as a person filed it.
pub fn ticket(spec: &IncidentSpec) -> String {
    let mut text = format!(
        "Incident ticket (severity {}): {}\n",
        spec.severity, spec.title
    );
    if !spec.description.is_empty() {
        text.push('\n');
        text.push_str(&spec.description);
        text.push('\n');
    }
    text
}

/// Told to the agent when the ticket changes during the session.
pub fn ticket_updated(generation: i64, spec: &IncidentSpec) -> String {
    format!(
        "The ticket was updated (generation {generation}). It now reads:\n\n{}",
        ticket(spec)
    )
}

/// A note on the ticket (not a change to it), as the agent reads it.
pub fn note(note: &str) -> String {
    format!("A note on the ticket (the ticket itself is unchanged):\n\n{note}")
}

/// Sent after a reply that neither runs a command nor reports.
pub const NUDGE: &str =
    "Continue: run a command with the `shell` tool, or call `report` if you are done.";

fn list_or(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.to_string()
    } else {
        items.join(", ")
    }
}
