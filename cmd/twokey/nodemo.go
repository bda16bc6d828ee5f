//go:build !demo

package main

import (
	"context"
	"errors"
	"io"
)

// errNoDemo is what `twokey demo` says in a production build: the demo and
// its simulators (devstack, bot/slacksim, runner/ghsim, miniredis) are
// linked only with the build tag demo.
var errNoDemo = errors.New("this twokey was built without the demo; build with -tags demo, or run ./scripts/demo.sh")

func demo(context.Context, []string, io.Writer, io.Writer) error { return errNoDemo }
