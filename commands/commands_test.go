package commands

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	tests := []struct {
		text    string
		want    Command
		wantErr error
	}{
		{text: "plan staging pr-42", want: Plan{Env: "staging", Ref: Ref{PR: 42}}},
		{text: "  plan   prod   PR-7  ", want: Plan{Env: "prod", Ref: Ref{PR: 7}}},
		{text: "plan prod pr42", want: Plan{Env: "prod", Ref: Ref{PR: 42}}},
		{text: "plan prod #42", want: Plan{Env: "prod", Ref: Ref{PR: 42}}},
		{text: "PLAN prod pr-1", want: Plan{Env: "prod", Ref: Ref{PR: 1}}},
		{text: "plan network prod pr-42", want: Plan{Project: "network", Env: "prod", Ref: Ref{PR: 42}}},
		{text: "plan prod sha-" + strings.Repeat("ab", 20), want: Plan{Env: "prod", Ref: Ref{SHA: strings.Repeat("ab", 20)}}},
		{text: "plan prod SHA-" + strings.Repeat("AB", 20), want: Plan{Env: "prod", Ref: Ref{SHA: strings.Repeat("ab", 20)}}},
		{text: "plan prod ref-v1.4.2", want: Plan{Env: "prod", Ref: Ref{Tag: "v1.4.2"}}},
		{text: "plan prod ref-release/2026-11", want: Plan{Env: "prod", Ref: Ref{Tag: "release/2026-11"}}},
		{text: "status", want: Status{}},
		{text: "status prod", want: Status{Env: "prod"}},
		{text: "status network prod", want: Status{Project: "network", Env: "prod"}},
		{text: "unlock staging stuck after a crash", want: Unlock{Env: "staging", Reason: "stuck after a crash"}},
		{text: `unlock infra/prod "bot died, lease stuck"`, want: Unlock{Project: "infra", Env: "prod", Reason: "bot died, lease stuck"}},
		{text: "unlock prod \u201csmart quotes\u201d", want: Unlock{Env: "prod", Reason: "smart quotes"}},
		{text: "history staging", want: History{Env: "staging", N: 10}},
		{text: "history staging 25", want: History{Env: "staging", N: 25}},
		{text: "history network prod 3", want: History{Project: "network", Env: "prod", N: 3}},
		{text: "drift prod", want: Drift{Env: "prod"}},
		{text: "drift network prod", want: Drift{Project: "network", Env: "prod"}},
		{text: "drift network/prod", want: Drift{Project: "network", Env: "prod"}},
		{text: "drift", wantErr: ErrUsage},
		{text: "drift a b c", wantErr: ErrUsage},
		{text: "drift PROD!", wantErr: ErrMalformedName},
		{text: "drift network/", wantErr: ErrMalformedName},
		{text: "show p-7k2m9qab", want: Show{PlanID: "p-7k2m9qab"}},
		{text: "show bg-7k2m9qab", want: Show{PlanID: "bg-7k2m9qab"}},
		{text: `breakglass prod 30m "db failover stuck, need to resize"`,
			want: BreakGlass{Env: "prod", Duration: 30 * time.Minute, Reason: "db failover stuck, need to resize"}},
		{text: "breakglass network prod 1h30m disk full https://inc.example.com/INC-7 see there",
			want: BreakGlass{Project: "network", Env: "prod", Duration: 90 * time.Minute,
				Reason: "disk full https://inc.example.com/INC-7 see there", Incident: "https://inc.example.com/INC-7"}},
		{text: "breakglass", want: BreakGlassForm{}},
		{text: "break-glass revoke bg-7k2m9qab", want: BreakGlassRevoke{ID: "bg-7k2m9qab"}},
		{text: "", want: Help{}},
		{text: "help", want: Help{}},
		{text: "--help", want: Help{}},

		{text: "breakglass prod 30m", wantErr: ErrUsage},
		{text: `breakglass prod 30m ""`, wantErr: ErrUsage},
		{text: "breakglass prod soon fire", wantErr: ErrUsage},
		{text: "breakglass prod 30s fire", wantErr: ErrUsage},
		{text: "breakglass prod -5m fire", wantErr: ErrUsage},
		{text: "breakglass PROD 5m fire", wantErr: ErrMalformedName},
		{text: "breakglass revoke", wantErr: ErrUsage},
		{text: "breakglass revoke p-7k2m9qab", wantErr: ErrUsage},
		{text: "plan", wantErr: ErrUsage},
		{text: "plan staging", wantErr: ErrUsage},
		{text: "plan prod #", wantErr: ErrMalformedRef},
		{text: "plan a b c pr-1", wantErr: ErrUsage},
		{text: "plan staging 42", wantErr: ErrMalformedRef},
		{text: "plan staging pr-", wantErr: ErrMalformedRef},
		{text: "plan staging pr-0", wantErr: ErrMalformedRef},
		{text: "plan staging pr--1", wantErr: ErrMalformedRef},
		{text: "plan staging pr-1234567890", wantErr: ErrMalformedRef},
		{text: "plan staging pr-4x", wantErr: ErrMalformedRef},
		{text: "plan prod sha-abc123", wantErr: ErrMalformedRef},
		{text: "plan prod ref-../../etc", wantErr: ErrMalformedRef},
		{text: "plan prod ref-v1..2", wantErr: ErrMalformedRef},
		{text: "plan prod ref-", wantErr: ErrMalformedRef},
		{text: "plan prod ref-x.lock", wantErr: ErrMalformedRef},
		{text: "plan Staging pr-4", wantErr: ErrMalformedName},
		{text: "plan ../prod pr-4", wantErr: ErrMalformedName},
		{text: "plan st*ging pr-4", wantErr: ErrMalformedName},
		{text: "status a b c", wantErr: ErrUsage},
		{text: "status PROD", wantErr: ErrMalformedName},
		{text: "apply prod", wantErr: ErrUnknownCommand},
		{text: "unlock staging", wantErr: ErrUsage},
		{text: "history", wantErr: ErrUsage},
		{text: "history staging 0", wantErr: ErrUsage},
		{text: "history staging 51", wantErr: ErrUsage},
		{text: "history a b c", wantErr: ErrUsage},
		{text: "show", wantErr: ErrUsage},
		{text: "show p-../etc", wantErr: ErrUsage},
		{text: "unlock", wantErr: ErrUsage},
		{text: "unlock Prod reason", wantErr: ErrMalformedName},
		{text: "unlock a/b/c reason", wantErr: ErrMalformedName},
		{text: `unlock prod "unclosed`, wantErr: ErrUsage},
		{text: "unlock prod " + strings.Repeat("r", maxReason+1), wantErr: ErrUsage},
		{text: "destroy everything", wantErr: ErrUnknownCommand},
		{text: "plan prod pr-1 " + strings.Repeat("x", maxTextLen), wantErr: ErrUsage},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			got, err := Parse(tt.text)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Parse(%q) error = %v, want %v", tt.text, err, tt.wantErr)
				}
				var pe *Error
				if !errors.As(err, &pe) || pe.Detail == "" {
					t.Fatalf("Parse(%q) error %#v is not a *Error with detail", tt.text, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q) unexpected error: %v", tt.text, err)
			}
			if got != tt.want {
				t.Fatalf("Parse(%q) = %#v, want %#v", tt.text, got, tt.want)
			}
		})
	}
}

func TestUsageNamesEveryCommand(t *testing.T) {
	for _, verb := range []string{"/tf plan", "/tf status", "/tf history", "/tf show", "/tf unlock", "/tf drift", "/tf help"} {
		if !strings.Contains(Usage, verb) {
			t.Errorf("Usage does not mention %q", verb)
		}
	}
}

func TestErrorDetailIsBounded(t *testing.T) {
	_, err := Parse(strings.Repeat("é", 1000))
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("want *Error, got %v", err)
	}
	if len(pe.Detail) > 200 || !utf8.ValidString(pe.Detail) {
		t.Fatalf("detail not bounded or not UTF-8: %q", pe.Detail)
	}
}

// FuzzParse checks that Parse never panics, that every error is a *Error
// carrying a known sentinel and a short detail, and that every accepted
// command holds only well-formed names and refs.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"plan staging pr-42", "plan network prod #7", "status", "status prod",
		"help", "apply prod", "plan ../x pr-1", "plan prod pr-99999999999", "\x00plan",
		`unlock infra/prod "stuck"`, "unlock prod \u201cx\u201d", `plan "staging" pr-1`, "history prod 5", "show p-abcdefgh",
		`breakglass prod 30m "db stuck"`, "breakglass infra prod 1h x https://a.b/c", "breakglass revoke bg-abcdefgh", "breakglass",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		cmd, err := Parse(text)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error is not *Error: %v", err)
			}
			known := errors.Is(err, ErrUnknownCommand) || errors.Is(err, ErrUsage) ||
				errors.Is(err, ErrMalformedRef) || errors.Is(err, ErrMalformedName)
			if !known || pe.Detail == "" || len(pe.Detail) > 300 {
				t.Fatalf("bad error for %q: %#v", text, pe)
			}
			return
		}
		switch c := cmd.(type) {
		case Plan:
			set := 0
			for _, ok := range []bool{c.Ref.PR > 0, len(c.Ref.SHA) == 40, c.Ref.Tag != ""} {
				if ok {
					set++
				}
			}
			if set != 1 || c.Ref.PR < 0 || !nameRE.MatchString(c.Env) || (c.Project != "" && !nameRE.MatchString(c.Project)) {
				t.Fatalf("accepted malformed plan %#v from %q", c, text)
			}
			again, err := Parse("plan " + strings.TrimSpace(c.Project+" "+c.Env) + " " + c.Ref.String())
			if err != nil || again != cmd {
				t.Fatalf("round trip of %#v gave %#v, %v", c, again, err)
			}
		case Status:
			if (c.Env != "" && !nameRE.MatchString(c.Env)) || (c.Project != "" && !nameRE.MatchString(c.Project)) {
				t.Fatalf("accepted malformed status %#v from %q", c, text)
			}
		case Unlock:
			if c.Reason == "" || len(c.Reason) > maxReason || !nameRE.MatchString(c.Env) || (c.Project != "" && !nameRE.MatchString(c.Project)) {
				t.Fatalf("accepted malformed unlock %#v from %q", c, text)
			}
		case History:
			if c.N < 1 || c.N > MaxHistory || !nameRE.MatchString(c.Env) {
				t.Fatalf("accepted malformed history %#v from %q", c, text)
			}
		case Show:
			if !planIDRE.MatchString(c.PlanID) && !grantRE.MatchString(c.PlanID) {
				t.Fatalf("accepted malformed show %#v from %q", c, text)
			}
		case BreakGlass:
			if c.Reason == "" || len(c.Reason) > maxReason || c.Duration < time.Minute || !nameRE.MatchString(c.Env) ||
				(c.Project != "" && !nameRE.MatchString(c.Project)) || (c.Incident != "" && !strings.Contains(c.Reason, c.Incident)) {
				t.Fatalf("accepted malformed breakglass %#v from %q", c, text)
			}
		case BreakGlassRevoke:
			if !grantRE.MatchString(c.ID) {
				t.Fatalf("accepted malformed revoke %#v from %q", c, text)
			}
		case Help, BreakGlassForm:
		default:
			t.Fatalf("unexpected command type %T", cmd)
		}
	})
}
