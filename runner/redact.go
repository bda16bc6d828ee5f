package runner

import (
	"regexp"
	"slices"
	"strings"
)

// tokenRE matches Vault service and batch tokens and GitHub and Slack tokens,
// which must never leave the runner even when the runner did not mint them.
var tokenRE = regexp.MustCompile(`\b(hv[sbr]\.[A-Za-z0-9_-]{20,}|s\.[A-Za-z0-9]{24}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,})\b`)

// Redacted replaces a secret in text.
const Redacted = "[redacted]"

// minSecretLen keeps Redact from replacing short values such as "1" that
// would garble the text without protecting anything.
const minSecretLen = 4

// Redact removes every value in secrets, and anything that looks like a
// token, from s.
func Redact(s string, secrets ...string) string {
	// Longest first, so a secret that contains another is replaced whole.
	secrets = slices.Clone(secrets)
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	for _, v := range secrets {
		if len(v) >= minSecretLen {
			s = strings.ReplaceAll(s, v, Redacted)
		}
	}
	return tokenRE.ReplaceAllString(s, Redacted)
}
