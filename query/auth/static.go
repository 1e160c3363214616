package auth

import (
	"context"
	"errors"
	"fmt"
)

// StaticStore is a fixed set of logins held in memory: the logins of a
// configuration file, the demo, tests. It is safe for concurrent use (it
// never changes after NewStaticStore).
type StaticStore struct {
	logins map[string]Login
}

// NewStaticStore returns a store of logins, keyed by login name.
func NewStaticStore(logins map[string]Login) *StaticStore {
	m := make(map[string]Login, len(logins))
	for name, l := range logins {
		if l.Principal.User == "" {
			l.Principal.User = name
		}
		m[name] = l
	}
	return &StaticStore{logins: m}
}

// PasswordLogin is a login for a password given in the clear (from a
// configuration file): its verifier is derived here, and the password is not
// kept.
func PasswordLogin(p Principal, password string) (Login, error) {
	if password == "" {
		return Login{}, errors.New("auth: empty password")
	}
	v, err := NewVerifier(password)
	if err != nil {
		return Login{}, fmt.Errorf("auth: login %s: %w", p.User, err)
	}
	return Login{Principal: p, Verifier: v}, nil
}

// Login implements Store.
func (s *StaticStore) Login(_ context.Context, user string) (Login, error) {
	l, ok := s.logins[user]
	if !ok {
		return Login{}, fmt.Errorf("%w %q", ErrUnknownUser, user)
	}
	return l, nil
}

// Len is the number of logins.
func (s *StaticStore) Len() int { return len(s.logins) }
