package config

import (
	"strings"
	"testing"
	"time"
)

func TestDriftSchedule(t *testing.T) {
	withDrift := func(d string) string {
		return strings.Replace(minimal, "        vault: {apply: {role: staging-apply}}\n",
			"        vault: {apply: {role: staging-apply}}\n        drift: "+d+"\n", 1)
	}
	c, err := Parse(strings.NewReader(withDrift(`{schedule: "0 6 * * *", channel: CDRIFT, quiet: true}`)))
	if err != nil {
		t.Fatal(err)
	}
	d := c.Projects[0].Environments[0].Drift
	if d.Schedule != "0 6 * * *" || d.Channel != "CDRIFT" || !d.Quiet {
		t.Fatalf("drift = %+v", d)
	}
	for spec, next := range map[string]string{
		"0 6 * * *":     "2026-12-01T06:00:00Z",
		"*/2 * * * * *": "2026-11-30T14:00:02Z", // a seconds field
		"@hourly":       "2026-11-30T15:00:00Z",
	} {
		s, err := DriftSchedule(spec)
		if err != nil {
			t.Errorf("%q: %v", spec, err)
			continue
		}
		if got := s.Next(time.Date(2026, 11, 30, 14, 0, 0, 0, time.UTC)).Format(time.RFC3339); got != next {
			t.Errorf("%q: next %s, want %s", spec, got, next)
		}
	}
	_, err = Parse(strings.NewReader(withDrift(`{schedule: "every morning"}`)))
	for _, want := range []string{`drift.schedule "every morning"`, "drift.channel is needed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in:\n%v", want, err)
		}
	}
}
