{{/* Names, labels and the checks every template shares. */}}

{{- define "scalr-agent.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "scalr-agent.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "scalr-agent.labels" -}}
app.kubernetes.io/name: {{ include "scalr-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "scalr-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scalr-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "scalr-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scalr-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "scalr-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "scalr-agent.tokenSecretName" -}}
{{- default (printf "%s-token" (include "scalr-agent.fullname" .)) .Values.token.existingSecret -}}
{{- end -}}

{{/*
The agent's own window on SIGTERM (README.md, "Stopping"): drain + grace + report for `drain`,
grace + report for `grace-shutdown`, report for `force-shutdown`; the kubelet waits that plus the
margin before its SIGKILL.
*/}}
{{- define "scalr-agent.terminationGracePeriodSeconds" -}}
{{- $s := .Values.stop -}}
{{- $window := int $s.reportTimeoutSeconds -}}
{{- if eq $s.action "drain" -}}
{{- $window = add $s.drainTimeoutSeconds $s.graceTimeoutSeconds $s.reportTimeoutSeconds -}}
{{- else if eq $s.action "grace-shutdown" -}}
{{- $window = add $s.graceTimeoutSeconds $s.reportTimeoutSeconds -}}
{{- end -}}
{{- add $window $s.marginSeconds -}}
{{- end -}}

{{/*
Environment variable names the chart sets itself (with their legacy aliases). extraEnv may not
set them: a second value would silently win or lose depending on order.
*/}}
{{- define "scalr-agent.reservedEnv" -}}
SCALR_URL SCALR_AGENT_TOKEN SCALR_TOKEN SCALR_AGENT_TOKEN_FILE SCALR_AGENT_NAME
SCALR_AGENT_CONCURRENCY SCALR_AGENT_SINGLE SCALR_SINGLE SCALR_AGENT_SINGLE_WAIT_TIMEOUT
SCALR_AGENT_DATA_DIR SCALR_WORK_DIR SCALR_DATA_HOME SCALR_AGENT_DRIVER SCALR_DRIVER
SCALR_AGENT_LOG_FORMAT SCALR_LOG_FORMAT SCALR_AGENT_DEBUG SCALR_DEBUG
SCALR_AGENT_MIN_ISOLATION SCALR_AGENT_TASK_UID_RANGE SCALR_AGENT_HEALTH_ADDR
SCALR_AGENT_WORKER_ON_STOP_ACTION SCALR_AGENT_WORKER_DRAIN_TIMEOUT
SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT SCALR_AGENT_WORKER_REPORT_TIMEOUT
SCALR_AGENT_STATE_PERSISTENCE_ENABLED SCALR_AGENT_DISCONNECT_ON_STOP
SCALR_AGENT_CA_CERT SCALR_CA_CERT HTTP_PROXY http_proxy HTTPS_PROXY https_proxy NO_PROXY no_proxy
{{- end -}}

{{- define "scalr-agent.checks" -}}
{{- if not .Values.scalrUrl -}}
{{- fail "scalrUrl is required: the control plane's URL, e.g. https://example.scalr.io" -}}
{{- end -}}
{{- if and (not .Values.token.existingSecret) (not .Values.token.value) -}}
{{- fail "token.existingSecret (a Secret holding the pool token) or token.value is required" -}}
{{- end -}}
{{- if and (eq .Values.mode "scaledJob") (not .Values.scaledJob.queue.existingSecret) -}}
{{- fail "mode scaledJob needs scaledJob.queue.existingSecret: a Secret holding the pool's queue token" -}}
{{- end -}}
{{- $reserved := splitList " " (include "scalr-agent.reservedEnv" . | replace "\n" " ") -}}
{{- range $i, $e := .Values.extraEnv -}}
{{- if has $e.name $reserved -}}
{{- fail (printf "extraEnv[%d]: %s is set by the chart itself (use its value instead: see README.md, \"Values\"); reserved: %s" $i $e.name (join ", " $reserved)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
checkov findings that are choices, each with its reason (deploy/ci.sh runs checkov on the
rendered chart and fails on anything not listed here).
*/}}
{{- define "scalr-agent.checkovSkips" -}}
{{- $n := 0 -}}
{{- $skips := list -}}
{{- if not .Values.image.digest -}}
{{- $skips = append $skips "CKV_K8S_14=the tag is a value: pin image.digest in production" -}}
{{- $skips = append $skips "CKV_K8S_43=the tag is a value: pin image.digest in production" -}}
{{- end -}}
{{- $skips = append $skips "CKV_K8S_15=IfNotPresent is right for a digest or an immutable tag; image.pullPolicy sets it" -}}
{{- $skips = append $skips "CKV_K8S_11=no CPU limit on purpose: throttling stretches runs; the request reserves the CPU" -}}
{{- if eq .Values.securityProfile "restricted" -}}
{{- $skips = append $skips "CKV_K8S_40=uid 1000 is the image's user scalr (the runner image contract)" -}}
{{- else -}}
{{- $skips = append $skips "CKV_K8S_23=root by design: the agent gives every task its own uid (images/README.md)" -}}
{{- $skips = append $skips "CKV_K8S_40=root by design: the agent gives every task its own uid (images/README.md)" -}}
{{- $skips = append $skips "CKV_K8S_25=CHOWN, DAC_OVERRIDE, FOWNER, KILL, SETGID, SETPCAP, SETUID: what the uid switch needs" -}}
{{- end -}}
{{- range $i, $s := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $s | quote }}
{{- end -}}
{{- end -}}
