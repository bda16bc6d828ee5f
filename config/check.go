package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"gopkg.in/yaml.v3"
)

// CheckFile is Check of the file at path.
func CheckFile(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Check(f)
}

// Check reads a config the way Parse does, for `twokey check-config`, but
// goes on past what it can: keys it does not know (yaml.v3 reports every
// one and decodes the rest) do not keep the rest from being validated. It
// returns every problem at once, joined, and the config as far as it could
// be read, defaults filled in, so that the environment it names can be
// checked too. The config is nil only when the file is not YAML it can read
// at all. Check reports at least whatever Parse would refuse; processes
// start with Parse, which accepts nothing Check finds a problem in.
func Check(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var c Config
	var errs []error
	if err := dec.Decode(&c); err != nil {
		var te *yaml.TypeError
		switch {
		case errors.Is(err, io.EOF):
			return nil, errors.New("config is empty")
		case errors.As(err, &te):
			for _, e := range te.Errors {
				errs = append(errs, fmt.Errorf("config: %s", e))
			}
		default:
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	c.setDefaults()
	errs = append(errs, c.Validate())
	return &c, errors.Join(errs...)
}
