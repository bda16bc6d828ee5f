package ghsource

import (
	"slices"
	"strings"
	"testing"
)

func TestCodeOwnersPatterns(t *testing.T) {
	tests := []struct {
		pattern string
		match   []string
		nomatch []string
	}{
		{"*", []string{"a", "a/b/c.tf"}, nil},
		{"*.js", []string{"a.js", "x/y/a.js"}, []string{"a.jsx", "a.js/b"}},
		{"/build/logs/", []string{"build/logs/a", "build/logs/x/y"}, []string{"build/logs", "x/build/logs/a"}},
		{"docs/*", []string{"docs/a.md"}, []string{"docs/b/c.md", "x/docs/a.md"}},
		{"apps/", []string{"apps/a", "x/apps/b/c"}, []string{"apps", "xapps/a"}},
		{"/docs/", []string{"docs/a", "docs/b/c"}, []string{"x/docs/a"}},
		{"**/logs", []string{"logs/a", "build/logs/a", "deeply/nested/logs/x/y"}, []string{"logsx/a"}},
		{"/scripts/", []string{"scripts/a.sh"}, []string{"x/scripts/a.sh"}},
		{"docs/**", []string{"docs/a", "docs/b/c"}, []string{"docs"}},
		{"a/**/b", []string{"a/b", "a/x/b", "a/x/y/b", "a/x/b/c"}, []string{"ab", "x/a/b"}},
		{"/infra/prod/main.tf", []string{"infra/prod/main.tf"}, []string{"infra/prod/main.tfx", "x/infra/prod/main.tf"}},
		{"main.tf", []string{"main.tf", "infra/main.tf"}, []string{"xmain.tf"}},
		{"infra", []string{"infra", "infra/a", "x/infra/b"}, []string{"infrastructure/a"}},
		{"infra/prod", []string{"infra/prod/a", "infra/prod"}, []string{"x/infra/prod/a"}},
		{"?.tf", []string{"a.tf", "x/b.tf"}, []string{"ab.tf"}},
		{"a.b", []string{"a.b"}, []string{"axb"}},
	}
	for _, tt := range tests {
		re, err := ownersPattern(tt.pattern)
		if err != nil {
			t.Errorf("%s: %v", tt.pattern, err)
			continue
		}
		for _, p := range tt.match {
			if !re.MatchString(p) {
				t.Errorf("%s does not match %s (%s)", tt.pattern, p, re)
			}
		}
		for _, p := range tt.nomatch {
			if re.MatchString(p) {
				t.Errorf("%s matches %s (%s)", tt.pattern, p, re)
			}
		}
	}
}

func TestParseCodeOwners(t *testing.T) {
	c, problems := parseCodeOwners(`# owners
*                @acme/platform  # everyone's default
/infra/prod/     @acme/net @Alice-GH ops@example.com
/infra/prod/README.md
\#weird          @bob
!negated         @bob
[ab].tf          @bob
x.tf             not-an-owner
`)
	if len(problems) != 3 {
		t.Fatalf("problems = %q", problems)
	}
	for i, want := range []string{"line 6: pattern \"!negated\"", "line 7: pattern \"[ab].tf\"", `line 8: "not-an-owner" is not an owner`} {
		if !strings.Contains(problems[i], want) {
			t.Errorf("problem %d = %q, want %q", i, problems[i], want)
		}
	}
	for path, want := range map[string][]string{
		"main.tf":               {"@acme/platform"},
		"infra/prod/main.tf":    {"@acme/net", "@Alice-GH", "ops@example.com"},
		"infra/prod/README.md":  nil, // a pattern without owners un-owns
		"#weird":                {"@bob"},
		"x.tf":                  {"@acme/platform"}, // the invalid line does not count
		"infra/prod/sub/a.tf":   {"@acme/net", "@Alice-GH", "ops@example.com"},
		"infra/staging/main.tf": {"@acme/platform"},
	} {
		if got := c.owners(path); !slices.Equal(got, want) {
			t.Errorf("owners(%s) = %q, want %q", path, got, want)
		}
	}
}

// Any CODEOWNERS text parses without panicking, and every rule kept
// compiles to an expression anchored at both ends.
func FuzzCodeOwners(f *testing.F) {
	f.Add("* @acme/platform\n/infra/prod/ @acme/net # net\n", "infra/prod/main.tf")
	f.Add("docs/* docs@example.com\n**/logs @a\na/**/b @b\n\\#x @c\n", "a/x/b/c")
	f.Add("!x @a\n[a] @b\n/ @c\n// @d\n", "x")
	f.Fuzz(func(t *testing.T, text, path string) {
		c, _ := parseCodeOwners(text)
		for _, r := range c.rules {
			if s := r.re.String(); !strings.HasPrefix(s, "^") || !strings.HasSuffix(s, "$") {
				t.Fatalf("rule on line %d: %s is not anchored", r.line, s)
			}
		}
		_ = c.owners(path)
	})
}
