package runner

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/terraform-exec/tfexec"
)

// workspace is the directory one environment's plans run in:
//
//	<data>/envs/<project>/<env>/src     the checked-out tree, fresh for every plan
//	<data>/envs/<project>/<env>/home    HOME for terraform
//	<data>/envs/<project>/<env>/holds   which plan and commit src holds
//
// Saved plan files live apart from it, in <data>/plans.
type workspace struct {
	root, src, home, work, holds string
}

func (r *Runner) workspace(t Target) workspace {
	root := filepath.Join(r.o.DataDir, "envs", t.Project, t.Env)
	src := filepath.Join(root, "src")
	return workspace{
		root: root, src: src, home: filepath.Join(root, "home"),
		work: filepath.Join(src, filepath.FromSlash(t.Dir)), holds: filepath.Join(root, "holds"),
	}
}

// materialize checks rev out into a fresh src and runs terraform init.
func (r *Runner) materialize(ctx context.Context, ws workspace, planID string, rev Revision, t Target, cred *Credential) (Terraform, error) {
	_ = os.Remove(ws.holds)
	if err := os.RemoveAll(ws.src); err != nil {
		return nil, err
	}
	for _, d := range []string{ws.root, ws.home} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := r.o.Source.Checkout(ctx, rev, ws.src); err != nil {
		return nil, err
	}
	if st, err := os.Stat(ws.work); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: no directory %q in %s at %s", ErrNoWorkDir, t.Dir, rev.Repo, short(rev.SHA))
	}
	tf, err := r.terraform(ctx, ws.work, t)
	if err != nil {
		return nil, err
	}
	if err := tf.SetEnv(r.env(ws, cred)); err != nil {
		return nil, err
	}
	var opts []tfexec.InitOption
	for _, k := range slices.Sorted(maps.Keys(t.BackendConfig)) {
		opts = append(opts, tfexec.BackendConfig(k+"="+t.BackendConfig[k]))
	}
	if err := tf.Init(ctx, opts...); err != nil {
		return nil, tfError("init", err, cred)
	}
	if t.Workspace != "" && t.Workspace != "default" {
		if err := tf.WorkspaceSelect(ctx, t.Workspace); err != nil {
			if err := tf.WorkspaceNew(ctx, t.Workspace); err != nil {
				return nil, tfError("workspace", err, cred)
			}
		}
	}
	if err := os.WriteFile(ws.holds, []byte(planID+" "+rev.SHA+"\n"), 0o600); err != nil {
		return nil, err
	}
	return tf, nil
}

// ready returns the workspace's terraform if it still holds planID at
// rev.SHA, and rebuilds the workspace otherwise (after a restart on another
// machine, or when the directory was cleaned).
func (r *Runner) ready(ctx context.Context, ws workspace, planID string, rev Revision, t Target, cred *Credential) (Terraform, error) {
	if b, err := os.ReadFile(ws.holds); err == nil && strings.TrimSpace(string(b)) == planID+" "+rev.SHA {
		tf, err := r.terraform(ctx, ws.work, t)
		if err != nil {
			return nil, err
		}
		return tf, tf.SetEnv(r.env(ws, cred))
	}
	r.o.Logger.Info("rebuilding workspace for apply", "plan_id", planID, "sha", rev.SHA)
	return r.materialize(ctx, ws, planID, rev, t, cred)
}

// terraform returns the cached Terraform for a working directory, with the
// target's checked binary.
func (r *Runner) terraform(ctx context.Context, workdir string, t Target) (Terraform, error) {
	bin, err := r.binary(ctx, t)
	if err != nil {
		return nil, err
	}
	key := workdir + "\x00" + bin
	r.mu.Lock()
	defer r.mu.Unlock()
	if tf, ok := r.tfs[key]; ok {
		return tf, nil
	}
	tf, err := r.o.NewTerraform(workdir, bin)
	if err != nil {
		return nil, err
	}
	r.tfs[key] = tf
	return tf, nil
}

// baseEnv is the whole environment terraform gets without credentials: an
// allowlist, never the bot's own environment, which holds its tokens.
func (r *Runner) baseEnv(home string) map[string]string {
	env := map[string]string{
		"PATH":               os.Getenv("PATH"),
		"HOME":               home,
		"TMPDIR":             os.TempDir(),
		"TF_CLI_CONFIG_FILE": os.DevNull,
		"CHECKPOINT_DISABLE": "1",
	}
	maps.Copy(env, r.o.Env)
	return env
}

// env adds a credential's values, VAULT_TOKEN among them, to baseEnv.
func (r *Runner) env(ws workspace, cred *Credential) map[string]string {
	env := r.baseEnv(ws.home)
	if cred != nil {
		maps.Copy(env, cred.Env())
		if r.o.VaultAddr != "" {
			env["VAULT_ADDR"] = r.o.VaultAddr
		}
	}
	return env
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
