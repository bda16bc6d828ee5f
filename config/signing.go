package config

import "fmt"

// Signing names the ed25519 keys that make twokey's state in Redis
// something a Redis writer cannot forge: plans, approvals and grants to
// apply are signed by the serve process that verified the Slack clicks, and
// every audit event by the process that wrote it. Keys are PEM files
// (`twokey keygen`, or openssl genpkey -algorithm ed25519); a key's ID is
// derived from the key, so rotating one is adding the new public key
// everywhere, switching key_file, and later removing the old public key.
type Signing struct {
	// KeyFile is this process's private key. serve signs plans, approvals,
	// grants and its audit events with it; a runner signs its audit events.
	// Without one, serve signs with a key of its own that nothing else
	// trusts (one embedded replica only) and a runner refuses to start.
	KeyFile string `yaml:"key_file"`
	// ServeKeys are the public keys of the serve processes. Only their
	// signatures make a plan, an approval or a grant count; runners verify
	// every apply against them.
	ServeKeys []string `yaml:"serve_keys"`
	// RunnerKeys are the public keys of runner workers, trusted for their
	// audit events and their job results (never for plans, approvals or
	// permits); serve with runner pools needs them.
	RunnerKeys []string `yaml:"runner_keys"`
}

func (s Signing) validate() []error {
	var errs []error
	seen := map[string]bool{}
	for _, list := range []struct {
		name  string
		paths []string
	}{{"signing.serve_keys", s.ServeKeys}, {"signing.runner_keys", s.RunnerKeys}} {
		for i, p := range list.paths {
			switch {
			case p == "":
				errs = append(errs, fmt.Errorf("%s[%d]: empty path", list.name, i))
			case seen[p]:
				errs = append(errs, fmt.Errorf("%s[%d]: %s is listed twice", list.name, i, p))
			}
			seen[p] = true
		}
	}
	return errs
}
