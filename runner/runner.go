// Package runner does the work behind a plan and an apply: it keeps the
// environment lock's lease alive, checks out exactly the planned commit into
// a fresh workspace, runs terraform through terraform-exec with an
// environment built from an allowlist, and injects Vault credentials that
// exist only for that one run.
//
// Apply takes an approvals.Permit, which only a plan with quorum can produce,
// so there is no way to call it for an unapproved plan.
package runner

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-version"
	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/ref"
)

// Terraform is the part of terraform-exec the runner uses;
// *tfexec.Terraform satisfies it.
type Terraform interface {
	Init(ctx context.Context, opts ...tfexec.InitOption) error
	Plan(ctx context.Context, opts ...tfexec.PlanOption) (bool, error)
	PlanJSON(ctx context.Context, w io.Writer, opts ...tfexec.PlanOption) (bool, error)
	ShowPlanFile(ctx context.Context, planPath string, opts ...tfexec.ShowOption) (*tfjson.Plan, error)
	ShowPlanFileRaw(ctx context.Context, planPath string, opts ...tfexec.ShowOption) (string, error)
	ApplyJSON(ctx context.Context, w io.Writer, opts ...tfexec.ApplyOption) error
	WorkspaceSelect(ctx context.Context, workspace string, opts ...tfexec.WorkspaceSelectOption) error
	WorkspaceNew(ctx context.Context, workspace string, opts ...tfexec.WorkspaceNewCmdOption) error
	SetEnv(env map[string]string) error
	SetStdout(w io.Writer)
	Version(ctx context.Context, skipCache bool) (*version.Version, map[string]*version.Version, error)
}

var _ Terraform = (*tfexec.Terraform)(nil)

// NewTerraformFunc makes a Terraform for a working directory and binary.
type NewTerraformFunc func(workdir, execPath string) (Terraform, error)

func newTfexec(workdir, execPath string) (Terraform, error) {
	return tfexec.NewTerraform(workdir, execPath)
}

// Source resolves revisions and checks out exact commits.
type Source interface {
	// Resolve reads a ref: a pull request must be open, and its head is
	// what will be planned; a SHA or tag must be on the default branch.
	Resolve(ctx context.Context, repo string, ref Ref) (Revision, error)
	// Checkout writes the tree of rev.SHA into dst, which does not exist yet.
	Checkout(ctx context.Context, rev Revision, dst string) error
}

// Ref names what to plan (package ref): a pull request's head, or a commit
// or tag of the default branch (a rollback); the zero Ref is the default
// branch's head (what a drift check plans).
type Ref = ref.Ref

// Revision is one resolved commit.
type Revision struct {
	Repo     string `json:"repo"` // owner/name
	Ref      Ref    `json:"ref"`
	PR       int    `json:"pr,omitempty"` // the pull request, if the ref is one
	SHA      string `json:"sha"`
	CloneURL string `json:"clone_url"`
	Branch   string `json:"branch,omitempty"` // the default branch, for SHA and tag refs
	Title    string `json:"title,omitempty"`
	URL      string `json:"url,omitempty"` // the pull request's web page
	// Fork: the pull request's head is in another repository.
	Fork bool `json:"fork,omitempty"`
	// Authors are who wrote and committed a pull request's commits: its
	// author, each commit's author and committer, and Co-authored-by
	// trailers.
	Authors []approvals.Author `json:"authors,omitempty"`
}

// Label names the revision for people: "PR #42", "tag v1.2", "commit 1a2b3c4".
func (r Revision) Label() string {
	switch {
	case r.Ref.Tag != "":
		return "tag " + r.Ref.Tag
	case r.PR > 0:
		return fmt.Sprintf("PR #%d", r.PR)
	}
	return "commit " + short(r.SHA)
}

// Source errors.
var (
	ErrPRNotFound       = errors.New("pull request not found")
	ErrPRClosed         = errors.New("pull request is not open")
	ErrRefNotFound      = errors.New("no such commit or tag")
	ErrNotDefaultBranch = errors.New("not on the default branch")
	ErrNoWorkDir        = errors.New("the terraform directory is not in this revision")
	ErrSource           = errors.New("source unavailable")
	ErrForkPR           = errors.New("pull requests from forks are not planned in this project")
)

// Target is where and how a project's environment is planned and applied.
type Target struct {
	Project string
	Env     string
	Binary  string // terraform or tofu for this project; default Options.Binary
	Version string // the version Binary must report
	// TerraformEnv is this project's extra, non-secret environment for
	// terraform, over Options.Env.
	TerraformEnv  map[string]string
	Workspace     string // terraform workspace; "" is the default one
	Dir           string // directory inside the repository
	VarFiles      []string
	BackendConfig map[string]string
	PlanCreds     *CredentialRequest // nil: plan without credentials
	ApplyCreds    CredentialRequest
	LockTTL       time.Duration
	PlanTTL       time.Duration // how long the saved plan is kept
	PlanTimeout   time.Duration
	ApplyTimeout  time.Duration
	BreakGlass    *BreakGlassTarget // nil: no break-glass here
	Providers     Providers         // which providers runs may use
	AllowForkPRs  bool              // plan pull requests whose head is in a fork
	// PolicyDir holds the Rego policies plans here are checked against,
	// on the runner's host (never the pull request's). "": built-in risk
	// flags only.
	PolicyDir string
}

// Errors from Plan and Apply.
var (
	ErrStalePlan = errors.New("saved plan does not match the approved plan")
	// ErrAudit: the audit record of an apply's start or credential could not
	// be written, so nothing was applied.
	ErrAudit = errors.New("the audit record could not be written")
	// ErrDetached: the caller stopped waiting, but the work goes on
	// elsewhere (a runner pool) and its result is kept for whoever finds it.
	ErrDetached    = errors.New("stopped waiting; the work goes on and its result is kept")
	ErrInterrupted = errors.New("interrupted")
	ErrBinary      = errors.New("terraform binary is not the configured version")
)

// TerraformError is a failed terraform step, with its output redacted of
// every credential value the runner knows.
type TerraformError struct {
	Step   string // init, plan, show, apply
	Output string
}

func (e *TerraformError) Error() string { return "terraform " + e.Step + " failed:\n" + e.Output }

// Options configure a Runner.
type Options struct {
	Locks  Locker
	Source Source
	Creds  Credentials
	// Plans keeps saved plan files, sealed, where every process that may
	// apply them can read them. A plan file is on disk, in clear text, only
	// inside the run that made or applies it.
	Plans PlanStore
	// Sandbox confines every terraform process. Required: Unconfined is
	// the explicit opt-out.
	Sandbox Sandbox
	Binary  string // path to terraform or tofu
	Version string // the version the binary must report
	// Env is extra, non-secret environment for terraform.
	Env     map[string]string
	DataDir string
	// VaultAddr is passed to terraform as VAULT_ADDR next to the minted token.
	VaultAddr string
	// Audit records credentials and applies. An apply whose start or
	// credential cannot be recorded does not happen. nil records nothing.
	Audit audit.Recorder
	// Name identifies this process in the record (a worker's name).
	Name string
	// Policy checks every plan before anyone is asked to approve it
	// (policy.Engine is one). nil: plans carry no assessment.
	Policy       Policy
	Logger       *slog.Logger
	NewTerraform NewTerraformFunc // default terraform-exec
}

// Runner runs plans and applies.
type Runner struct {
	o Options

	runs     string   // this runner's directory of runs, under <data>/runs
	runsLock *os.File // flocked while this runner lives (see instanceDir)

	mu sync.Mutex
	// checked remembers each binary's version check, so the version is
	// learned once per file rather than before every command.
	checked map[string]binaryCheck
	// tfs keeps a Terraform per run directory and binary: terraform-exec
	// asks terraform its version once per Terraform.
	tfs   map[string]Terraform
	slots map[string]*sync.Mutex // one run per run directory at a time
	// planning holds read-backs back while other plans have not shown
	// their changes.
	planning planning
}

// New checks the binary's version and returns a Runner.
func New(ctx context.Context, o Options) (*Runner, error) {
	if o.Locks == nil || o.Source == nil || o.Creds == nil || o.Plans == nil || o.Sandbox == nil || o.DataDir == "" || o.Binary == "" {
		return nil, errors.New("runner: Locks, Source, Creds, Plans, Sandbox, DataDir and Binary are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.NewTerraform == nil {
		o.NewTerraform = newTfexec
	}
	// Runs may drop to another uid, which must reach (not list) their
	// directories.
	if err := os.MkdirAll(filepath.Join(o.DataDir, "runs"), 0o711); err != nil {
		return nil, err
	}
	for _, d := range []string{o.DataDir, filepath.Join(o.DataDir, "runs")} {
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, err
		}
	}
	runs, lock, err := instanceDir(filepath.Join(o.DataDir, "runs"))
	if err != nil {
		return nil, err
	}
	r := &Runner{o: o, runs: runs, runsLock: lock, checked: map[string]binaryCheck{}, tfs: map[string]Terraform{}, slots: map[string]*sync.Mutex{}}
	if _, err := r.checkBinary(ctx, o.Binary, o.Version); err != nil {
		return nil, err
	}
	return r, nil
}

// binary returns the binary a target runs with, checked, and its answer
// to `version -json`.
func (r *Runner) binary(ctx context.Context, t Target) (string, []byte, error) {
	bin, version := r.o.Binary, r.o.Version
	if t.Binary != "" {
		bin, version = t.Binary, t.Version
	}
	answer, err := r.checkBinary(ctx, bin, version)
	return bin, answer, err
}

// binaryCheck is the outcome of one binary's version check, and which file
// it was.
type binaryCheck struct {
	file   fileID
	answer []byte // its `version -json`, as terraform-exec reads it
	err    error
}

// fileID tells one file from another put at the same path.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func identify(path string) (fileID, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	id := fileID{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		id.dev, id.ino = uint64(sys.Dev), sys.Ino
	}
	return id, nil
}

// checkBinary runs `version` once per binary file and pinned version, and
// refuses a binary that does not report the pinned version. A binary
// replaced at the same path (another inode, size or modification time) is
// checked again, and what terraform-exec learned of the old one forgotten.
// It returns the version as `version -json` says it, which runs give
// terraform-exec (see Run.Version) so that it need not ask again.
func (r *Runner) checkBinary(ctx context.Context, bin, want string) ([]byte, error) {
	file, err := identify(bin)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBinary, bin, err)
	}
	key := bin + "@" + want
	r.mu.Lock()
	c, done := r.checked[key]
	r.mu.Unlock()
	if done && c.file == file {
		return c.answer, c.err
	}
	answer, err := r.version(ctx, bin, want)
	r.mu.Lock()
	defer r.mu.Unlock()
	if done {
		for k := range r.tfs {
			if strings.Contains(k, "\x00"+bin+"\x00") {
				delete(r.tfs, k)
			}
		}
	}
	r.checked[key] = binaryCheck{file: file, answer: answer, err: err}
	return answer, err
}

// version asks bin its version, in a sandbox, and returns it as `version
// -json` would, without provider selections (which no run of twokey reads).
func (r *Runner) version(ctx context.Context, bin, want string) ([]byte, error) {
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	dir := filepath.Join(r.runs, "version-"+hex.EncodeToString(rnd[:]))
	box, err := r.o.Sandbox.Open(Run{Dir: dir, Binary: bin})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	defer box.Close()
	tf, err := r.o.NewTerraform(dir, box.Exec())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBinary, err)
	}
	if err := tf.SetEnv(r.baseEnv(filepath.Join(dir, "home"), box.TempDir())); err != nil {
		return nil, err
	}
	got, _, err := tf.Version(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBinary, bin, err)
	}
	if want != "" && got.String() != strings.TrimPrefix(want, "v") {
		return nil, fmt.Errorf("%w: %s reports %s, config pins %s", ErrBinary, bin, got, want)
	}
	return json.Marshal(map[string]any{"terraform_version": got.String(), "provider_selections": map[string]string{},
		"terraform_outdated": false})
}

// Resolve reads a revision through the Source.
func (r *Runner) Resolve(ctx context.Context, repo string, ref Ref) (Revision, error) {
	return r.o.Source.Resolve(ctx, repo, ref)
}

// PlanJob is one plan to run.
type PlanJob struct {
	PlanID string
	Rev    Revision
	Lease  Lease
	Target Target
	// Preview, if set, is told what terraform said the plan does as soon
	// as terraform plan has ended with changes, while the saved plan is
	// still being read back: something to show, never to approve.
	Preview func(approvals.Summary) `json:"-"`
}

// PlanResult is a finished plan.
type PlanResult struct {
	Digest  string // sha256 of the saved plan file, hex
	Summary approvals.Summary
	// Text is terraform's human-readable plan, redacted: what a person reads
	// in the thread. Terraform masks the values it knows are sensitive;
	// the runner removes those and every credential value wherever else
	// they appear.
	Text string `json:"text,omitempty"`
	// Policy is the plan's assessment: policy results, the quorum its risk
	// asks for, and built-in risk flags; its messages are redacted too.
	Policy approvals.Assessment `json:"policy,omitzero"`
}

// Policy checks a plan against the policies in dir ("" for built-in
// checks only). The plan carries sensitive values in clear text: it never
// leaves the runner, and the assessment that does is redacted.
type Policy interface {
	Check(ctx context.Context, dir string, plan *tfjson.Plan) (approvals.Assessment, error)
}

// Plan checks out job.Rev into a run of its own and runs init, plan -out
// and show in its sandbox, keeping the lease alive throughout. A lost lease
// interrupts it. The saved plan goes to the plan store, sealed.
func (r *Runner) Plan(ctx context.Context, job PlanJob) (PlanResult, error) {
	if job.Rev.Fork && !job.Target.AllowForkPRs {
		return PlanResult{}, fmt.Errorf("%w (%s)", ErrForkPR, job.Rev.Label())
	}
	// A plan taken over from a worker that died may find its lease gone.
	if err := r.o.Locks.Refresh(ctx, job.Lease, job.Target.LockTTL); err != nil {
		return PlanResult{}, err
	}
	ctx, stop := r.guard(ctx, job.Lease, job.Target.LockTTL, job.Target.PlanTimeout)
	defer stop()

	about := subject{project: job.Target.Project, env: job.Target.Env, pr: job.Rev.PR, sha: job.Rev.SHA,
		planID: job.PlanID, fence: job.Lease.Fence}
	res, data, err := r.planIn(ctx, "plan", job.PlanID, job.Rev, job.Target, about, true, job.Preview)
	if err != nil {
		return PlanResult{}, err
	}
	if err := r.o.Plans.Save(ctx, job.PlanID, data, job.Target.PlanTTL+time.Hour); err != nil {
		return PlanResult{}, err
	}
	return res, nil
}

// planIn mints the target's read-only plan credentials, if it has any,
// checks rev out into a new run, and runs terraform plan -out (taking
// terraform's state lock if lock) and show in the run's sandbox. It returns
// what the plan would do, its text (redacted) and the saved plan's bytes;
// the credentials are revoked and the run is gone when it returns.
// preview, if not nil, is told what terraform's own output says the plan
// does once the plan has ended with changes.
//
// The digest is taken of the plan file's bytes once every process of the
// plan has ended, and show reads those same bytes, read-only: the summary
// people approve, the digest they approve and the file applied are one.
func (r *Runner) planIn(ctx context.Context, kind, id string, rev Revision, t Target, about subject,
	lock bool, preview func(approvals.Summary)) (PlanResult, []byte, error) {
	if show := preview; show != nil {
		shown := r.planning.start()
		defer shown()
		preview = func(sum approvals.Summary) {
			show(sum)
			shown()
		}
	}
	// The credential is minted while the commit is checked out; it is
	// revoked once the run, and every process of it, is gone.
	minted := func() (*Credential, error) { return nil, nil }
	if t.PlanCreds != nil {
		req := *t.PlanCreds
		req.Purpose = kind + " " + id
		minted = r.minting(ctx, req, about, 0)
		defer func() {
			if c, err := minted(); err == nil {
				r.revokeRecorded(c, about)
			}
		}()
	}
	ru, err := r.open(ctx, kind, t)
	if err != nil {
		return PlanResult{}, nil, err
	}
	defer ru.close(r)
	opts := []tfexec.PlanOption{tfexec.Out(ru.planOut), tfexec.Lock(lock)}
	for _, vf := range t.VarFiles {
		opts = append(opts, tfexec.VarFile(vf))
	}
	var changes bool
	stream := newPlanStream()
	cred, planCmd, files, err := r.prepare(ctx, ru, rev, minted, &command{do: func(tf Terraform) (err error) {
		changes, err = tf.PlanJSON(ru.ctx, stream, opts...)
		return err
	}})
	if err != nil {
		return PlanResult{}, nil, err
	}
	if err := planCmd.run(ctx, ru); errors.Is(err, ErrSandbox) {
		return PlanResult{}, nil, err
	} else if err != nil {
		return PlanResult{}, nil, r.cause(ctx, r.planError(ctx, ru, stream.failure(err), cred))
	}
	// Code that ran beside terraform may have left another plan here. What
	// people are shown, the digest they approve and what is applied all
	// come from these bytes, and their configuration must be the commit's.
	data, err := readRunFile(ru.planOut)
	if err != nil {
		return PlanResult{}, nil, err
	}
	if err := checkSnapshot(data, files); err != nil {
		return PlanResult{}, nil, err
	}
	readBack := ru.tf
	if preview != nil && changes {
		preview(redactSummary(stream.Summary(changes), NewRedactor(cred.Values()...)))
		// With the changes shown, other runs' plans come first: the
		// read-back starts once they have shown theirs, and takes the CPU
		// they leave.
		r.planning.wait(ctx, readBackWait)
		if readBack, err = r.terraformFor(ru, ru.box.Background(), cred); err != nil {
			return PlanResult{}, nil, err
		}
	}
	planFile, err := ru.box.Input(id+".tfplan", data)
	if err != nil {
		return PlanResult{}, nil, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	// The summary and the text read the same read-only bytes, at once.
	var (
		plan     *tfjson.Plan
		text     string
		textErr  error
		textDone = make(chan struct{})
	)
	go func() {
		defer close(textDone)
		textErr = step(ctx, func() (err error) { text, err = readBack.ShowPlanFileRaw(ru.ctx, planFile); return err })
	}()
	err = step(ctx, func() (err error) { plan, err = readBack.ShowPlanFile(ru.ctx, planFile); return err })
	<-textDone
	if err = errors.Join(err, textErr); err != nil {
		return PlanResult{}, nil, r.cause(ctx, tfError("show", err, cred))
	}
	// Everything the plan marks sensitive is a secret wherever it shows.
	red := NewRedactor(append(cred.Values(), SensitiveValues(plan)...)...)
	res := PlanResult{Digest: digestOf(data), Summary: redactSummary(Summarize(plan, changes), red), Text: red.Redact(text)}
	if res.Policy, err = r.check(ctx, t, about, plan); err != nil {
		return PlanResult{}, nil, err
	}
	res.Policy = redactAssessment(res.Policy, red)
	return res, data, nil
}

// prepare checks rev out into ru, with the credential minted meanwhile,
// and runs terraform init and workspace selection there (materialize). It
// returns the credential, plan to run next, and the configuration plan is
// to be made of: the commit's files, as checked out, and the modules init
// fetched for them. Where the run's box has gates, init and plan start
// early: their sandboxes are set up while the commit is checked out, and
// each starts in its turn in the time terraform alone takes to start.
func (r *Runner) prepare(ctx context.Context, ru *run, rev Revision, minted func() (*Credential, error),
	plan *command) (*Credential, *command, configFiles, error) {
	checkedOut := make(chan error, 1)
	go func() { checkedOut <- r.checkout(ctx, ru, rev) }()
	cred, err := minted()
	var init *command
	if err == nil {
		init, plan = r.early(ru, cred, initCommand(ru)), r.early(ru, cred, plan)
	}
	if cerr := <-checkedOut; err == nil && cerr != nil {
		err = r.cause(ctx, cerr)
	}
	var commit configFiles
	if err == nil {
		commit, err = recordConfig(ru.src, ru.work)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	if err := r.materialize(ctx, ru, cred, init); err != nil {
		return nil, nil, nil, r.cause(ctx, err)
	}
	// init runs code the pull request can name (a backend's credential
	// program), in a sandbox that may write the run's directory: the
	// commit's files must be as checked out, and init may only have added
	// what it makes (.terraform/, the dependency lock file).
	files, err := recordConfig(ru.src, ru.work)
	if err == nil {
		err = unchangedByInit(commit, files)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return cred, plan, files, nil
}

// check assesses the plan with the target's policies. A policy that cannot
// be loaded or evaluated denies the plan, rather than letting it through
// unchecked; the reason is in the log under a reference the denial names.
func (r *Runner) check(ctx context.Context, t Target, about subject, plan *tfjson.Plan) (approvals.Assessment, error) {
	if r.o.Policy == nil {
		return approvals.Assessment{}, nil
	}
	a, err := r.o.Policy.Check(ctx, t.PolicyDir, plan)
	if err == nil {
		return a, nil
	}
	if ctx.Err() != nil {
		return a, r.cause(ctx, err)
	}
	var ref [4]byte
	_, _ = rand.Read(ref[:])
	id := hex.EncodeToString(ref[:])
	r.o.Logger.Error("policy check failed; the plan is denied", "env", t.Env, "plan_id", about.planID, "ref", id, "err", err)
	a.Checked = true
	a.Denied = append(a.Denied, approvals.Finding{Rule: "twokey.policy",
		Message: fmt.Sprintf("the policies could not be evaluated (reference %s in the runner's log)", id)})
	return a, nil
}

// redactSummary redacts the addresses: an instance key can be made of any
// value, a program's output among them.
func redactSummary(s approvals.Summary, red *Redactor) approvals.Summary {
	s.Resources = slices.Clone(s.Resources)
	for i := range s.Resources {
		s.Resources[i].Address, s.Resources[i].From = red.Redact(s.Resources[i].Address), red.Redact(s.Resources[i].From)
	}
	return s
}

// redactAssessment redacts every message: a policy can quote any value of
// the plan it read.
func redactAssessment(a approvals.Assessment, red *Redactor) approvals.Assessment {
	fs := func(in []approvals.Finding) []approvals.Finding {
		out := slices.Clone(in)
		for i := range out {
			out[i].Message = red.Redact(out[i].Message)
		}
		return out
	}
	a.Denied, a.Warnings = fs(a.Denied), fs(a.Warnings)
	a.Reasons = slices.Clone(a.Reasons)
	for i := range a.Reasons {
		a.Reasons[i] = red.Redact(a.Reasons[i])
	}
	a.Groups = slices.Clone(a.Groups)
	for i := range a.Groups {
		a.Groups[i].Reason = red.Redact(a.Groups[i].Reason)
	}
	a.Risks = slices.Clone(a.Risks)
	for i := range a.Risks {
		a.Risks[i].Address, a.Risks[i].Detail = red.Redact(a.Risks[i].Address), red.Redact(a.Risks[i].Detail)
	}
	return a
}

// ApplyJob is one approved apply.
type ApplyJob struct {
	Permit approvals.Permit
	Rev    Revision // the planned revision, to rebuild the workspace if needed
	Target Target
	// Progress, if set, receives short lines as resources complete.
	Progress func(line string)
}

// ApplyResult is a finished apply.
type ApplyResult struct {
	Summary  string // e.g. "1 added, 0 changed, 0 destroyed"
	Accessor string // accessor of the credential that was minted for the apply
	Expires  time.Time
	Duration time.Duration
	// RevokeErr is set when the credential could not be revoked; it then
	// lives until Expires.
	RevokeErr error
}

// Apply applies exactly the saved plan the permit approves. It re-takes the
// lease, verifies the plan file's digest, mints the apply credentials, runs
// terraform apply on the saved plan and revokes the credentials, whatever
// the outcome. Before terraform starts, any failure leaves the environment
// untouched (errors.Is(err, ErrCredentials) and ErrStalePlan say so).
func (r *Runner) Apply(ctx context.Context, job ApplyJob) (ApplyResult, error) {
	g := job.Permit
	// Only a Notary makes a Permit: in this process after counting signed
	// approvals, or from a signed permit it verified. It must not have run out.
	if err := g.Check(time.Now()); err != nil {
		return ApplyResult{}, err
	}
	if g.Project() != job.Target.Project || g.Env() != job.Target.Env || g.SHA() != job.Rev.SHA {
		return ApplyResult{}, fmt.Errorf("%w: permit is for %s/%s at %s", ErrStalePlan, g.Project(), g.Env(), g.SHA())
	}
	lease := Lease{Key: LockKey(g.Project(), g.Env()), Owner: g.LockOwner(), Fence: g.Fence()}
	if err := r.o.Locks.Refresh(ctx, lease, job.Target.LockTTL); err != nil {
		return ApplyResult{}, err
	}
	// The fenced record is the gate: a holder that lost its lease — paused,
	// partitioned — cannot write it, and so never reaches terraform.
	start := time.Now()
	if err := r.record(ctx, lease, LedgerRecord{Kind: "apply_start", PlanID: g.PlanID(), PR: g.PR(), SHA: g.SHA(),
		Digest: g.Digest(), Approvers: g.Approvers()}); err != nil {
		return ApplyResult{}, err
	}
	about := subject{project: g.Project(), env: g.Env(), pr: g.PR(), sha: g.SHA(), planID: g.PlanID(),
		digest: g.Digest(), fence: g.Fence()}
	if err := r.audit(ctx, audit.ApplyStarted, about, map[string]string{"approvers": strings.Join(g.Approvers(), ",")}); err != nil {
		return ApplyResult{}, err
	}
	ctx, stop := r.guard(ctx, lease, job.Target.LockTTL, job.Target.ApplyTimeout)
	defer stop()

	req := job.Target.ApplyCreds
	req.Purpose = "apply " + g.PlanID()
	// The token must outlive the apply: one that dies halfway leaves
	// the environment half changed. It is minted while the run is made
	// ready, and revoked once the run is gone.
	minted := r.minting(ctx, req, about, job.Target.ApplyTimeout)
	res, err := r.applyWith(ctx, job, minted)
	cred, mintErr := minted()
	if mintErr != nil {
		return ApplyResult{}, mintErr
	}
	res.Accessor, res.Expires = cred.Accessor, cred.Expires
	res.RevokeErr = r.revokeRecorded(cred, about)
	res.Duration = time.Since(start)
	result := "applied"
	if err != nil {
		result = "failed"
		if errors.Is(err, ErrInterrupted) {
			result = "interrupted"
		}
	}
	_ = r.audit(context.WithoutCancel(ctx), audit.ApplyFinished, about, map[string]string{
		"result": result, "summary": res.Summary, "duration": res.Duration.Round(time.Millisecond).String(),
		"approvers": strings.Join(g.Approvers(), ","), "error": errText(err)})
	end := LedgerRecord{Kind: "apply_end", PlanID: g.PlanID(), PR: g.PR(), SHA: g.SHA(), Digest: g.Digest(),
		Result: "applied", Summary: res.Summary}
	if err != nil {
		end.Result = "failed"
		if errors.Is(err, ErrInterrupted) {
			end.Result = "interrupted"
		}
	}
	if rerr := r.record(context.WithoutCancel(ctx), lease, end); rerr != nil {
		r.o.Logger.Warn("apply result not recorded in the environment ledger", "plan_id", g.PlanID(), "err", rerr)
	}
	return res, err
}

// subject is what an audit event is about.
type subject struct {
	project, env, sha, planID, digest string
	pr                                int
	fence                             int64
}

// audit records an event; an error means it was not recorded.
func (r *Runner) audit(ctx context.Context, typ string, s subject, detail map[string]string) error {
	if r.o.Audit == nil {
		return nil
	}
	for k, v := range detail {
		if v == "" {
			delete(detail, k)
		}
	}
	err := r.o.Audit.Record(ctx, audit.Event{Type: typ, Actor: audit.Actor{ID: "twokey", Name: r.o.Name},
		Project: s.project, Env: s.env, PR: s.pr, SHA: s.sha, PlanID: s.planID, Digest: s.digest, Fence: s.fence, Detail: detail})
	if err != nil {
		r.o.Logger.Error("audit record not written", "type", typ, "plan_id", s.planID, "err", err)
		return fmt.Errorf("%w (%s): %w", ErrAudit, typ, err)
	}
	return nil
}

// mint mints a credential and records it — accessor, requested and granted
// TTL, never the token. A credential whose minting cannot be recorded, or
// that Vault granted for less than need, is revoked unused.
func (r *Runner) mint(ctx context.Context, req CredentialRequest, s subject, need time.Duration) (*Credential, error) {
	// Recorded before Vault is asked: a token, and the secrets read with
	// it (dynamic credentials are issued then), never exist unrecorded.
	terms := map[string]string{"role": req.Role, "ttl": req.TTL.String(), "num_uses": strconv.Itoa(req.NumUses), "purpose": req.Purpose}
	if err := r.audit(ctx, audit.CredentialRequested, s, maps.Clone(terms)); err != nil {
		return nil, err
	}
	c, err := r.o.Creds.Mint(ctx, req)
	if err != nil {
		return nil, err
	}
	granted := c.granted(time.Now())
	terms["accessor"] = c.Accessor
	terms["granted_ttl"] = granted.Round(time.Second).String()
	if err := r.audit(ctx, audit.CredentialMinted, s, terms); err != nil {
		_ = r.revoke(c)
		return nil, err
	}
	if granted < need {
		terr := &TTLError{Role: req.Role, Requested: req.TTL, Granted: granted.Round(time.Second), Needed: need}
		r.o.Logger.Error("credential TTL capped; revoked unused", "env", s.env, "plan_id", s.planID, "role", req.Role,
			"granted_ttl", granted, "need", need)
		_ = r.revokeRecorded(c, s)
		return nil, terr
	}
	return c, nil
}

// minting mints a credential, as mint does, while the caller goes on; the
// returned function waits for it, and returns the same each time.
func (r *Runner) minting(ctx context.Context, req CredentialRequest, s subject, need time.Duration) func() (*Credential, error) {
	var (
		c    *Credential
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		c, err = r.mint(ctx, req, s, need)
	}()
	return func() (*Credential, error) {
		<-done
		return c, err
	}
}

// revokeRecorded revokes a credential and records that it did (or could not).
func (r *Runner) revokeRecorded(c *Credential, s subject) error {
	err := r.revoke(c)
	detail := map[string]string{"accessor": c.Accessor}
	if err != nil {
		detail["error"] = err.Error()
		detail["expires"] = c.Expires.UTC().Format(time.RFC3339)
	}
	_ = r.audit(context.Background(), audit.CredentialRevoked, s, detail)
	return err
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return Redact(err.Error())
}

// LedgerRecord is one entry in an environment's ledger, written with the
// lock's fence.
type LedgerRecord struct {
	Kind      string    `json:"kind"` // apply_start, apply_end
	PlanID    string    `json:"plan_id"`
	PR        int       `json:"pr"`
	SHA       string    `json:"sha"`
	Digest    string    `json:"digest"`
	Fence     int64     `json:"fence"`
	At        time.Time `json:"at"`
	Approvers []string  `json:"approvers,omitempty"`
	Result    string    `json:"result,omitempty"` // apply_end: applied, failed, interrupted
	Summary   string    `json:"summary,omitempty"`
}

func (r *Runner) record(ctx context.Context, l Lease, rec LedgerRecord) error {
	rec.Fence, rec.At = l.Fence, time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return r.o.Locks.Fenced(ctx, l, b)
}

// applyWith runs the apply of job with the credential minted gives, in a
// run of its own: the approved revision checked out afresh and
// initialised, and the saved plan, checked against the approved digest,
// given to terraform read-only. The run is gone when it returns.
func (r *Runner) applyWith(ctx context.Context, job ApplyJob, minted func() (*Credential, error)) (ApplyResult, error) {
	var res ApplyResult
	g := job.Permit
	data, err := r.savedPlan(ctx, g)
	if err != nil {
		return res, err
	}
	ru, err := r.open(ctx, "apply", job.Target)
	if err != nil {
		return res, err
	}
	defer ru.close(r)
	if err := r.checkout(ctx, ru, job.Rev); err != nil {
		return res, r.cause(ctx, err)
	}
	cred, err := minted()
	if err != nil {
		return res, err
	}
	if err := r.materialize(ctx, ru, cred, nil); err != nil {
		return res, r.cause(ctx, err)
	}
	planFile, err := ru.box.Input(g.PlanID()+".tfplan", data)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrSandbox, err)
	}
	prog := newProgress(job.Progress, cred)
	err = step(ctx, func() error { return ru.tf.ApplyJSON(ru.ctx, prog, tfexec.DirOrPlan(planFile)) })
	ru.tf.SetStdout(io.Discard) // ApplyJSON left prog there; the next run in this directory is another apply's
	res.Summary = prog.summary()
	if err != nil {
		terr := r.applyError(ru, planFile, errors.Join(err, prog.diagnostics()), cred)
		if strings.Contains(terr.Error(), "Saved plan is stale") {
			// Terraform refused before changing anything: the state moved on.
			return res, fmt.Errorf("%w: %w", ErrStalePlan, terr)
		}
		return res, r.cause(ctx, terr)
	}
	return res, nil
}

// savedPlan loads the saved plan the permit approves from the plan store and
// checks its sha256 against the approved digest: the last check before
// terraform, on the exact bytes terraform is given.
func (r *Runner) savedPlan(ctx context.Context, g approvals.Permit) ([]byte, error) {
	data, err := r.o.Plans.Load(ctx, g.PlanID())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStalePlan, err)
	}
	if digestOf(data) != g.Digest() {
		return nil, fmt.Errorf("%w: the stored plan file does not match the approved digest", ErrStalePlan)
	}
	return data, nil
}

// Discard removes a plan's saved file from the plan store.
func (r *Runner) Discard(ctx context.Context, planID string) error {
	return r.o.Plans.Delete(ctx, planID)
}

// guard derives the context work runs under: it ends at timeout, and when
// the lease cannot be kept, with ErrLockLost as its cause.
func (r *Runner) guard(ctx context.Context, l Lease, ttl, timeout time.Duration) (context.Context, func()) {
	ctx, cancelTimeout := context.WithTimeout(ctx, timeout)
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		KeepLease(ctx, r.o.Locks, l, ttl, func(err error) {
			r.o.Logger.Warn("lease lost; interrupting terraform", "lock", l.Key, "fence", l.Fence, "err", err)
			cancel(err)
		})
	}()
	return ctx, func() {
		cancel(nil)
		<-done
		cancelTimeout()
	}
}

// cause prefers the reason the context ended over the error it produced.
func (r *Runner) cause(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	c := context.Cause(ctx)
	if errors.Is(c, ErrLockLost) {
		return fmt.Errorf("%w: %w", ErrInterrupted, c)
	}
	if errors.Is(c, context.DeadlineExceeded) {
		return fmt.Errorf("%w: timed out: %w", ErrInterrupted, err)
	}
	return fmt.Errorf("%w: %w", ErrInterrupted, err)
}

// revoke ends a credential, even when the work's context is over: the
// token must not outlive the run by more than it takes to say so.
func (r *Runner) revoke(c *Credential) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := r.o.Creds.Revoke(ctx, c)
	if err != nil {
		r.o.Logger.Error("revoke credential; it expires by its TTL", "accessor", c.Accessor, "expires", c.Expires, "err", err)
	}
	return err
}

func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func tfError(step string, err error, cred *Credential) error {
	return &TerraformError{Step: step, Output: Redact(strings.TrimSpace(err.Error()), cred.Values()...)}
}
