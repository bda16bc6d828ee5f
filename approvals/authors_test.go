package approvals

import (
	"errors"
	"testing"

	"github.com/twokey/twokey/attest"
)

func TestCoAuthors(t *testing.T) {
	got := CoAuthors("Fix it\n\nSigned-off-by: A <a@x>\nCo-authored-by: Carol <1003+carol-gh@users.noreply.github.com>\n" +
		"co-authored-by:Dan Smith <dan@example.com>\nCo-authored-by: Old <old-login@users.noreply.github.com>\nnot Co-authored-by: X <x@y>")
	want := []Author{
		{Login: "carol-gh", ID: 1003, Email: "1003+carol-gh@users.noreply.github.com", As: "co-author"},
		{Email: "dan@example.com", As: "co-author"},
		{Login: "old-login", Email: "old-login@users.noreply.github.com", As: "co-author"},
	}
	if len(got) != len(want) {
		t.Fatalf("CoAuthors = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("CoAuthors[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestCheckApprover(t *testing.T) {
	p := Plan{Authors: []Author{
		{Login: "bob-gh", ID: 1002, As: "PR author"},
		{Email: "dan@example.com", As: "co-author"},
		{Login: "Renamed", ID: 1009, As: "committer"},
	}}
	bob := Identity{Login: "BOB-GH", ID: 1002}
	dan := Identity{Login: "dan", ID: 1004, Emails: []string{"Dan@Example.com"}}
	renamed := Identity{Login: "new-name", ID: 1009} // the account number outlives a rename
	carol := Identity{Login: "carol-gh", ID: 1003}
	for _, tt := range []struct {
		name            string
		id              Identity
		ok              bool
		exclude, linked bool
		want            error
	}{
		{"PR author", bob, true, true, true, ErrAuthorApproval},
		{"co-author by address", dan, true, true, true, ErrAuthorApproval},
		{"committer, renamed", renamed, true, true, false, ErrAuthorApproval},
		{"someone else", carol, true, true, true, nil},
		{"author, rule off", bob, true, false, true, nil},
		{"unlinked", Identity{}, false, true, true, ErrNotLinked},
		{"unlinked, linking optional", Identity{}, false, true, false, nil},
	} {
		err := CheckApprover(p, tt.id, tt.ok, tt.exclude, tt.linked)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	var ae *AuthorError
	if err := CheckApprover(p, bob, true, true, true); !errors.As(err, &ae) || ae.Author.As != "PR author" {
		t.Errorf("the refusal does not say why: %v", err)
	}
}

// A Redis writer who drops an author from a sealed plan voids it: its terms
// no longer match the seal, so no approval on it counts.
func TestSealCoversAuthors(t *testing.T) {
	n := NewNotary(newSigner(t), attest.Keyring{})
	p := pendingPlan(t, 2, true)
	p.Authors = []Author{{Login: "bob-gh", ID: 1002, As: "PR author"}}
	p, err := n.Seal(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.CheckSeal(p); err != nil {
		t.Fatal(err)
	}
	p.Authors = nil
	if _, _, err := n.Approve(p, "UBOB", true, t0); !errors.Is(err, ErrForged) {
		t.Fatalf("approve on a plan whose authors were dropped: err = %v, want ErrForged", err)
	}
}
