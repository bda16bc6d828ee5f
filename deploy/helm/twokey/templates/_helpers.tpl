{{- define "twokey.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "twokey.labels" -}}
app.kubernetes.io/name: twokey
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "twokey.selector" -}}
app.kubernetes.io/name: twokey
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The config file of one process: root, component ("serve" or
"runner-<pool>"), redisUser, pool (a pool's values, or nil for serve). */}}
{{- define "twokey.config" -}}
{{- $v := .root.Values -}}
{{- $c := deepCopy $v.config -}}
{{- $redis := default dict $c.redis -}}
{{- $_ := set $redis "url" (printf "%s://%s@%s:%v/%v" (ternary "rediss" "redis" $v.redis.tls) .redisUser $v.redis.host $v.redis.port $v.redis.db) -}}
{{- $_ := set $redis "durability" $v.redis.durability -}}
{{- if not $redis.password_env }}{{ $_ := set $redis "password_env" "REDIS_PASSWORD" }}{{ end -}}
{{- $_ := set $c "redis" $redis -}}
{{- $_ := set $c "data_dir" "/var/lib/twokey" -}}
{{- $tf := default dict $c.terraform -}}
{{- $_ := set $tf "path" (printf "/usr/local/bin/%s" $v.terraform.binary) -}}
{{- $_ := set $c "terraform" $tf -}}
{{- $signing := default dict $c.signing -}}
{{- $_ := set $signing "key_file" (printf "/etc/twokey/keys/%s" (ternary $v.serve.signingKey (default "" (.pool).signingKey) (eq .component "serve"))) -}}
{{- $_ := set $c "signing" $signing -}}
{{- $runner := default dict $c.runner -}}
{{- $_ := set $runner "embedded" $v.serve.embeddedRunner -}}
{{- $_ := set $c "runner" $runner -}}
{{- if $v.vault.kubernetesAuth.enabled -}}
{{- $k := $v.vault.kubernetesAuth -}}
{{- $vault := default dict $c.vault -}}
{{- $_ := set $vault "auth" (dict "method" "kubernetes" "mount" $k.mount "role" $k.serveRole "token_path" "/var/run/secrets/vault/token") -}}
{{- $_ := set $c "vault" $vault -}}
{{- /* Each pool of the config keeps its own fields; a pool deployed here
       logs in with its Kubernetes role. */ -}}
{{- $pools := list -}}
{{- range $cp := (default list $c.pools) -}}
{{- $pool := deepCopy $cp -}}
{{- range $v.pools -}}
{{- if eq .name $cp.name -}}
{{- $_ := set $pool "vault_auth" (dict "method" "kubernetes" "mount" $k.mount "role" .vaultRole "token_path" "/var/run/secrets/vault/token") -}}
{{- end -}}
{{- end -}}
{{- $pools = append $pools $pool -}}
{{- end -}}
{{- if $pools }}{{ $_ := set $c "pools" $pools }}{{ end -}}
{{- end -}}
{{- toYaml $c -}}
{{- end -}}

{{/* A pod: root, component, args, secret, signingSecret, replicas, resources, sandboxed. */}}
{{- define "twokey.pod" -}}
{{- $v := .root.Values -}}
metadata:
  labels:
    {{- include "twokey.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
  annotations:
    checksum/config: {{ include "twokey.config" . | sha256sum }}
spec:
  serviceAccountName: {{ include "twokey.fullname" .root }}-{{ .component }}
  automountServiceAccountToken: false
  {{- if and .sandboxed (not $v.sandbox.hostUsers) }}
  hostUsers: false
  {{- end }}
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  enableServiceLinks: false
  containers:
    - name: twokey
      image: "{{ $v.image.repository }}:{{ default .root.Chart.AppVersion $v.image.tag }}"
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        {{- toYaml .args | nindent 8 }}
      env:
        {{- range $name, $key := .secret.env }}
        - name: {{ $name }}_FILE
          value: /etc/twokey/secrets/{{ $key }}
        {{- end }}
      {{- if $v.metrics.enabled }}
      ports:
        - name: metrics
          containerPort: {{ $v.metrics.port }}
      livenessProbe:
        httpGet: {path: /healthz, port: metrics}
        periodSeconds: 20
      readinessProbe:
        httpGet: {path: /readyz, port: metrics}
        periodSeconds: 10
      {{- end }}
      securityContext:
        runAsNonRoot: true
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities: {drop: [ALL]}
        {{- if .sandboxed }}
        {{- if $v.sandbox.seccompLocalhostProfile }}
        seccompProfile: {type: Localhost, localhostProfile: {{ $v.sandbox.seccompLocalhostProfile }}}
        {{- else }}
        seccompProfile: {type: {{ $v.sandbox.seccompProfile }}}
        {{- end }}
        appArmorProfile: {type: {{ $v.sandbox.appArmorProfile }}}
        procMount: {{ $v.sandbox.procMount }}
        {{- else }}
        seccompProfile: {type: RuntimeDefault}
        {{- end }}
      {{- with .resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      volumeMounts:
        - {name: config, mountPath: /etc/twokey/config, readOnly: true}
        - {name: secrets, mountPath: /etc/twokey/secrets, readOnly: true}
        - {name: keys, mountPath: /etc/twokey/keys, readOnly: true}
        - {name: data, mountPath: /var/lib/twokey}
        - {name: tmp, mountPath: /tmp}
        {{- if $v.vault.kubernetesAuth.enabled }}
        - {name: vault-token, mountPath: /var/run/secrets/vault, readOnly: true}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "twokey.fullname" .root }}-{{ .component }}
    - name: secrets
      secret:
        secretName: {{ .secret.name }}
        defaultMode: 0400
    - name: keys
      secret:
        secretName: {{ .signingSecret }}
        defaultMode: 0400
    - name: data
      emptyDir: {sizeLimit: {{ $v.dataDir.sizeLimit }}}
    - name: tmp
      emptyDir: {sizeLimit: {{ $v.tmp.sizeLimit }}}
    {{- if $v.vault.kubernetesAuth.enabled }}
    - name: vault-token
      projected:
        defaultMode: 0400
        sources:
          - serviceAccountToken:
              path: token
              audience: {{ $v.vault.kubernetesAuth.audience }}
              expirationSeconds: {{ $v.vault.kubernetesAuth.tokenExpirationSeconds }}
    {{- end }}
  {{- with .nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{- define "twokey.poolComponents" -}}
{{- $out := list -}}
{{- range .Values.pools }}{{ $out = append $out (printf "runner-%s" .name) }}{{ end -}}
{{- toJson $out -}}
{{- end -}}
