package ghsource

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-github/v89/github"

	"github.com/twokey/twokey/approvals"
	"github.com/twokey/twokey/runner"
)

// mergeableRetries is how many more times a pull request is read while
// GitHub is still computing its mergeability.
const mergeableRetries = 4

// codeownersPaths are where GitHub looks for CODEOWNERS, in its order.
var codeownersPaths = []string{".github/CODEOWNERS", "CODEOWNERS", "docs/CODEOWNERS"}

// Requirements checks a revision against GitHub-side requirements, as GitHub
// says things are now, and returns those it does not meet, in the order
// asked, each with a reason a person can act on. The caller checks when a
// plan is made and again right before apply, and refuses while any is unmet.
//
// The authors are rev.Authors (Resolve fills them in): an approval from any
// of them counts for nothing, matched by numeric GitHub ID or by login
// (case-insensitive), either one sufficing. A caller that knows more people
// to exclude adds them to rev.Authors.
//
// It fails closed: when GitHub cannot be asked or answers something it
// cannot read, it returns an error wrapping runner.ErrSource (the pull
// request gone: runner.ErrPRNotFound), never "met".
//
// A revision that is not a pull request (a commit or tag of the default
// branch, resolved for a rollback) meets every requirement trivially: all
// four are about a pull request's reviews, mergeability and base, and
// Resolve has already checked that the commit is on the default branch,
// where it arrived through that branch's own protection. A rollback is
// behind the branch's tip by design, so "undiverged" cannot apply to it.
//
// A pull request that was closed, or whose head moved since rev was
// resolved, meets none of them: the reviews and checks of another commit
// say nothing about the one planned.
func (s *Source) Requirements(ctx context.Context, rev runner.Revision, reqs []runner.Requirement) ([]runner.Unmet, error) {
	for _, r := range reqs {
		if !r.Valid() {
			return nil, fmt.Errorf("%w: unknown requirement %q", runner.ErrSource, string(r))
		}
	}
	if len(reqs) == 0 || rev.PR == 0 {
		return nil, nil
	}
	owner, name, ok := strings.Cut(rev.Repo, "/")
	if !ok {
		return nil, fmt.Errorf("repository %q is not owner/name", rev.Repo)
	}
	c := &reqCheck{s: s, rev: rev, owner: owner, name: name, teams: map[string][]*github.User{}, hidden: map[string]bool{}}
	if err := c.readPull(ctx); err != nil {
		return nil, err
	}
	if why := c.unusable(); why != "" {
		var out []runner.Unmet
		for _, r := range reqs {
			out = append(out, runner.Unmet{Requirement: r, Reason: why})
		}
		return out, nil
	}
	var out []runner.Unmet
	for _, r := range reqs {
		var reasons []string
		var err error
		switch r {
		case runner.RequireApproved:
			reasons, err = c.approved(ctx)
		case runner.RequireMergeable:
			reasons, err = c.mergeable(ctx)
		case runner.RequireUndiverged:
			reasons, err = c.undiverged(ctx)
		case runner.RequireCodeOwners:
			reasons, err = c.codeowners(ctx)
		}
		if err != nil {
			return nil, err
		}
		for _, why := range reasons {
			out = append(out, runner.Unmet{Requirement: r, Reason: why})
		}
	}
	return out, nil
}

// reqCheck is one Requirements call: the pull request as read, and what
// was read for one requirement and is needed by another.
type reqCheck struct {
	s           *Source
	rev         runner.Revision
	owner, name string
	pr          *github.PullRequest
	counted     *approvalsRead            // nil until read
	teams       map[string][]*github.User // "org/slug" → members
	hidden      map[string]bool           // "org/slug" of teams GitHub answered 404 for
	branch      string                    // the repository's default branch, once read
}

// defaultBranch is the repository's default branch: what undiverged and
// codeowners compare against. Never the pull request's base, which its
// author chooses — retargeting a pull request at an old branch, whose
// CODEOWNERS owns nothing and whose tip is long behind, keeps its head
// and so its plan and approvals.
func (c *reqCheck) defaultBranch(ctx context.Context) (string, error) {
	if c.branch != "" {
		return c.branch, nil
	}
	r, resp, err := c.s.gh.Repositories.Get(ctx, c.owner, c.name)
	if err != nil {
		return "", c.s.apiError(resp, err, c.where("repository"), runner.ErrRefNotFound)
	}
	if c.branch = r.GetDefaultBranch(); c.branch == "" {
		return "", fmt.Errorf("%w: github: %s has no default branch", runner.ErrSource, c.rev.Repo)
	}
	return c.branch, nil
}

func (c *reqCheck) where(what string) string {
	return fmt.Sprintf("%s#%d %s", c.rev.Repo, c.rev.PR, what)
}

func (c *reqCheck) readPull(ctx context.Context) error {
	p, resp, err := c.s.gh.PullRequests.Get(ctx, c.owner, c.name, c.rev.PR)
	if err != nil {
		return c.s.apiError(resp, err, fmt.Sprintf("%s#%d", c.rev.Repo, c.rev.PR), runner.ErrPRNotFound)
	}
	c.pr = p
	return nil
}

// unusable says why the pull request as read now cannot meet anything.
func (c *reqCheck) unusable() string {
	switch {
	case c.pr.GetMerged():
		return "the pull request is merged"
	case c.pr.GetState() != "open":
		return "the pull request is " + c.pr.GetState()
	case c.pr.GetHead().GetSHA() != c.rev.SHA:
		return fmt.Sprintf("the pull request's head is now %s, not the planned %s", shortSHA(c.pr.GetHead().GetSHA()), shortSHA(c.rev.SHA))
	case c.pr.GetBase().GetRef() == "":
		return "GitHub did not say the pull request's base branch"
	}
	return ""
}

// author returns how u is one of the revision's authors ("PR author"),
// or "" if u is not one.
func (c *reqCheck) author(u *github.User) string {
	for _, a := range c.rev.Authors {
		if sameAccount(u, a) {
			return a.As
		}
	}
	return ""
}

func sameAccount(u *github.User, a approvals.Author) bool {
	return a.ID != 0 && u.GetID() == a.ID || a.Login != "" && strings.EqualFold(u.GetLogin(), a.Login)
}

// approvals reads the reviews and returns the reviewers whose approval
// counts — each reviewer's latest decisive review (APPROVED,
// CHANGES_REQUESTED or DISMISSED; a comment changes nothing, as on GitHub)
// approves the head commit, the reviewer is not an author, and can write
// to the repository — and, for people, why the others do not.
func (c *reqCheck) approvals(ctx context.Context) ([]*github.User, []string, error) {
	if c.counted == nil {
		ok, notes, err := c.readApprovals(ctx)
		if err != nil {
			return nil, nil, err
		}
		c.counted = &approvalsRead{ok: ok, notes: notes}
	}
	return c.counted.ok, c.counted.notes, nil
}

type approvalsRead struct {
	ok    []*github.User
	notes []string
}

func (c *reqCheck) readApprovals(ctx context.Context) ([]*github.User, []string, error) {
	var reviews []*github.PullRequestReview
	opts := &github.ListOptions{PerPage: 100}
	for {
		page, resp, err := c.s.gh.PullRequests.ListReviews(ctx, c.owner, c.name, c.rev.PR, opts)
		if err != nil {
			return nil, nil, c.s.apiError(resp, err, c.where("reviews"), runner.ErrPRNotFound)
		}
		reviews = append(reviews, page...)
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	type latest struct {
		user   *github.User
		review *github.PullRequestReview
	}
	var order []string
	last := map[string]latest{}
	for _, r := range reviews {
		switch r.GetState() {
		case "APPROVED", "CHANGES_REQUESTED", "DISMISSED":
		default:
			continue
		}
		u := r.GetUser()
		key := strings.ToLower(u.GetLogin())
		if u.GetID() != 0 {
			key = fmt.Sprint(u.GetID())
		}
		if key == "" {
			continue
		}
		if _, seen := last[key]; !seen {
			order = append(order, key)
		}
		last[key] = latest{user: u, review: r}
	}
	var ok []*github.User
	var notes []string
	for _, key := range order {
		l := last[key]
		login := l.user.GetLogin()
		switch {
		case l.review.GetState() == "DISMISSED":
			notes = append(notes, login+"'s review was dismissed")
		case l.review.GetState() == "CHANGES_REQUESTED":
			notes = append(notes, login+" requested changes")
		case l.review.GetCommitID() != c.rev.SHA:
			notes = append(notes, fmt.Sprintf("%s approved an older commit, %s", login, shortSHA(l.review.GetCommitID())))
		case c.author(l.user) != "":
			notes = append(notes, fmt.Sprintf("%s approved but is the %s", login, c.author(l.user)))
		default:
			writes, err := c.canWrite(ctx, l.user)
			if err != nil {
				return nil, nil, err
			}
			if !writes {
				notes = append(notes, fmt.Sprintf("%s approved but cannot write to %s", login, c.rev.Repo))
				continue
			}
			ok = append(ok, l.user)
		}
	}
	return ok, notes, nil
}

// canWrite reports whether u may write to the repository. As in GitHub's
// branch protection, an approval counts only from someone who could merge
// the change: on a public repository anyone can leave an approving review.
func (c *reqCheck) canWrite(ctx context.Context, u *github.User) (bool, error) {
	if u.GetLogin() == "" {
		return false, nil
	}
	perm, resp, err := c.s.gh.Repositories.GetPermissionLevel(ctx, c.owner, c.name, u.GetLogin())
	if resp != nil && resp.StatusCode == http.StatusNotFound {
		return false, nil // no such account any more
	}
	if err != nil {
		return false, fmt.Errorf("%w: github: %s's permission on %s: %w", runner.ErrSource, u.GetLogin(), c.rev.Repo, err)
	}
	switch perm.GetPermission() {
	case "admin", "write":
		return true, nil
	}
	return false, nil
}

func (c *reqCheck) approved(ctx context.Context) ([]string, error) {
	ok, notes, err := c.approvals(ctx)
	if err != nil || len(ok) > 0 {
		return nil, err
	}
	why := fmt.Sprintf("no approving review on the head commit %s from someone other than its authors", shortSHA(c.rev.SHA))
	if len(notes) > 0 {
		why += " (" + strings.Join(notes, "; ") + ")"
	}
	return []string{why}, nil
}

// mergeable asks GitHub whether the pull request is mergeable. GitHub
// computes that in the background and answers null meanwhile, so a null
// is asked again a few times, waiting longer each time.
func (c *reqCheck) mergeable(ctx context.Context) ([]string, error) {
	wait := c.s.o.MergeableBackoff
	for i := 0; c.pr.Mergeable == nil && i < mergeableRetries; i++ {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w: waiting for GitHub to compute mergeability: %w", runner.ErrSource, ctx.Err())
		case <-t.C:
		}
		wait *= 2
		if err := c.readPull(ctx); err != nil {
			return nil, err
		}
		if why := c.unusable(); why != "" {
			return []string{why}, nil
		}
	}
	switch {
	case c.pr.Mergeable == nil:
		return []string{"GitHub has not computed mergeability yet; try again in a moment"}, nil
	case !c.pr.GetMergeable():
		return []string{fmt.Sprintf("GitHub says the pull request is not mergeable (state: %s)", c.pr.GetMergeableState())}, nil
	}
	return nil, nil
}

// undiverged compares the default branch with the head: the head must
// have every commit of the branch's current tip.
func (c *reqCheck) undiverged(ctx context.Context) ([]string, error) {
	base, err := c.defaultBranch(ctx)
	if err != nil {
		return nil, err
	}
	cmp, resp, err := c.s.gh.Repositories.CompareCommits(ctx, c.owner, c.name, base, c.rev.SHA, &github.ListOptions{PerPage: 1})
	if err != nil {
		return nil, c.s.apiError(resp, err, c.where("compare "+base+"..."+shortSHA(c.rev.SHA)), runner.ErrRefNotFound)
	}
	if cmp.BehindBy == nil {
		return nil, fmt.Errorf("%w: github: compare %s...%s did not say how far behind the head is", runner.ErrSource, base, shortSHA(c.rev.SHA))
	}
	if cmp.GetBehindBy() == 0 {
		return nil, nil
	}
	return []string{fmt.Sprintf("the head does not contain %s's tip %s; rebase or merge %s", base, shortSHA(cmp.GetBaseCommit().GetSHA()), base)}, nil
}

// codeowners checks that every changed file with code owners has an
// approval that counts (see approvals) from one of them: a user named, or
// a member of a team named.
//
// CODEOWNERS is read from the default branch, never from the pull
// request's head or its base: the author can rewrite the head's copy to
// name themselves or a friend, and can retarget the pull request at a
// branch whose copy owns nothing, while the default branch's copy only
// changes through a reviewed merge. A change to CODEOWNERS itself thus
// needs the approval of whoever the default branch's copy says owns it.
func (c *reqCheck) codeowners(ctx context.Context) ([]string, error) {
	// By branch name: the branch's current tip, whose CODEOWNERS is the
	// policy now.
	base, err := c.defaultBranch(ctx)
	if err != nil {
		return nil, err
	}
	text, found, err := c.codeownersFile(ctx, base)
	if err != nil {
		return nil, err
	}
	if !found {
		return []string{fmt.Sprintf("%s has no CODEOWNERS file (in .github/, the root or docs/), so no file has code owners to approve it", base)}, nil
	}
	rules, problems := parseCodeOwners(text)
	reasons := append([]string(nil), problems...)

	files, err := c.changedFiles(ctx)
	if err != nil {
		return nil, err
	}
	if n := c.pr.GetChangedFiles(); len(files) < n {
		reasons = append(reasons, fmt.Sprintf("GitHub lists only %d of the pull request's %d changed files, so the owners of the rest cannot be checked", len(files), n))
	}
	approvers, _, err := c.approvals(ctx)
	if err != nil {
		return nil, err
	}
	// Files without an owner's approval, grouped by their owners.
	var groups []string
	unowned := map[string][]string{}
	for _, f := range files {
		for _, path := range []string{f.GetPreviousFilename(), f.GetFilename()} {
			if path == "" {
				continue
			}
			owners := rules.owners(path)
			if len(owners) == 0 {
				continue
			}
			ok, err := c.ownerApproved(ctx, owners, approvers)
			if err != nil {
				return nil, err
			}
			if ok {
				continue
			}
			key := strings.Join(owners, " ")
			if _, seen := unowned[key]; !seen {
				groups = append(groups, key)
			}
			if !slices.Contains(unowned[key], path) {
				unowned[key] = append(unowned[key], path)
			}
		}
	}
	for _, key := range groups {
		paths := unowned[key]
		var hidden []string
		for _, o := range strings.Fields(key) {
			if c.hidden[strings.ToLower(strings.TrimPrefix(o, "@"))] {
				hidden = append(hidden, o)
			}
		}
		note := ""
		if len(hidden) > 0 {
			note = fmt.Sprintf(" (GitHub shows no team %s: it does not exist, or twokey's token may not read its members)", strings.Join(hidden, ", "))
		}
		switch {
		case len(paths) == 1:
			reasons = append(reasons, fmt.Sprintf("%s has no approving review from its code owners %s%s", paths[0], key, note))
		case len(paths) <= 3:
			reasons = append(reasons, fmt.Sprintf("%s and %s have no approving review from their code owners %s%s",
				strings.Join(paths[:len(paths)-1], ", "), paths[len(paths)-1], key, note))
		default:
			reasons = append(reasons, fmt.Sprintf("%s and %d more files have no approving review from their code owners %s%s",
				strings.Join(paths[:3], ", "), len(paths)-3, key, note))
		}
	}
	return reasons, nil
}

// codeownersFile reads the first CODEOWNERS GitHub would use at ref.
func (c *reqCheck) codeownersFile(ctx context.Context, ref string) (string, bool, error) {
	for _, path := range codeownersPaths {
		fc, _, resp, err := c.s.gh.Repositories.GetContents(ctx, c.owner, c.name, path, &github.RepositoryContentGetOptions{Ref: ref})
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("%w: github: read %s at %s: %w", runner.ErrSource, path, ref, err)
		}
		if fc == nil || fc.GetType() != "file" {
			continue // a directory by that name
		}
		text, err := fc.GetContent()
		if err != nil {
			return "", false, fmt.Errorf("%w: github: read %s at %s: %w", runner.ErrSource, path, ref, err)
		}
		return text, true, nil
	}
	return "", false, nil
}

func (c *reqCheck) changedFiles(ctx context.Context) ([]*github.CommitFile, error) {
	var files []*github.CommitFile
	opts := &github.ListOptions{PerPage: 100}
	for {
		page, resp, err := c.s.gh.PullRequests.ListFiles(ctx, c.owner, c.name, c.rev.PR, opts)
		if err != nil {
			return nil, c.s.apiError(resp, err, c.where("files"), runner.ErrPRNotFound)
		}
		files = append(files, page...)
		if resp.NextPage == 0 {
			return files, nil
		}
		opts.Page = resp.NextPage
	}
}

// ownerApproved reports whether one of approvers is one of owners: named
// (@login), or a member of a team named (@org/team). An email owner
// cannot be told from a review, whose user carries no address, so it
// approves nothing; a team GitHub does not show (404: no such team, or
// the token may not read it) has no members.
func (c *reqCheck) ownerApproved(ctx context.Context, owners []string, approvers []*github.User) (bool, error) {
	if len(approvers) == 0 {
		return false, nil
	}
	for _, o := range owners {
		name, ok := strings.CutPrefix(o, "@")
		if !ok {
			continue
		}
		org, slug, isTeam := strings.Cut(name, "/")
		if !isTeam {
			for _, a := range approvers {
				if strings.EqualFold(a.GetLogin(), name) {
					return true, nil
				}
			}
			continue
		}
		members, err := c.teamMembers(ctx, org, slug)
		if err != nil {
			return false, err
		}
		for _, a := range approvers {
			for _, m := range members {
				if m.GetID() != 0 && m.GetID() == a.GetID() || strings.EqualFold(m.GetLogin(), a.GetLogin()) {
					return true, nil
				}
			}
		}
	}
	return false, nil
}

func (c *reqCheck) teamMembers(ctx context.Context, org, slug string) ([]*github.User, error) {
	key := strings.ToLower(org + "/" + slug)
	if m, ok := c.teams[key]; ok {
		return m, nil
	}
	var members []*github.User
	opts := &github.TeamListTeamMembersOptions{ListOptions: github.ListOptions{PerPage: 100}}
	for {
		page, resp, err := c.s.gh.Teams.ListTeamMembersBySlug(ctx, org, slug, opts)
		if resp != nil && resp.StatusCode == http.StatusNotFound {
			members = nil
			c.hidden[key] = true
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: github: members of @%s/%s: %w", runner.ErrSource, org, slug, err)
		}
		members = append(members, page...)
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	c.teams[key] = members
	return members, nil
}
