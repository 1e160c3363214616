package catalog

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// testUsers checks tenants, users and grants on any catalog database.
func testUsers(t *testing.T, c *Catalog) {
	t.Helper()
	ctx := context.Background()
	const v1, v2 = "SCRAM-SHA-256$4096:c2FsdA==$a:b", "SCRAM-SHA-256$4096:c2FsdA==$c:d"

	for _, tn := range []Tenant{{Name: "acme", Description: "Acme Health"}, {Name: "globex"}} {
		if err := c.AddTenant(ctx, tn); err != nil {
			t.Fatalf("AddTenant(%s): %v", tn.Name, err)
		}
	}
	if err := c.AddTenant(ctx, Tenant{Name: "acme"}); !errors.Is(err, ErrExists) {
		t.Errorf("AddTenant(acme) again: %v, want ErrExists", err)
	}
	if err := c.AddTenant(ctx, Tenant{Name: "bad name"}); err == nil {
		t.Error("AddTenant accepted a name with a space")
	}
	tenants, err := c.Tenants(ctx)
	if err != nil || len(tenants) != 2 || tenants[0].Name != "acme" || tenants[0].Description != "Acme Health" || tenants[0].CreatedAt.IsZero() {
		t.Fatalf("Tenants = %+v, %v", tenants, err)
	}

	adds := []struct {
		name string
		u    User
		err  error // nil: added; errAny: some error
	}{
		{"tenant user", User{Name: "alice", Tenant: "acme", Verifier: v1}, nil},
		{"user with grants", User{Name: "bob", Tenant: "acme", Facilities: []string{"fac2", "fac1"}, Verifier: v1}, nil},
		{"admin", User{Name: "root", Admin: true, Verifier: v1}, nil},
		{"same name", User{Name: "alice", Tenant: "globex", Verifier: v2}, ErrExists},
		{"unknown tenant", User{Name: "carol", Tenant: "nope", Verifier: v1}, ErrNotFound},
		{"no tenant, not admin", User{Name: "dave", Verifier: v1}, errAny},
		{"admin with tenant", User{Name: "erin", Tenant: "acme", Admin: true, Verifier: v1}, errAny},
		{"admin with grants", User{Name: "erin", Admin: true, Facilities: []string{"f"}, Verifier: v1}, errAny},
		{"no verifier", User{Name: "frank", Tenant: "acme"}, errAny},
		{"quote in name", User{Name: "o'neil", Tenant: "acme", Verifier: v1}, errAny},
		{"bad facility", User{Name: "gina", Tenant: "acme", Facilities: []string{"a b"}, Verifier: v1}, errAny},
	}
	for _, a := range adds {
		err := c.AddUser(ctx, a.u)
		switch {
		case a.err == nil && err != nil:
			t.Errorf("%s: AddUser: %v", a.name, err)
		case a.err == errAny && err == nil, a.err != nil && a.err != errAny && !errors.Is(err, a.err):
			t.Errorf("%s: AddUser error %v, want %v", a.name, err, a.err)
		}
	}
	// A refused user leaves nothing behind (its grants were in the same transaction).
	if _, err := c.User(ctx, "gina"); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused user gina: User() = %v, want ErrNotFound", err)
	}

	bob, err := c.User(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if bob.Tenant != "acme" || bob.Admin || bob.Disabled || bob.Verifier != v1 || !slices.Equal(bob.Facilities, []string{"fac1", "fac2"}) {
		t.Errorf("User(bob) = %+v", bob)
	}
	root, err := c.User(ctx, "root")
	if err != nil || !root.Admin || root.Tenant != "" {
		t.Errorf("User(root) = %+v, %v", root, err)
	}
	if _, err := c.User(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Errorf("User(nobody) = %v, want ErrNotFound", err)
	}

	steps := []struct {
		name string
		do   func() error
		err  error
	}{
		{"set password", func() error { return c.SetUserVerifier(ctx, "alice", v2) }, nil},
		{"set password of nobody", func() error { return c.SetUserVerifier(ctx, "nobody", v2) }, ErrNotFound},
		{"disable", func() error { return c.SetUserDisabled(ctx, "alice", true) }, nil},
		{"grant", func() error { return c.Grant(ctx, "alice", "fac9") }, nil},
		{"grant again is a no-op", func() error { return c.Grant(ctx, "alice", "fac9") }, nil},
		{"grant an admin", func() error { return c.Grant(ctx, "root", "fac9") }, errAny},
		{"grant nobody", func() error { return c.Grant(ctx, "nobody", "fac9") }, ErrNotFound},
		{"revoke", func() error { return c.Revoke(ctx, "bob", "fac2") }, nil},
		{"revoke from nobody", func() error { return c.Revoke(ctx, "nobody", "fac2") }, ErrNotFound},
		{"delete", func() error { return c.DeleteUser(ctx, "root") }, nil},
		{"delete again", func() error { return c.DeleteUser(ctx, "root") }, ErrNotFound},
	}
	for _, s := range steps {
		err := s.do()
		switch {
		case s.err == nil && err != nil:
			t.Errorf("%s: %v", s.name, err)
		case s.err == errAny && err == nil, s.err != nil && s.err != errAny && !errors.Is(err, s.err):
			t.Errorf("%s: error %v, want %v", s.name, err, s.err)
		}
	}
	alice, err := c.User(ctx, "alice")
	if err != nil || alice.Verifier != v2 || !alice.Disabled || !slices.Equal(alice.Facilities, []string{"fac9"}) || !alice.UpdatedAt.After(alice.CreatedAt) && alice.UpdatedAt != alice.CreatedAt {
		t.Errorf("alice after changes = %+v, %v", alice, err)
	}
	if err := c.SetUserDisabled(ctx, "alice", false); err != nil {
		t.Fatal(err)
	}
	users, err := c.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Name+"/"+u.Tenant+"/"+strings.Join(u.Facilities, "+"))
		if u.Name == "alice" && u.Disabled {
			t.Error("alice still disabled after enable")
		}
	}
	if want := []string{"alice/acme/fac9", "bob/acme/fac1"}; !slices.Equal(names, want) {
		t.Errorf("Users = %v, want %v", names, want)
	}
	if !RevokeWouldWiden(User{Facilities: []string{"a", "b"}}, []string{"b", "a"}) || RevokeWouldWiden(User{Facilities: []string{"a", "b"}}, []string{"a"}) || RevokeWouldWiden(User{}, []string{"a"}) {
		t.Error("RevokeWouldWiden is wrong")
	}
}

// errAny stands for "some error" in the tables above.
var errAny = errors.New("any error")

func TestUsersSQLite(t *testing.T) {
	c, err := Open(context.Background(), Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testUsers(t, c)
}
