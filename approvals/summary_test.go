package approvals

import "testing"

func TestSummaryHasChangesAndCounts(t *testing.T) {
	tests := []struct {
		s       Summary
		changes bool
		counts  string
	}{
		{Summary{}, false, "+0 ~0 -0"},
		{Summary{Import: 1}, true, "+0 ~0 -0 import 1"},
		{Summary{Move: 2}, true, "+0 ~0 -0 →2"},
		{Summary{Forget: 1}, true, "+0 ~0 -0 ⇥1"},
		{Summary{Outputs: 1}, true, "+0 ~0 -0 outputs 1"},
		{Summary{Changes: true}, true, "+0 ~0 -0"}, // terraform says so, even if nothing here counts it
		{Summary{Add: 2, Destroy: 1, Replace: 1}, true, "+2 ~0 -1 ±1"},
	}
	for _, tt := range tests {
		if got := tt.s.HasChanges(); got != tt.changes {
			t.Errorf("%+v.HasChanges() = %v", tt.s, got)
		}
		if got := tt.s.Counts(); got != tt.counts {
			t.Errorf("%+v.Counts() = %q, want %q", tt.s, got, tt.counts)
		}
	}
}
