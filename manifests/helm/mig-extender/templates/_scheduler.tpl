{{/*
The KubeSchedulerConfiguration of the secondary scheduler (in-cluster credentials: no kubeconfig). No
managedResources: it schedules only the pods that chose it, and every one reaches the extender, whether it asks
for MIG through the device plugin's resources or through ResourceClaims.
*/}}
{{- define "mig-extender.schedulerConfig" -}}
{{- $scheduler := include "mig-extender.schedulerName" . -}}
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
leaderElection:
  {{- if .Values.secondaryScheduler.leaderElection }}
  leaderElect: true
  resourceLock: leases
  # Not the default "kube-scheduler" Lease in kube-system: that one belongs to the cluster's scheduler.
  resourceName: {{ $scheduler }}
  resourceNamespace: {{ .Release.Namespace }}
  {{- else }}
  leaderElect: false
  {{- end }}
profiles:
  - schedulerName: {{ $scheduler }}
    percentageOfNodesToScore: 100
# The extender is a sidecar in the same pod, listening on loopback only.
extenders:
  - urlPrefix: {{ printf "%s://127.0.0.1:%d" (include "mig-extender.scheme" .) (int .Values.extender.port) }}
    filterVerb: filter
    prioritizeVerb: prioritize
    bindVerb: bind
    weight: 10
    nodeCacheCapable: true
    ignorable: false
    httpTimeout: 5s
    {{- if .Values.tls.enabled }}
    enableHTTPS: true
    tlsConfig:
      caFile: /etc/mig-scheduler-tls/ca.crt
      serverName: {{ include "mig-extender.serverName" . }}
      {{- if .Values.tls.clientAuth }}
      certFile: /etc/mig-scheduler-client-tls/tls.crt
      keyFile: /etc/mig-scheduler-client-tls/tls.key
      {{- end }}
    {{- end }}
{{- end }}
