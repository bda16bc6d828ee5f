// Package ref names what twokey plans: the head of a pull request, or — to
// roll back — a commit or tag of the default branch. It is the one
// definition the commands, the runner, plans and the audit record share.
package ref

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Ref names a revision to plan. At most one field is set; the zero Ref is
// the default branch's head (what a drift check plans).
type Ref struct {
	PR  int    // pull request number, > 0
	SHA string // full commit SHA, 40 lowercase hex digits
	Tag string // tag name
}

// ErrMalformed: the text is not a ref; MalformedError says why.
var ErrMalformed = errors.New("malformed revision")

// MalformedError says why a text is not a ref, in words a person reads.
type MalformedError struct{ Detail string }

func (e *MalformedError) Error() string { return e.Detail }
func (e *MalformedError) Unwrap() error { return ErrMalformed }

var (
	prRE  = regexp.MustCompile(`^(?:(?i:pr)-?|#)([0-9]{1,9})$`)
	shaRE = regexp.MustCompile(`^sha-([0-9a-f]{40})$`)
	// Tags: git's rules, kept simple — no "..", no trailing "/" or ".lock".
	tagRE = regexp.MustCompile(`^ref-([A-Za-z0-9][A-Za-z0-9._/-]{0,99})$`)
)

// Parse reads a ref the way people type it: pr-<n> (also PR-<n>, pr<n>,
// #<n>), sha-<40 hex digits> or ref-<tag>. The empty text is the zero Ref.
func Parse(s string) (Ref, error) {
	if s == "" {
		return Ref{}, nil
	}
	if m := shaRE.FindStringSubmatch(strings.ToLower(s)); m != nil {
		return Ref{SHA: m[1]}, nil
	}
	if m := tagRE.FindStringSubmatch(s); m != nil && !strings.Contains(m[1], "..") && !strings.HasSuffix(m[1], "/") &&
		!strings.HasSuffix(m[1], ".lock") {
		return Ref{Tag: m[1]}, nil
	}
	m := prRE.FindStringSubmatch(s)
	if m == nil {
		return Ref{}, &MalformedError{Detail: fmt.Sprintf("%q is not a revision; write pr-<number> (e.g. pr-42), sha-<40 hex digits> or ref-<tag>", truncate(s, 40))}
	}
	n, _ := strconv.Atoi(m[1]) // at most nine digits: always fits
	if n == 0 {
		return Ref{}, &MalformedError{Detail: "pull request numbers start at 1"}
	}
	return Ref{PR: n}, nil
}

// String renders the ref the way a user types it: pr-42, sha-…, ref-v1.2;
// "" for the zero Ref.
func (r Ref) String() string {
	switch {
	case r.SHA != "":
		return "sha-" + r.SHA
	case r.Tag != "":
		return "ref-" + r.Tag
	case r.PR > 0:
		return "pr-" + strconv.Itoa(r.PR)
	}
	return ""
}

// Label names the ref for people: "PR #42", "commit 1a2b3c4", "tag v1.2",
// "the default branch".
func (r Ref) Label() string {
	switch {
	case r.SHA != "":
		return "commit " + r.SHA[:min(len(r.SHA), 7)]
	case r.Tag != "":
		return "tag " + r.Tag
	case r.PR > 0:
		return "PR #" + strconv.Itoa(r.PR)
	}
	return "the default branch"
}

// IsZero reports whether r is the default branch's head.
func (r Ref) IsZero() bool { return r == Ref{} }

// MarshalText stores a ref as it is typed ("pr-42"), so plans, jobs and
// records keep the form people read.
func (r Ref) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads what MarshalText wrote; anything else is an error.
func (r *Ref) UnmarshalText(b []byte) error {
	v, err := Parse(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// truncate shortens s to at most n bytes without splitting a character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
