// Package ghsync is the GitHub feedback of plans: a comment on the pull
// request and commit statuses (twokey/plan/<env>, twokey/apply/<env>),
// brought up to date in the background each time the change service says a
// plan changed. GitHub being slow or down never holds up anyone; a pull
// request catches up when GitHub is back.
package ghsync

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/change"
	"github.com/twokey/twokey/runner"
)

// Plans reads plans; approvals.Store is one.
type Plans interface {
	Get(ctx context.Context, id string) (approvals.Plan, error)
}

// Lease keeps one replica writing to GitHub at a time; runner.Locker is one.
type Lease interface {
	Acquire(ctx context.Context, key string, h runner.Holder, ttl time.Duration) (runner.Lease, error)
	Refresh(ctx context.Context, l runner.Lease, ttl time.Duration) error
	Release(ctx context.Context, l runner.Lease) error
}

// Options configure a Syncer.
type Options struct {
	Plans  Plans
	Locks  Lease
	GitHub PullRequests
	State  GitHubState
	Audit  audit.Recorder
	// Repo is the repository of a project ("owner/name").
	Repo func(project string) (string, bool)
	// Scope names an environment in status contexts: the environment
	// alone, or project/environment where there are several projects.
	Scope func(project, env string) string
	// Name is a user's display name, for the comment.
	Name   func(ctx context.Context, user string) string
	Logger *slog.Logger
}

// Syncer writes plans to GitHub.
type Syncer struct {
	o      Options
	log    *slog.Logger
	wake   chan struct{}
	checks CheckRuns // nil: commit statuses
}

// New returns a Syncer; Run writes.
func New(o Options) (*Syncer, error) {
	if o.Plans == nil || o.Locks == nil || o.GitHub == nil || o.State == nil || o.Audit == nil || o.Repo == nil || o.Scope == nil || o.Name == nil {
		return nil, errors.New("ghsync: Plans, Locks, GitHub, State, Audit, Repo, Scope and Name are required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	b := &Syncer{o: o, log: o.Logger, wake: make(chan struct{}, 1)}
	if c, ok := o.GitHub.(CheckRuns); ok && c.Checks() {
		b.checks = c
	}
	return b, nil
}

// Changed marks a plan for syncing; the change service calls it each time
// a plan changes.
func (b *Syncer) Changed(ctx context.Context, id string) {
	b.dirty(ctx, id)
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// PullRequests writes to GitHub; *ghsource.Source is one.
type PullRequests interface {
	// UpsertComment creates a comment (id 0) or edits comment id in place.
	UpsertComment(ctx context.Context, repo string, pr int, id int64, body string) (int64, error)
	SetStatus(ctx context.Context, repo, sha, context, state, description, targetURL string) error
}

// CheckRuns is a PullRequests that can report through the Checks API;
// *ghsource.Source is one. When Checks is true (twokey is a GitHub App),
// the syncer writes check runs instead of commit statuses: branch
// protection can then require a check that only the App can set, where
// any token holder could set a commit status.
type CheckRuns interface {
	Checks() bool
	// UpsertCheckRun updates check run id, or when id is 0 the App's run
	// of that name on sha, or creates one; it returns the run's ID.
	UpsertCheckRun(ctx context.Context, repo, sha string, id int64, name, status, conclusion, title, summary, detailsURL string) (int64, error)
}

// GitHubState remembers which plans changed since they were shown on
// GitHub, and what was shown.
type GitHubState interface {
	MarkDirty(ctx context.Context, id string) error
	// TakeDirty takes up to n marked plans to sync; each stays taken until
	// DoneDirty, so a syncer that dies mid-sync loses none: RequeueDirty
	// marks them again.
	TakeDirty(ctx context.Context, n int) ([]string, error)
	DoneDirty(ctx context.Context, id string) error
	RequeueDirty(ctx context.Context) error
	GitHubState(ctx context.Context, id string) (comment int64, posted map[string]string, err error)
	SetGitHubState(ctx context.Context, id string, comment int64, posted map[string]string) error
}

// dirty marks a plan for the GitHub syncer.
func (b *Syncer) dirty(ctx context.Context, id string) {
	if err := b.o.State.MarkDirty(context.WithoutCancel(ctx), id); err != nil {
		b.log.Warn("mark plan for GitHub", "plan_id", id, "err", err)
	}
}

// done ends a taken plan's sync; if that cannot be written, the next
// syncer to start marks it dirty again, which costs one more sync.
func (b *Syncer) done(ctx context.Context, id string) {
	if err := b.o.State.DoneDirty(context.WithoutCancel(ctx), id); err != nil {
		b.log.Warn("end a plan's GitHub sync", "plan_id", id, "err", err)
	}
}

// githubLease is the lock one replica holds while it writes to GitHub, so
// that statuses go out in the order they happened.
const githubLease = "twokey/github"

// githubSyncer brings each changed plan's PR comment and commit statuses up
// to date, in the background: GitHub being slow or down never holds up
// Slack, and the PR catches up when GitHub is back.
func (b *Syncer) Run(ctx context.Context) error {
	const ttl = 30 * time.Second
	for ctx.Err() == nil {
		lease, err := b.o.Locks.Acquire(ctx, githubLease, runner.Holder{User: "twokey", Ref: "GitHub sync"}, ttl)
		if err != nil {
			b.sleep(ctx, 5*time.Second) // another replica syncs, or Redis is away
			continue
		}
		if err := b.o.State.RequeueDirty(ctx); err != nil {
			b.log.Warn("requeue plans a stopped syncer had taken", "err", err)
		}
		pause := 200 * time.Millisecond
		for ctx.Err() == nil {
			if err := b.o.Locks.Refresh(ctx, lease, ttl); err != nil {
				break
			}
			if b.syncDirty(ctx) {
				pause = 200 * time.Millisecond
			} else {
				pause = min(2*pause, time.Minute)
			}
			b.sleep(ctx, pause)
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := b.o.Locks.Release(rctx, lease); err != nil {
			b.log.Warn("release the GitHub sync lease; it frees when it ends", "err", err)
		}
		cancel()
	}
	return nil
}

// syncDirty syncs the plans marked dirty; it reports whether all went well.
func (b *Syncer) syncDirty(ctx context.Context) bool {
	ids, err := b.o.State.TakeDirty(ctx, 50)
	if err != nil {
		return false
	}
	for i, id := range ids {
		if err := b.syncPlan(ctx, id); err != nil {
			// Keep this one and the rest for the next round, in order.
			for _, rest := range ids[i:] {
				b.dirty(ctx, rest)
				b.done(ctx, rest)
			}
			return false
		}
		b.done(ctx, id)
	}
	return true
}

// syncPlan writes a plan's comment (for pull requests) and statuses.
func (b *Syncer) syncPlan(ctx context.Context, id string) error {
	p, err := b.o.Plans.Get(ctx, id)
	if err != nil {
		return nil // gone: nothing to show
	}
	repo, ok := b.o.Repo(p.Project)
	if !ok {
		return nil
	}
	comment, posted, err := b.o.State.GitHubState(ctx, id)
	if err != nil {
		return err
	}
	var wrote []string
	defer func() {
		if len(wrote) > 0 {
			if err := b.o.State.SetGitHubState(context.WithoutCancel(ctx), id, comment, posted); err != nil {
				b.log.Error("remember GitHub state", "plan_id", id, "err", err)
			}
			_ = b.record(ctx, audit.GitHubUpdated, "", &p, map[string]string{"wrote": strings.Join(wrote, ", "),
				"comment_id": fmt.Sprint(comment)})
		}
	}()
	fail := func(err error) error {
		b.log.Warn("GitHub unavailable; will retry", "plan_id", id, "err", err)
		_ = b.record(ctx, audit.GitHubUnavailable, "", &p, map[string]string{"error": runner.Redact(err.Error())})
		return err
	}
	if p.PR > 0 {
		body := b.githubComment(ctx, p)
		sum := sha256.Sum256([]byte(body))
		if digest := hex.EncodeToString(sum[:]); posted["comment"] != digest {
			cid, err := b.o.GitHub.UpsertComment(ctx, repo, p.PR, comment, body)
			if err != nil {
				return fail(err)
			}
			comment, posted["comment"] = cid, digest
			wrote = append(wrote, "comment")
		}
	}
	for _, st := range b.githubStatuses(p) {
		value := st.state + "|" + st.description
		if posted[st.context] == value {
			continue
		}
		if b.checks != nil {
			// The run's ID is remembered with the plan, so that each change
			// updates the one run; without it, the run is found by name.
			key := checkRunKey + st.context
			id, _ := strconv.ParseInt(posted[key], 10, 64)
			status, conclusion := checkRunState(p, st)
			id, err := b.checks.UpsertCheckRun(ctx, repo, p.SHA, id, st.context, status, conclusion, st.description,
				checkRunSummary(p, st), p.Permalink)
			if err != nil {
				return fail(err)
			}
			posted[key] = strconv.FormatInt(id, 10)
		} else if err := b.o.GitHub.SetStatus(ctx, repo, p.SHA, st.context, st.state, st.description, p.Permalink); err != nil {
			return fail(err)
		}
		posted[st.context] = value
		wrote = append(wrote, st.context+"="+st.state)
	}
	return nil
}

type commitStatus struct{ context, state, description string }

// githubStatuses are the commit statuses a plan should show:
// twokey/plan/<env> and twokey/apply/<env>, so branch protection can
// require, say, "applied to staging".
func (b *Syncer) githubStatuses(p approvals.Plan) []commitStatus {
	scope := b.o.Scope(p.Project, p.Env)
	planCtx, applyCtx := "twokey/plan/"+scope, "twokey/apply/"+scope
	s := p.Summary
	planned := fmt.Sprintf("plan %s: %s", p.ID, s.Counts())
	if p.Policy.Status() == approvals.PolicyDenied {
		planned += " · policy denied"
	}
	switch p.Status {
	case approvals.StatusPlanning:
		return []commitStatus{{planCtx, "pending", "planning " + p.ID}}
	case approvals.StatusPlanFailed:
		return []commitStatus{{planCtx, "failure", "terraform plan failed"}}
	case approvals.StatusNoChanges:
		return []commitStatus{{planCtx, "success", "no changes"}}
	case approvals.StatusPending:
		planState := "success"
		if !approvals.Overridden(p) {
			planState = "failure" // denied by policy, not overridden
		}
		return []commitStatus{{planCtx, planState, planned},
			{applyCtx, "pending", fmt.Sprintf("approvals %d of %d; needs %s", len(approvals.Approvers(p)), p.Required, plainText(change.Needs(p)))}}
	case approvals.StatusApplying:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "pending", "applying " + p.ID}}
	case approvals.StatusApplied:
		if change.VerificationFailed(p) { // failure, so that branch protection notices
			return []commitStatus{{planCtx, "success", planned}, {applyCtx, "failure", "applied; verification failed" + strings.TrimPrefix(plainText(p.Reason), change.VerifyFailedWords)}}
		}
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "success", "applied: " + plainText(p.Reason)}}
	case approvals.StatusFailed:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "failure", "terraform apply failed"}}
	case approvals.StatusRejected:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "failure", "rejected by " + b.o.Name(context.Background(), p.Actor)}}
	case approvals.StatusInterrupted:
		return []commitStatus{{applyCtx, "error", "interrupted: check the environment"}}
	}
	return []commitStatus{{applyCtx, "error", "void: " + plainText(p.Reason)}}
}

// checkRunKey prefixes a check run's ID in what a plan's GitHub state
// remembers.
const checkRunKey = "check_run:"

// checkRunState maps a commit status onto a check run's status and
// conclusion: pending is in progress while terraform runs and queued while
// the plan waits for approvals; the rest complete the run.
func checkRunState(p approvals.Plan, st commitStatus) (status, conclusion string) {
	switch st.state {
	case "pending":
		if p.Status == approvals.StatusPlanning || p.Status == approvals.StatusApplying {
			return "in_progress", ""
		}
		return "queued", ""
	case "success":
		return "completed", "success"
	case "failure":
		return "completed", "failure"
	}
	// error: an interrupted apply needs someone to look (GitHub wants a
	// link for that); a voided plan was cancelled.
	if p.Status == approvals.StatusInterrupted {
		if p.Permalink != "" {
			return "completed", "action_required"
		}
		return "completed", "failure"
	}
	return "completed", "cancelled"
}

// checkRunSummary is the markdown under a check run's title.
func checkRunSummary(p approvals.Plan, st commitStatus) string {
	var c strings.Builder
	fmt.Fprintf(&c, "%s\n\n`%s/%s` · plan `%s`", st.description, p.Project, p.Env, p.ID)
	if p.Digest != "" {
		fmt.Fprintf(&c, " · sha256 `%s` · fence %d", p.Digest, p.Fence)
	}
	if p.Permalink != "" {
		fmt.Fprintf(&c, "\n\n[The plan in Slack](%s)", p.Permalink)
	}
	return c.String()
}

// githubComment is the PR comment of a plan, in GitHub markdown.
func (b *Syncer) githubComment(ctx context.Context, p approvals.Plan) string {
	var c strings.Builder
	fmt.Fprintf(&c, "### %s twokey · `%s/%s` · plan `%s`\n\n", change.StatusIcon(p.Status), p.Project, p.Env, p.ID)
	fmt.Fprintf(&c, "**%s** at `%s`, asked by %s\n\n", change.StatusHeadline(p), change.Short(p.SHA), b.o.Name(ctx, p.Requester))
	if p.Digest != "" {
		s := p.Summary
		fmt.Fprintf(&c, "**%d** to add · **%d** to change · **%d** to destroy · all changes `%s`\n\n", s.Add, s.Change, s.Destroy, s.Counts())
		const maxRows = 50
		for i, r := range s.Resources {
			if i == maxRows {
				fmt.Fprintf(&c, "- … and %d more (the full plan is in the Slack thread)\n", len(s.Resources)-maxRows)
				break
			}
			fmt.Fprintf(&c, "- `%s %s`%s\n", change.ActionSign(r.Action), r.Address, change.ActionNote(r.Action))
		}
		c.WriteString("\n")
		if line := change.PolicySummary(p); line != "" {
			c.WriteString(plainText(line) + "\n\n")
		}
	}
	if users := approvals.Approvers(p); len(users) > 0 {
		var names []string
		for _, u := range users {
			names = append(names, b.o.Name(ctx, u))
		}
		fmt.Fprintf(&c, "Approved by %s (%d of %d).\n\n", strings.Join(names, ", "), len(users), p.Required)
	}
	if line := change.Outcome(p); line != "" {
		c.WriteString(plainText(line) + "\n\n")
	}
	if p.Permalink != "" {
		fmt.Fprintf(&c, "[The plan in Slack](%s) · ", p.Permalink)
	}
	fmt.Fprintf(&c, "sha256 `%s` · fence %d", p.Digest, p.Fence)
	return c.String()
}

var slackMarkup = regexp.MustCompile(`<([^<>|]+)(?:\|([^<>]+))?>`)

// plainText turns a bot-written mrkdwn line into text for GitHub.
func plainText(s string) string {
	s = slackMarkup.ReplaceAllStringFunc(s, func(m string) string {
		parts := slackMarkup.FindStringSubmatch(m)
		if parts[2] != "" {
			return parts[2]
		}
		return strings.TrimPrefix(strings.TrimPrefix(parts[1], "@"), "#")
	})
	return strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "*", "").Replace(s)
}

// sleep waits d, or less when a plan changes or ctx ends.
func (b *Syncer) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-b.wake:
	case <-t.C:
	}
}

// record appends an event about p.
func (b *Syncer) record(ctx context.Context, typ string, _ string, p *approvals.Plan, detail map[string]string) error {
	e := audit.Event{Type: typ, Actor: audit.Actor{ID: "twokey", Name: "twokey"}, Detail: detail,
		Project: p.Project, Env: p.Env, PR: p.PR, Ref: p.Ref.String(), SHA: p.SHA,
		PlanID: p.ID, Digest: p.Digest, Fence: p.Fence, Permalink: p.Permalink}
	for k, v := range e.Detail {
		if v == "" {
			delete(e.Detail, k)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := b.o.Audit.Record(ctx, e); err != nil {
		b.log.Error("audit record not written", "type", typ, "plan_id", p.ID, "err", err)
		return err
	}
	return nil
}
