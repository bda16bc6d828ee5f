package audit

import (
	"errors"
	"testing"
	"time"
)

func chain(n int) []Event {
	var out []Event
	prev := ""
	for i := range n {
		e := Event{ID: string(rune('a' + i)), Time: time.Date(2026, 11, 21, 9, i, 0, 0, time.UTC), Type: Approval,
			Actor: Actor{ID: "UBOB", Name: "bob"}, Env: "staging", PlanID: "p-1", Detail: map[string]string{"n": string(rune('0' + i))}}
		e.Seal(prev)
		prev = e.Hash
		out = append(out, e)
	}
	return out
}

func TestVerify(t *testing.T) {
	events := chain(5)
	if err := Verify("", events); err != nil {
		t.Fatal(err)
	}
	// Trimmed at the front: the chain verifies from the last trimmed hash.
	if err := Verify(events[1].Hash, events[2:]); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		tamper func([]Event) []Event
		at     int
	}{
		{"edited actor", func(e []Event) []Event { e[2].Actor.Name = "mallory"; return e }, 2},
		{"edited detail", func(e []Event) []Event { e[3].Detail["n"] = "9"; return e }, 3},
		{"edited time", func(e []Event) []Event { e[1].Time = e[1].Time.Add(time.Second); return e }, 1},
		{"deleted", func(e []Event) []Event { return append(e[:2], e[3:]...) }, 2},
		{"reordered", func(e []Event) []Event { e[1], e[2] = e[2], e[1]; return e }, 1},
		{"resealed after an edit", func(e []Event) []Event { e[2].Type = ApplyFinished; e[2].Seal(e[2].Prev); return e }, 3},
	}
	for _, tt := range tests {
		err := Verify("", tt.tamper(chain(5)))
		var be *BreakError
		if !errors.As(err, &be) || be.Index != tt.at {
			t.Errorf("%s: err = %v, want a break at %d", tt.name, err, tt.at)
		}
	}
}

func TestCanonicalIsStable(t *testing.T) {
	a := Event{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)), Type: Command,
		Detail: map[string]string{"b": "2", "a": "1"}, ID: "1-0", Hash: "x"}
	b := a
	b.Time = a.Time.UTC()
	b.ID, b.Hash = "2-0", "y"
	if string(a.Canonical()) != string(b.Canonical()) {
		t.Fatalf("canonical forms differ:\n%s\n%s", a.Canonical(), b.Canonical())
	}
}
