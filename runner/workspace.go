package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/hashicorp/terraform-exec/tfexec"
)

// run is one plan, apply or drift check: a directory made for it and
// removed after it, in its own sandbox. Nothing a run writes is read by a
// later one.
//
//	<data>/runs/<runner>/<kind>.<project>.<env>/
//	    src/    the checked-out tree
//	    home/   HOME
//	    in/     read-only inputs: the saved plan that show and apply read
//
// TMPDIR is the box's own (see Box.TempDir).
type run struct {
	box            Box
	slot           *sync.Mutex // held while the run lasts
	dir, src, work string
	home, tmp      string
	bin            string
	ctx            context.Context // what terraform runs under: see confine
	unconfine      func()
	planOut        string // where plan writes the saved plan
	tf             Terraform
	target         Target
	gated          []*command // commands started at a gate (see early)
}

// open makes a run's directory and sandbox.
func (r *Runner) open(ctx context.Context, kind string, t Target) (*run, error) {
	bin, answer, err := r.binary(ctx, t)
	if err != nil {
		return nil, err
	}
	// One run of a kind per environment at a time in this process (plans
	// and applies hold the environment lock anyway), so its directory's
	// path can be the same each time and terraform-exec, kept per path,
	// learns the binary's version once.
	dir := filepath.Join(r.runs, kind+"."+safeName(t.Project)+"."+safeName(t.Env))
	r.mu.Lock()
	slot, ok := r.slots[dir]
	if !ok {
		slot = &sync.Mutex{}
		r.slots[dir] = slot
	}
	r.mu.Unlock()
	slot.Lock()
	box, err := r.o.Sandbox.Open(Run{Dir: dir, Binary: bin, Writable: t.localState(), Version: answer})
	if err != nil {
		slot.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	ru := &run{box: box, dir: dir, slot: slot, src: filepath.Join(dir, "src"), home: filepath.Join(dir, "home"),
		tmp: box.TempDir(), bin: bin, target: t, planOut: filepath.Join(dir, "plan.tfplan")}
	ru.work = filepath.Join(ru.src, filepath.FromSlash(t.Dir))
	ru.ctx, ru.unconfine = confine(ctx, box)
	return ru, nil
}

// close ends the run: no process of it outlives this, and its directory
// is gone.
func (ru *run) close(r *Runner) {
	defer ru.slot.Unlock()
	for _, c := range ru.gated {
		c.gate.Abort() // if it never opened
	}
	ru.unconfine()
	ru.box.Kill() // what the cancel did not reach
	for _, c := range ru.gated {
		<-c.returned
		c.tf.SetStdout(io.Discard) // see run
	}
	if err := ru.box.Close(); err != nil {
		r.o.Logger.Warn("run directory not removed", "dir", ru.dir, "err", err)
	}
}

func safeName(s string) string {
	return strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '_'
	}, s)
}

// checkout checks rev out into the run and refuses provider binaries the
// pull request brings (unless the project allows them).
func (r *Runner) checkout(ctx context.Context, ru *run, rev Revision) error {
	t := ru.target
	if err := r.o.Source.Checkout(ctx, rev, ru.src); err != nil {
		return err
	}
	if st, err := os.Stat(ru.work); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: no directory %q in %s at %s", ErrNoWorkDir, t.Dir, rev.Repo, short(rev.SHA))
	}
	if !t.Providers.AllowPR {
		if err := prProviderDirs(ru.src); err != nil {
			return err
		}
	}
	return nil
}

// materialize runs terraform init (init, or now if nil) and workspace
// selection in the sandbox of a run that checkout filled, then checks which
// providers init selected.
func (r *Runner) materialize(ctx context.Context, ru *run, cred *Credential, init *command) error {
	t := ru.target
	if err := ru.box.Prepared(); err != nil {
		return fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	tf, err := r.terraformFor(ru, ru.box.Exec(), cred)
	if err != nil {
		return err
	}
	ru.tf = tf
	if init == nil {
		init = initCommand(ru)
	}
	if err := init.run(ctx, ru); errors.Is(err, ErrSandbox) {
		return err
	} else if err != nil {
		return tfError("init", err, cred)
	}
	if err := t.Providers.check(ru.work, ru.src); err != nil {
		return err
	}
	if t.Workspace != "" && t.Workspace != "default" {
		if err := step(ctx, func() error { return tf.WorkspaceSelect(ru.ctx, t.Workspace) }); err != nil {
			if err := step(ctx, func() error { return tf.WorkspaceNew(ru.ctx, t.Workspace) }); err != nil {
				return tfError("workspace", err, cred)
			}
		}
	}
	return nil
}

// initCommand is terraform init of ru, with its target's backend
// configuration.
func initCommand(ru *run) *command {
	var opts []tfexec.InitOption
	for _, k := range slices.Sorted(maps.Keys(ru.target.BackendConfig)) {
		opts = append(opts, tfexec.BackendConfig(k+"="+ru.target.BackendConfig[k]))
	}
	return &command{do: func(tf Terraform) error { return tf.Init(ru.ctx, opts...) }}
}

// command is one terraform command of a run: do, run on tf.
type command struct {
	do       func(Terraform) error
	tf       Terraform
	gate     Gate          // set if early started it
	done     chan error    // its outcome, then
	returned chan struct{} // closed once its call has returned
}

// early starts c in ru behind a gate, where ru's box has them: its sandbox
// is set up at once, while the caller goes on (checks the commit out, runs
// the command before it), and it starts in ru.work when run opens the
// gate. Where there is no gate, run starts it then, as ever.
func (r *Runner) early(ru *run, cred *Credential, c *command) *command {
	gater, ok := ru.box.(Gater)
	if !ok {
		return c
	}
	g, err := gater.Gate(ru.work)
	if err != nil {
		r.o.Logger.Debug("command started in its turn", "env", ru.target.Env, "reason", err)
		return c
	}
	// The command's terraform-exec starts in the run's directory, which is
	// there already; its sandbox changes to ru.work once the gate opens.
	tf, err := r.terraform(ru.dir, ru.bin, g.Exec())
	if err == nil {
		err = tf.SetEnv(r.env(ru, cred))
	}
	if err != nil {
		r.o.Logger.Debug("command started in its turn", "env", ru.target.Env, "reason", err)
		return c
	}
	c.tf, c.gate, c.done, c.returned = tf, g, make(chan error, 1), make(chan struct{})
	ru.gated = append(ru.gated, c)
	go func() {
		defer close(c.returned)
		c.done <- c.do(tf)
	}()
	return c
}

// run runs c unless ctx has ended: opens its gate and waits for it, or
// starts it on the run's terraform.
func (c *command) run(ctx context.Context, ru *run) error {
	if c.gate == nil {
		c.tf = ru.tf
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// A command that streamed its output somewhere (PlanJSON) leaves it
	// there: it goes nowhere once the command has returned.
	defer func() {
		if c.gate == nil {
			c.tf.SetStdout(io.Discard)
		}
	}()
	if c.gate == nil {
		return c.do(c.tf)
	}
	select {
	case err := <-c.done: // it ended before its gate opened: it failed to start
		return err
	default:
	}
	if err := c.gate.Open(); err != nil {
		return fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	return <-c.done
}

// maxPlanFile bounds the saved plan twokey reads back from a run.
const maxPlanFile = 1 << 30

// readRunFile reads a file a run wrote, as twokey, without following what
// the run's code may have put there instead: a symbolic link to one of
// twokey's files, a FIFO that never ends, a file that does not.
func readRunFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: the run's saved plan: %w", ErrSandbox, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > maxPlanFile {
		return nil, fmt.Errorf("%w: the run's saved plan is not a regular file under %d bytes", ErrSandbox, maxPlanFile)
	}
	return io.ReadAll(io.LimitReader(f, maxPlanFile))
}

// terraform returns the Terraform kept for a working directory and binary.
func (r *Runner) terraform(workdir, bin, exe string) (Terraform, error) {
	key := workdir + "\x00" + bin + "\x00" + exe
	r.mu.Lock()
	defer r.mu.Unlock()
	if tf, ok := r.tfs[key]; ok {
		return tf, nil
	}
	tf, err := r.o.NewTerraform(workdir, exe)
	if err != nil {
		return nil, err
	}
	r.tfs[key] = tf
	return tf, nil
}

// terraformFor is the run's terraform, started through exe (one of its
// box's), with the run's environment and cred.
func (r *Runner) terraformFor(ru *run, exe string, cred *Credential) (Terraform, error) {
	tf, err := r.terraform(ru.work, ru.bin, exe)
	if err != nil {
		return nil, err
	}
	return tf, tf.SetEnv(r.env(ru, cred))
}

// instanceDir makes this runner's own directory under <data>/runs, and
// removes those of runners that are gone: each holds an flock on
// <instance>.lock while its process lives, so a lock that can be taken
// belongs to a process that died (its runs' directories were left behind).
func instanceDir(runs string) (string, *os.File, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	dir := filepath.Join(runs, hex.EncodeToString(rnd[:]))
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", nil, err
	}
	// Held while the returned file is open: the runner keeps it.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return "", nil, err
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		lock.Close()
		return "", nil, err
	}
	others, _ := filepath.Glob(filepath.Join(runs, "*.lock"))
	for _, o := range others {
		if o == dir+".lock" {
			continue
		}
		f, err := os.Open(o)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			_ = removeRuns(strings.TrimSuffix(o, ".lock"))
			_ = os.Remove(o)
		}
		f.Close()
	}
	return dir, lock, nil
}

// removeRuns removes a directory of runs that may have left parts of it
// unwritable to its owner.
func removeRuns(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// localState is the directory of the target's local backend state, if it
// has one: its runs, and no other environment's, may write there.
func (t Target) localState() []string {
	if p := t.BackendConfig["path"]; filepath.IsAbs(p) {
		return []string{filepath.Dir(p)}
	}
	return nil
}

// step runs one terraform command unless ctx has already ended: commands
// run under the run's confined context, which outlives ctx by the grace
// an interrupted command gets.
func step(ctx context.Context, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return f()
}

// terraformGOGC is the GOGC terraform and its providers run with unless
// terraform.env sets one. They are Go programs that start by building
// large heaps: measured on 20 and 5,000 resources, 200 takes 10–30 % less
// CPU than Go's default of 100, for up to 1.5× the heap.
const terraformGOGC = "200"

// baseEnv is the whole environment terraform gets without credentials: an
// allowlist, never the bot's own environment, which holds its tokens.

func (r *Runner) baseEnv(home, tmp string) map[string]string {
	env := map[string]string{
		"PATH":               os.Getenv("PATH"),
		"HOME":               home,
		"TMPDIR":             tmp,
		"TF_CLI_CONFIG_FILE": os.DevNull,
		"CHECKPOINT_DISABLE": "1",
		"GOGC":               terraformGOGC,
	}
	maps.Copy(env, r.o.Env)
	return env
}

// env adds a credential's values, VAULT_TOKEN among them, to baseEnv.
func (r *Runner) env(ru *run, cred *Credential) map[string]string {
	env := r.baseEnv(ru.home, ru.tmp)
	maps.Copy(env, ru.target.TerraformEnv)
	if cred != nil {
		maps.Copy(env, cred.Env())
		if r.o.VaultAddr != "" {
			env["VAULT_ADDR"] = r.o.VaultAddr
		}
	}
	return env
}

// ErrProvider means a provider the project does not allow was selected,
// or the pull request brings provider binaries of its own; nothing of the
// provider ran.
var ErrProvider = errors.New("provider not allowed")

// Providers says which providers a project's runs may use.
type Providers struct {
	// Allowed are source addresses ("hashicorp/aws",
	// "registry.terraform.io/hashicorp/aws"). Empty: any provider of the
	// public registries (Terraform's and OpenTofu's), installed from them or
	// from the operator's mirror.
	Allowed []string
	// AllowPR lets the pull request bring provider binaries of its own
	// (terraform.d/plugins, a committed .terraform): its code runs at plan
	// time, in the sandbox. Their sources must still be Allowed.
	AllowPR bool
}

var registries = []string{"registry.terraform.io", "registry.opentofu.org"}

// prProviderDirs refuses a tree that brings provider binaries: an implied
// local mirror (terraform.d) or a committed .terraform directory.
func prProviderDirs(src string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "terraform.d" || d.Name() == ".terraform") {
			rel, _ := filepath.Rel(src, p)
			return fmt.Errorf("%w: the pull request brings provider binaries in %s/; "+
				"only providers from the registry or the configured mirror may run (a project can allow this with providers.allow_pr)", ErrProvider, rel)
		}
		return nil
	})
}

// check reads which providers init installed in work/.terraform/providers
// (<host>/<namespace>/<type>/<version>/<os_arch>) and refuses any that is not
// allowed, or that is loaded from inside the checked-out tree when that is
// not allowed.
func (p Providers) check(work, src string) error {
	root := filepath.Join(work, ".terraform", "providers")
	hosts, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil // built-in providers only
	}
	if err != nil {
		return err
	}
	var bad []string
	for _, h := range hosts {
		nss, _ := os.ReadDir(filepath.Join(root, h.Name()))
		for _, ns := range nss {
			types, _ := os.ReadDir(filepath.Join(root, h.Name(), ns.Name()))
			for _, ty := range types {
				addr := h.Name() + "/" + ns.Name() + "/" + ty.Name()
				if !p.allows(addr) {
					bad = append(bad, addr)
					continue
				}
				if !p.AllowPR && fromTree(filepath.Join(root, h.Name(), ns.Name(), ty.Name()), src) {
					bad = append(bad, addr+" (from the pull request's files)")
				}
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%w: %s", ErrProvider, strings.Join(bad, ", "))
	}
	return nil
}

func (p Providers) allows(addr string) bool {
	if len(p.Allowed) == 0 {
		host, _, _ := strings.Cut(addr, "/")
		return slices.Contains(registries, host)
	}
	for _, a := range p.Allowed {
		a = strings.ToLower(a)
		if strings.Count(a, "/") == 1 {
			for _, reg := range registries {
				if addr == reg+"/"+a {
					return true
				}
			}
		}
		if addr == a {
			return true
		}
	}
	return false
}

// fromTree reports whether anything under dir links into src.
func fromTree(dir, src string) bool {
	found := false
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		if t, err := filepath.EvalSymlinks(p); err == nil && (t == src || strings.HasPrefix(t, src+string(filepath.Separator))) {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
