package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/google/go-github/v89/github"

	"github.com/twokey/twokey/devstack/stacktest"
	"github.com/twokey/twokey/runner/ghsim"
)

const (
	testAppID          = 4711
	testInstallationID = 80801
)

// writeAppKey writes a GitHub App's private key as GitHub hands it out
// (PKCS#1 PEM) and returns the key and the file's path.
func writeAppKey(t *testing.T, dir, name string) (*rsa.PrivateKey, string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := os.WriteFile(path, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return key, path
}

// With a GitHub App configured, twokey authenticates as the App's
// installation: plan → two approvals → applied reports twokey/plan/staging
// and twokey/apply/staging as check runs (which only the App can set)
// completed with success on the head commit, and no commit statuses (which
// any token holder could forge). The API calls and the git fetch carry
// installation tokens and never the personal token that is still in the
// environment; a JWT signed with another key gets no installation token;
// and the token holder cannot create a check run.
func TestGitHubAppReportsChecks(t *testing.T) {
	s := newStack(t)
	key, keyFile := writeAppKey(t, s.dir, "app.pem")
	s.gh.AddApp(ghsim.App{ID: testAppID, InstallationID: testInstallationID, PublicKey: &key.PublicKey})
	s.gh.GitOverHTTP = true // the pull request is fetched over HTTP, as from GitHub, with a token
	cfg := s.baseConfig(filepath.Join(s.dir, "data"), stacktest.Tool(t, "terraform"))
	cfg.GitHub.AppID, cfg.GitHub.InstallationID, cfg.GitHub.AppPrivateKeyFile = testAppID, testInstallationID, keyFile
	s.config = s.write("twokey.yaml", cfg)
	sha := s.openPR(1, "web")
	s.startBot()

	s.slash(alice, "plan staging pr-1")
	msg := s.planMessage(1, "Plan ready for review")
	s.click(bob, msg, approve)
	msg = s.planMessage(1, "1 more needed")
	s.click(carol, msg, approve)
	s.planMessage(1, "Applied")
	if !s.applied("web") {
		t.Fatal("not applied")
	}

	// The syncer writes in the background: wait for both runs to complete.
	want := map[string]bool{"twokey/plan/staging": true, "twokey/apply/staging": true}
	var runs []ghsim.CheckRun
	for deadline := time.Now().Add(waitFor); ; time.Sleep(50 * time.Millisecond) {
		runs = s.gh.CheckRuns("acme/infra")
		done := 0
		for _, r := range runs {
			if want[r.Name] && r.Status == "completed" && r.Conclusion == "success" {
				done++
			}
		}
		if done == len(want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("check runs did not complete with success: %+v\nlogs:\n%s", runs, s.logs.String())
		}
	}
	seen := map[string]int{}
	for _, r := range runs {
		seen[r.Name]++
		if r.HeadSHA != sha {
			t.Errorf("check run %s on %s, want the head %s", r.Name, r.HeadSHA, sha)
		}
		if r.AppID != testAppID {
			t.Errorf("check run %s belongs to app %d", r.Name, r.AppID)
		}
		if !want[r.Name] {
			t.Errorf("unexpected check run %q", r.Name)
		}
	}
	for name, n := range seen {
		if n != 1 {
			t.Errorf("%d check runs named %s: each is updated in place, not created again", n, name)
		}
	}
	if runs[0].Updates == 0 && runs[1].Updates == 0 {
		t.Error("no check run was ever updated: the runs went from queued or in progress to completed by PATCH")
	}
	if st := s.gh.Statuses("acme/infra"); len(st) != 0 {
		t.Errorf("commit statuses written with an App configured: %+v", st)
	}

	var tokens, api, gitReqs, checkWrites int
	for _, r := range s.gh.Requests() {
		if strings.Contains(r.Auth, githubToken) || strings.Contains(r.Auth, basicToken(githubToken)) {
			t.Errorf("%s %s used the personal token", r.Method, r.Path)
		}
		switch {
		case strings.HasSuffix(r.Path, fmt.Sprintf("/app/installations/%d/access_tokens", testInstallationID)):
			tokens++
			if !strings.HasPrefix(r.Auth, "Bearer ") {
				t.Errorf("installation token asked for without a JWT: %q", r.Auth)
			}
		case strings.HasPrefix(r.Path, "/acme/infra.git/"):
			gitReqs++
			if !s.gh.IsInstallationToken(r.Auth) {
				t.Errorf("git %s without an installation token", r.Path)
			}
		default:
			api++
			if !s.gh.IsInstallationToken(r.Auth) {
				t.Errorf("%s %s without an installation token", r.Method, r.Path)
			}
			if strings.Contains(r.Path, "/check-runs") && r.Method != http.MethodGet {
				checkWrites++
			}
		}
	}
	if tokens == 0 || api == 0 || gitReqs == 0 || checkWrites == 0 {
		t.Errorf("requests: %d for installation tokens, %d API, %d git, %d check-run writes; want some of each", tokens, api, gitReqs, checkWrites)
	}

	// A JWT signed with another key gets no installation token.
	_, forged := writeAppKey(t, s.dir, "forged.pem")
	pemBytes, err := os.ReadFile(forged)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := ghinstallation.New(http.DefaultTransport, testAppID, testInstallationID, pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	tr.BaseURL = s.ghURL + "/api/v3"
	var herr *ghinstallation.HTTPError
	if _, err := tr.Token(context.Background()); !errors.As(err, &herr) || herr.Response == nil || herr.Response.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged JWT: err = %v, want 401", err)
	}

	// A token holder can set a commit status, but not a check run.
	base := s.ghURL + "/api/v3/"
	gh, err := github.NewClient(github.WithAuthToken(githubToken), github.WithURLs(&base, &base))
	if err != nil {
		t.Fatal(err)
	}
	name, status := "twokey/apply/prod", "completed"
	_, resp, err := gh.Checks.CreateCheckRun(context.Background(), "acme", "infra", github.CreateCheckRunOptions{
		Name: name, HeadSHA: sha, Status: &status, Conclusion: github.Ptr("success")})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("check run created with a personal token: err = %v", err)
	}
}

// basicToken is how git sends a token: HTTP basic auth as x-access-token.
func basicToken(token string) string {
	return ghsim.BasicAuth("x-access-token", token)
}

// check-config reports a GitHub App configured in part, and an App whose
// key is missing or not a key, without printing the key.
func TestCheckConfigGitHubApp(t *testing.T) {
	dir := t.TempDir()
	_, keyFile := writeAppKey(t, dir, "app.pem")
	notKey := filepath.Join(dir, "notkey.pem")
	if err := os.WriteFile(notKey, []byte("-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := envWith("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "VAULT_TOKEN", "TWOKEY_PLAN_KEY")
	withGitHub := func(github string) string { return embeddedConfig + "github: " + github + "\n" }

	r := checkConfigOf(t, withGitHub(fmt.Sprintf("{app_id: %d, installation_id: %d, app_private_key_file: %s}", testAppID, testInstallationID, keyFile)), env)
	if r.code != 0 {
		t.Fatalf("a whole App: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkConfigOf(t, withGitHub(fmt.Sprintf("{app_id: %d, app_private_key_file: %s}", testAppID, keyFile)), env).
		failed(t, "github.installation_id is not")
	checkConfigOf(t, withGitHub(fmt.Sprintf("{app_id: %d, installation_id: %d}", testAppID, testInstallationID)), env).
		failed(t, "private key is not set")
	r = checkConfigOf(t, withGitHub(fmt.Sprintf("{app_id: %d, installation_id: %d, app_private_key_file: %s}", testAppID, testInstallationID, notKey)), env)
	r.failed(t, "not an RSA private key")
	if strings.Contains(r.stdout+r.stderr, "c2VjcmV0") {
		t.Errorf("check-config printed the key:\n%s%s", r.stdout, r.stderr)
	}
}
