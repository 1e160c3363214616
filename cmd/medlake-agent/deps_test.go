package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the agent small and independent of the central side: it must not link
// hub, query or catalog code, and it must build without cgo for every platform a
// facility runs.
func TestDeps(t *testing.T) {
	forbidden := []string{
		"github.com/medlake/medlake/hub",
		"github.com/medlake/medlake/query",
		"github.com/medlake/medlake/catalog",
		"github.com/duckdb/",
		"github.com/apache/iceberg-go",
		"github.com/mochi-mqtt/",
	}
	for _, target := range []string{"windows/amd64", "linux/amd64", "linux/arm64"} {
		goos, goarch, _ := strings.Cut(target, "/")
		t.Run(goos+"_"+goarch, func(t *testing.T) {
			cmd := exec.Command("go", "list", "-deps", ".")
			cmd.Env = append(cmd.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			for dep := range strings.FieldsSeq(string(out)) {
				for _, f := range forbidden {
					if strings.HasPrefix(dep, f) {
						t.Errorf("medlake-agent for %s depends on %s", target, dep)
					}
				}
			}
		})
	}
}

// TestCrossBuild builds the agent as released: pure Go for Windows and Linux.
func TestCrossBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles three times; run without -short")
	}
	for _, target := range []string{"windows/amd64", "linux/amd64", "linux/arm64"} {
		goos, goarch, _ := strings.Cut(target, "/")
		cmd := exec.Command("go", "build", "-o", t.TempDir()+"/medlake-agent", ".")
		cmd.Env = append(cmd.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("building for %s: %v\n%s", target, err, out)
		}
	}
}
