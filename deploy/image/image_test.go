// Package image checks twokey's container image (deploy/Dockerfile) by
// building it for real with scripts/image.sh. The build needs root,
// buildah and a Debian mirror and takes about 1.5 minutes (25 s with the
// base cached), so it runs only with TWOKEY_IMAGE_TEST=1.
package image

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestImage(t *testing.T) {
	if os.Getenv("TWOKEY_IMAGE_TEST") != "1" {
		t.Skip("set TWOKEY_IMAGE_TEST=1 to build and check the container image (scripts/image.sh)")
	}
	for _, tf := range []struct{ name, version string }{{"terraform", "Terraform v"}, {"tofu", "OpenTofu v"}} {
		t.Run(tf.name, func(t *testing.T) {
			cmd := exec.Command("bash", "../../scripts/image.sh")
			cmd.Env = append(os.Environ(), "TERRAFORM="+tf.name, "IMAGE=localhost/twokey-test:"+tf.name)
			out, err := cmd.CombinedOutput()
			t.Logf("%s", out)
			if err != nil {
				t.Fatalf("scripts/image.sh: %v", err)
			}
			for _, want := range []string{
				"uid=10001(twokey)", // not root
				"\ntwokey ",         // twokey version
				tf.version,          // the pinned binary
				"bubblewrap ",       // the sandbox tool
				"tini version ",     // PID 1, reaping what is left to it
				`entrypoint: ["/usr/bin/tini","--","/usr/local/bin/twokey"]`,
				"root filesystem: read-only", // runs on a read-only root
				": ok (1 projects",           // check-config, as a pod runs it
				"sandbox: bubblewrap",        // … with the sandbox started
				"with a masked /proc (a pod's default procMount): Can't mount proc",
			} {
				if !strings.Contains(string(out), want) {
					t.Errorf("output lacks %q", want)
				}
			}
		})
	}
}
