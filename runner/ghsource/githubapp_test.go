package ghsource

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twokey/twokey/config/secret"
	"github.com/twokey/twokey/devstack"
	"github.com/twokey/twokey/runner"
	"github.com/twokey/twokey/runner/ghsim"
)

const appID, installationID = 31, 3131

// appFixture is a repository behind a fake GitHub that serves git over
// HTTP to token holders and has an App installed.
type appFixture struct {
	gh  *ghsim.Server
	url string
	key []byte // the App's private key, PEM
	v1  string
}

func appSetup(t *testing.T) appFixture {
	t.Helper()
	ctx := context.Background()
	repo, err := devstack.NewGitRepo(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base, err := repo.Commit(ctx, "main", "", "init", map[string]*string{"main.tf": devstack.Str("# v0\n")})
	if err != nil {
		t.Fatal(err)
	}
	v1, err := repo.Commit(ctx, "feature", base, "v1", map[string]*string{"main.tf": devstack.Str("# v1\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.PublishPull(ctx, 42, v1); err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	gh := ghsim.New()
	gh.Token = "ghp_personal_token_0123456789"
	gh.GitOverHTTP = true
	gh.AddApp(ghsim.App{ID: appID, InstallationID: installationID, PublicKey: &key.PublicKey})
	gh.AddRepo("acme/infra", repo.CloneURL())
	gh.SetPull("acme/infra", ghsim.Pull{Number: 42, HeadSHA: v1, HeadRef: "feature", Title: "Add a"})
	srv := httptest.NewServer(gh)
	t.Cleanup(srv.Close)
	return appFixture{gh: gh, url: srv.URL, v1: v1,
		key: pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})}
}

func (f appFixture) source(t *testing.T, o Options) *Source {
	t.Helper()
	o.APIURL, o.MirrorDir = f.url+"/api/v3/", t.TempDir()
	src, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// resolveAndCheckout resolves PR 42 and checks it out over HTTP.
func resolveAndCheckout(t *testing.T, src *Source, v1 string) {
	t.Helper()
	ctx := context.Background()
	rev, err := src.Resolve(ctx, "acme/infra", runner.Ref{PR: 42})
	if err != nil {
		t.Fatal(err)
	}
	if rev.SHA != v1 || !strings.HasPrefix(rev.CloneURL, "http://") {
		t.Fatalf("rev = %+v", rev)
	}
	dst := filepath.Join(t.TempDir(), "src")
	if err := src.Checkout(ctx, rev, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "main.tf")); string(b) != "# v1\n" {
		t.Fatalf("main.tf = %q, want v1", b)
	}
}

// git fetches over HTTP with the token; without one GitHub refuses it.
func TestCheckoutOverHTTPWithToken(t *testing.T) {
	f := appSetup(t)
	resolveAndCheckout(t, f.source(t, Options{Token: secret.Secret(f.gh.Token)}), f.v1)
	git := 0
	for _, r := range f.gh.Requests() {
		if strings.HasPrefix(r.Path, "/acme/infra.git/") {
			git++
			if r.Auth != ghsim.BasicAuth("x-access-token", f.gh.Token) {
				t.Errorf("git %s without the token", r.Path)
			}
		}
	}
	if git == 0 {
		t.Fatal("git did not fetch over HTTP")
	}
	anonymous := f.source(t, Options{})
	rev := runner.Revision{Repo: "acme/infra", PR: 42, SHA: f.v1, CloneURL: f.url + "/acme/infra.git"}
	if err := anonymous.Checkout(context.Background(), rev, filepath.Join(t.TempDir(), "x")); !errors.Is(err, runner.ErrSource) {
		t.Fatalf("fetch without a token: err = %v", err)
	}
}

// With an App, the API and git get the installation's tokens, never the
// personal token, and the transport renews a token near its end (here
// every token lives less than the minute before its end at which the
// transport renews it).
func TestAppInstallationTokens(t *testing.T) {
	f := appSetup(t)
	f.gh.InstallationTokenTTL = 50 * time.Second
	src := f.source(t, Options{Token: secret.Secret(f.gh.Token), App: &App{ID: appID, InstallationID: installationID, PrivateKey: secret.Secret(f.key)}})
	if !src.Checks() {
		t.Fatal("Checks() = false with an App")
	}
	resolveAndCheckout(t, src, f.v1)
	tokens, used := 0, map[string]bool{}
	for _, r := range f.gh.Requests() {
		if strings.HasSuffix(r.Path, "/access_tokens") {
			tokens++
			continue
		}
		if !f.gh.IsInstallationToken(r.Auth) {
			t.Errorf("%s %s without an installation token", r.Method, r.Path)
		}
		used[r.Auth] = true
	}
	if tokens < 2 || len(used) < 2 {
		t.Errorf("%d installation tokens asked for, %d used: a token near its end is renewed", tokens, len(used))
	}

	// An App whose key GitHub does not know gets nothing, and says so
	// without its key.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	wrong := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)})
	forged := f.source(t, Options{App: &App{ID: appID, InstallationID: installationID, PrivateKey: secret.Secret(wrong)}})
	_, err = forged.Resolve(context.Background(), "acme/infra", runner.Ref{PR: 42})
	if !errors.Is(err, runner.ErrSource) || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong key: err = %v, want a 401", err)
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatal("the error quotes the key")
	}
	if _, err := New(Options{APIURL: f.url + "/api/v3/", MirrorDir: t.TempDir(), App: &App{ID: 1, InstallationID: 2, PrivateKey: "not a key"}}); err == nil {
		t.Fatal("New accepted a key that is not one")
	}
}

// A check run is written once per name and commit: later writes update it,
// whether its ID is remembered or not.
func TestUpsertCheckRun(t *testing.T) {
	f := appSetup(t)
	src := f.source(t, Options{App: &App{ID: appID, InstallationID: installationID, PrivateKey: secret.Secret(f.key)}})
	ctx := context.Background()
	id, err := src.UpsertCheckRun(ctx, "acme/infra", f.v1, 0, "twokey/apply/staging", "queued", "", "approvals 0 of 2", "waiting", "")
	if err != nil {
		t.Fatal(err)
	}
	// The ID forgotten: the run is found by name on the commit.
	again, err := src.UpsertCheckRun(ctx, "acme/infra", f.v1, 0, "twokey/apply/staging", "in_progress", "", "applying", "applying", "")
	if err != nil || again != id {
		t.Fatalf("second write: id %d, err %v; want %d", again, err, id)
	}
	if _, err := src.UpsertCheckRun(ctx, "acme/infra", f.v1, id, "twokey/apply/staging", "completed", "success", "applied", "applied", "https://slack.example/p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UpsertCheckRun(ctx, "acme/infra", f.v1, 0, "twokey/plan/staging", "completed", "failure", "plan failed", "plan failed", ""); err != nil {
		t.Fatal(err)
	}
	runs := f.gh.CheckRuns("acme/infra")
	if len(runs) != 2 {
		t.Fatalf("runs = %+v, want one per name", runs)
	}
	if r := runs[0]; r.ID != id || r.Status != "completed" || r.Conclusion != "success" || r.Updates != 2 || r.HeadSHA != f.v1 || r.AppID != appID ||
		r.DetailsURL != "https://slack.example/p1" || r.Title != "applied" {
		t.Errorf("apply run = %+v", r)
	}
	if r := runs[1]; r.Name != "twokey/plan/staging" || r.Conclusion != "failure" {
		t.Errorf("plan run = %+v", r)
	}
	// Without an App there are no check runs to write.
	plain := f.source(t, Options{Token: secret.Secret(f.gh.Token)})
	if plain.Checks() {
		t.Error("Checks() = true without an App")
	}
	if _, err := plain.UpsertCheckRun(ctx, "acme/infra", f.v1, 0, "x", "queued", "", "t", "s", ""); err == nil {
		t.Error("check run written without an App")
	}
}
