{{/*
Names. The extender's objects are named after the release (<fullname>, "mig-extender" for a release of that
name), the secondary scheduler's after its schedulerName ("mig-scheduler"), as in the kustomize overlays.
*/}}
{{- define "mig-extender.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mig-extender.fullname" -}}
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

{{- define "mig-extender.schedulerName" -}}
{{- .Values.secondaryScheduler.schedulerName }}
{{- end }}

{{- define "mig-extender.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The ServiceAccount the extender runs as: its own in extender mode, the scheduler pod's otherwise. */}}
{{- define "mig-extender.serviceAccountName" -}}
{{- if eq .Values.mode "secondary-scheduler" }}
{{- include "mig-extender.schedulerName" . }}
{{- else }}
{{- include "mig-extender.fullname" . }}
{{- end }}
{{- end }}

{{/*
Labels. "labels" and "selectorLabels" take a dict: the root context as "root" and the component's name
("mig-extender" or the scheduler's name) as "name".
*/}}
{{- define "mig-extender.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{- define "mig-extender.labels" -}}
helm.sh/chart: {{ include "mig-extender.chart" .root }}
{{ include "mig-extender.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Values.image.tag | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: mig-extender
{{- end }}

{{/* Labels of the extender's objects. */}}
{{- define "mig-extender.extenderLabels" -}}
{{ include "mig-extender.labels" (dict "root" . "name" (include "mig-extender.name" .)) }}
{{- end }}

{{/* Labels of the secondary scheduler's objects. */}}
{{- define "mig-extender.schedulerLabels" -}}
{{ include "mig-extender.labels" (dict "root" . "name" (include "mig-extender.schedulerName" .)) }}
{{- end }}

{{- define "mig-extender.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The kube-scheduler image: the tag given, else the cluster's own version as v<major>.<minor>.<patch> (a
vendor's suffix such as -eks-... or +k3s1 dropped: registry.k8s.io publishes the upstream releases).
*/}}
{{- define "mig-extender.schedulerImage" -}}
{{- $image := .Values.secondaryScheduler.image }}
{{- $tag := $image.tag }}
{{- if not $tag }}
{{- $version := semver .Capabilities.KubeVersion.Version }}
{{- $tag = printf "v%d.%d.%d" $version.Major $version.Minor $version.Patch }}
{{- end }}
{{- printf "%s:%s" $image.repository $tag }}
{{- end }}

{{/* The Service's DNS name, which a serving certificate names. */}}
{{- define "mig-extender.serverName" -}}
{{- .Values.tls.serverName | default (printf "%s.%s.svc" (include "mig-extender.fullname" .) .Release.Namespace) }}
{{- end }}

{{- define "mig-extender.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}

{{/* An extender setting's value as its MIG_EXTENDER_* variable reads it (numbers without an exponent). */}}
{{- define "mig-extender.settingValue" -}}
{{- if kindIs "string" . }}{{ . | quote }}{{ else }}{{ toJson . | quote }}{{ end }}
{{- end }}

{{/* Whether the leader-elected controllers run: the re-layout controller or the provisioning loop. */}}
{{- define "mig-extender.controllers" -}}
{{- if or (ne .Values.relayout.mode "off") (ne .Values.provisioning.mode "off") }}true{{ end }}
{{- end }}

{{/* Whether only the replica that holds the Lease answers kube-scheduler (extender mode, setting
leader_only_verbs): the Service then selects its Pod alone. */}}
{{- define "mig-extender.leaderOnly" -}}
{{- if and (eq .Values.mode "extender") .Values.leaderElection.enabled }}true{{ end }}
{{- end }}

{{/* Checks across values that the schema cannot express; each failure names the values to change. */}}
{{- define "mig-extender.validate" -}}
{{- $replicas := ternary .Values.secondaryScheduler.replicas .Values.extender.replicas (eq .Values.mode "secondary-scheduler") }}
{{- if and (eq .Values.mode "extender") (gt (int .Values.extender.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "extender.replicas > 1 needs leaderElection.enabled=true: replicas answering kube-scheduler side by side can count the same free slices twice" }}
{{- end }}
{{- if and (include "mig-extender.controllers" .) (gt (int $replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "relayout.mode or provisioning.mode is on with several replicas: set leaderElection.enabled=true, or replicas 1" }}
{{- end }}
{{- if and (eq .Values.mode "secondary-scheduler") (gt (int .Values.secondaryScheduler.replicas) 1) (not .Values.secondaryScheduler.leaderElection) }}
{{- fail "secondaryScheduler.replicas > 1 needs secondaryScheduler.leaderElection=true: two kube-schedulers without it both bind pods" }}
{{- end }}
{{- if and (ne .Values.provisioning.mode "off") (not .Values.provisioning.pools) }}
{{- fail "provisioning.mode is on: provisioning.pools must list the Karpenter NodePools (docs/karpenter.md)" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled: set tls.secretName to a kubernetes.io/tls Secret (tls.crt, tls.key; ca.crt with tls.clientAuth)" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.clientAuth (eq .Values.mode "secondary-scheduler") (not .Values.tls.clientSecretName) }}
{{- fail "tls.clientAuth in secondary-scheduler mode: set tls.clientSecretName to kube-scheduler's client certificate Secret" }}
{{- end }}
{{- if and (eq .Values.mode "secondary-scheduler") (eq (int .Values.extender.metricsPort) (int .Values.extender.port)) }}
{{- fail "extender.metricsPort must differ from extender.port: the verbs stay on loopback, the metrics listener does not" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (not .Values.networkPolicy.apiServerCIDRs) }}
{{- fail "networkPolicy.enabled: set networkPolicy.apiServerCIDRs to the API server's endpoint addresses" }}
{{- end }}
{{- if and .Values.networkPolicy.enabled (eq .Values.mode "extender") (not .Values.networkPolicy.controlPlaneCIDRs) }}
{{- fail "networkPolicy.enabled in extender mode: set networkPolicy.controlPlaneCIDRs to where kube-scheduler connects from" }}
{{- end }}
{{- end }}
