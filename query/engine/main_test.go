package engine

import (
	"testing"

	"github.com/medlake/medlake/deploy/local/stack"
)

// TestMain stops the shared MinIO and PostgreSQL servers the tests started.
func TestMain(m *testing.M) { stack.Main(m) }
