package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
)

// progress reads terraform's machine-readable apply output (-json) and
// turns it into short, redacted lines: one per finished resource, the change
// summary, and error diagnostics.
type progress struct {
	report func(string)
	cred   *Credential

	mu    sync.Mutex
	lines uiLines
	sum   string
	diags []string
}

func newProgress(report func(string), cred *Credential) *progress {
	if report == nil {
		report = func(string) {}
	}
	p := &progress{report: report, cred: cred}
	p.lines.line = p.line
	return p
}

// uiMessage is the subset of terraform's JSON UI messages progress reads.
type uiMessage struct {
	Type string `json:"type"`
	Hook struct {
		Resource struct {
			Addr string `json:"addr"`
		} `json:"resource"`
		Action  string  `json:"action"`
		Elapsed float64 `json:"elapsed_seconds"`
	} `json:"hook"`
	Changes struct {
		Add       int    `json:"add"`
		Change    int    `json:"change"`
		Remove    int    `json:"remove"`
		Operation string `json:"operation"`
	} `json:"changes"`
	Diagnostic struct {
		Severity string `json:"severity"`
		Summary  string `json:"summary"`
		Detail   string `json:"detail"`
		Address  string `json:"address"`
	} `json:"diagnostic"`
}

func (p *progress) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lines.Write(b)
}

func (p *progress) line(b []byte) {
	var m uiMessage
	if json.Unmarshal(b, &m) != nil {
		return
	}
	switch m.Type {
	case "apply_complete":
		p.report(fmt.Sprintf("%s: %s complete (%.0fs)", m.Hook.Resource.Addr, m.Hook.Action, m.Hook.Elapsed))
	case "apply_errored":
		p.report(fmt.Sprintf("%s: %s failed", m.Hook.Resource.Addr, m.Hook.Action))
	case "change_summary":
		p.sum = fmt.Sprintf("%d added, %d changed, %d destroyed", m.Changes.Add, m.Changes.Change, m.Changes.Remove)
	case "diagnostic":
		if m.Diagnostic.Severity == "error" {
			d := strings.TrimSpace(m.Diagnostic.Summary + ": " + m.Diagnostic.Detail)
			if m.Diagnostic.Address != "" {
				d = m.Diagnostic.Address + ": " + d
			}
			p.diags = append(p.diags, Redact(d, p.cred.Values()...))
		}
	}
}

func (p *progress) summary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sum
}

// diagnostics returns the error diagnostics as one error, or nil.
func (p *progress) diagnostics() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.diags) == 0 {
		return nil
	}
	return errors.New(strings.Join(p.diags, "\n"))
}
