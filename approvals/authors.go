package approvals

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Author is one GitHub identity that wrote or committed part of a change,
// and how: "PR author", "commit author", "committer", "co-author".
// Login and ID are empty when GitHub knows no account for the address.
type Author struct {
	Login string `json:"login,omitempty"`
	ID    int64  `json:"id,omitempty"`
	Email string `json:"email,omitempty"`
	As    string `json:"as"`
}

// Identity is a person's linked GitHub account.
type Identity struct {
	Login  string
	ID     int64
	Emails []string
}

// Linked reports whether the identity names an account.
func (i Identity) Linked() bool { return i.ID > 0 || i.Login != "" }

// Errors of the authors rule.
var (
	// ErrAuthorApproval: the approver wrote or committed the change.
	ErrAuthorApproval = errors.New("code authors cannot approve their own change")
	// ErrNotLinked: the approver has no linked GitHub identity, so twokey
	// cannot tell whether they wrote the change.
	ErrNotLinked = errors.New("approvers here need a linked GitHub account")
)

// AuthorError says which part of the change the approver wrote.
type AuthorError struct{ Author Author }

func (e *AuthorError) Error() string {
	who := e.Author.Login
	if who == "" {
		who = e.Author.Email
	}
	return fmt.Sprintf("%v: GitHub %s is the change's %s", ErrAuthorApproval, who, e.Author.As)
}

func (e *AuthorError) Unwrap() error { return ErrAuthorApproval }

// Authored returns the first of authors that id is, matched by account
// number, login or commit address.
func Authored(authors []Author, id Identity) (Author, bool) {
	if !id.Linked() {
		return Author{}, false
	}
	for _, a := range authors {
		switch {
		case id.ID > 0 && a.ID == id.ID,
			id.Login != "" && strings.EqualFold(a.Login, id.Login),
			a.Email != "" && slices.ContainsFunc(id.Emails, func(e string) bool { return strings.EqualFold(e, a.Email) }):
			return a, true
		}
	}
	return Author{}, false
}

// CheckApprover applies an environment's authors rules to an approver with
// identity id (ok: the approver has one).
func CheckApprover(p Plan, id Identity, ok, excludeAuthors, mustBeLinked bool) error {
	if mustBeLinked && (!ok || !id.Linked()) {
		return ErrNotLinked
	}
	if excludeAuthors && ok {
		if a, found := Authored(p.Authors, id); found {
			return &AuthorError{Author: a}
		}
	}
	return nil
}

var (
	trailerRE = regexp.MustCompile(`(?im)^co-authored-by:\s*(.*?)\s*<([^<>\s]+@[^<>\s]+)>\s*$`)
	noreplyRE = regexp.MustCompile(`(?i)^(?:(\d+)\+)?([A-Za-z0-9-]+)@users\.noreply\.github\.com$`)
)

// CoAuthors reads the Co-authored-by trailers of a commit message. A
// GitHub no-reply address (12345+login@users.noreply.github.com) names its
// account; any other address is kept to match linked identities' emails.
func CoAuthors(message string) []Author {
	var out []Author
	for _, m := range trailerRE.FindAllStringSubmatch(message, -1) {
		out = append(out, ByEmail(m[2], "co-author"))
	}
	return out
}

// ByEmail is the author behind a commit address, with its account when the
// address is a GitHub no-reply one.
func ByEmail(email, as string) Author {
	a := Author{Email: email, As: as}
	if m := noreplyRE.FindStringSubmatch(email); m != nil {
		a.Login = m[2]
		a.ID, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return a
}
