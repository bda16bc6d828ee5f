package runner

import (
	"reflect"
	"strings"
	"testing"
)

const streamSample = `{"@level":"info","type":"version","terraform":"1.12.2","ui":"1.2"}
{"type":"planned_change","change":{"resource":{"addr":"terraform_data.b"},"action":"replace","reason":"requested"}}
{"type":"planned_change","change":{"resource":{"addr":"terraform_data.a"},"action":"create"}}
{"type":"planned_change","change":{"resource":{"addr":"terraform_data.m"},"previous_resource":{"addr":"terraform_data.old"},"action":"update"}}
{"type":"planned_change","change":{"resource":{"addr":"terraform_data.i"},"action":"import","importing":{"id":"x"}}}
{"type":"planned_change","change":{"resource":{"addr":"data.terraform_remote_state.r"},"action":"read"}}
not json at all
{"type":"outputs","outputs":{"kept":{"sensitive":false,"action":"noop"},"new":{"sensitive":true,"action":"create"}}}
{"type":"diagnostic","diagnostic":{"severity":"warning","summary":"ignored"}}
{"type":"diagnostic","diagnostic":{"severity":"error","summary":"Bad","detail":"why","range":{"filename":"main.tf","start":{"line":3}},"snippet":{"context":"resource \"terraform_data\" \"a\"","code":"  input = x","values":[{"traversal":"var.x","statement":"is \"[redacted]\""}]}}}
`

// The stream reads the same in any pieces terraform's output arrives in.
func TestPlanStreamPieces(t *testing.T) {
	whole := newPlanStream()
	if _, err := whole.Write([]byte(streamSample)); err != nil {
		t.Fatal(err)
	}
	want := whole.Summary(true)
	if got := want.Counts(); got != "+2 ~1 -1 ±1 →1 import 1 outputs 1" {
		t.Errorf("counts = %q (%+v)", got, want)
	}
	if want.Resources[0].Address != "terraform_data.a" {
		t.Errorf("resources not in address order: %+v", want.Resources)
	}
	for size := 1; size < 64; size += 7 {
		s := newPlanStream()
		for b := []byte(streamSample); len(b) > 0; {
			n := min(size, len(b))
			if _, err := s.Write(b[:n]); err != nil {
				t.Fatal(err)
			}
			b = b[n:]
		}
		if got := s.Summary(true); !reflect.DeepEqual(got, want) {
			t.Errorf("pieces of %d: %+v, want %+v", size, got, want)
		}
		if !reflect.DeepEqual(s.diags, whole.diags) {
			t.Errorf("pieces of %d: diagnostics %q", size, s.diags)
		}
	}
	err := whole.failure(errString("exit status 1"))
	for _, part := range []string{"exit status 1", "Error: Bad", "on main.tf line 3, in resource \"terraform_data\" \"a\":",
		"3:   input = x", "│ var.x is \"[redacted]\"", "why"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("failure lacks %q:\n%s", part, err)
		}
	}
	if strings.Contains(err.Error(), "ignored") {
		t.Errorf("a warning was reported as the failure:\n%s", err)
	}
}

// A line longer than the stream keeps is skipped whole; the lines around
// it still count.
func TestPlanStreamSkipsHugeLines(t *testing.T) {
	s := newPlanStream()
	huge := `{"type":"planned_change","change":{"resource":{"addr":"terraform_data.huge"},"action":"create"},"pad":"` +
		strings.Repeat("x", maxStreamLine) + "\"}\n"
	in := `{"type":"planned_change","change":{"resource":{"addr":"terraform_data.a"},"action":"create"}}` + "\n" + huge +
		`{"type":"planned_change","change":{"resource":{"addr":"terraform_data.b"},"action":"delete"}}` + "\n"
	for b := []byte(in); len(b) > 0; {
		n := min(4096, len(b))
		_, _ = s.Write(b[:n])
		b = b[n:]
	}
	if got := s.Summary(true).Counts(); got != "+1 ~0 -1" {
		t.Errorf("counts = %q", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
