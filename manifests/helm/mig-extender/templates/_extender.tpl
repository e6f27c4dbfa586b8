{{/*
The extender's container, in both modes. Takes a dict: "root" the root context, "loopback" true for the
sidecar of the secondary scheduler (listening on 127.0.0.1, probed from inside the container).
*/}}
{{- define "mig-extender.extenderContainer" -}}
{{- $root := .root }}
{{- $values := $root.Values }}
{{- $defaults := include "mig-extender.settingDefaults" $root | fromJson }}
{{- $fullname := include "mig-extender.fullname" $root }}
{{- $port := int $values.extender.port }}
{{- $scheme := include "mig-extender.scheme" $root }}
- name: mig-extender
  image: {{ include "mig-extender.image" $root }}
  imagePullPolicy: {{ $values.image.pullPolicy }}
  {{- if .loopback }}
  # The verbs on loopback only: only the kube-scheduler container of this pod calls /filter and /prioritize.
  # The metrics listener (all interfaces) serves /metrics, /healthz and /readyz only: Prometheus, the probes.
  args: [serve, --host, 127.0.0.1, --port, {{ $port | quote }}, --metrics-port, {{ $values.extender.metricsPort | quote }}]
  {{- else }}
  args: [serve, --host, 0.0.0.0, --port, {{ $port | quote }}]
  {{- end }}
  env:
    {{- range $name, $value := $values.extender.settings }}
    - name: MIG_EXTENDER_{{ upper $name }}
      value: {{ include "mig-extender.settingValue" $value }}
    {{- end }}
    - name: MIG_EXTENDER_RELAYOUT
      value: {{ $values.relayout.mode | quote }}
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- $leaderOnly := and (not .loopback) (include "mig-extender.leaderOnly" $root) }}
    {{- if $leaderOnly }}
    - name: POD_NAMESPACE
      valueFrom:
        fieldRef:
          fieldPath: metadata.namespace
    # Only the replica that holds the Lease answers kube-scheduler; it labels its Pod for the Service.
    - name: MIG_EXTENDER_LEADER_ONLY_VERBS
      value: "true"
    {{- end }}
    {{- if ne $values.provisioning.mode "off" }}
    - name: MIG_EXTENDER_PROVISION
      value: {{ $values.provisioning.mode | quote }}
    - name: MIG_EXTENDER_PROVISION_POOLS_FILE
      value: /etc/mig-extender/pools/pools.yaml
    {{- if ne $root.Release.Namespace $defaults.provision_namespace }}
    - name: MIG_EXTENDER_PROVISION_NAMESPACE
      value: {{ $root.Release.Namespace | quote }}
    {{- end }}
    {{- if ne (printf "%s-pools" $fullname) $defaults.provision_owner_configmap }}
    - name: MIG_EXTENDER_PROVISION_OWNER_CONFIGMAP
      value: {{ printf "%s-pools" $fullname | quote }}
    {{- end }}
    {{- end }}
    {{- if not $values.leaderElection.enabled }}
    - name: MIG_EXTENDER_LEADER_ELECTION
      value: "false"
    {{- else if or (include "mig-extender.controllers" $root) $leaderOnly }}
    {{- if ne $root.Release.Namespace $defaults.leader_election_namespace }}
    - name: MIG_EXTENDER_LEADER_ELECTION_NAMESPACE
      value: {{ $root.Release.Namespace | quote }}
    {{- end }}
    {{- if ne $fullname $defaults.leader_election_name }}
    - name: MIG_EXTENDER_LEADER_ELECTION_NAME
      value: {{ $fullname | quote }}
    {{- end }}
    {{- end }}
    {{- if ne $values.migParted.namespace $defaults.mig_parted_namespace }}
    - name: MIG_EXTENDER_MIG_PARTED_NAMESPACE
      value: {{ $values.migParted.namespace | quote }}
    {{- end }}
    {{- if ne $values.migParted.configMap $defaults.mig_parted_configmap }}
    - name: MIG_EXTENDER_MIG_PARTED_CONFIGMAP
      value: {{ $values.migParted.configMap | quote }}
    {{- end }}
    {{- if $values.tls.enabled }}
    - name: MIG_EXTENDER_TLS_CERT_FILE
      value: /etc/mig-extender/tls/tls.crt
    - name: MIG_EXTENDER_TLS_KEY_FILE
      value: /etc/mig-extender/tls/tls.key
    {{- if $values.tls.clientAuth }}
    - name: MIG_EXTENDER_TLS_CLIENT_CA_FILE
      value: /etc/mig-extender/tls/ca.crt
    {{- end }}
    {{- end }}
  {{- if .loopback }}
  ports:
    - name: metrics
      containerPort: {{ int $values.extender.metricsPort }}
      protocol: TCP
  # The kubelet probes the pod IP: the metrics listener's /healthz and /readyz answer for the same process and
  # view as the loopback verbs (plain HTTP, also with TLS on the verbs).
  livenessProbe:
    httpGet:
      path: /healthz
      port: metrics
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: metrics
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 2
  {{- else }}
  ports:
    - name: http
      containerPort: {{ $port }}
      protocol: TCP
  # /healthz: the process answers. /readyz: the cluster view is synced and fresh; a replica that is not ready
  # does not take the Lease, and a leader whose view goes stale gives it up.
  livenessProbe:
    httpGet:
      path: /healthz
      port: http
      {{- if $values.tls.enabled }}
      scheme: HTTPS
      {{- end }}
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  readinessProbe:
    httpGet:
      path: /readyz
      port: http
      {{- if $values.tls.enabled }}
      scheme: HTTPS
      {{- end }}
    periodSeconds: 5
    timeoutSeconds: 3
    failureThreshold: 2
  lifecycle:
    # Keep serving while the endpoint is removed from the Service, then SIGTERM drains.
    preStop:
      sleep:
        seconds: 5
  {{- end }}
  resources:
    {{- toYaml $values.extender.resources | nindent 4 }}
  securityContext:
    {{- include "mig-extender.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    - name: {{ ternary "extender-tmp" "tmp" .loopback }}
      mountPath: /tmp
    {{- if ne $values.provisioning.mode "off" }}
    - name: pools
      mountPath: /etc/mig-extender/pools
      readOnly: true
    {{- end }}
    {{- if $values.tls.enabled }}
    - name: tls
      mountPath: /etc/mig-extender/tls
      readOnly: true
    {{- end }}
{{- end }}

{{/* The volumes the extender's container mounts besides its /tmp. */}}
{{- define "mig-extender.extenderVolumes" -}}
{{- if ne .Values.provisioning.mode "off" }}
- name: pools
  configMap:
    name: {{ include "mig-extender.fullname" . }}-pools
{{- end }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- end }}

{{- define "mig-extender.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "mig-extender.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The preferred anti-affinity of the replicas (one per node), unless affinity is given. Takes root, name, affinity. */}}
{{- define "mig-extender.affinity" -}}
{{- if .affinity }}
{{- toYaml .affinity }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "mig-extender.selectorLabels" (dict "root" .root "name" .name) | nindent 12 }}
{{- end }}
{{- end }}
