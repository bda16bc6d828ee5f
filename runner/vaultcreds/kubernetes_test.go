package vaultcreds

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	vault "github.com/hashicorp/vault/api"

	"github.com/twokey/twokey/runner"
)

// serviceAccountJWT is a token shaped like the kubelet's projected service
// account token, signed with key.
func serviceAccountJWT(t *testing.T, key *rsa.PrivateKey, namespace, name, uid string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signed := enc(map[string]any{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:" + namespace + ":" + name,
		"kubernetes.io": map[string]any{"namespace": namespace, "serviceaccount": map[string]any{"name": name, "uid": uid}},
	})
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// fakeTokenReview is the Kubernetes API's TokenReview endpoint, as Vault's
// kubernetes auth method calls it: it vouches for the tokens it issued.
func fakeTokenReview(t *testing.T, issued map[string]string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var review struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		status := map[string]any{"authenticated": false}
		if user, ok := issued[review.Spec.Token]; ok {
			parts := strings.Split(user, ":") // system:serviceaccount:NS:NAME:UID
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": strings.Join(parts[:4], ":"), "uid": parts[4],
				"groups": []string{"system:serviceaccounts", "system:serviceaccounts:" + parts[2]},
			}}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	t.Cleanup(srv.Close)
	return srv
}

// A runner pod logs in with its service account token through Vault's
// kubernetes auth method; the role is bound to that one service account,
// so a nonprod runner's token does not open the prod login, and neither
// does a token the cluster did not issue.
func TestKubernetesLogin(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	prod := serviceAccountJWT(t, key, "twokey", "twokey-runner-prod", "uid-prod")
	nonprod := serviceAccountJWT(t, key, "twokey", "twokey-runner-nonprod", "uid-nonprod")
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged := serviceAccountJWT(t, other, "twokey", "twokey-runner-prod", "uid-prod") // right claims, not the cluster's

	api := fakeTokenReview(t, map[string]string{
		prod:    "system:serviceaccount:twokey:twokey-runner-prod:uid-prod",
		nonprod: "system:serviceaccount:twokey:twokey-runner-nonprod:uid-nonprod",
	})

	if err := f.root.Sys().EnableAuthWithOptionsWithContext(ctx, "kubernetes", &vault.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		t.Fatal(err)
	}
	for path, body := range map[string]map[string]any{
		"auth/kubernetes/config": {"kubernetes_host": api.URL, "disable_local_ca_jwt": true, "disable_iss_validation": true},
		"auth/kubernetes/role/twokey-runner-prod": {"bound_service_account_names": "twokey-runner-prod",
			"bound_service_account_namespaces": "twokey", "token_policies": "twokey-bot", "token_period": "1h"},
	} {
		if _, err := f.root.Logical().WriteWithContext(ctx, path, body); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}

	dir := t.TempDir()
	for _, tt := range []struct {
		name, jwt string
		ok        bool
	}{
		{"prod runner", prod, true},
		{"nonprod runner", nonprod, false},
		{"token the cluster never issued", forged, false},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
		if err := os.WriteFile(path, []byte(tt.jwt), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := New(Options{Address: f.dev.Addr, Login: KubernetesLogin("kubernetes", "twokey-runner-prod", path)})
		if err != nil {
			t.Fatal(err)
		}
		cred, err := c.Mint(ctx, stagingApply)
		if tt.ok {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if err := c.Revoke(ctx, cred); err != nil {
				t.Errorf("%s: revoke: %v", tt.name, err)
			}
			c.mu.Lock()
			watched := c.watcher != nil
			c.mu.Unlock()
			if !watched {
				t.Errorf("%s: the renewable login has no LifetimeWatcher", tt.name)
			}
		} else if !errors.Is(err, runner.ErrCredentials) {
			t.Errorf("%s: err = %v, want ErrCredentials", tt.name, err)
		}
		c.Close()
	}
}
