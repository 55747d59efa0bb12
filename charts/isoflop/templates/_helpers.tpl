{{/* Names, labels and the derived values every template shares. */}}

{{- define "isoflop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's name for its objects: <release>-isoflop, or the release name when it already says isoflop. */}}
{{- define "isoflop.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "isoflop.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "isoflop.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "isoflop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "isoflop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: coordinator
{{- end -}}

{{/* Labels of every object but the workers' ServiceAccount. */}}
{{- define "isoflop.labels" -}}
{{ include "isoflop.commonLabels" . }}
app.kubernetes.io/component: coordinator
{{- end -}}

{{- define "isoflop.workerLabels" -}}
{{ include "isoflop.commonLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "isoflop.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "isoflop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "isoflop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "isoflop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: expected the name of an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "isoflop.workerServiceAccountName" -}}
{{- default (printf "%s-worker" (include "isoflop.fullname" .)) .Values.serviceAccount.workerName -}}
{{- end -}}

{{- define "isoflop.adminSecretName" -}}
{{- default (printf "%s-admin" (include "isoflop.fullname" .)) .Values.adminToken.existingSecret -}}
{{- end -}}

{{- define "isoflop.claimName" -}}
{{- default (printf "%s-store" (include "isoflop.fullname" .)) .Values.persistence.existingClaim -}}
{{- end -}}

{{- define "isoflop.servicePort" -}}
{{- default .Values.coordinator.port .Values.service.port -}}
{{- end -}}

{{- define "isoflop.serviceHttpPort" -}}
{{- default .Values.coordinator.httpPort .Values.service.httpPort -}}
{{- end -}}

{{- define "isoflop.image" -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}

{{- define "isoflop.workerUrl" -}}
{{- default (printf "http://%s.%s.svc:%v" (include "isoflop.fullname" .) .Release.Namespace (include "isoflop.servicePort" .)) .Values.coordinator.workerUrl -}}
{{- end -}}

{{/* Where the coordinator mounts what. */}}
{{- define "isoflop.configDir" -}}/etc/isoflop{{- end -}}
{{- define "isoflop.tokenDir" -}}/var/run/isoflop/admin{{- end -}}
