{{/* The chart name, or nameOverride. */}}
{{- define "tollgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource name prefix: fullnameOverride, else the release name when it already contains
the chart name, else <release>-<chart>. Truncated so that suffixes still fit in 63 characters.
*/}}
{{- define "tollgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tollgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every resource. */}}
{{- define "tollgate.labels" -}}
helm.sh/chart: {{ include "tollgate.chart" . }}
{{ include "tollgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tollgate
{{- end }}

{{/* Selector labels (add app.kubernetes.io/component per workload). */}}
{{- define "tollgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tollgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tollgate.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "tollgate.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tollgate.gatewayServiceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (printf "%s-gateway" (include "tollgate.fullname" .)) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tollgate.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) }}
{{- end }}

{{- define "tollgate.proxyImage" -}}
{{- printf "%s:%s" .Values.proxyImage.repository (default .Chart.AppVersion .Values.proxyImage.tag) }}
{{- end }}

{{/* Names shared by several templates (and by the operator's flags). */}}
{{- define "tollgate.webhookTlsSecret" -}}{{ include "tollgate.fullname" . }}-webhook-tls{{- end }}
{{- define "tollgate.webhookService" -}}{{ include "tollgate.fullname" . }}-webhook{{- end }}
{{- define "tollgate.webhookConfiguration" -}}{{ include "tollgate.fullname" . }}-sidecar-injector{{- end }}
{{- define "tollgate.injectionConfigMap" -}}{{ include "tollgate.fullname" . }}-injection{{- end }}

{{/*
The policy ConfigMaps the operator writes: tollgate-policy and operator.maxKeyShards key
shards (named as the operator's shard_name does). RBAC and the policy volumes list them all.
*/}}
{{- define "tollgate.policyConfigMaps" -}}
- tollgate-policy
{{- range $i := until (int .Values.operator.maxKeyShards) }}
- {{ printf "tollgate-policy-keys-%02d" $i }}
{{- end }}
{{- end }}

{{/* Fails the render when extraArgs would set --max-key-shards behind RBAC's back. */}}
{{- define "tollgate.validateKeyShards" -}}
{{- range .Values.operator.extraArgs }}
{{- if hasPrefix "--max-key-shards" (toString .) }}
{{- fail "operator.extraArgs: set operator.maxKeyShards instead of --max-key-shards (RBAC and the policy volumes name every shard ConfigMap from it)" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether the sidecar is a native one: injection.nativeSidecar, or with "auto" whether the
cluster is 1.29+ (below, the API server drops restartPolicy: Always from init containers,
and the sidecar's probes then fail pod validation). Renders "true" or "false".
*/}}
{{- define "tollgate.nativeSidecar" -}}
{{- $native := .Values.injection.nativeSidecar }}
{{- if eq (toString $native) "auto" }}
{{- semverCompare ">=1.29.0-0" .Capabilities.KubeVersion.Version }}
{{- else }}
{{- $native }}
{{- end }}
{{- end }}

{{/*
Whether to render the VirtualKey owner ValidatingAdmissionPolicy: keyOwnerPolicy.enabled, or
with "auto" whether the cluster serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy
(discovery, .Capabilities.APIVersions) or is 1.30+, where that API is GA and on by default (a
render without a cluster knows only the version it is given). Renders "true" or "false".
*/}}
{{- define "tollgate.keyOwnerPolicy" -}}
{{- $enabled := .Values.keyOwnerPolicy.enabled }}
{{- if eq (toString $enabled) "auto" }}
{{- or (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version) }}
{{- else }}
{{- $enabled }}
{{- end }}
{{- end }}

{{/*
Whether the chart grants anyone VirtualKey writes: the aggregated admin or edit role with
rbac.virtualKeyWriters, or the key roles (key-editor writes keys). Renders "true" or "".
*/}}
{{- define "tollgate.virtualKeyWriterRoles" -}}
{{- $r := .Values.rbac }}
{{- if or $r.keyRoles (and $r.aggregateClusterRoles (or $r.virtualKeyWriters.admin $r.virtualKeyWriters.edit)) }}true{{ end }}
{{- end }}

{{/*
Fails the render when the chart grants VirtualKey writes but renders no key-owner policy
(keyOwnerPolicy.enabled false, or auto on what looks like a cluster below 1.30), unless
keyOwnerPolicy.allowWithout acknowledges it. Without the policy every VirtualKey writer may
name any owner, grant any MCP server and turn off audit capture; offline renders (helm
template, Argo CD) may report an old version for a new cluster, so auto must not drop the
policy silently. Returns nothing.
*/}}
{{- define "tollgate.validateKeyOwnerPolicy" -}}
{{- if and (ne (include "tollgate.keyOwnerPolicy" .) "true") (include "tollgate.virtualKeyWriterRoles" .) (not .Values.keyOwnerPolicy.allowWithout) }}
{{- $why := ternary "keyOwnerPolicy.enabled is false" (printf "keyOwnerPolicy.enabled is auto and this render's cluster (Kubernetes %s) looks older than 1.30 and serves no admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy" .Capabilities.KubeVersion.Version) (eq (toString .Values.keyOwnerPolicy.enabled) "false") }}
{{- fail (printf "keyOwnerPolicy: the VirtualKey owner policy would not be rendered (%s), yet the chart grants VirtualKey writes (rbac.keyRoles, or rbac.virtualKeyWriters with rbac.aggregateClusterRoles): without the policy every writer could name any owner, grant MCP servers and switch off audit capture. On Kubernetes 1.30+ set keyOwnerPolicy.enabled true (or render with --kube-version / --api-versions admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy). Below 1.30, either set rbac.keyRoles false and both rbac.virtualKeyWriters false, or set keyOwnerPolicy.allowWithout true to accept writers without the check (then bind no key-editor role and grant VirtualKey writes to key admins only)" $why) }}
{{- end }}
{{- end }}

{{/*
Whether the namespace named by the context exists: "yes", "no", or "unknown" when Helm
renders without a cluster (helm template, --dry-run=client, Argo CD), where lookup finds
nothing, not even kube-system.
*/}}
{{- define "tollgate.namespaceExists" -}}
{{- if not (lookup "v1" "Namespace" "" "kube-system") }}unknown
{{- else if lookup "v1" "Namespace" "" . }}yes
{{- else }}no
{{- end }}
{{- end }}

{{/* The networkPolicy.agentNamespaces a reachable cluster does not have, as a YAML list. */}}
{{- define "tollgate.missingAgentNamespaces" -}}
{{- $missing := list }}
{{- if .Values.networkPolicy.enabled }}
{{- range .Values.networkPolicy.agentNamespaces }}
{{- if eq (include "tollgate.namespaceExists" .) "no" }}
{{- $missing = append $missing . }}
{{- end }}
{{- end }}
{{- end }}
{{- toYaml $missing }}
{{- end }}

{{/*
Which ledger the gateway (and, with sidecar.mode direct, every sidecar) uses: "embedded"
(ledger.mode embedded), "external" (ledger.redis.url or .existingSecret.name) or "chart"
(the Valkey StatefulSet the chart deploys).
*/}}
{{- define "tollgate.ledgerKind" -}}
{{- $l := .Values.ledger }}
{{- if eq $l.mode "embedded" }}embedded
{{- else if or $l.redis.url $l.redis.existingSecret.name }}external
{{- else }}chart
{{- end }}
{{- end }}

{{/* Whether the chart deploys its Valkey ledger: "true" or "". */}}
{{- define "tollgate.deployLedger" -}}
{{- if and .Values.gateway.enabled (eq (include "tollgate.ledgerKind" .) "chart") }}true{{ end }}
{{- end }}

{{/* The chart's ledger: StatefulSet, Service, Secret and ConfigMap share this name. */}}
{{- define "tollgate.ledgerName" -}}{{ include "tollgate.fullname" . }}-ledger{{- end }}

{{/* The in-cluster host of the chart's ledger Service. */}}
{{- define "tollgate.ledgerHost" -}}{{ include "tollgate.ledgerName" . }}.{{ .Release.Namespace }}.svc{{- end }}

{{/* The Secret and key holding the chart's ledger password. */}}
{{- define "tollgate.ledgerPasswordSecret" -}}
{{- default (include "tollgate.ledgerName" .) .Values.ledger.valkey.auth.existingSecret }}
{{- end }}
{{- define "tollgate.ledgerPasswordKey" -}}
{{- if .Values.ledger.valkey.auth.existingSecret }}{{ .Values.ledger.valkey.auth.passwordKey }}{{ else }}password{{ end }}
{{- end }}

{{/*
The generated ledger password: the one in the existing Secret <fullname>-ledger (so it stays
the same across helm upgrade), else a new random one. Offline renders (helm template, Argo CD)
cannot look the Secret up: set ledger.valkey.auth.existingSecret there.
*/}}
{{- define "tollgate.ledgerPassword" -}}
{{- $name := include "tollgate.ledgerName" . }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}
{{- $data := default (dict) (get (default (dict) $existing) "data") }}
{{- if get $data "password" }}
{{- get $data "password" | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* valkey.conf of the chart's ledger. No secret in it: the password is included from a file. */}}
{{- define "tollgate.valkeyConf" -}}
bind * -::*
port 6379
dir /data
# Every settled charge is in the append-only file, fsynced every second.
appendonly yes
appendfsync everysec
save ""
# Evicting one key of a budget would lose reservations: refuse writes when full instead.
maxmemory {{ .Values.ledger.valkey.maxMemory }}
maxmemory-policy noeviction
# The requirepass line, written at start from the Secret (never in this ConfigMap).
include /run/valkey/auth.conf
{{- end }}

{{/* The in-cluster URL of the gateway's proxy port, for --gateway-url. */}}
{{- define "tollgate.gatewayUrl" -}}
http://{{ include "tollgate.fullname" . }}-gateway.{{ .Release.Namespace }}.svc:{{ .Values.gateway.service.port }}
{{- end }}

{{/* The in-cluster URL of the gateway's admin Service, for --spend-url. */}}
{{- define "tollgate.gatewayAdminUrl" -}}
http://{{ include "tollgate.fullname" . }}-gateway-admin.{{ .Release.Namespace }}.svc:{{ .Values.gateway.adminService.port }}
{{- end }}

{{/* Fails the render on contradictory ledger and sidecar settings; returns nothing. */}}
{{- define "tollgate.validateLedger" -}}
{{- $r := .Values.ledger.redis }}
{{- $kind := include "tollgate.ledgerKind" . }}
{{- $gw := .Values.gateway }}
{{- if and $r.url $r.existingSecret.name }}
{{- fail "ledger.redis: set either url or existingSecret.name, not both" }}
{{- end }}
{{- if and $r.existingSecret.name (not $r.existingSecret.key) }}
{{- fail "ledger.redis.existingSecret.key is required when existingSecret.name is set" }}
{{- end }}
{{- if and (eq .Values.ledger.mode "embedded") (or $r.url $r.existingSecret.name) }}
{{- fail "ledger.mode is embedded but ledger.redis is set: use ledger.mode shared for an external Redis, or clear ledger.redis" }}
{{- end }}
{{- if and $gw.enabled (eq $kind "embedded") (gt (int $gw.replicas) 1) }}
{{- fail (printf "gateway.replicas is %d but ledger.mode is embedded: each replica's embedded ledger would allow the full budget; use ledger.mode shared or gateway.replicas 1" (int $gw.replicas)) }}
{{- end }}
{{- if .Values.webhook.enabled }}
{{- if eq .Values.sidecar.mode "gateway" }}
{{- if not $gw.enabled }}
{{- fail "sidecar.mode gateway forwards every sidecar to the shared gateway, but gateway.enabled is false: enable the gateway, or (only for namespaces whose pod creators you would trust with the provider key) use sidecar.mode direct" }}
{{- end }}
{{- else if ne $kind "external" }}
{{- fail "sidecar.mode direct needs a shared ledger every sidecar can reach: set ledger.redis.existingSecret.name (a Secret in the release namespace whose key holds the full redis:// URL; the operator copies it into agent namespaces) or ledger.redis.url. The chart's own Valkey admits only the gateway and operator pods, and an embedded ledger would give every pod its own budget" }}
{{- end }}
{{- end }}
{{- end }}
