{{/*
Labels. Selectors (and pod templates) carry only app.kubernetes.io/name and .../component, exactly
as config/ does: selectors are immutable, so an installation made from config/ keeps working
when it is moved to Helm. Every object also gets Helm's standard labels.
*/}}
{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: ferrolb
app.kubernetes.io/component: {{ . }}
{{- end }}

{{- /* Usage: include "ferrolb.labels" (list $ "controller") */}}
{{- define "ferrolb.labels" -}}
{{- $root := index . 0 -}}
{{ include "ferrolb.selectorLabels" (index . 1) }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version }}
{{- end }}

{{- /* The image of a component: its own image.* where set, else the top-level image.*. Usage: include "ferrolb.image" (list $ .Values.controller) */}}
{{- define "ferrolb.image" -}}
{{- $root := index . 0 -}}
{{- $own := (index . 1).image | default dict -}}
{{- $repository := $own.repository | default $root.Values.image.repository -}}
{{- $tag := $own.tag | default $root.Values.image.tag | default $root.Chart.AppVersion -}}
image: {{ printf "%s:%s" $repository $tag }}
imagePullPolicy: {{ $own.pullPolicy | default $root.Values.image.pullPolicy }}
{{- end }}

{{- /* Arguments both binaries take: the class of Services to handle and the legacy ConfigMap. */}}
{{- define "ferrolb.commonArgs" -}}
{{- with .Values.loadBalancerClass }}
- --lb-class={{ . }}
{{- end }}
{{- with .Values.existingConfigMap }}
- --config-map={{ . }}
{{- end }}
{{- end }}
