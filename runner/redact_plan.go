package runner

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/terraform-exec/tfexec"
)

// probeTarget is a resource address no configuration has: a plan targeting
// it plans nothing, but still evaluates the root module's variables.
const probeTarget = "terraform_data.twokey_sensitive_probe_"

// planError is a failed plan's error, redacted of the credential's values
// and of the values terraform marks sensitive. A failed plan leaves no plan
// to read those from, yet its errors can carry them: a precondition's
// message with nonsensitive(var.password), a provider that echoes a
// sensitive argument. So a probe plan is taken that plans nothing (its one
// target names no resource, and nothing is refreshed): its JSON has the
// root variables, which of them are sensitive, and the prior state. This
// costs only when a plan fails. A probe that fails too (the failure was in
// evaluating variables) leaves the credentials and token-shaped strings
// redacted, as before.
func (r *Runner) planError(ctx context.Context, ru *run, err error, cred *Credential) error {
	secrets := cred.Values()
	if ctx.Err() == nil {
		values, perr := r.probeSensitive(ctx, ru)
		if perr != nil {
			r.o.Logger.Warn("failed plan: the sensitive values could not be probed; its output is redacted of credentials only",
				"env", ru.target.Env, "err", Redact(perr.Error(), cred.Values()...))
		}
		secrets = append(secrets, values...)
	}
	return &TerraformError{Step: "plan", Output: Redact(strings.TrimSpace(err.Error()), secrets...)}
}

// probeSensitive takes the probe plan in ru and returns what it marks
// sensitive.
func (r *Runner) probeSensitive(ctx context.Context, ru *run) ([]string, error) {
	opts := []tfexec.PlanOption{tfexec.Out(ru.planOut), tfexec.Lock(false), tfexec.Refresh(false), tfexec.Target(probeTarget)}
	for _, vf := range ru.target.VarFiles {
		opts = append(opts, tfexec.VarFile(vf))
	}
	if err := step(ctx, func() error { _, err := ru.tf.Plan(ru.ctx, opts...); return err }); err != nil {
		return nil, fmt.Errorf("probe plan: %w", err)
	}
	data, err := readRunFile(ru.planOut)
	if err != nil {
		return nil, err
	}
	file, err := ru.box.Input("probe.tfplan", data)
	if err != nil {
		return nil, err
	}
	plan, err := ru.tf.ShowPlanFile(ru.ctx, file)
	if err != nil {
		return nil, fmt.Errorf("probe show: %w", err)
	}
	return SensitiveValues(plan), nil
}
