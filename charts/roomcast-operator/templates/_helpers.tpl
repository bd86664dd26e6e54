{{- define "roomcast-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "roomcast-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "roomcast-operator.labels" -}}
{{ include "roomcast-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: roomcast
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "roomcast-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "roomcast-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The watched namespaces as a JSON list: watchNamespace may be a string (one namespace,
     the pre-list form) or a list; empty means all namespaces. */}}
{{- define "roomcast-operator.watchNamespaces" -}}
{{- $w := .Values.watchNamespace -}}
{{- if kindIs "string" $w }}{{ $w = compact (list $w) }}{{ end -}}
{{- toJson (uniq (compact $w)) -}}
{{- end -}}

{{/* Rules on namespaced resources: a Role in each watched namespace, or the ClusterRole
     when watching all. Every rule names what in the reconciler needs it (docs/operator.md#rbac). */}}
{{- define "roomcast-operator.namespacedRules" -}}
# Watched (the controller's primary resource) and its status written.
- apiGroups: ["roomcast.dev"]
  resources: ["socketiohubs"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["roomcast.dev"]
  resources: ["socketiohubs/status"]
  verbs: ["get", "patch"]
# Owned objects: server-side applied (PATCH; create for the first apply, never update) and
# watched by label managed-by=roomcast-operator.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Services too, and deleted: the app link Service <hub>-app when the hub turns app links off.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Never list or watch: only the Secrets it generates (management and app link tokens, peer
# CA) and the ones a hub references, each by name (a referenced Secret's change is noticed by
# polling it).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# One per hub (ingress rules for its ports); deleted when the hub turns it off.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Each hub's Role (read EndpointSlices for peer discovery) and its RoleBinding.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Granted on to each hub's pods through their Role (RBAC forbids granting what one lacks).
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
# Condition transitions and configuration changes, published on the hub.
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The signer reads the pod a CSR names to check the requester; the CA rotation lists the
# hub's pods; the connected-clients column reads the pods' IPs; the PodsHealthy condition
# reads the hub's pods' statuses. Never patched, deleted or watched.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list"]
{{- end -}}

{{/* Rules that only exist cluster-wide; kept in a ClusterRole in both modes
     (docs/operator.md#rbac-of-the-peer-certificates). */}}
{{- define "roomcast-operator.clusterRules" -}}
# The signer watches the CSRs of its signer name (CSRs are cluster-scoped; the list is
# filtered by spec.signerName) and the CA rotation lists them.
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["certificatesigningrequests/approval", "certificatesigningrequests/status"]
  verbs: ["update"]
- apiGroups: ["certificates.k8s.io"]
  resources: ["signers"]
  resourceNames: ["roomcast.io/peer"]
  verbs: ["approve", "sign"]
# Each hub's ServiceAccount gets the hub-csr ClusterRole below through a ClusterRoleBinding
# the operator creates (and deletes with the hub); `bind` lets it grant exactly that role.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterrolebindings"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  resourceNames: [{{ printf "%s-hub-csr" (include "roomcast-operator.fullname" .) | quote }}]
  verbs: ["bind"]
{{- end -}}
