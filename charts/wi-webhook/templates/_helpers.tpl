{{/* The objects' name: the release name when it contains the chart's name, else
     <release>-<chart>; fullnameOverride wins. */}}
{{- define "wi-webhook.fullname" -}}
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

{{/* Labels of every object: the install's own (as manifests/ sets them) and Helm's. */}}
{{- define "wi-webhook.labels" -}}
app.kubernetes.io/part-of: wi-webhook
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* What the Deployment, Service, PDB and spread constraints select the pods by. */}}
{{- define "wi-webhook.selectorLabels" -}}
app.kubernetes.io/name: {{ include "wi-webhook.fullname" . }}
{{- end }}

{{/* The Secret holding tls.crt, tls.key and ca.crt. */}}
{{- define "wi-webhook.tlsSecret" -}}
{{ include "wi-webhook.fullname" . }}-tls
{{- end }}

{{- define "wi-webhook.selfManaged" -}}
{{- if eq .Values.certificates.source "self-managed" }}true{{ end }}
{{- end }}

{{/* Fails the render on a certificate source the chart does not know. */}}
{{- define "wi-webhook.checkValues" -}}
{{- if not (has .Values.certificates.source (list "self-managed" "cert-manager")) }}
{{- fail (printf "certificates.source must be self-managed or cert-manager, not %q" .Values.certificates.source) }}
{{- end }}
{{- if and .Values.webhook.caBundle (not .Values.webhook.url) }}
{{- fail "webhook.caBundle is for webhook.url: with the Service, the certificate source writes the caBundle" }}
{{- end }}
{{- end }}
