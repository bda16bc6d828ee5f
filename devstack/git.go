package devstack

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GitRepo is a bare repository standing in for a GitHub repository, with a
// working clone to make commits from. Pull requests are published like
// GitHub's, as refs/pull/<n>/head.
type GitRepo struct {
	Bare string // the repository a clone URL points at
	work string
}

// NewGitRepo creates an empty bare repository and its working clone in dir.
func NewGitRepo(ctx context.Context, dir string) (*GitRepo, error) {
	g := &GitRepo{Bare: filepath.Join(dir, "origin.git"), work: filepath.Join(dir, "work")}
	if err := git(ctx, "", "init", "-q", "--bare", "-b", "main", g.Bare); err != nil {
		return nil, err
	}
	if err := git(ctx, "", "init", "-q", "-b", "main", g.work); err != nil {
		return nil, err
	}
	if err := git(ctx, g.work, "remote", "add", "origin", g.Bare); err != nil {
		return nil, err
	}
	return g, nil
}

// CloneURL is the URL git fetches the repository from.
func (g *GitRepo) CloneURL() string { return "file://" + g.Bare }

// Commit makes a commit on branch, starting from base (a branch or SHA; empty
// for the first commit), writing files (a nil value deletes the file), and
// pushes the branch. It returns the commit's SHA.
func (g *GitRepo) Commit(ctx context.Context, branch, base, msg string, files map[string]*string) (string, error) {
	if base != "" {
		if err := git(ctx, g.work, "checkout", "-q", "-B", branch, base); err != nil {
			return "", err
		}
	} else if err := git(ctx, g.work, "checkout", "-q", "--orphan", branch); err != nil {
		return "", err
	}
	for name, content := range files {
		path := filepath.Join(g.work, filepath.FromSlash(name))
		if content == nil {
			if err := os.Remove(path); err != nil {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return "", err
		}
		// Scripts and programs are committed executable.
		mode := os.FileMode(0o644)
		if strings.HasPrefix(*content, "#!") || strings.HasPrefix(*content, "\x7fELF") {
			mode = 0o755
		}
		if err := os.WriteFile(path, []byte(*content), mode); err != nil {
			return "", err
		}
		if err := os.Chmod(path, mode); err != nil {
			return "", err
		}
	}
	if err := git(ctx, g.work, "add", "-A"); err != nil {
		return "", err
	}
	if err := git(ctx, g.work, "commit", "-q", "--allow-empty", "-m", msg); err != nil {
		return "", err
	}
	if err := git(ctx, g.work, "push", "-q", "-f", "origin", "HEAD:refs/heads/"+branch); err != nil {
		return "", err
	}
	return gitOutput(ctx, g.work, "rev-parse", "HEAD")
}

// PublishPull points refs/pull/<n>/head at sha, as GitHub does for a PR.
func (g *GitRepo) PublishPull(ctx context.Context, n int, sha string) error {
	return git(ctx, g.work, "push", "-q", "-f", "origin", fmt.Sprintf("%s:refs/pull/%d/head", sha, n))
}

// Tag tags sha (annotated with a message, or lightweight if msg is "") and
// pushes the tag.
func (g *GitRepo) Tag(ctx context.Context, name, sha, msg string) error {
	args := []string{"tag", "-f", name, sha}
	if msg != "" {
		args = []string{"tag", "-f", "-a", "-m", msg, name, sha}
	}
	if err := git(ctx, g.work, args...); err != nil {
		return err
	}
	return git(ctx, g.work, "push", "-q", "-f", "origin", "refs/tags/"+name)
}

// Str is a helper for Commit's file map.
func Str(s string) *string { return &s }

// gitEnv keeps the host's git configuration out of the repositories.
func gitEnv() []string {
	return append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=twokey", "GIT_AUTHOR_EMAIL=twokey@localhost",
		"GIT_COMMITTER_NAME=twokey", "GIT_COMMITTER_EMAIL=twokey@localhost")
}

func git(ctx context.Context, dir string, args ...string) error {
	_, err := gitOutput(ctx, dir, args...)
	return err
}

func gitOutput(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}
