package bot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/audit"
	"github.com/twokey/twokey/runner"
)

// PullRequests writes to GitHub; *ghsource.Source is one.
type PullRequests interface {
	// UpsertComment creates a comment (id 0) or edits comment id in place.
	UpsertComment(ctx context.Context, repo string, pr int, id int64, body string) (int64, error)
	SetStatus(ctx context.Context, repo, sha, context, state, description, targetURL string) error
}

// GitHubState remembers which plans changed since they were shown on
// GitHub, and what was shown.
type GitHubState interface {
	MarkDirty(ctx context.Context, id string) error
	TakeDirty(ctx context.Context, n int) ([]string, error)
	GitHubState(ctx context.Context, id string) (comment int64, posted map[string]string, err error)
	SetGitHubState(ctx context.Context, id string, comment int64, posted map[string]string) error
}

// uploadPlan puts the full plan text in the plan's thread as a file.
func (b *Bot) uploadPlan(ctx context.Context, p approvals.Plan, text string) {
	if p.MessageTS == "" {
		return
	}
	b.uploadText(ctx, p.Channel, p.MessageTS, "plan-"+p.ID+".txt",
		fmt.Sprintf("terraform plan of %s for %s/%s", label(p), p.Project, p.Env), text)
}

// dirty marks a plan for the GitHub syncer.
func (b *Bot) dirty(ctx context.Context, id string) {
	if b.o.GitHubState == nil {
		return
	}
	if err := b.o.GitHubState.MarkDirty(context.WithoutCancel(ctx), id); err != nil {
		b.log.Warn("mark plan for GitHub", "plan_id", id, "err", err)
	}
}

// githubLease is the lock one replica holds while it writes to GitHub, so
// that statuses go out in the order they happened.
const githubLease = "twokey/github"

// githubSyncer brings each changed plan's PR comment and commit statuses up
// to date, in the background: GitHub being slow or down never holds up
// Slack, and the PR catches up when GitHub is back.
func (b *Bot) githubSyncer(ctx context.Context) {
	const ttl = 30 * time.Second
	for ctx.Err() == nil {
		lease, err := b.o.Locks.Acquire(ctx, githubLease, runner.Holder{User: "twokey", Ref: "GitHub sync"}, ttl)
		if err != nil {
			sleep(ctx, 5*time.Second) // another replica syncs, or Redis is away
			continue
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
			sleep(ctx, pause)
		}
		b.release(lease)
	}
}

// syncDirty syncs the plans marked dirty; it reports whether all went well.
func (b *Bot) syncDirty(ctx context.Context) bool {
	ids, err := b.o.GitHubState.TakeDirty(ctx, 50)
	if err != nil {
		return false
	}
	ok := true
	for i, id := range ids {
		if err := b.syncPlan(ctx, id); err != nil {
			// Keep this one and the rest for the next round, in order.
			for _, rest := range ids[i:] {
				b.dirty(ctx, rest)
			}
			return false
		}
	}
	return ok
}

// syncPlan writes a plan's comment (for pull requests) and statuses.
func (b *Bot) syncPlan(ctx context.Context, id string) error {
	p, err := b.o.Store.Get(ctx, id)
	if err != nil {
		return nil // gone: nothing to show
	}
	proj, _, err := b.cfg.Resolve(p.Project, p.Env)
	if err != nil {
		return nil
	}
	comment, posted, err := b.o.GitHubState.GitHubState(ctx, id)
	if err != nil {
		return err
	}
	var wrote []string
	defer func() {
		if len(wrote) > 0 {
			if err := b.o.GitHubState.SetGitHubState(context.WithoutCancel(ctx), id, comment, posted); err != nil {
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
			cid, err := b.o.GitHub.UpsertComment(ctx, proj.Repo, p.PR, comment, body)
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
		if err := b.o.GitHub.SetStatus(ctx, proj.Repo, p.SHA, st.context, st.state, st.description, p.Permalink); err != nil {
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
func (b *Bot) githubStatuses(p approvals.Plan) []commitStatus {
	scope := p.Env
	if len(b.cfg.Projects) > 1 {
		scope = p.Project + "/" + p.Env
	}
	planCtx, applyCtx := "twokey/plan/"+scope, "twokey/apply/"+scope
	s := p.Summary
	planned := fmt.Sprintf("plan %s: +%d ~%d -%d", p.ID, s.Add, s.Change, s.Destroy)
	switch p.Status {
	case approvals.StatusPlanning:
		return []commitStatus{{planCtx, "pending", "planning " + p.ID}}
	case approvals.StatusPlanFailed:
		return []commitStatus{{planCtx, "failure", "terraform plan failed"}}
	case approvals.StatusNoChanges:
		return []commitStatus{{planCtx, "success", "no changes"}}
	case approvals.StatusPending:
		return []commitStatus{{planCtx, "success", planned},
			{applyCtx, "pending", fmt.Sprintf("waiting for approvals (%d of %d)", len(approvals.Approvers(p)), p.Required)}}
	case approvals.StatusApplying:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "pending", "applying " + p.ID}}
	case approvals.StatusApplied:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "success", "applied: " + plainText(p.Reason)}}
	case approvals.StatusFailed:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "failure", "terraform apply failed"}}
	case approvals.StatusRejected:
		return []commitStatus{{planCtx, "success", planned}, {applyCtx, "failure", "rejected by " + b.dir.name(context.Background(), p.Actor)}}
	case approvals.StatusInterrupted:
		return []commitStatus{{applyCtx, "error", "interrupted: check the environment"}}
	}
	return []commitStatus{{applyCtx, "error", "void: " + plainText(p.Reason)}}
}

// githubComment is the PR comment of a plan, in GitHub markdown.
func (b *Bot) githubComment(ctx context.Context, p approvals.Plan) string {
	var c strings.Builder
	fmt.Fprintf(&c, "### %s twokey · `%s/%s` · plan `%s`\n\n", statusIcon(p.Status), p.Project, p.Env, p.ID)
	fmt.Fprintf(&c, "**%s** at `%s`, asked by %s\n\n", statusHeadline(p), short(p.SHA), b.dir.name(ctx, p.Requester))
	if p.Digest != "" {
		s := p.Summary
		fmt.Fprintf(&c, "**%d** to add · **%d** to change · **%d** to destroy\n\n", s.Add, s.Change, s.Destroy)
		const maxRows = 50
		for i, r := range s.Resources {
			if i == maxRows {
				fmt.Fprintf(&c, "- … and %d more (the full plan is in the Slack thread)\n", len(s.Resources)-maxRows)
				break
			}
			fmt.Fprintf(&c, "- `%s %s`%s\n", actionSign(r.Action), r.Address, actionNote(r.Action))
		}
		c.WriteString("\n")
	}
	if users := approvals.Approvers(p); len(users) > 0 {
		var names []string
		for _, u := range users {
			names = append(names, b.dir.name(ctx, u))
		}
		fmt.Fprintf(&c, "Approved by %s (%d of %d).\n\n", strings.Join(names, ", "), len(users), p.Required)
	}
	if line := outcome(p); line != "" {
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

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
