{{/*
The agent's pod spec, shared by the Deployment and the ScaledJob's Job template.
Call with (dict "root" $ "single" true|false).
*/}}

{{- define "scalr-agent.securityContext.pod" -}}
{{- if eq .Values.securityProfile "restricted" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- else -}}
# Root by design: the agent hands every task a dedicated uid (images/README.md).
runAsNonRoot: false
runAsUser: 0
runAsGroup: 0
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- end -}}

{{- define "scalr-agent.securityContext.container" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
{{- if eq .Values.securityProfile "restricted" }}
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- else }}
capabilities:
  # CHOWN, DAC_OVERRIDE, FOWNER: the task directories owned by each task's uid;
  # SETUID, SETGID: switch to it; SETPCAP: drop the bounding set for it; KILL: end its processes.
  drop: ["ALL"]
  add: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETPCAP", "SETUID"]
{{- end }}
{{- end -}}

{{/*
Volumes arrive world-writable (emptyDir: 0777), which the agent refuses as its data directory.
`isolated`: an init container (root, no capability) narrows the volume to 0711 first, so task
uids can traverse it but not rename what the agent keeps there. `restricted`: uid 1000 cannot
chmod the volume; the agent creates its data directory inside it (all tasks share its uid
there, kept apart by Landlock).
*/}}
{{- define "scalr-agent.dataDir" -}}
{{- ternary "/var/lib/scalr-agent/data" "/var/lib/scalr-agent" (eq .Values.securityProfile "restricted") -}}
{{- end -}}

{{- define "scalr-agent.env" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
- name: SCALR_URL
  value: {{ $v.scalrUrl | quote }}
# The pool token as a file (the `token` volume), never in the environment.
- name: SCALR_AGENT_TOKEN_FILE
  value: {{ printf "/etc/scalr-agent/token/%s" $v.token.existingSecretKey | quote }}
- name: SCALR_AGENT_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: SCALR_AGENT_DATA_DIR
  value: {{ include "scalr-agent.dataDir" $root }}
- name: SCALR_AGENT_CONCURRENCY
  value: {{ ternary 1 $v.agent.concurrency .single | quote }}
- name: SCALR_AGENT_LOG_FORMAT
  value: {{ $v.agent.logFormat | quote }}
- name: SCALR_AGENT_DEBUG
  value: {{ $v.agent.debug | quote }}
- name: SCALR_AGENT_MIN_ISOLATION
  value: {{ $v.agent.minIsolation | quote }}
{{- if ne $v.securityProfile "restricted" }}
- name: SCALR_AGENT_TASK_UID_RANGE
  value: {{ $v.agent.taskUidRange | quote }}
{{- end }}
- name: SCALR_AGENT_WORKER_ON_STOP_ACTION
  value: {{ $v.stop.action | quote }}
- name: SCALR_AGENT_WORKER_DRAIN_TIMEOUT
  value: {{ printf "%ds" (int $v.stop.drainTimeoutSeconds) | quote }}
- name: SCALR_AGENT_WORKER_GRACE_SHUTDOWN_TIMEOUT
  value: {{ printf "%ds" (int $v.stop.graceTimeoutSeconds) | quote }}
- name: SCALR_AGENT_WORKER_REPORT_TIMEOUT
  value: {{ printf "%ds" (int $v.stop.reportTimeoutSeconds) | quote }}
{{- if .single }}
- name: SCALR_AGENT_SINGLE
  value: "true"
- name: SCALR_AGENT_SINGLE_WAIT_TIMEOUT
  value: {{ printf "%ds" (int $v.scaledJob.singleWaitTimeoutSeconds) | quote }}
- name: SCALR_AGENT_STATE_PERSISTENCE_ENABLED
  value: "false"
{{- else }}
- name: SCALR_AGENT_HEALTH_ADDR
  value: {{ printf "0.0.0.0:%d" (int $v.deployment.healthPort) | quote }}
{{- end }}
{{- if or $v.caBundle.pem $v.caBundle.existingConfigMap }}
- name: SCALR_AGENT_CA_CERT
  value: {{ printf "/etc/scalr-agent/ca/%s" $v.caBundle.key | quote }}
{{- end }}
{{- with $v.proxy.http }}
- name: HTTP_PROXY
  value: {{ . | quote }}
{{- end }}
{{- with $v.proxy.https }}
- name: HTTPS_PROXY
  value: {{ . | quote }}
{{- end }}
{{- with $v.proxy.noProxy }}
- name: NO_PROXY
  value: {{ . | quote }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "scalr-agent.podSpec" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
serviceAccountName: {{ include "scalr-agent.serviceAccountName" $root }}
# The agent never talks to the Kubernetes API; tasks must not get a token for it either.
automountServiceAccountToken: false
terminationGracePeriodSeconds: {{ include "scalr-agent.terminationGracePeriodSeconds" $root }}
{{- if .single }}
restartPolicy: Never
{{- end }}
securityContext:
  {{- include "scalr-agent.securityContext.pod" $root | nindent 2 }}
{{- with $v.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if ne $v.securityProfile "restricted" }}
initContainers:
  - name: prepare-volumes
    image: {{ include "scalr-agent.image" $root | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    command: ["/bin/sh", "-c", "chmod 0711 /var/lib/scalr-agent && chmod 1777 /tmp"]
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        memory: 16Mi
    securityContext:
      allowPrivilegeEscalation: false
      privileged: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: ["ALL"]
    volumeMounts:
      - name: data
        mountPath: /var/lib/scalr-agent
      - name: tmp
        mountPath: /tmp
{{- end }}
containers:
  - name: agent
    image: {{ include "scalr-agent.image" $root | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    args: ["run"]
    env:
      {{- include "scalr-agent.env" . | nindent 6 }}
    {{- if not .single }}
    ports:
      - name: health
        containerPort: {{ $v.deployment.healthPort }}
        protocol: TCP
    startupProbe:
      httpGet:
        path: /healthz
        port: health
      periodSeconds: 2
      failureThreshold: 30
    livenessProbe:
      httpGet:
        path: /healthz
        port: health
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 6
    readinessProbe:
      httpGet:
        path: /readyz
        port: health
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 3
    {{- end }}
    resources:
      {{- toYaml $v.resources | nindent 6 }}
    securityContext:
      {{- include "scalr-agent.securityContext.container" $root | nindent 6 }}
    volumeMounts:
      - name: data
        mountPath: /var/lib/scalr-agent
      - name: tmp
        mountPath: /tmp
      - name: token
        mountPath: /etc/scalr-agent/token
        readOnly: true
      {{- if or $v.caBundle.pem $v.caBundle.existingConfigMap }}
      - name: ca
        mountPath: /etc/scalr-agent/ca
        readOnly: true
      {{- end }}
volumes:
  - name: data
    {{- if and $v.dataVolume.existingClaim (not .single) }}
    persistentVolumeClaim:
      claimName: {{ $v.dataVolume.existingClaim | quote }}
    {{- else }}
    emptyDir:
      sizeLimit: {{ $v.dataVolume.sizeLimit | quote }}
    {{- end }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ $v.tmpSizeLimit | quote }}
  # The agent refuses a token file others can read: 0400 (256) for root, 0440 (288) with
  # fsGroup for the `restricted` profile's uid 1000.
  - name: token
    secret:
      secretName: {{ include "scalr-agent.tokenSecretName" $root }}
      defaultMode: {{ ternary 288 256 (eq $v.securityProfile "restricted") }}
      items:
        - key: {{ $v.token.existingSecretKey | quote }}
          path: {{ $v.token.existingSecretKey | quote }}
  {{- if or $v.caBundle.pem $v.caBundle.existingConfigMap }}
  - name: ca
    configMap:
      name: {{ default (printf "%s-ca" (include "scalr-agent.fullname" $root)) $v.caBundle.existingConfigMap | quote }}
      items:
        - key: {{ $v.caBundle.key | quote }}
          path: {{ $v.caBundle.key | quote }}
  {{- end }}
{{- end -}}
