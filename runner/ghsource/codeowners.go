package ghsource

import (
	"fmt"
	"regexp"
	"strings"
)

// codeOwners is a parsed CODEOWNERS file: its rules in file order; the
// last rule that matches a path names its owners.
type codeOwners struct {
	rules []ownerRule
}

type ownerRule struct {
	line   int
	re     *regexp.Regexp
	owners []string // "@login", "@org/team" or an email address; none: the path has no owners
}

// ownerRE is an owner: @login, @org/team-slug, or an email address.
var ownerRE = regexp.MustCompile(`^(@[A-Za-z0-9](?:[A-Za-z0-9-]*)(?:/[A-Za-z0-9._-]+)?|[^@\s]+@[^@\s]+)$`)

// parseCodeOwners reads CODEOWNERS as GitHub documents it: one pattern and
// its owners a line, # comments, gitignore-style patterns without !
// negation or [ ] ranges. A line GitHub would ignore as invalid is
// reported as a problem, so that an ignored line cannot quietly take an
// owner off a path; the other lines still count.
func parseCodeOwners(text string) (codeOwners, []string) {
	var c codeOwners
	var problems []string
	for i, line := range strings.Split(text, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		pattern := fields[0]
		if strings.HasPrefix(pattern, `\#`) {
			pattern = pattern[1:]
		}
		re, err := ownersPattern(pattern)
		if err != nil {
			problems = append(problems, fmt.Sprintf("CODEOWNERS line %d: %v", i+1, err))
			continue
		}
		rule := ownerRule{line: i + 1, re: re}
		bad := false
		for _, o := range fields[1:] {
			if strings.HasPrefix(o, "#") {
				break // an inline comment
			}
			if !ownerRE.MatchString(o) {
				problems = append(problems, fmt.Sprintf("CODEOWNERS line %d: %q is not an owner (@user, @org/team or an email address)", i+1, o))
				bad = true
				break
			}
			rule.owners = append(rule.owners, o)
		}
		if !bad {
			c.rules = append(c.rules, rule)
		}
	}
	return c, problems
}

// owners returns the owners of path (slash-separated, relative to the
// repository's root): the last matching rule's, possibly none.
func (c codeOwners) owners(path string) []string {
	for i := len(c.rules) - 1; i >= 0; i-- {
		if c.rules[i].re.MatchString(path) {
			return c.rules[i].owners
		}
	}
	return nil
}

// ownersPattern turns a CODEOWNERS pattern into a regular expression over
// a file's path, following GitHub's documentation:
//   - a pattern with a slash at its start or in its middle is relative to
//     the root (a leading slash is dropped); one without matches at any
//     depth (*.js, apps/);
//   - a trailing slash matches a directory: every file below it;
//   - a pattern that names a directory without a trailing slash covers
//     the files below it too (/build/logs), except where its last part has
//     a wildcard: docs/* matches docs/a.md but not docs/b/c.md;
//   - * and ? match within one path part; ** as a whole part matches any
//     number of directories (**/logs, a/**/b, docs/**).
func ownersPattern(p string) (*regexp.Regexp, error) {
	switch {
	case strings.HasPrefix(p, "!"):
		return nil, fmt.Errorf("pattern %q: negation (!) is not supported in CODEOWNERS", p)
	case strings.ContainsAny(p, "[]"):
		return nil, fmt.Errorf("pattern %q: character ranges ([ ]) are not supported in CODEOWNERS", p)
	}
	dirOnly := strings.HasSuffix(p, "/")
	p = strings.TrimSuffix(p, "/")
	anchored := strings.Contains(p, "/")
	p = strings.TrimPrefix(p, "/")
	if p == "" || strings.Contains(p, "//") {
		return nil, fmt.Errorf("pattern %q matches nothing", p)
	}
	var b strings.Builder
	b.WriteString("^")
	if !anchored {
		b.WriteString("(?:.*/)?")
	}
	segs := strings.Split(p, "/")
	last := segs[len(segs)-1]
	for i, seg := range segs {
		isLast := i == len(segs)-1
		if seg == "**" {
			if isLast {
				b.WriteString(".*")
			} else {
				b.WriteString("(?:[^/]+/)*")
			}
			continue
		}
		for _, r := range seg {
			switch r {
			case '*':
				b.WriteString("[^/]*")
			case '?':
				b.WriteString("[^/]")
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		if !isLast {
			b.WriteString("/")
		}
	}
	switch {
	case last == "**":
	case dirOnly:
		b.WriteString("/.*")
	case !strings.ContainsAny(last, "*?"):
		b.WriteString("(?:/.*)?")
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}
