package ref

import (
	"encoding/json"
	"errors"
	"testing"
)

// Each ref reads back as itself from its text and from JSON, where it is
// stored as that text; malformed text is an error that says why.
func TestRefRoundTrip(t *testing.T) {
	for in, want := range map[string]Ref{
		"pr-42": {PR: 42}, "PR42": {PR: 42}, "#7": {PR: 7},
		"sha-" + sha: {SHA: sha}, "ref-v1.2": {Tag: "v1.2"}, "": {},
	} {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Fatalf("Parse(%q) = %+v, %v; want %+v", in, got, err, want)
		}
		again, err := Parse(got.String())
		if err != nil || again != got {
			t.Fatalf("Parse(%q.String()) = %+v, %v", in, again, err)
		}
		b, err := json.Marshal(struct{ Ref Ref }{got})
		if err != nil {
			t.Fatal(err)
		}
		var back struct{ Ref Ref }
		if err := json.Unmarshal(b, &back); err != nil || back.Ref != got {
			t.Fatalf("JSON %s read back as %+v, %v", b, back.Ref, err)
		}
	}
	for _, bad := range []string{"pr-0", "pr--1", "sha-123", "ref-../x", "ref-a.lock", "main", "pr-1234567890"} {
		if _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q): err = %v, want ErrMalformed", bad, err)
		}
	}
	if err := json.Unmarshal([]byte(`{"Ref":"rm -rf"}`), &struct{ Ref Ref }{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("a stored ref that is no ref: err = %v", err)
	}
	for r, label := range map[Ref]string{{PR: 42}: "PR #42", {SHA: sha}: "commit 1a2b3c4", {Tag: "v1"}: "tag v1", {}: "the default branch"} {
		if got := r.Label(); got != label {
			t.Errorf("%+v.Label() = %q, want %q", r, got, label)
		}
	}
}

const sha = "1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
