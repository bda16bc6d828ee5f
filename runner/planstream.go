package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/twokey/twokey/approvals"
)

// maxStreamLine bounds one line of terraform's machine-readable output that
// planStream keeps; a longer line is skipped whole.
const maxStreamLine = 1 << 20

// maxDiagnostics bounds the error diagnostics a failed plan reports.
const maxDiagnostics = 20

// planStream reads `terraform plan -json` as it is written: the planned
// changes, in the order terraform reports them, and the error diagnostics.
// What it reads is a preview, shown while the saved plan is read back; the
// plan people approve is read from the saved plan's bytes.
type planStream struct {
	lines   uiLines
	changes []streamChange
	outputs int
	diags   []string
}

// uiLines hands terraform's machine-readable output, written in any
// pieces, to line one line at a time, skipping whole any line longer than
// maxStreamLine.
type uiLines struct {
	partial  []byte
	skipping bool // the rest of a line too long to keep
	line     func([]byte)
}

func (u *uiLines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(u.partial)+len(p) > maxStreamLine {
				u.partial, u.skipping = u.partial[:0], true
			} else if !u.skipping {
				u.partial = append(u.partial, p...)
			}
			break
		}
		if !u.skipping && len(u.partial)+i <= maxStreamLine {
			u.line(append(u.partial, p[:i]...))
		}
		u.partial, u.skipping, p = u.partial[:0], false, p[i+1:]
	}
	return n, nil
}

type streamChange struct {
	Resource struct {
		Addr string `json:"addr"`
	} `json:"resource"`
	Previous *struct {
		Addr string `json:"addr"`
	} `json:"previous_resource"`
	Action    string          `json:"action"`
	Importing json.RawMessage `json:"importing"`
}

type streamMessage struct {
	Type    string        `json:"type"`
	Change  *streamChange `json:"change"`
	Outputs map[string]struct {
		Action string `json:"action"`
	} `json:"outputs"`
	Diagnostic *struct {
		Severity string `json:"severity"`
		Summary  string `json:"summary"`
		Detail   string `json:"detail"`
		Range    *struct {
			Filename string `json:"filename"`
			Start    struct {
				Line int `json:"line"`
			} `json:"start"`
		} `json:"range"`
		Snippet *struct {
			Context *string `json:"context"`
			Code    string  `json:"code"`
			Values  []struct {
				Traversal string `json:"traversal"`
				Statement string `json:"statement"`
			} `json:"values"`
		} `json:"snippet"`
	} `json:"diagnostic"`
}

func newPlanStream() *planStream {
	s := &planStream{}
	s.lines.line = s.line
	return s
}

// Write takes terraform's output in any pieces.
func (s *planStream) Write(p []byte) (int, error) { return s.lines.Write(p) }

func (s *planStream) line(b []byte) {
	var m streamMessage
	if json.Unmarshal(b, &m) != nil {
		return
	}
	switch {
	case m.Type == "planned_change" && m.Change != nil && m.Change.Resource.Addr != "":
		s.changes = append(s.changes, *m.Change)
	case m.Type == "outputs":
		s.outputs = 0
		for _, o := range m.Outputs {
			if o.Action != "" && o.Action != "noop" {
				s.outputs++
			}
		}
	case m.Type == "diagnostic" && m.Diagnostic != nil && m.Diagnostic.Severity == "error" && len(s.diags) < maxDiagnostics:
		d := m.Diagnostic
		var b strings.Builder
		b.WriteString("Error: " + d.Summary)
		if d.Range != nil && d.Range.Filename != "" {
			fmt.Fprintf(&b, "\n\n  on %s line %d", d.Range.Filename, d.Range.Start.Line)
			if d.Snippet != nil && d.Snippet.Context != nil {
				b.WriteString(", in " + *d.Snippet.Context)
			}
			b.WriteString(":")
			if d.Snippet != nil {
				fmt.Fprintf(&b, "\n  %d: %s", d.Range.Start.Line, d.Snippet.Code)
				if len(d.Snippet.Values) > 0 {
					b.WriteString("\n    ├────────────────")
				}
				for _, v := range d.Snippet.Values {
					b.WriteString("\n    │ " + v.Traversal + " " + v.Statement)
				}
			}
		}
		if d.Detail != "" {
			b.WriteString("\n\n" + d.Detail)
		}
		s.diags = append(s.diags, b.String())
	}
}

// streamActions are the stream's names of the actions Summarize counts;
// the others (noop, read) change nothing.
var streamActions = map[string]approvals.Action{
	"create": approvals.ActionCreate, "update": approvals.ActionUpdate, "delete": approvals.ActionDelete,
	"replace": approvals.ActionReplace, "remove": approvals.ActionForget, "import": approvals.ActionImport,
	"move": approvals.ActionMove,
}

// Summary is what the stream says the plan does, counted as Summarize
// counts the saved plan.
func (s *planStream) Summary(changes bool) approvals.Summary {
	sum := approvals.Summary{Changes: changes, Outputs: s.outputs}
	for _, c := range s.changes {
		addr := c.Resource.Addr
		action, counted := streamActions[c.Action]
		if !counted {
			continue
		}
		r := approvals.Resource{Address: addr, Action: action,
			Imported: action == approvals.ActionImport || len(c.Importing) > 0 && string(c.Importing) != "null"}
		if c.Previous != nil && c.Previous.Addr != addr {
			r.From = c.Previous.Addr
		}
		count(&sum, r)
	}
	sortResources(&sum)
	return sum
}

// failure is a failed plan's error with the diagnostics terraform wrote to
// the stream (with -json it writes none to stderr).
func (s *planStream) failure(err error) error {
	if len(s.diags) == 0 {
		return err
	}
	return fmt.Errorf("%w\n\n%s", err, strings.Join(s.diags, "\n\n"))
}
