package main

import (
	"slices"
	"testing"
)

func TestRoles(t *testing.T) {
	tests := []struct {
		in    string
		roles []string
		order []string
		bad   bool
	}{
		{in: "all", roles: []string{"ingest", "maintain", "query"}, order: []string{"catalog", "broker", "ingest", "maintain", "query"}},
		{in: "maintain", roles: []string{"maintain"}, order: []string{"catalog", "maintain"}},
		{in: "ingest", roles: []string{"ingest"}, order: []string{"catalog", "broker", "ingest"}},
		{in: "query", roles: []string{"query"}, order: []string{"catalog", "query"}},
		{in: "query, ingest,query", roles: []string{"ingest", "query"}, order: []string{"catalog", "broker", "ingest", "query"}},
		{in: "portal", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		roles, err := parseRoles(tt.in)
		if (err != nil) != tt.bad {
			t.Errorf("parseRoles(%q) error = %v", tt.in, err)
			continue
		}
		if tt.bad {
			continue
		}
		if !slices.Equal(roles, tt.roles) {
			t.Errorf("parseRoles(%q) = %v, want %v", tt.in, roles, tt.roles)
		}
		if got := startOrder(roles); !slices.Equal(got, tt.order) {
			t.Errorf("startOrder(%v) = %v, want %v", roles, got, tt.order)
		}
	}
}

// TestModuleDepsAcyclic guards the dependency table: every dependency is a module and
// the start order puts it first.
func TestModuleDepsAcyclic(t *testing.T) {
	deps := moduleDeps()
	for m, ds := range deps {
		order := startOrder([]string{m})
		for _, d := range ds {
			if _, ok := deps[d]; !ok {
				t.Errorf("%s depends on unknown module %s", m, d)
			}
			if slices.Index(order, d) > slices.Index(order, m) {
				t.Errorf("%s starts before its dependency %s", m, d)
			}
		}
	}
}
