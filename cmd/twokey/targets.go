package main

import (
	"github.com/twokey/twokey/config"
	"github.com/twokey/twokey/runner"
)

// targets maps the config to where and how each environment's runs happen;
// serve and the runner workers both use it, so they agree.
func targets(cfg *config.Config) func(project, env string) (runner.Target, error) {
	return func(project, env string) (runner.Target, error) {
		p, e, err := cfg.Resolve(project, env)
		if err != nil {
			return runner.Target{}, err
		}
		return target(cfg, p, e), nil
	}
}

// target is where and how runs of an environment happen.
func target(cfg *config.Config, p *config.Project, e *config.Environment) runner.Target {
	t := runner.Target{
		Project: p.Name, Env: e.Name, Workspace: e.Workspace,
		Dir: p.WorkDir(e), VarFiles: e.VarFiles, BackendConfig: e.BackendConfig,
		ApplyCreds: credentialRequest(e.Vault.Apply),
		LockTTL:    e.LockTTL.D(), PlanTTL: e.PlanTTL.D(), PlanTimeout: e.PlanTimeout.D(), ApplyTimeout: e.ApplyTimeout.D(),
		Providers: runner.Providers{Allowed: p.Providers, AllowPR: p.AllowPRProviders}, AllowForkPRs: p.AllowForkPRs,
	}
	if e.Vault.Plan != nil {
		req := credentialRequest(*e.Vault.Plan)
		t.PlanCreds = &req
	}
	if p.Terraform != nil { // the project pins its own binary, version and environment
		tf := cfg.TerraformFor(p)
		t.Binary, t.Version, t.TerraformEnv = tf.Path, tf.Version, tf.Env
	}
	if pol := p.PolicyFor(e); pol != nil {
		t.PolicyDir = pol.Dir
	}
	if bg := e.BreakGlass; bg != nil {
		t.BreakGlass = &runner.BreakGlassTarget{Role: bg.Role, Policies: bg.Policies, MaxTTL: bg.MaxTTL.D(), WrapTTL: bg.WrapTTL.D()}
	}
	return t
}

func credentialRequest(c config.Credential) runner.CredentialRequest {
	req := runner.CredentialRequest{Role: c.Role, TTL: c.TTL.D(), NumUses: c.NumUses}
	for _, s := range c.Secrets {
		req.Secrets = append(req.Secrets, runner.SecretRef{Path: s.Path, Env: s.Env})
	}
	return req
}

// scopeOf names an environment for people: "prod" with one project,
// "network/prod" with several.
func scopeOf(cfg *config.Config) func(project, env string) string {
	return func(project, env string) string {
		if len(cfg.Projects) > 1 {
			return project + "/" + env
		}
		return env
	}
}
