package ghsource

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v89/github"

	"github.com/twokey/twokey/runner"
)

// Checks reports whether the Source writes check runs: it does with a
// GitHub App, whose check runs no token holder can forge. Without one it
// writes commit statuses (SetStatus).
func (s *Source) Checks() bool { return s.app != nil }

// UpsertCheckRun writes the App's check run name on commit sha: it updates
// run id, or when id is 0 (or run id is gone) the App's latest run of that
// name on that commit, and creates a run only when there is none. status is
// queued, in_progress or completed (with a conclusion: success, failure,
// cancelled, action_required, …). It returns the run's ID.
func (s *Source) UpsertCheckRun(ctx context.Context, repo, sha string, id int64, name, status, conclusion, title, summary, detailsURL string) (int64, error) {
	if s.app == nil {
		return 0, fmt.Errorf("%w: check run %s: check runs need a GitHub App", runner.ErrSource, name)
	}
	owner, repoName, _ := strings.Cut(repo, "/")
	if r := []rune(title); len(r) > 140 {
		title = string(r[:139]) + "…"
	}
	if r := []rune(summary); len(r) > 60000 { // GitHub's limit is 65535
		summary = string(r[:59999]) + "…"
	}
	output := &github.CheckRunOutput{Title: &title, Summary: &summary}
	var details, concl *string
	if detailsURL != "" {
		details = &detailsURL
	}
	var completed *github.Timestamp
	if status == "completed" {
		concl, completed = &conclusion, &github.Timestamp{Time: time.Now()}
	}
	fail := func(err error) (int64, error) {
		return id, fmt.Errorf("%w: check run %s on %s@%s: %w", runner.ErrSource, name, repo, shortSHA(sha), err)
	}
	if id == 0 {
		appID := s.app.AppID()
		runs, _, err := s.gh.Checks.ListCheckRunsForRef(ctx, owner, repoName, sha, &github.ListCheckRunsOptions{
			CheckName: &name, AppID: &appID, Filter: github.Ptr("latest")})
		if err != nil {
			return fail(err)
		}
		for _, r := range runs.CheckRuns {
			if r.GetName() == name && r.GetHeadSHA() == sha && r.GetApp().GetID() == appID {
				id = r.GetID()
				break
			}
		}
	}
	if id != 0 {
		run, resp, err := s.gh.Checks.UpdateCheckRun(ctx, owner, repoName, id, github.UpdateCheckRunOptions{
			Name: name, Status: &status, Conclusion: concl, CompletedAt: completed, DetailsURL: details, Output: output})
		if err == nil {
			return run.GetID(), nil
		}
		if resp == nil || resp.StatusCode != http.StatusNotFound {
			return fail(err)
		}
		// The run is gone: make another.
	}
	run, _, err := s.gh.Checks.CreateCheckRun(ctx, owner, repoName, github.CreateCheckRunOptions{
		Name: name, HeadSHA: sha, Status: &status, Conclusion: concl, CompletedAt: completed, DetailsURL: details, Output: output})
	if err != nil {
		return fail(err)
	}
	return run.GetID(), nil
}
