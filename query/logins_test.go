package query

import (
	"errors"
	"slices"
	"testing"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
)

func TestLoginStore(t *testing.T) {
	ctx := t.Context()
	cat, err := catalog.Open(ctx, catalog.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	v, err := auth.NewVerifier("a long enough password")
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.AddTenant(ctx, catalog.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []catalog.User{
		{Name: "alice", Tenant: "acme", Facilities: []string{"f2", "f1"}, Verifier: v.String()},
		{Name: "root", Admin: true, Verifier: v.String()},
	} {
		if err := cat.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := cat.SetUserDisabled(ctx, "root", true); err != nil {
		t.Fatal(err)
	}
	store := LoginStore(cat)
	tests := []struct {
		user     string
		want     auth.Principal
		disabled bool
		err      error
	}{
		{"alice", auth.Principal{User: "alice", Tenant: "acme", Facilities: []string{"f1", "f2"}}, false, nil},
		{"root", auth.Principal{User: "root", Admin: true}, true, nil},
		{"mallory", auth.Principal{}, false, auth.ErrUnknownUser},
	}
	for _, tt := range tests {
		l, err := store.Login(ctx, tt.user)
		if !errors.Is(err, tt.err) {
			t.Errorf("Login(%s) error %v, want %v", tt.user, err, tt.err)
			continue
		}
		if err != nil {
			continue
		}
		p := l.Principal
		if p.User != tt.want.User || p.Tenant != tt.want.Tenant || p.Admin != tt.want.Admin || !slices.Equal(p.Facilities, tt.want.Facilities) || l.Disabled != tt.disabled {
			t.Errorf("Login(%s) = %+v, want %+v disabled=%v", tt.user, l, tt.want, tt.disabled)
		}
		if !l.Verifier.Check("a long enough password") || l.Verifier.Check("wrong") {
			t.Errorf("Login(%s): verifier does not check the password", tt.user)
		}
	}
}
