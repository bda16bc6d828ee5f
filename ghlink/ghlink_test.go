package ghlink

import (
	"context"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/twokey/twokey/runner/ghsim"
)

func setup(t *testing.T, expires time.Duration) (*ghsim.Server, *Linker) {
	t.Helper()
	gh := ghsim.New()
	gh.Token = "ghs_the_bots_token_not_the_users"
	gh.DeviceExpires = expires
	gh.AddUser(ghsim.User{Login: "bob-gh", ID: 1002, Emails: []string{"bob@example.com"}})
	srv := httptest.NewServer(gh)
	t.Cleanup(srv.Close)
	l, err := New(Options{ClientID: "Iv1.twokey", WebURL: srv.URL + "/", APIURL: srv.URL + "/api/v3/"})
	if err != nil {
		t.Fatal(err)
	}
	return gh, l
}

// The device flow against GitHub's protocol: a code to enter, polling
// while authorization is pending, then the account read with the token.
func TestDeviceFlowLinks(t *testing.T) {
	gh, l := setup(t, time.Minute)
	ctx := context.Background()
	p, err := l.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p.UserCode == "" || p.VerificationURI == "" || time.Until(p.Expires) < 30*time.Second {
		t.Fatalf("pending = %+v", p)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond) // a poll or two finds it pending
		gh.AuthorizeDevice(p.UserCode, "bob-gh")
	}()
	acct, err := l.Wait(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if acct != (Account{Login: "bob-gh", ID: 1002, Email: "bob@example.com"}) {
		t.Fatalf("account = %+v", acct)
	}
	var polls int
	for _, r := range gh.Requests() {
		if r.Path == "/login/oauth/access_token" {
			polls++
		}
	}
	if polls < 2 {
		t.Errorf("%d token polls; the first should have found authorization pending", polls)
	}
}

func TestDeviceFlowDenied(t *testing.T) {
	gh, l := setup(t, time.Minute)
	ctx := context.Background()
	p, err := l.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gh.DenyDevice(p.UserCode)
	if _, err := l.Wait(ctx, p); !errors.Is(err, ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
	if gh.UserTokensIssued() != 0 {
		t.Error("a token was issued for a denied authorization")
	}
}

func TestDeviceFlowExpires(t *testing.T) {
	_, l := setup(t, 2*time.Second)
	ctx := context.Background()
	p, err := l.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Wait(ctx, p); !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
}
