package query

import (
	"context"
	"errors"
	"fmt"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
)

// UserDirectory finds users by name; *catalog.Catalog implements it. It must be safe
// for concurrent use.
type UserDirectory interface {
	User(ctx context.Context, name string) (catalog.User, error)
}

// LoginStore serves logins from the catalog's users.
//
// The adapter lives here, not in catalog: the catalog is the metadata layer the query
// layer reads, so it must not import query/auth (ingest-only binaries would pull in the
// query side, and the dependency would point upwards). The catalog keeps the verifier as
// opaque text; this is where it becomes an auth.Verifier.
func LoginStore(users UserDirectory) auth.Store { return loginStore{users} }

type loginStore struct{ users UserDirectory }

func (s loginStore) Login(ctx context.Context, name string) (auth.Login, error) {
	u, err := s.users.User(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) {
		return auth.Login{}, fmt.Errorf("login %s: %w", name, auth.ErrUnknownUser)
	}
	if err != nil {
		return auth.Login{}, fmt.Errorf("looking up login %s: %w", name, err)
	}
	return LoginOf(u)
}

// LoginOf turns a catalog user into the login it is.
func LoginOf(u catalog.User) (auth.Login, error) {
	v, err := auth.ParseVerifier(u.Verifier)
	if err != nil {
		return auth.Login{}, fmt.Errorf("login %s: stored verifier: %w", u.Name, err)
	}
	if !u.Admin && u.Tenant == "" {
		// A tenant user without a tenant would read nothing or, worse, be taken for
		// an admin somewhere: refuse it outright.
		return auth.Login{}, fmt.Errorf("login %s: neither admin nor in a tenant", u.Name)
	}
	return auth.Login{
		Principal: auth.Principal{User: u.Name, Tenant: u.Tenant, Facilities: append([]string(nil), u.Facilities...), Admin: u.Admin},
		Verifier:  v,
		Disabled:  u.Disabled,
	}, nil
}
