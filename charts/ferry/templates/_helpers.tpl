{{- define "ferry.image" -}}{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{- end -}}
{{/* The labels that select the operator's pods (a Deployment's selector cannot change). */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: ferry
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{/* The labels of every object: the selector's, the version, and commonLabels. */}}
{{- define "ferry.labels" -}}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}
{{/* The metadata every namespaced object shares: namespace, labels, commonAnnotations. */}}
{{- define "ferry.metadata" -}}
namespace: {{ .Release.Namespace }}
{{ include "ferry.clusterMetadata" . }}
{{- end -}}
{{/* The same for cluster-scoped objects. */}}
{{- define "ferry.clusterMetadata" -}}
labels:
  {{- include "ferry.labels" . | nindent 2 }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
