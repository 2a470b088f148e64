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

{{/* The policy ConfigMaps the operator writes: tollgate-policy and 16 key shards. */}}
{{- define "tollgate.policyConfigMaps" -}}
- tollgate-policy
{{- range $i := until 16 }}
- {{ printf "tollgate-policy-keys-%02d" $i }}
{{- end }}
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
