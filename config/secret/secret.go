// Package secret holds credentials so that they never print: not in logs,
// not in errors, not in encoded output. Adapters that send a credential to
// its service take a Secret and Reveal it there, and need nothing else of
// the config.
package secret

import "log/slog"

// Secret is a credential read from the environment. It prints as
// "[redacted]" wherever it is formatted or logged; Reveal gives the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value. Call it only where the value is sent to
// the service it is for.
func (s Secret) Reveal() string { return string(s) }

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return s.String() }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText keeps encoders from writing the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Key is binary key material; like Secret it never prints.
type Key []byte

func (k Key) String() string   { return Secret(k).String() }
func (k Key) GoString() string { return k.String() }

// LogValue keeps slog from printing the key.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalText keeps encoders from writing the key.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }
