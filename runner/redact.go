package runner

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// tokenRE matches Vault service and batch tokens and GitHub and Slack tokens,
// which must never leave the runner even when the runner did not mint them.
var tokenRE = regexp.MustCompile(`\b(hv[sbr]\.[A-Za-z0-9_-]{20,}|s\.[A-Za-z0-9]{24}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,})\b`)

// Redacted replaces a secret in text.
const Redacted = "[redacted]"

// minSecretLen keeps Redact from replacing short values such as "1" or
// "on" that would garble the text without protecting anything: a secret
// of fewer than 4 bytes is never redacted (nor any form under 4 bytes).
const minSecretLen = 4

// minLineLen is the shortest line of a multi-line secret redacted alone.
const minLineLen = 8

// Redact removes every value in secrets, in every form text carries it in,
// and anything that looks like a token, from s. See Forms.
func Redact(s string, secrets ...string) string {
	return NewRedactor(secrets...).Redact(s)
}

// Redactor removes a fixed set of secrets from text; make one per run and
// use it for everything the run says.
type Redactor struct {
	r *strings.Replacer
}

// NewRedactor prepares the redaction of secrets and all their forms.
func NewRedactor(secrets ...string) *Redactor {
	var all []string
	for _, v := range secrets {
		all = append(all, Forms(v)...)
	}
	slices.Sort(all)
	all = slices.Compact(all)
	// Longest first: at one position, a secret that contains another is
	// replaced whole.
	slices.SortStableFunc(all, func(a, b string) int { return len(b) - len(a) })
	if len(all) == 0 {
		return &Redactor{}
	}
	pairs := make([]string, 0, 2*len(all))
	for _, f := range all {
		pairs = append(pairs, f, Redacted)
	}
	return &Redactor{r: strings.NewReplacer(pairs...)}
}

// Redact removes the secrets and token-looking strings from s.
func (rd *Redactor) Redact(s string) string {
	if rd != nil && rd.r != nil {
		// Twice: a match that overlapped another's start is caught the
		// second time round.
		s = rd.r.Replace(rd.r.Replace(s))
	}
	return tokenRE.ReplaceAllString(s, Redacted)
}

// Forms lists the ways text can carry v: as is; escaped as in JSON, Go's
// %q, and HCL or terraform's diagnostics; escaped twice (JSON holding an
// escaped string); with its newlines as \n, \r\n or as separate lines, as
// a heredoc shows them, each such line escaped too; and base64 in its
// four alphabets, also as it shows inside longer base64 (see base64Within).
// Values shorter than minSecretLen are not redacted, nor are forms shorter
// than it.
func Forms(v string) []string {
	if len(v) < minSecretLen {
		return nil
	}
	forms := []string{v}
	add := func(f string) {
		if len(f) >= minSecretLen && !slices.Contains(forms, f) {
			forms = append(forms, f)
		}
	}
	escaped := []string{jsonEscape(v, true), jsonEscape(v, false), goQuote(v), goQuoteASCII(v), hclEscape(v)}
	for _, e := range escaped {
		add(e)
		add(jsonEscape(e, false)) // an escaped secret inside a JSON string
		add(goQuote(e))
	}
	add(strings.ReplaceAll(v, "\n", `\n`))
	add(strings.ReplaceAll(v, "\n", `\r\n`))
	if strings.Contains(v, "\n") {
		// Each line alone, as a heredoc shows it, and escaped: terraform
		// wraps a long diagnostic at spaces, which breaks the escaped
		// whole into pieces. Short lines ("}", "") would garble the text
		// without hiding anything.
		for _, line := range strings.Split(v, "\n") {
			if line = strings.TrimSpace(line); len(line) >= minLineLen {
				add(line)
				add(jsonEscape(line, false))
				add(goQuote(line))
				add(hclEscape(line))
			}
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		add(enc.EncodeToString([]byte(v)))
	}
	if len(v) >= minBase64Len {
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			for shift := range 3 {
				add(base64Within(enc, v, shift))
			}
		}
	}
	return forms
}

// minBase64Len is the shortest secret whose base64 is also looked for
// inside longer base64 ("user:password" in a Basic auth header, a key in
// an encoded config): its fragment is then at least 8 characters, so
// random base64 text rarely matches it by chance.
const minBase64Len = 8

// base64Within is the part of enc's encoding of any byte stream holding v
// at an offset ≡ shift (mod 3) that v alone decides: the characters whose
// six bits all come from v. Bytes before and after v change the others.
func base64Within(enc *base64.Encoding, v string, shift int) string {
	s := enc.EncodeToString(append(make([]byte, shift), v...))
	first := (8*shift + 5) / 6       // the first character that starts within v
	last := (8*shift + 8*len(v)) / 6 // the characters before it end within v
	if last > len(s) {
		last = len(s)
	}
	return s[first:last]
}

func jsonEscape(v string, html bool) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(html)
	_ = enc.Encode(v)
	s := strings.TrimSuffix(b.String(), "\n")
	return s[1 : len(s)-1]
}

func goQuote(v string) string      { s := strconv.Quote(v); return s[1 : len(s)-1] }
func goQuoteASCII(v string) string { s := strconv.QuoteToASCII(v); return s[1 : len(s)-1] }

// hclEscape escapes v as an HCL quoted string, and as terraform prints a
// string in diagnostics and plans.
var hclEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`, "${", "$${", "%{", "%%{")

func hclEscape(v string) string { return hclEscaper.Replace(v) }
