package approvals

import (
	"errors"
	"fmt"
	"time"
)

// Applied is a commit applied successfully in an environment, and when it
// first was.
type Applied struct {
	SHA string
	At  time.Time
}

// ErrNotPromoted: the revision has not been through the environment that
// must come first.
var ErrNotPromoted = errors.New("not promoted")

// PromotionError says which environment must come first and what is missing.
type PromotionError struct {
	Requires string
	SHA      string
	Applied  bool      // the commit was applied in Requires …
	At       time.Time // … at this time …
	Soak     time.Duration
	Left     time.Duration // … but this much of the soak remains
}

func (e *PromotionError) Error() string {
	if !e.Applied {
		return fmt.Sprintf("%s has not been applied in %s", short(e.SHA), e.Requires)
	}
	return fmt.Sprintf("%s was applied in %s at %s; %s of its %s soak remain", short(e.SHA), e.Requires,
		e.At.UTC().Format("15:04 MST"), e.Left.Round(time.Minute), e.Soak)
}

func (e *PromotionError) Unwrap() error { return ErrNotPromoted }

// Promoted decides whether a commit may go to an environment that requires
// another: it must have been applied there successfully, at least soak ago.
// appliedAt and applied describe the commit in the required environment.
func Promoted(requires, sha string, soak time.Duration, appliedAt time.Time, applied bool, now time.Time) error {
	if requires == "" {
		return nil
	}
	if !applied {
		return &PromotionError{Requires: requires, SHA: sha, Soak: soak}
	}
	if left := appliedAt.Add(soak).Sub(now); left > 0 {
		return &PromotionError{Requires: requires, SHA: sha, Applied: true, At: appliedAt, Soak: soak, Left: left}
	}
	return nil
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
