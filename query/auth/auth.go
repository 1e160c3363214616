package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
)

// Errors returned by a Store.
var (
	// ErrUnknownUser means no login has that name. Protocols answer it
	// exactly as a wrong password, so a client cannot probe for names.
	ErrUnknownUser = errors.New("auth: unknown user")
)

// DefaultIterations is PBKDF2's iteration count for new verifiers,
// PostgreSQL's own default.
const DefaultIterations = 4096

// Principal is who a logged-in client is, and so which rows it may read.
type Principal struct {
	// User is the login name, as written to the audit log.
	User string
	// Tenant is the customer whose rows the principal reads. Empty only for
	// an admin.
	Tenant string
	// Facilities, when not empty, narrows the tenant's rows to these
	// facilities.
	Facilities []string
	// Admin reads every tenant's rows and the audit log.
	Admin bool
}

// Login is a stored login: the verifier a password is checked against and
// the principal it becomes.
type Login struct {
	Principal Principal
	Verifier  Verifier
	// Disabled logins are refused whatever the password.
	Disabled bool
}

// Store finds logins by name. Implementations must be safe for concurrent
// use.
type Store interface {
	// Login returns the named login, or an error wrapping ErrUnknownUser.
	Login(ctx context.Context, user string) (Login, error)
}

// Verifier is a SCRAM-SHA-256 verifier (RFC 5802, RFC 7677): what a server
// keeps to check a password without keeping the password.
type Verifier struct {
	Iterations int
	Salt       []byte
	StoredKey  []byte
	ServerKey  []byte
}

// NewVerifier derives a verifier for password with a fresh random salt.
func NewVerifier(password string) (Verifier, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return Verifier{}, fmt.Errorf("auth: salt: %w", err)
	}
	return deriveVerifier(password, salt, DefaultIterations)
}

func deriveVerifier(password string, salt []byte, iterations int) (Verifier, error) {
	// The client side of the library derives the keys, with SASLprep of the
	// password as the RFC asks, so server and clients agree on odd passwords.
	client, err := scram.SHA256.NewClient("", password, "")
	if err != nil {
		return Verifier{}, fmt.Errorf("auth: password: %w", err)
	}
	creds := client.GetStoredCredentials(scram.KeyFactors{Salt: string(salt), Iters: iterations})
	return Verifier{
		Iterations: iterations,
		Salt:       salt,
		StoredKey:  creds.StoredKey,
		ServerKey:  creds.ServerKey,
	}, nil
}

// Check reports whether password matches the verifier. Protocols that take a
// password in the clear over TLS (HTTP basic, Flight SQL) use it; pgwire runs
// the SCRAM exchange instead.
func (v Verifier) Check(password string) bool {
	if v.Iterations <= 0 || len(v.Salt) == 0 {
		return false
	}
	got, err := deriveVerifier(password, v.Salt, v.Iterations)
	if err != nil {
		return false
	}
	return hmac.Equal(got.StoredKey, v.StoredKey) && hmac.Equal(got.ServerKey, v.ServerKey)
}

// Credentials returns the verifier in the form github.com/xdg-go/scram's
// server looks up.
func (v Verifier) Credentials() scram.StoredCredentials {
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations},
		StoredKey:  v.StoredKey,
		ServerKey:  v.ServerKey,
	}
}

const prefix = "SCRAM-SHA-256$"

// String encodes the verifier as PostgreSQL stores it in pg_authid:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, base64.
func (v Verifier) String() string {
	b := base64.StdEncoding
	return fmt.Sprintf("%s%d:%s$%s:%s", prefix, v.Iterations,
		b.EncodeToString(v.Salt), b.EncodeToString(v.StoredKey), b.EncodeToString(v.ServerKey))
}

// ParseVerifier reads the form String writes.
func ParseVerifier(s string) (Verifier, error) {
	rest, ok := strings.CutPrefix(s, prefix)
	if !ok {
		return Verifier{}, errors.New("auth: verifier does not start with SCRAM-SHA-256$")
	}
	factors, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return Verifier{}, errors.New("auth: verifier lacks its keys")
	}
	iters, salt, ok1 := strings.Cut(factors, ":")
	stored, server, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return Verifier{}, errors.New("auth: verifier is not iterations:salt$storedkey:serverkey")
	}
	n, err := strconv.Atoi(iters)
	if err != nil || n <= 0 {
		return Verifier{}, fmt.Errorf("auth: verifier iterations %q", iters)
	}
	v := Verifier{Iterations: n}
	b := base64.StdEncoding
	for _, f := range []struct {
		name string
		in   string
		out  *[]byte
		size int
	}{
		{"salt", salt, &v.Salt, 0},
		{"stored key", stored, &v.StoredKey, sha256.Size},
		{"server key", server, &v.ServerKey, sha256.Size},
	} {
		raw, err := b.DecodeString(f.in)
		if err != nil {
			return Verifier{}, fmt.Errorf("auth: verifier %s: %w", f.name, err)
		}
		if len(raw) == 0 || (f.size > 0 && len(raw) != f.size) {
			return Verifier{}, fmt.Errorf("auth: verifier %s has %d bytes", f.name, len(raw))
		}
		*f.out = raw
	}
	return v, nil
}
