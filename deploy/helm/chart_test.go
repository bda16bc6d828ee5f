// Package helm checks the Helm chart in deploy/helm/twokey: helm lint and
// helm template (helm built by scripts/tools.sh), every rendered manifest
// decoded strictly with the Kubernetes API types, each process's config
// through twokey's own config package, and the pod settings the README
// promises. Only this test package imports k8s.io/*.
package helm

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/twokey/twokey/config"
)

func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	bin, err := filepath.Abs("../../.tools/bin/helm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm not installed: run scripts/tools.sh helm (%v)", err)
	}
	cmd := exec.Command(bin, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_DATA_HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return out
}

// serviceMonitor is the part of prometheus-operator's ServiceMonitor the
// chart renders; it is a custom resource, not in client-go's scheme.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	} `json:"spec"`
}

type rendered struct {
	objects     []runtime.Object
	deployments map[string]*appsv1.Deployment // by component
	configs     map[string]*config.Config     // by component
	policies    map[string]*networkingv1.NetworkPolicy
	monitors    []serviceMonitor
	kinds       map[string]int
}

func render(t *testing.T, values string) rendered {
	t.Helper()
	helm(t, "lint", "--strict", "twokey", "-f", values)
	out := helm(t, "template", "t", "twokey", "-f", values, "--namespace", "twokey")
	strict := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	r := rendered{deployments: map[string]*appsv1.Deployment{}, configs: map[string]*config.Config{},
		policies: map[string]*networkingv1.NetworkPolicy{}, kinds: map[string]int{}}
	for _, doc := range strings.Split(string(out), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("%v\n%s", err, doc)
		}
		r.kinds[meta.Kind]++
		if meta.APIVersion == "monitoring.coreos.com/v1" {
			js, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.DisallowUnknownFields()
			var sm serviceMonitor
			if err := dec.Decode(&sm); err != nil {
				t.Fatalf("ServiceMonitor: %v\n%s", err, doc)
			}
			r.monitors = append(r.monitors, sm)
			continue
		}
		obj, gvk, err := strict.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s/%s does not decode strictly: %v\n%s", meta.APIVersion, meta.Kind, err, doc)
		}
		if gvk.Kind != meta.Kind {
			t.Fatalf("decoded %v, want %s", gvk, meta.Kind)
		}
		r.objects = append(r.objects, obj)
		switch o := obj.(type) {
		case *appsv1.Deployment:
			r.deployments[o.Spec.Template.Labels["app.kubernetes.io/component"]] = o
		case *networkingv1.NetworkPolicy:
			r.policies[o.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"]] = o
		case *corev1.ConfigMap:
			c, err := config.Parse(strings.NewReader(o.Data["twokey.yaml"]))
			if err != nil {
				t.Fatalf("ConfigMap %s: twokey's config check: %v\n%s", o.Name, err, o.Data["twokey.yaml"])
			}
			r.configs[o.Labels["app.kubernetes.io/component"]] = c
		}
	}
	return r
}

// checkPod holds every pod to what the README promises: non-root, read-only
// root, no capabilities, no privilege escalation, secrets only as files;
// and, where terraform runs, exactly what the sandbox needs.
func checkPod(t *testing.T, d *appsv1.Deployment, sandboxed bool) {
	t.Helper()
	pod := d.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser != 10001 {
		t.Errorf("%s: pod securityContext %+v, want non-root uid 10001", d.Name, pod.SecurityContext)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: the Kubernetes API token is mounted", d.Name)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: %d containers", d.Name, len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
		*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" ||
		len(sc.Capabilities.Add) != 0 || sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: container securityContext %+v", d.Name, sc)
	}
	for _, e := range c.Env {
		if !strings.HasSuffix(e.Name, "_FILE") || !strings.HasPrefix(e.Value, "/etc/twokey/secrets/") {
			t.Errorf("%s: env %s=%s; secrets come as files only", d.Name, e.Name, e.Value)
		}
	}
	writable := map[string]bool{}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			writable[m.MountPath] = true
		}
	}
	if len(writable) != 2 || !writable["/var/lib/twokey"] || !writable["/tmp"] {
		t.Errorf("%s: writable mounts %v, want /var/lib/twokey and /tmp", d.Name, writable)
	}
	if sandboxed {
		if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeUnconfined ||
			sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined ||
			sc.ProcMount == nil || *sc.ProcMount != corev1.UnmaskedProcMount || pod.HostUsers == nil || *pod.HostUsers {
			t.Errorf("%s: a pod that runs terraform needs seccomp and AppArmor Unconfined, procMount Unmasked, hostUsers false: %+v hostUsers %v",
				d.Name, sc, pod.HostUsers)
		}
	} else if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault || sc.ProcMount != nil || pod.HostUsers != nil {
		t.Errorf("%s: runs no terraform, so it keeps the runtime's seccomp profile and /proc: %+v", d.Name, sc)
	}
}

func TestChartSmall(t *testing.T) {
	r := render(t, "testdata/small.yaml")
	for kind, n := range map[string]int{"Deployment": 1, "ConfigMap": 1, "ServiceAccount": 1, "NetworkPolicy": 1} {
		if r.kinds[kind] != n {
			t.Errorf("%d %s, want %d (all: %v)", r.kinds[kind], kind, n, r.kinds)
		}
	}
	if r.kinds["PodDisruptionBudget"]+r.kinds["ServiceMonitor"]+r.kinds["Service"] != 0 {
		t.Errorf("optional objects rendered: %v", r.kinds)
	}
	serve := r.deployments["serve"]
	checkPod(t, serve, true) // the embedded runner runs terraform in serve
	c := r.configs["serve"]
	if c.Redis.URL != "redis://twokey-serve@redis:6379/0" || c.DataDir != "/var/lib/twokey" || !c.Runner.IsEmbedded() ||
		c.Terraform.Path != "/usr/local/bin/terraform" || c.Signing.KeyFile != "/etc/twokey/keys/serve.key" {
		t.Errorf("serve config: redis %q data_dir %q embedded %v terraform %q key %q",
			c.Redis.URL, c.DataDir, c.Runner.IsEmbedded(), c.Terraform.Path, c.Signing.KeyFile)
	}
	// With the embedded runner, serve reaches Vault.
	if !reachesPort(r.policies["serve"], 8200) {
		t.Error("serve with the embedded runner cannot reach Vault")
	}
}

func TestChartLarge(t *testing.T) {
	r := render(t, "testdata/large.yaml")
	for kind, n := range map[string]int{"Deployment": 3, "ConfigMap": 3, "ServiceAccount": 3, "NetworkPolicy": 3,
		"PodDisruptionBudget": 2, "Service": 1, "ServiceMonitor": 1} {
		if r.kinds[kind] != n {
			t.Errorf("%d %s, want %d (all: %v)", r.kinds[kind], kind, n, r.kinds)
		}
	}
	if *r.deployments["serve"].Spec.Replicas != 3 || *r.deployments["runner-prod"].Spec.Replicas != 2 {
		t.Error("replicas not as set")
	}
	checkPod(t, r.deployments["serve"], false)
	for _, pool := range []string{"prod", "nonprod"} {
		component := "runner-" + pool
		d := r.deployments[component]
		checkPod(t, d, true)
		args := strings.Join(d.Spec.Template.Spec.Containers[0].Args, " ")
		if !strings.HasPrefix(args, "runner --pool "+pool+" ") {
			t.Errorf("%s: args %q", component, args)
		}
		if d.Spec.Template.Spec.ServiceAccountName != "t-twokey-"+component {
			t.Errorf("%s: service account %q, want its own", component, d.Spec.Template.Spec.ServiceAccountName)
		}
		// Its own Redis ACL user, and its own Vault role through Kubernetes auth.
		c := r.configs[component]
		if c.Redis.URL != "rediss://twokey-runner-"+pool+"@master.twokey.abc123.use1.cache.amazonaws.com:6379/0" || c.Redis.Durability != "asserted" {
			t.Errorf("%s: redis %q durability %q", component, c.Redis.URL, c.Redis.Durability)
		}
		p, ok := c.PoolFor(pool)
		if !ok || p.Vault.Method != "kubernetes" || p.Vault.Role != "twokey-runner-"+pool || p.Vault.TokenPath != "/var/run/secrets/vault/token" {
			t.Errorf("%s: vault auth %+v", component, p.Vault)
		}
		// A pool the config has and the chart does not deploy keeps its own login.
		if edge, ok := c.PoolFor("edge"); !ok || edge.Vault.Method != "approle" {
			t.Errorf("%s: the config's pool edge became %+v (found %v)", component, edge.Vault, ok)
		}
		if !reachesPort(r.policies[component], 8200) || !reachesPort(r.policies[component], 443) || !reachesPort(r.policies[component], 6379) {
			t.Errorf("%s: runners reach Redis, Vault, GitHub and the cloud", component)
		}
		if d.Spec.Template.Spec.Containers[0].Env[0].Value == "" {
			t.Errorf("%s: no secret files", component)
		}
	}
	if c := r.configs["serve"]; c.Runner.IsEmbedded() || c.Terraform.Path != "/usr/local/bin/tofu" {
		t.Errorf("serve config: embedded %v terraform %q", c.Runner.IsEmbedded(), c.Terraform.Path)
	}
	// serve without the embedded runner holds no Vault login and cannot reach Vault.
	if reachesPort(r.policies["serve"], 8200) || !reachesPort(r.policies["serve"], 443) || !reachesPort(r.policies["serve"], 6379) {
		t.Error("serve reaches Slack, GitHub and Redis, and not Vault")
	}
	// Vault's Kubernetes auth reads a projected token meant for Vault alone.
	var projected bool
	for _, v := range r.deployments["runner-prod"].Spec.Template.Spec.Volumes {
		if v.Projected != nil && len(v.Projected.Sources) == 1 && v.Projected.Sources[0].ServiceAccountToken != nil &&
			v.Projected.Sources[0].ServiceAccountToken.Audience == "vault" {
			projected = true
		}
	}
	if !projected {
		t.Error("no projected service account token with audience vault")
	}
	if sm := r.monitors[0]; sm.Spec.Endpoints[0].Port != "metrics" || sm.Metadata.Labels["release"] != "prometheus" {
		t.Errorf("ServiceMonitor %+v", sm)
	}
}

func reachesPort(p *networkingv1.NetworkPolicy, port int) bool {
	if p == nil {
		return false
	}
	for _, rule := range p.Spec.Egress {
		for _, rp := range rule.Ports {
			if rp.Port != nil && rp.Port.IntValue() == port {
				return true
			}
		}
	}
	return false
}
