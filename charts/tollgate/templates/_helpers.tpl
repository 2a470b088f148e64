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

{{/* Fails the render on contradictory ledger settings; returns nothing. */}}
{{- define "tollgate.validateLedger" -}}
{{- $r := .Values.ledger.redis }}
{{- if and $r.url $r.existingSecret.name }}
{{- fail "ledger.redis: set either url or existingSecret.name, not both" }}
{{- end }}
{{- if and $r.existingSecret.name (not $r.existingSecret.key) }}
{{- fail "ledger.redis.existingSecret.key is required when existingSecret.name is set" }}
{{- end }}
{{- end }}
