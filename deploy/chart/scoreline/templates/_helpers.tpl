{{/* Names, labels and the list of roles every other template iterates over. */}}

{{- define "scoreline.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "scoreline.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "scoreline.labels" -}}
{{ include "scoreline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "scoreline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "scoreline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The roles as a JSON list: one entry per Deployment. Each has its name (router, worker-<shard>,
shadow, comparator, rollout), the `scoreline run` arguments, the consumer group and the topic
it works (what KEDA scales on), the partitions that cap its replicas, and its values.
*/}}
{{- define "scoreline.roles" -}}
{{- $v := .Values -}}
{{- $prefix := $v.kafka.topicPrefix -}}
{{- $roles := list -}}
{{- if $v.roles.router.enabled -}}
{{- $roles = append $roles (dict "name" "router" "args" (list "run" "--role" "router") "group" (printf "%srouter" $prefix) "topic" (printf "%srequests" $prefix) "partitions" $v.kafka.partitions.requests "values" $v.roles.router "scales" "router") -}}
{{- end -}}
{{- if $v.roles.worker.enabled -}}
{{- $shards := $v.config.shards -}}
{{- if and $v.config.rules $v.config.rules.shards -}}
{{- $shards = keys $v.config.rules.shards | sortAlpha -}}
{{- end -}}
{{- range $shard := $shards -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $shard) -}}
{{- fail (printf "config.shards: %q is not usable in a Kubernetes name (lower-case letters, digits and '-')" $shard) -}}
{{- end -}}
{{- $roles = append $roles (dict "name" (printf "worker-%s" $shard) "shard" $shard "args" (list "run" "--role" "worker" "--shard" $shard "--threads" (toString $v.roles.worker.scoringThreads)) "group" (printf "%sworker.%s" $prefix $shard) "topic" (printf "%sshard.%s" $prefix $shard) "partitions" $v.kafka.partitions.shard "values" $v.roles.worker "scales" "worker") -}}
{{- end -}}
{{- end -}}
{{- if $v.roles.shadow.enabled -}}
{{- $roles = append $roles (dict "name" "shadow" "args" (list "run" "--role" "shadow" "--threads" (toString $v.roles.shadow.scoringThreads)) "group" (printf "%sshadow" $prefix) "topic" (printf "%sshadow" $prefix) "partitions" $v.kafka.partitions.shard "values" $v.roles.shadow "scales" "") -}}
{{- end -}}
{{- if $v.roles.comparator.enabled -}}
{{- $roles = append $roles (dict "name" "comparator" "args" (list "run" "--role" "comparator") "group" (printf "%scomparator" $prefix) "topic" (printf "%sshadow-results" $prefix) "partitions" $v.kafka.partitions.shard "values" $v.roles.comparator "scales" "") -}}
{{- end -}}
{{- if $v.roles.rollout.enabled -}}
{{- $roles = append $roles (dict "name" "rollout" "args" (list "run" "--role" "rollout") "group" (printf "%srollout" $prefix) "topic" (printf "%srollouts" $prefix) "partitions" 1 "values" $v.roles.rollout "scales" "") -}}
{{- end -}}
{{- toJson (dict "roles" $roles) -}}
{{- end -}}

{{/* Environment every role shares: the Kafka connection, topics, configuration. */}}
{{- define "scoreline.env" -}}
- name: SCORELINE_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: SCORELINE_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: SCORELINE_REQUEST_PARTITIONS
  value: {{ .Values.kafka.partitions.requests | quote }}
- name: SCORELINE_SHARD_PARTITIONS
  value: {{ .Values.kafka.partitions.shard | quote }}
- name: SCORELINE_REPLY_PARTITIONS
  value: {{ .Values.kafka.partitions.replies | quote }}
{{- with .Values.kafka.replicationFactor }}
- name: SCORELINE_REPLICATION_FACTOR
  value: {{ . | quote }}
{{- end }}
- name: SCORELINE_METRICS_PORT
  value: {{ .Values.metrics.port | quote }}
- name: SCORELINE_HOME
  value: /var/lib/scoreline
- name: HOME
  value: /var/lib/scoreline
- name: SCORELINE_LOG_FORMAT
  value: json
- name: SCORELINE_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: SCORELINE_MODEL_MEMORY_BUDGET
  value: {{ .Values.config.modelMemoryBudget | quote }}
- name: SCORELINE_TRUST_CLIENT_FIELD
  value: {{ .Values.config.trustClientField | quote }}
{{- if .Values.config.rules }}
- name: SCORELINE_RULES
  value: /etc/scoreline/rules/rules.json
{{- end }}
{{- with .Values.config.modelsDir }}
- name: SCORELINE_MODELS_DIR
  value: {{ . | quote }}
{{- end }}
{{- if ne .Values.kafka.securityProtocol "PLAINTEXT" }}
- name: SCORELINE_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if .mechanism }}
{{- if not .existingSecret }}
{{- fail "kafka.sasl.mechanism is set: kafka.sasl.existingSecret must name the Secret holding the credentials" }}
{{- end }}
- name: SCORELINE_SASL_MECHANISM
  value: {{ .mechanism | quote }}
- name: SCORELINE_SASL_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .usernameKey | quote }}}
- name: SCORELINE_SASL_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .existingSecret | quote }}, key: {{ .passwordKey | quote }}}
{{- end }}
{{- end }}
{{- with .Values.kafka.tls }}
{{- if .existingSecret }}
- name: SCORELINE_SSL_CAFILE
  value: {{ printf "/etc/scoreline/tls/%s" .caKey | quote }}
{{- if .certKey }}
- name: SCORELINE_SSL_CERTFILE
  value: {{ printf "/etc/scoreline/tls/%s" .certKey | quote }}
- name: SCORELINE_SSL_KEYFILE
  value: {{ printf "/etc/scoreline/tls/%s" .keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}
