{{/* The objects' name: the release's, or release-exfilmon. */}}
{{- define "exfilmon.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* What the DaemonSet and the PodMonitor select pods by. */}}
{{- define "exfilmon.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Every object's labels: commonLabels first, so that they cannot replace these. */}}
{{- define "exfilmon.labels" -}}
{{- $own := include "exfilmon.selectorLabels" . | fromYaml -}}
{{- $_ := set $own "helm.sh/chart" (printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_") -}}
{{- $_ := set $own "app.kubernetes.io/version" .Chart.AppVersion -}}
{{- $_ := set $own "app.kubernetes.io/managed-by" .Release.Service -}}
{{- toYaml (merge $own .Values.commonLabels) -}}
{{- end -}}

{{/*
The port of [metrics] listen in .Values.config: the container's, the probes' and the
PodMonitor's. Only [metrics] has a `listen` key. Its absence (exfilmon's default is
127.0.0.1:9477) and a loopback address are refused: Prometheus could not scrape them.
*/}}
{{- define "exfilmon.metricsPort" -}}
{{- $line := regexFind "(?m)^[ \\t]*listen[ \\t]*=[ \\t]*\"[^\"]*\"" .Values.config -}}
{{- if not $line -}}
{{- fail "config: [metrics] listen must be set to an address Prometheus can reach, e.g. \"0.0.0.0:9477\" (exfilmon's default is the loopback)" -}}
{{- end -}}
{{- $addr := regexReplaceAll "^[^\"]*\"([^\"]*)\"$" $line "${1}" -}}
{{- if or (hasPrefix "127." $addr) (hasPrefix "[::1]:" $addr) (hasPrefix "localhost:" $addr) -}}
{{- fail (printf "config: [metrics] listen = %q is the loopback, which Prometheus cannot scrape" $addr) -}}
{{- end -}}
{{- if not (regexMatch ":[0-9]+$" $addr) -}}
{{- fail (printf "config: [metrics] listen = %q has no port" $addr) -}}
{{- end -}}
{{- regexReplaceAll "^.*:([0-9]+)$" $addr "${1}" -}}
{{- end -}}
