package config

import (
	"strings"
	"testing"
)

// Vault logins: a token, AppRole (optionally with a response-wrapped secret
// ID), or the pod's Kubernetes service account; each pool may use its own.
func TestVaultAuthMethods(t *testing.T) {
	c, err := Parse(strings.NewReader(strings.Replace(minimal, `vault: {address: "http://127.0.0.1:8200"}`,
		`vault: {address: "http://127.0.0.1:8200", auth: {method: kubernetes, role: twokey-serve}}
pools:
  - name: prod
    vault_auth: {method: kubernetes, role: twokey-runner-prod, mount: k8s-prod}
  - name: nonprod
    vault_auth: {method: approle, secret_id_wrapped: true}`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if a := c.Vault.Auth; a.Mount != "kubernetes" || a.Role != "twokey-serve" {
		t.Errorf("top-level auth = %+v, want mount kubernetes", a)
	}
	prod, _ := c.PoolFor("prod")
	nonprod, _ := c.PoolFor("nonprod")
	if prod.Vault.Mount != "k8s-prod" || nonprod.Vault.Mount != "approle" || !nonprod.Vault.SecretIDWrapped {
		t.Errorf("pools: prod %+v, nonprod %+v", prod.Vault, nonprod.Vault)
	}
	// A Kubernetes login reads no secret from the environment.
	env := map[string]string{"SLACK_BOT_TOKEN": "b", "SLACK_APP_TOKEN": "a", "TWOKEY_PLAN_KEY": planKey}
	if _, err := c.LoadSecrets(func(k string) string { return env[k] }, c.ForServe()); err != nil {
		t.Errorf("LoadSecrets with kubernetes auth: %v", err)
	}

	_, err = Parse(strings.NewReader(strings.Replace(minimal, `vault: {address: "http://127.0.0.1:8200"}`,
		`vault: {address: "http://127.0.0.1:8200", auth: {method: kubernetes}}
pools:
  - name: prod
    vault_auth: {method: ldap}`, 1)))
	for _, want := range []string{"vault.auth.role is required with method kubernetes", `pool "prod": vault_auth.method: "ldap" is not token, approle or kubernetes`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}
