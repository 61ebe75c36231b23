{{/*
A Deployment for one of the Python services (one image, `python -m <module>` picks the process).
(dict "ctx" $ "component" "gateway" "module" "gateway" "v" .Values.gateway "secretEnv" (list ...))
secretEnv items: (dict "name" "PRECIS_API_KEYS" "key" "api-keys" "optional" false)
"usesStore" true: the pod uses the job store (migrates first when database.mode=bundled).
Non-secret env: only the ConfigMap keys the module's settings read (precis.configKeys).
*/}}
{{- define "precis.pythonDeployment" -}}
{{- $ctx := .ctx -}}
{{- $v := .v -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "precis.componentName" (dict "ctx" $ctx "component" .component) }}
  labels:
    {{- include "precis.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels:
      {{- include "precis.componentSelectorLabels" (dict "ctx" $ctx "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "precis.componentLabels" (dict "ctx" $ctx "component" .component) | nindent 8 }}
        {{- with $ctx.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $ctx.Template.BasePath "/configmap.yaml") $ctx | sha256sum }}
        {{- with $ctx.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "precis.serviceAccountName" $ctx }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $ctx.Values.podSecurityContext | nindent 8 }}
      {{- with $ctx.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if and .usesStore (eq $ctx.Values.database.mode "bundled") }}
      initContainers:
        {{- include "precis.migrateInitContainer" (dict "ctx" $ctx) | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "precis.image" (dict "ctx" $ctx "image" $ctx.Values.image.service) }}
          imagePullPolicy: {{ $ctx.Values.image.service.pullPolicy }}
          command: ["python", "-m"]
          args: [{{ .module | quote }}]
          ports:
            - {name: http, containerPort: {{ $v.port }}, protocol: TCP}
          {{- $own := list "PRECIS_SERVICE_NAME" "PRECIS_PORT" }}
          {{- range $v.extraEnv }}{{ $own = append $own .name }}{{ end }}
          env:
            {{- include "precis.configEnv" (dict "ctx" $ctx "module" .module "skip" $own) | trim | nindent 12 }}
            - {name: PRECIS_SERVICE_NAME, value: {{ .component | quote }}}
            - {name: PRECIS_PORT, value: {{ $v.port | quote }}}
            {{- range .secretEnv }}
            {{- include "precis.secretEnv" (dict "ctx" $ctx "name" .name "key" .key "optional" .optional) | nindent 12 }}
            {{- end }}
            {{- if has "kafka" (include "precis.settingsPieces" . | fromJsonArray) }}
            {{- with include "precis.kafkaSecretEnv" $ctx }}{{ . | nindent 12 }}{{- end }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- include "precis.serviceProbes" (dict "ctx" $ctx "port" "http") | nindent 10 }}
          {{- include "precis.shutdownDelay" $ctx | nindent 10 }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- include "precis.containerSecurityContext" $ctx | nindent 12 }}
          volumeMounts:
            - {name: tmp, mountPath: /tmp}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 256Mi}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml $v.topologySpreadConstraints | nindent 8 }}
      {{- else }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "precis.componentSelectorLabels" (dict "ctx" $ctx "component" .component) | nindent 14 }}
      {{- end }}
{{- end }}

{{/* CPU-utilization HPA: (dict "ctx" $ "component" "gateway" "a" .Values.gateway.autoscaling) */}}
{{- define "precis.cpuHpa" -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "precis.componentName" (dict "ctx" .ctx "component" .component) }}
  labels:
    {{- include "precis.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "precis.componentName" (dict "ctx" .ctx "component" .component) }}
  minReplicas: {{ .a.minReplicas }}
  maxReplicas: {{ .a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ .a.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
      policies:
        - {type: Percent, value: 50, periodSeconds: 60}
{{- end }}

{{/* PodDisruptionBudget: (dict "ctx" $ "component" "gateway" "pdb" .Values.gateway.pdb) */}}
{{- define "precis.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "precis.componentName" (dict "ctx" .ctx "component" .component) }}
  labels:
    {{- include "precis.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
spec:
  {{- if hasKey .pdb "minAvailable" }}
  minAvailable: {{ .pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ .pdb.maxUnavailable | default 1 }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "precis.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}

{{/* preStop pause before SIGTERM: the endpoint controller and every node's kube-proxy take a
     moment to drop a terminating pod from Services; a server that stopped at once would refuse
     the requests still routed to it (a rollout would then fail requests). */}}
{{- define "precis.shutdownDelay" -}}
{{- if .Values.shutdownDelaySeconds }}
lifecycle:
  preStop:
    exec:
      command: ["sleep", {{ .Values.shutdownDelaySeconds | toString | quote }}]
{{- end }}
{{- end }}
