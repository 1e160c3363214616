package query

import (
	"context"
	"errors"
	"fmt"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
	"github.com/medlake/medlake/query/pgwire"
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

// serviceLogins is the configured users (admins) and, when given, the
// catalog's users, looked up in that order; nil when there are neither.
func serviceLogins(configured []pgwire.User, users UserDirectory) (auth.Store, error) {
	var chain chainStore
	if len(configured) > 0 {
		logins := make(map[string]auth.Login, len(configured))
		for _, u := range configured {
			// Configured users predate tenants: each reads every tenant's rows.
			l, err := auth.PasswordLogin(auth.Principal{User: u.Name, Admin: true}, u.Password)
			if err != nil {
				return nil, fmt.Errorf("query: user %s: %w", u.Name, err)
			}
			logins[u.Name] = l
		}
		chain = append(chain, auth.NewStaticStore(logins))
	}
	if users != nil {
		chain = append(chain, LoginStore(users))
	}
	if len(chain) == 0 {
		return nil, nil
	}
	return chain, nil
}

// chainStore looks a login up in each store in turn.
type chainStore []auth.Store

func (c chainStore) Login(ctx context.Context, name string) (auth.Login, error) {
	for _, s := range c {
		l, err := s.Login(ctx, name)
		if !errors.Is(err, auth.ErrUnknownUser) {
			return l, err
		}
	}
	return auth.Login{}, fmt.Errorf("login %s: %w", name, auth.ErrUnknownUser)
}
