package engine

import (
	"context"
	"testing"
)

func TestWithValues(t *testing.T) {
	type key string
	base := context.WithValue(context.Background(), key("store"), "shared")
	base = context.WithValue(base, key("who"), "engine")
	stmt, cancel := context.WithCancel(context.WithValue(context.Background(), key("who"), "statement"))
	ctx := withValues(stmt, context.WithoutCancel(base))
	if got := ctx.Value(key("store")); got != "shared" {
		t.Errorf("store = %v, want the engine's value", got)
	}
	if got := ctx.Value(key("who")); got != "statement" {
		t.Errorf("who = %v, want the statement's own value", got)
	}
	cancel()
	if ctx.Err() == nil {
		t.Error("cancelling the statement did not cancel the load's context")
	}
}
