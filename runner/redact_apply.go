package runner

import (
	"context"
	"strings"
	"time"
)

// showTimeout bounds the show a failed apply runs to learn what its saved
// plan marks sensitive.
const showTimeout = time.Minute

// applyError is a failed apply's error, redacted of the apply credential's
// values and of every value the saved plan marks sensitive. An apply says
// more than a plan can: a provisioner that fails prints its command and
// output, with a nonsensitive() variable in them. The plan's sensitive
// values are read (terraform show -json on the same read-only plan file)
// only when the apply failed, so a good apply costs nothing more. If they
// cannot be read, terraform's output is withheld rather than shown
// half-redacted.
func (r *Runner) applyError(ru *run, planFile string, err error, cred *Credential) error {
	raw := strings.TrimSpace(err.Error())
	ctx, cancel := context.WithTimeout(ru.ctx, showTimeout)
	defer cancel()
	plan, serr := ru.tf.ShowPlanFile(ctx, planFile)
	if serr != nil {
		r.o.Logger.Error("failed apply: its saved plan could not be read to redact terraform's output, so the output is withheld",
			"env", ru.target.Env, "err", Redact(serr.Error(), cred.Values()...))
		out := "terraform's output is withheld: the saved plan could not be read to redact its sensitive values (see the runner's log)"
		if strings.Contains(raw, staleMarker) {
			out = staleMarker + "; " + out // the one thing the caller reads in it
		}
		return &TerraformError{Step: "apply", Output: out}
	}
	return &TerraformError{Step: "apply", Output: Redact(raw, append(cred.Values(), SensitiveValues(plan)...)...)}
}

// staleMarker is how terraform says it refused a saved plan because the
// state moved on, before changing anything.
const staleMarker = "Saved plan is stale"
