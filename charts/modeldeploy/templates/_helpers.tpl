{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "modeldeploy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the prefix of every object name. */}}
{{- define "modeldeploy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ include "modeldeploy.chart" . }}
{{ include "modeldeploy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: modeldeploy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels: stable across upgrades (never add the version here). */}}
{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeldeploy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modeldeploy.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/*
"true" when leader election is on: forced, or needed because there is more than one replica.
Also checks the timings the way the operator does (a leader must stop before its lease expires).
*/}}
{{- define "modeldeploy.leaderElection" -}}
{{- $le := .Values.leaderElection -}}
{{- if or $le.enabled (gt (int .Values.replicaCount) 1) -}}
{{- if not (gt (float64 $le.leaseDurationSeconds) (float64 $le.renewDeadlineSeconds)) -}}
{{- fail "leaderElection.leaseDurationSeconds must be greater than leaderElection.renewDeadlineSeconds" -}}
{{- end -}}
{{- if not (gt (float64 $le.renewDeadlineSeconds) (mulf 1.2 $le.retryPeriodSeconds)) -}}
{{- fail "leaderElection.renewDeadlineSeconds must be greater than 1.2 x leaderElection.retryPeriodSeconds" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{- define "modeldeploy.leaseName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{/* "true" when the operator watches the whole cluster. */}}
{{- define "modeldeploy.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces -}}true{{- end -}}
{{- end -}}

{{/*
The operator's permissions on namespaced resources: the same rules go into one ClusterRole
(cluster-wide mode) or into a Role per watched namespace.
*/}}
{{- define "modeldeploy.namespacedRules" -}}
# Each rule is a call the operator makes (tests/integration/test_rbac_audit.py records them from the
# API server's audit log and fails on a rule nothing uses, or a call no rule allows).
# The custom resource: watched (kopf) and read on a cache miss; patched only to clear the one-shot
# modeldeploy.io/promote and modeldeploy.io/abort annotations after acting on them.
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["modeldeploy.io"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# The children, written with server-side apply (PATCH; `create` when the apply creates) and watched
# for drift. Deployments are never deleted (a canary is scaled to 0; the GC removes the rest).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Services: also the per-track Services of the L7 routers, deleted on a switch back to replicas.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Deleted when autoscaling is turned off / replicas drop to 1.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- if .Values.rbac.gatewayAPI }}
# Canary traffic router: Gateway API. Read by name, never watched.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.istio }}
# Canary traffic router: Istio. Read by name, never watched.
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices"]
  verbs: ["get", "create", "patch", "delete"]
{{- end }}
# spec.model.serviceAccountName is checked to exist (a missing one is Degraded, not pods that
# cannot be created).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
{{- with .Values.prometheus.credentials }}
{{- if .enabled }}
# Prometheus credentials (analysis.prometheus.secretRef): get by name, never list or watch. RBAC
# cannot grant by label, so the modeldeploy.io/prometheus-credentials=true opt-in is enforced by
# the operator; `secretNames` narrows the grant to those names.
- apiGroups: [""]
  resources: ["secrets"]
  {{- with .secretNames }}
  resourceNames: {{ toJson . }}
  {{- end }}
  verbs: ["get"]
{{- end }}
{{- end }}
# Pods of a revision, listed by label (modeldeploy.io/name, modeldeploy.io/revision) to find a ready one
# whose model card (GET /metadata) goes into status: list only, never get, watch or anything else.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Events on ModelDeployments (core/v1, the operator's and kopf's): created, never patched.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
