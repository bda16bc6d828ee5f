package main

import (
	"context"
	"errors"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/ghlink"
)

// githubLinker is change.Linker on ghlink: GitHub's device flow.
type githubLinker struct{ l *ghlink.Linker }

// newLinker returns the configured linker, or nil when linking is off.
func newLinker(cfg *config.Config) (change.Linker, error) {
	if cfg.GitHub.OAuthClientID == "" {
		return nil, nil
	}
	l, err := ghlink.New(ghlink.Options{ClientID: cfg.GitHub.OAuthClientID, WebURL: cfg.GitHub.WebURL, APIURL: cfg.GitHub.APIURL})
	if err != nil {
		return nil, err
	}
	return githubLinker{l}, nil
}

func (g githubLinker) Start(ctx context.Context) (change.DeviceCode, error) {
	p, err := g.l.Start(ctx)
	if err != nil {
		return change.DeviceCode{}, err
	}
	return change.DeviceCode{UserCode: p.UserCode, URL: p.VerificationURI, Expires: p.Expires,
		Wait: func(ctx context.Context) (approvals.Identity, error) {
			a, err := g.l.Wait(ctx, p)
			switch {
			case errors.Is(err, ghlink.ErrExpired):
				return approvals.Identity{}, change.ErrLinkExpired
			case errors.Is(err, ghlink.ErrDenied):
				return approvals.Identity{}, change.ErrLinkDenied
			case err != nil:
				return approvals.Identity{}, err
			}
			id := approvals.Identity{Login: a.Login, ID: a.ID}
			if a.Email != "" {
				id.Emails = []string{a.Email}
			}
			return id, nil
		}}, nil
}
