package protocol_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps enforces the contract's independence: protocol imports no other medlake
// package, so the agent and the hub can both depend on it.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for dep := range strings.FieldsSeq(string(out)) {
		if strings.HasPrefix(dep, "github.com/medlake/medlake/") && !strings.HasPrefix(dep, "github.com/medlake/medlake/protocol") {
			t.Errorf("protocol depends on %s", dep)
		}
	}
}
