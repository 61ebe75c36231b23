{{/* ------------------------------------------------------------------ names ----------- */}}
{{- define "precis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "precis.fullname" -}}
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

{{/* "<fullname>-<component>"; call with (dict "ctx" $ "component" "gateway") */}}
{{- define "precis.componentName" -}}
{{- printf "%s-%s" (include "precis.fullname" .ctx | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "precis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* ------------------------------------------------------------------ labels ---------- */}}
{{- define "precis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "precis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "precis.labels" -}}
helm.sh/chart: {{ include "precis.chart" . }}
{{ include "precis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: precis
{{- end }}

{{/* (dict "ctx" $ "component" "gateway") */}}
{{- define "precis.componentSelectorLabels" -}}
{{ include "precis.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "precis.componentLabels" -}}
{{ include "precis.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* ------------------------------------------------------------------ images ---------- */}}
{{/* (dict "ctx" $ "image" .Values.image.service) ; tag defaults to appVersion, digest wins */}}
{{- define "precis.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .image.tag -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end }}

{{- define "precis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "precis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "precis.configName" -}}
{{- include "precis.componentName" (dict "ctx" . "component" "config") }}
{{- end }}

{{/* ------------------------------------------------------------------ kafka ----------- */}}
{{- define "precis.strimziClusterName" -}}
{{- default (include "precis.componentName" (dict "ctx" . "component" "kafka")) .Values.kafka.strimzi.clusterName }}
{{- end }}

{{- define "precis.kafkaBootstrap" -}}
{{- if eq .Values.kafka.mode "bundled" -}}
{{- printf "%s:9092" (include "precis.componentName" (dict "ctx" . "component" "kafka")) -}}
{{- else if eq .Values.kafka.mode "strimzi" -}}
{{- $ns := default .Release.Namespace .Values.kafka.strimzi.namespace -}}
{{- printf "%s-kafka-bootstrap.%s.svc:9092" (include "precis.strimziClusterName" .) $ns -}}
{{- else -}}
{{- required "kafka.bootstrapServers is required when kafka.mode=external" .Values.kafka.bootstrapServers -}}
{{- end -}}
{{- end }}

{{/* The notifier's SMTP relay: config.smtp, or the bundled sink when it is on and no host is set.
     (dict "host" .. "port" .. "starttls" ..) as YAML */}}
{{- define "precis.smtp" -}}
{{- $c := .Values.config.smtp -}}
{{- if and .Values.smtpSink.enabled (not $c.host) -}}
host: {{ include "precis.componentName" (dict "ctx" . "component" "smtp-sink") }}
port: {{ .Values.smtpSink.smtpPort }}
starttls: false
{{- else -}}
host: {{ $c.host | quote }}
port: {{ $c.port }}
starttls: {{ $c.starttls }}
{{- end -}}
{{- end }}

{{/* Init container that brings the store's schema to head before a pod uses it, for the bundled
     PostgreSQL (a pre-install hook would run before its StatefulSet exists). common.migrate waits
     for the server and serializes concurrent runs with an advisory lock. (dict "ctx" $) */}}
{{- define "precis.migrateInitContainer" -}}
{{- $ctx := .ctx -}}
- name: migrate
  image: {{ include "precis.image" (dict "ctx" $ctx "image" $ctx.Values.image.service) }}
  imagePullPolicy: {{ $ctx.Values.image.service.pullPolicy }}
  command: ["python", "-m"]
  args: ["common.migrate"]
  env:
    - {name: PRECIS_ENV, value: {{ $ctx.Values.config.env | quote }}}
    - {name: PRECIS_LOG_LEVEL, value: {{ $ctx.Values.config.logLevel | quote }}}
    {{- include "precis.secretEnv" (dict "ctx" $ctx "name" "PRECIS_DATABASE_URL" "key" $ctx.Values.secrets.keys.databaseUrl) | nindent 4 }}
  resources:
    requests: {cpu: 50m, memory: 96Mi}
    limits: {cpu: 500m, memory: 256Mi}
  securityContext:
    {{- include "precis.containerSecurityContext" $ctx | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
{{- end }}

{{/* ------------------------------------------------------------------ service env ----- */}}
{{/* The settings pieces each Python module's settings class composes (common/settings.py,
     <service>/config.py); "own" stands for the service's own fields. The store piece's only
     value is the secret PRECIS_DATABASE_URL (secretEnv). (dict "module" "gateway") -> JSON list */}}
{{- define "precis.settingsPieces" -}}
{{- $byModule := dict
      "gateway" (list "http" "tokenizer" "publicUrl" "webhookGuard" "own")
      "realtime_svc" (list "http" "tokenizer" "triton" "own")
      "async_svc" (list "http" "store" "kafka" "webhookGuard" "own")
      "worker" (list "http" "store" "kafka" "triton" "tokenizer" "own")
      "notifier" (list "http" "store" "kafka" "publicUrl" "webhookGuard" "own") -}}
{{- if not (hasKey $byModule .module) -}}
{{- fail (printf "precis.settingsPieces: no settings known for module %s" .module) -}}
{{- end -}}
{{- toJson (get $byModule .module) -}}
{{- end }}

{{/* The ConfigMap keys a Python module reads: PRECIS_ENV/PRECIS_LOG_LEVEL, those of its pieces,
     its own, and every config.extra key. A pod gets only these (precis.configEnv), never the
     whole ConfigMap: the gateway and realtime_svc, say, read no store and no broker settings.
     (dict "ctx" $ "module" "gateway") -> JSON {"keys": [...]} */}}
{{- define "precis.configKeys" -}}
{{- $ctx := .ctx -}}
{{- $kafka := list "PRECIS_KAFKA_BOOTSTRAP_SERVERS" "PRECIS_KAFKA_SECURITY_PROTOCOL" "PRECIS_KAFKA_JOBS_PARTITIONS" "PRECIS_KAFKA_EVENTS_PARTITIONS" "PRECIS_KAFKA_REPLICATION_FACTOR" -}}
{{- if $ctx.Values.kafka.saslMechanism -}}
{{- $kafka = concat $kafka (list "PRECIS_KAFKA_SASL_MECHANISM" "PRECIS_KAFKA_SASL_USERNAME") -}}
{{- end -}}
{{- $byPiece := dict
      "http" (list) "store" (list) "tokenizer" (list)
      "kafka" $kafka
      "triton" (list "PRECIS_TRITON_GRPC_URL" "PRECIS_TRITON_MODEL")
      "publicUrl" (list "PRECIS_PUBLIC_BASE_URL")
      "webhookGuard" (list "PRECIS_WEBHOOK_ALLOW_HOSTS" "PRECIS_WEBHOOK_ALLOW_CIDRS" "PRECIS_WEBHOOK_ALLOWED_PORTS") -}}
{{- $own := dict
      "gateway" (include "precis.gatewayRateLimitKeys" $ctx | fromJsonArray | concat (list "PRECIS_REALTIME_URL" "PRECIS_ASYNC_URL" "PRECIS_ROUTING_THRESHOLD_TOKENS" "PRECIS_SPILLOVER_ENABLED" "PRECIS_SPILLOVER_MAX_WAIT_S" "PRECIS_CHUNK_TOKENS" "PRECIS_REALTIME_MAX_INPUT_TOKENS"))
      "realtime_svc" (list "PRECIS_REALTIME_MAX_INPUT_TOKENS" "PRECIS_REALTIME_DEADLINE_S" "PRECIS_REALTIME_MAX_IN_FLIGHT")
      "async_svc" (list "PRECIS_MAX_DOCUMENT_BYTES" "PRECIS_QUOTA_MAX_ACTIVE_JOBS" "PRECIS_QUOTA_MAX_STORED_DOCUMENTS" "PRECIS_QUOTA_MAX_STORED_BYTES" "PRECIS_QUOTA_RETRY_AFTER_S" "PRECIS_RETENTION_DAYS" "PRECIS_RETENTION_SWEEP_INTERVAL_S" "PRECIS_RETENTION_SWEEP_BATCH")
      "worker" (list "PRECIS_CHUNK_TOKENS" "PRECIS_MAX_ATTEMPTS" "PRECIS_RETENTION_DAYS" "PRECIS_MAX_DOCUMENT_BYTES_IN_FLIGHT" "PRECIS_FETCH_MAX_BYTES" "PRECIS_MAX_PARTITION_FETCH_BYTES")
      "notifier" (list "PRECIS_SMTP_HOST" "PRECIS_SMTP_PORT" "PRECIS_SMTP_STARTTLS" "PRECIS_SMTP_FROM" "PRECIS_NOTIFY_CONCURRENCY" "PRECIS_WEBHOOK_TIMEOUT_S" "PRECIS_WEBHOOK_RETRY_SCHEDULE_S" "PRECIS_EMAIL_RETRY_SCHEDULE_S") -}}
{{- $keys := list "PRECIS_ENV" "PRECIS_LOG_LEVEL" -}}
{{- range (include "precis.settingsPieces" . | fromJsonArray) -}}
{{- $keys = concat $keys (eq . "own" | ternary (get $own $.module) (get $byPiece .)) -}}
{{- end -}}
{{- toJson (dict "keys" (concat $keys (keys $ctx.Values.config.extra | sortAlpha))) -}}
{{- end }}

{{/* The gateway's rate-limit keys in the ConfigMap (configmap.yaml renders the same ones). */}}
{{- define "precis.gatewayRateLimitKeys" -}}
{{- $keys := list "PRECIS_RATE_LIMIT_PER_MINUTE" "PRECIS_RATE_LIMIT_BYTES_PER_MINUTE" "PRECIS_RATE_LIMIT_FAILED_AUTH_PER_MINUTE" "PRECIS_RATE_LIMIT_STORE_FAILURE" -}}
{{- if .Values.rateLimits.trustedClientIpHeader }}{{ $keys = append $keys "PRECIS_TRUSTED_CLIENT_IP_HEADER" }}{{ end -}}
{{- if eq .Values.rateLimits.store "bundled" }}{{ $keys = append $keys "PRECIS_RATE_LIMIT_STORAGE_URI" }}{{ end -}}
{{- toJson $keys -}}
{{- end }}

{{/* env entries taking precis.configKeys from the ConfigMap; names the pod sets itself ("skip":
     PRECIS_PORT, a sidecar's PRECIS_TRITON_GRPC_URL, extraEnv) are left to it.
     (dict "ctx" $ "module" "worker" "skip" (list "PRECIS_GROUP_ID")) */}}
{{- define "precis.configEnv" -}}
{{- $cm := include "precis.configName" .ctx -}}
{{- $skip := default (list) .skip -}}
{{- range (include "precis.configKeys" . | fromJson).keys }}
{{- if not (has . $skip) }}
- name: {{ . }}
  valueFrom:
    configMapKeyRef: {name: {{ $cm }}, key: {{ . }}}
{{- end }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------------ urls ------------ */}}
{{- define "precis.publicBaseUrl" -}}
{{- if .Values.config.publicBaseUrl -}}
{{- .Values.config.publicBaseUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- $host := (first .Values.ingress.hosts).host -}}
{{- if .Values.ingress.tls }}{{ printf "https://%s" $host }}{{ else }}{{ printf "http://%s" $host }}{{ end -}}
{{- else -}}
{{- printf "http://%s:%v" (include "precis.componentName" (dict "ctx" . "component" "gateway")) .Values.gateway.service.port -}}
{{- end -}}
{{- end }}

{{- define "precis.tritonRealtimeGrpc" -}}
{{- printf "%s:%v" (include "precis.componentName" (dict "ctx" . "component" "triton")) .Values.triton.grpcPort -}}
{{- end }}

{{/* ------------------------------------------------------------------ secrets --------- */}}
{{- define "precis.secretName" -}}
{{- required "secrets.existingSecret is required: the chart never renders secret values" .Values.secrets.existingSecret -}}
{{- end }}

{{/* An env var read from the existing Secret: (dict "ctx" $ "name" "PRECIS_X" "key" "k" "optional" false) */}}
{{- define "precis.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "precis.secretName" .ctx }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* Use as: {{- with include "precis.kafkaSecretEnv" . }}{{ . | nindent N }}{{ end }} */}}
{{- define "precis.kafkaSecretEnv" -}}
{{- if .Values.kafka.saslMechanism -}}
{{ include "precis.secretEnv" (dict "ctx" . "name" "PRECIS_KAFKA_SASL_PASSWORD" "key" .Values.secrets.keys.kafkaSaslPassword) }}
{{- end -}}
{{- end }}

{{/* ------------------------------------------------------------------ pod bits -------- */}}
{{- define "precis.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/* HTTP probes on the service's real endpoints: (dict "ctx" $ "port" "http") */}}
{{- define "precis.serviceProbes" -}}
{{- $p := .ctx.Values.probes -}}
startupProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ .port }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
livenessProbe:
  httpGet: {path: /healthz, port: {{ .port }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end }}

{{/* (dict "ctx" $ "port" "http") */}}
{{- define "precis.tritonProbes" -}}
{{- $p := .ctx.Values.triton.probes -}}
startupProbe:
  httpGet: {path: /v2/health/ready, port: {{ .port }}}
  periodSeconds: {{ $p.startup.periodSeconds }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
readinessProbe:
  httpGet: {path: /v2/health/ready, port: {{ .port }}}
  periodSeconds: {{ $p.readiness.periodSeconds }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
livenessProbe:
  httpGet: {path: /v2/health/live, port: {{ .port }}}
  periodSeconds: {{ $p.liveness.periodSeconds }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
{{- end }}

{{/* GPU placement: required node affinity on the GPU product label + tolerations.
     (dict "gpu" .Values.triton.realtime.gpu "affinity" .Values.x.affinity) -> affinity block */}}
{{- define "precis.gpuAffinity" -}}
{{- $aff := deepCopy (default (dict) .affinity) -}}
{{- if .gpu.enabled -}}
{{- $term := dict "matchExpressions" (list (dict "key" .gpu.productLabel "operator" "In" "values" .gpu.products)) -}}
{{- $na := dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list $term)) -}}
{{- $_ := set $aff "nodeAffinity" (merge $na (default (dict) $aff.nodeAffinity)) -}}
{{- end -}}
{{- if $aff -}}
affinity:
  {{- toYaml $aff | nindent 2 }}
{{- end }}
{{- end }}

{{/* The Triton container (realtime Deployment or worker sidecar).
     (dict "ctx" $ "pool" .Values.triton.realtime "name" "triton" "configMap" "<cm>") */}}
{{- define "precis.tritonContainer" -}}
{{- $ctx := .ctx -}}
{{- $t := $ctx.Values.triton -}}
- name: {{ .name }}
  image: {{ include "precis.image" (dict "ctx" $ctx "image" $ctx.Values.image.triton) }}
  imagePullPolicy: {{ $ctx.Values.image.triton.pullPolicy }}
  {{- $prio := .pool.cpuPriority | default "normal" }}
  {{- if ne $prio "normal" }}
  # CPU priority of the server and of the python backend stubs it starts (they inherit it):
  # triton.<pool>.cpuPriority. Lowering one's own priority needs no capability. On a node the
  # pools share (the CPU profile), the batch server takes only what the realtime path leaves.
  command: {{ ternary (list "chrt" "--idle" "0" "tritonserver") (list "nice" "-n" "19" "tritonserver") (eq $prio "idle") | toJson }}
  {{- end }}
  {{- if .sidecar }}
  # Native sidecar (Kubernetes >= 1.29): starts (and passes its startup probe) before the
  # worker, and stops only after the worker has drained.
  restartPolicy: Always
  {{- end }}
  args:
    - --model-repository=/opt/precis/model_repository
    - --http-port={{ $t.httpPort }}
    - --grpc-port={{ $t.grpcPort }}
    - --metrics-port={{ $t.metricsPort }}
    - --allow-metrics=true
    - --allow-gpu-metrics={{ .pool.gpu.enabled }}
    - --strict-readiness=true
    - --exit-on-error=true
    - --model-control-mode=none
    {{- range $t.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  {{- $pre := .portPrefix | default "" }}
  ports:
    - {name: {{ $pre }}http, containerPort: {{ $t.httpPort }}, protocol: TCP}
    - {name: {{ $pre }}grpc, containerPort: {{ $t.grpcPort }}, protocol: TCP}
    - {name: {{ $pre }}metrics, containerPort: {{ $t.metricsPort }}, protocol: TCP}
  env:
    - {name: PRECIS_MODEL_DEVICE, value: {{ .pool.model.device | quote }}}
    - {name: PRECIS_MODEL_DTYPE, value: {{ .pool.model.dtype | quote }}}
    {{- if .pool.model.path }}
    - {name: PRECIS_MODEL_PATH, value: {{ .pool.model.path | quote }}}
    {{- end }}
    {{- if .pool.model.engine }}
    - {name: PRECIS_MODEL_ENGINE, value: {{ .pool.model.engine | quote }}}
    {{- end }}
    - {name: PRECIS_MODEL_MAX_INPUT_TOKENS, value: {{ .pool.model.maxInputTokens | int64 | quote }}}
    {{- if .pool.model.threads }}
    - {name: PRECIS_MODEL_THREADS, value: {{ .pool.model.threads | int64 | quote }}}
    {{- end }}
    - {name: PRECIS_LOG_LEVEL, value: {{ $ctx.Values.config.logLevel | quote }}}
  {{- include "precis.tritonProbes" (dict "ctx" $ctx "port" (printf "%shttp" $pre)) | nindent 2 }}
  {{- if and (not .sidecar) $t.shutdownDelaySeconds }}
  # Keep serving while the Service drops this pod; then SIGTERM (Triton unloads the model, and
  # realtime_svc moves to a new connection on its "unknown model" answer).
  lifecycle:
    preStop:
      exec:
        command: ["sleep", {{ $t.shutdownDelaySeconds | toString | quote }}]
  {{- end }}
  resources:
    {{- $res := deepCopy .pool.resources }}
    {{- if .pool.gpu.enabled }}
    {{- $_ := set $res "limits" (merge (dict .pool.gpu.resourceName (.pool.gpu.count | toString)) (default (dict) $res.limits)) }}
    {{- $_ := set $res "requests" (merge (dict .pool.gpu.resourceName (.pool.gpu.count | toString)) (default (dict) $res.requests)) }}
    {{- end }}
    {{- toYaml $res | nindent 4 }}
  securityContext:
    {{- include "precis.containerSecurityContext" $ctx | nindent 4 }}
    # Triton image's own non-root user (also right when it is a sidecar in a worker pod).
    runAsUser: {{ $t.podSecurityContext.runAsUser }}
    runAsGroup: {{ $t.podSecurityContext.runAsGroup }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    - {name: dshm, mountPath: /dev/shm}
    {{- if .pool.modelConfig.override }}
    - name: {{ .configVolume }}
      mountPath: /opt/precis/model_repository/{{ $ctx.Values.config.tritonModel }}/config.pbtxt
      subPath: config.pbtxt
      readOnly: true
    {{- end }}
    {{- if $t.modelStorage.existingClaim }}
    - name: models
      mountPath: {{ $t.modelStorage.mountPath }}
      {{- with $t.modelStorage.subPath }}
      subPath: {{ . }}
      {{- end }}
      readOnly: true
    {{- end }}
{{- end }}

{{/* Volumes the Triton container needs: (dict "ctx" $ "pool" ... "configVolume" "x" "configMap" "cm") */}}
{{- define "precis.tritonVolumes" -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .pool.shmSize }}
{{- if .pool.modelConfig.override }}
- name: {{ .configVolume }}
  configMap:
    name: {{ .configMap }}
{{- end }}
{{- if .ctx.Values.triton.modelStorage.existingClaim }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .ctx.Values.triton.modelStorage.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}

{{/* config.pbtxt for the summarizer model (contract: docs/CONTRACT.md) from a modelConfig block */}}
{{- define "precis.modelConfigPbtxt" -}}
{{- $m := .modelConfig -}}
# Rendered by the precis Helm chart from values (triton.<pool>.modelConfig).
name: "{{ .name }}"
backend: "python"
max_batch_size: {{ $m.maxBatchSize | int64 }}
input [
  { name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "MAX_TOKENS", data_type: TYPE_INT32, dims: [ 1 ], optional: true },
  { name: "LANGUAGE", data_type: TYPE_STRING, dims: [ 1 ], optional: true }
]
output [
  { name: "SUMMARY", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "INPUT_TOKENS", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "OUTPUT_TOKENS", data_type: TYPE_INT32, dims: [ 1 ] },
  { name: "MODEL", data_type: TYPE_STRING, dims: [ 1 ] },
  { name: "TOKEN_TEXT", data_type: TYPE_STRING, dims: [ 1 ] }
]
instance_group [
  { count: {{ $m.instanceCount | int64 }}, kind: {{ $m.instanceKind }} }
]
{{- $scheduler := $m.scheduler | default "inflight" }}
{{- if eq $scheduler "inflight" }}
{{- /* in-flight batching needs the decoupled policy (model_repository/summarizer/config.pbtxt) */}}
model_transaction_policy { decoupled: true }
{{- end }}
parameters: { key: "scheduler" value: { string_value: "{{ $scheduler }}" } }
dynamic_batching {
  preferred_batch_size: [ {{ join ", " $m.preferredBatchSizes }} ]
  max_queue_delay_microseconds: {{ $m.maxQueueDelayMicroseconds | int64 }}
  default_queue_policy {
    timeout_action: REJECT
    default_timeout_microseconds: {{ $m.defaultTimeoutMicroseconds | int64 }}
    allow_timeout_override: true
    max_queue_size: {{ $m.maxQueueSize | int64 }}
  }
}
{{- end }}
