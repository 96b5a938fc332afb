{{/* The chart's name, cut to 63 characters (a DNS label). */}}
{{- define "opslab.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object it makes, its Lease and its sandboxes. */}}
{{- define "opslab.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "opslab.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "opslab.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The controller image: pinned by digest when one is given, else by tag. */}}
{{- define "opslab.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{- define "opslab.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opslab.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "opslab.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "opslab.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The agent's own ServiceAccount (Kubernetes access from the sandbox), not the controller's. */}}
{{- define "opslab.agentServiceAccountName" -}}
{{- default (printf "%s-agent" (include "opslab.fullname" .)) .Values.agentAccess.serviceAccount.name }}
{{- end }}

{{/* Leader election: always with several replicas, on request with one. */}}
{{- define "opslab.leaderElection" -}}
{{- if or (gt (int .Values.replicas) 1) .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{- define "opslab.leaseName" -}}
{{- default (include "opslab.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "opslab.pvcName" -}}
{{- default (printf "%s-store" (include "opslab.fullname" .)) .Values.store.sqlite.persistence.existingClaim }}
{{- end }}

{{/* The environment variable that carries the model API key for the provider. */}}
{{- define "opslab.apiKeyEnv" -}}
{{- if eq .Values.llm.provider "openai" }}OPENAI_API_KEY{{ else }}ANTHROPIC_API_KEY{{ end }}
{{- end }}

{{- define "opslab.baseUrlEnv" -}}
{{- if eq .Values.llm.provider "openai" }}OPENAI_BASE_URL{{ else }}ANTHROPIC_BASE_URL{{ end }}
{{- end }}

{{/* Seconds the pod gets to stop: above the command timeout, so a running command can finish. */}}
{{- define "opslab.terminationGracePeriodSeconds" -}}
{{- $timeout := int .Values.sandbox.commandTimeoutSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $timeout 30 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) $timeout }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be above sandbox.commandTimeoutSeconds (%d): a pod stopped sooner kills the running command" (int .Values.terminationGracePeriodSeconds) $timeout) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Checks across values that values.schema.json cannot express with a clear message. */}}
{{- define "opslab.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (ne .Values.store.type "postgres") }}
{{- fail (printf "replicas: %d needs store.type: postgres (with store.postgres.existingSecret); the SQLite store is one file on one volume and serves one replica" (int .Values.replicas)) }}
{{- end }}
{{- if and (eq .Values.store.type "postgres") (not .Values.store.postgres.existingSecret) }}
{{- fail "store.type: postgres needs store.postgres.existingSecret: the name of a Secret whose key (store.postgres.key) holds the postgres:// URL" }}
{{- end }}
{{- if and .Values.console.enabled (not .Values.console.token.existingSecret) }}
{{- fail "console.enabled needs console.token.existingSecret: the name of a Secret whose key (console.token.key) holds the console's token (kubectl create secret generic opslab-console --from-literal=token=\"$(openssl rand -hex 24)\"); the controller listens on the pod's address, where the console is off without one" }}
{{- end }}
{{- if and .Values.alerts.rules (not .Values.alerts.enabled) }}
{{- fail "alerts.rules is set but alerts.enabled is false: the rules say which alerts file Incidents, and only the intake (alerts.enabled, with alerts.token.existingSecret) receives alerts" }}
{{- end }}
{{- if and (eq .Values.llm.provider "anthropic") (not .Values.llm.apiKey.existingSecret) }}
{{- fail "llm.provider: anthropic needs llm.apiKey.existingSecret: the name of a Secret holding the API key (kubectl create secret generic opslab-llm --from-literal=api-key=sk-ant-...)" }}
{{- end }}
{{- end }}

{{/* The alert rules' ConfigMap, when the intake is on with rules of its own. */}}
{{- define "opslab.alertRules" -}}
{{- if and .Values.alerts.enabled .Values.alerts.rules }}{{ include "opslab.fullname" . }}-alert-rules{{ end }}
{{- end }}

{{/* What the controller does to Incidents (and their Events), in a ClusterRole or each watched
namespace's Role: watches them, adds and removes its finalizer (a patch), writes their status
(server-side apply on /status) and records Events about them. */}}
{{- define "opslab.incidentRules" -}}
- apiGroups: [opslab.dev]
  resources: [incidents]
  verbs: [get, list, watch, patch]
{{- if .Values.alerts.enabled }}
# The Alertmanager intake files Incidents from alerts.
- apiGroups: [opslab.dev]
  resources: [incidents]
  verbs: [create]
{{- end }}
- apiGroups: [opslab.dev]
  resources: [incidents/status]
  verbs: [patch]
- apiGroups: [opslab.dev]
  resources: [incidents/finalizers]
  verbs: [update]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
