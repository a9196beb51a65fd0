{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "deltaroll.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already has it. */}}
{{- define "deltaroll.fullname" -}}
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

{{/* Labels of everything the chart creates, without the component. */}}
{{- define "deltaroll.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "deltaroll.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deltaroll
{{- end }}

{{/* Labels of the operator's objects. */}}
{{- define "deltaroll.labels" -}}
{{ include "deltaroll.commonLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "deltaroll.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deltaroll.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "deltaroll.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deltaroll.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image: repository:tag with the tag defaulting to the chart's appVersion. */}}
{{- define "deltaroll.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) }}
{{- end }}

{{/* Namespaces the operator watches in namespace scope: the release's, then those listed. */}}
{{- define "deltaroll.watchNamespaces" -}}
{{- prepend .Values.watchNamespaces .Release.Namespace | uniq | toJson }}
{{- end }}

{{/* Namespaces of inference pods: agent.namespaces, else the listed watchNamespaces, else the
release's (never the operator's own namespace unless nothing else is named). */}}
{{- define "deltaroll.agentNamespaces" -}}
{{- if .Values.agent.namespaces }}
{{- toJson .Values.agent.namespaces }}
{{- else if .Values.watchNamespaces }}
{{- toJson .Values.watchNamespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}
