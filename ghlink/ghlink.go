// Package ghlink links a person to their GitHub account through GitHub's
// OAuth device flow (golang.org/x/oauth2): it asks GitHub for a code the
// person enters at GitHub's verification page, polls until they authorize
// (or deny, or the code expires), and reads who they are with go-github's
// GET /user. The OAuth token is used for that one request and dropped; it
// is never stored or logged. The flow needs no public URL, so it fits a
// bot that talks to Slack over Socket Mode.
package ghlink

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v89/github"
	"golang.org/x/oauth2"
)

// Errors a person is told about.
var (
	// ErrExpired: nobody entered the code before it expired.
	ErrExpired = errors.New("the GitHub device code expired before it was entered")
	// ErrDenied: the person cancelled at GitHub.
	ErrDenied = errors.New("the GitHub authorization was denied")
)

// Options configure a Linker.
type Options struct {
	// ClientID is the GitHub OAuth app's (or GitHub App's) client ID, with
	// device flow enabled. No client secret is needed.
	ClientID string
	// WebURL is GitHub's web base, default https://github.com/ (GitHub
	// Enterprise: https://ghe.example/); APIURL the REST base for GET /user.
	WebURL, APIURL string
	HTTPClient     *http.Client
}

// Linker runs the device flow.
type Linker struct {
	o   Options
	cfg oauth2.Config
}

// New returns a Linker.
func New(o Options) (*Linker, error) {
	if o.ClientID == "" {
		return nil, errors.New("ghlink: ClientID is required")
	}
	if o.WebURL == "" {
		o.WebURL = "https://github.com/"
	}
	if o.APIURL == "" {
		o.APIURL = "https://api.github.com/"
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	web := strings.TrimSuffix(o.WebURL, "/")
	return &Linker{o: o, cfg: oauth2.Config{
		ClientID: o.ClientID,
		// No scope: GET /user answers with public profile data.
		Endpoint: oauth2.Endpoint{
			DeviceAuthURL: web + "/login/device/code",
			TokenURL:      web + "/login/oauth/access_token",
			AuthStyle:     oauth2.AuthStyleInParams,
		},
	}}, nil
}

// Pending is a device authorization waiting for the person: the code to
// enter, where, and until when.
type Pending struct {
	UserCode        string
	VerificationURI string
	Expires         time.Time
	da              *oauth2.DeviceAuthResponse
}

// Account is a GitHub account.
type Account struct {
	Login string
	ID    int64
	Email string // the public email, if any
}

// Start asks GitHub for a device code.
func (l *Linker) Start(ctx context.Context) (Pending, error) {
	da, err := l.cfg.DeviceAuth(l.ctx(ctx))
	if err != nil {
		return Pending{}, fmt.Errorf("github device code: %w", err)
	}
	return Pending{UserCode: da.UserCode, VerificationURI: da.VerificationURI, Expires: da.Expiry, da: da}, nil
}

// Wait polls until the person authorizes, denies or the code expires, then
// reads their account with the token and drops the token.
func (l *Linker) Wait(ctx context.Context, p Pending) (Account, error) {
	if p.da == nil {
		return Account{}, errors.New("ghlink: Wait needs a Pending from Start")
	}
	tok, err := l.cfg.DeviceAccessToken(l.ctx(ctx), p.da)
	var re *oauth2.RetrieveError
	switch {
	case errors.As(err, &re) && re.ErrorCode == "expired_token",
		errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
		return Account{}, ErrExpired
	case errors.As(err, &re) && re.ErrorCode == "access_denied":
		return Account{}, ErrDenied
	case err != nil:
		return Account{}, fmt.Errorf("github device flow: %w", err)
	}
	gh, err := github.NewClient(github.WithHTTPClient(l.o.HTTPClient), github.WithURLs(&l.o.APIURL, &l.o.APIURL),
		github.WithAuthToken(tok.AccessToken))
	if err != nil {
		return Account{}, err
	}
	u, _, err := gh.Users.Get(ctx, "")
	if err != nil {
		return Account{}, fmt.Errorf("github GET /user: %w", err)
	}
	if u.GetLogin() == "" || u.GetID() <= 0 {
		return Account{}, errors.New("github GET /user: no login or ID")
	}
	return Account{Login: u.GetLogin(), ID: u.GetID(), Email: u.GetEmail()}, nil
}

func (l *Linker) ctx(ctx context.Context) context.Context {
	return context.WithValue(ctx, oauth2.HTTPClient, l.o.HTTPClient)
}
