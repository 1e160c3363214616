package catalog

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Users, tenants and facility grants: who may query the lake and which rows they see.
//
// A tenant is a customer; every lake row names its tenant (_tenant) and facility
// (_facility). A user belongs to one tenant and reads that tenant's rows; facility grants,
// when a user has any, narrow that to those facilities. An admin belongs to no tenant and
// reads every row and the audit log.
//
// The catalog keeps a login's password only as an opaque verifier string (a SCRAM-SHA-256
// verifier in PostgreSQL's pg_authid form, made and checked by the query layer): it never
// sees a password, and it does not import the query layer, which sits above it.

// Errors of the user and tenant store.
var (
	// ErrNotFound: no user or tenant of that name.
	ErrNotFound = errors.New("not found")
	// ErrExists: a user or tenant of that name already exists.
	ErrExists = errors.New("already exists")
)

// Tenant is a customer whose rows users of the tenant read.
type Tenant struct {
	Name        string
	Description string
	CreatedAt   time.Time
}

// User is a login and what it may read.
type User struct {
	Name string
	// Tenant is empty exactly when Admin is set.
	Tenant string
	Admin  bool
	// Facilities, when not empty, narrows the tenant's rows to these facilities.
	Facilities []string
	// Verifier is the password verifier, opaque to the catalog.
	Verifier  string
	Disabled  bool
	CreatedAt time.Time
	UpdatedAt time.Time
}

// namePattern is what user, tenant and facility names may look like: they are typed on
// command lines, shown in the audit log and compared with lake columns, so no spaces,
// quotes or control characters.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$`)

func checkName(kind, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%s name %q: want letters, digits, '_', '.', '@' or '-', starting with a letter or digit, at most 128", kind, name)
	}
	return nil
}

// AddTenant records a new tenant.
func (c *Catalog) AddTenant(ctx context.Context, t Tenant) error {
	if err := checkName("tenant", t.Name); err != nil {
		return err
	}
	p := c.placeholder
	res, err := c.db.ExecContext(ctx, `INSERT INTO medlake_tenants (name, description, created_at) VALUES (`+
		p(1)+`, `+p(2)+`, `+p(3)+`) ON CONFLICT DO NOTHING`, t.Name, t.Description, time.Now().UnixMicro())
	if err != nil {
		return fmt.Errorf("adding tenant %s: %w", t.Name, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("tenant %s: %w", t.Name, ErrExists)
	}
	return nil
}

// Tenants returns every tenant by name.
func (c *Catalog) Tenants(ctx context.Context) ([]Tenant, error) {
	rows, err := c.db.QueryContext(ctx, `SELECT name, description, created_at FROM medlake_tenants ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("reading tenants: %w", err)
	}
	defer rows.Close()
	var out []Tenant
	for rows.Next() {
		var t Tenant
		var at int64
		if err := rows.Scan(&t.Name, &t.Description, &at); err != nil {
			return nil, fmt.Errorf("reading tenants: %w", err)
		}
		t.CreatedAt = time.UnixMicro(at).UTC()
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading tenants: %w", err)
	}
	return out, nil
}

// AddUser records a new user with its verifier and facility grants. A tenant user's
// tenant must exist; an admin has no tenant.
func (c *Catalog) AddUser(ctx context.Context, u User) error {
	if err := checkName("user", u.Name); err != nil {
		return err
	}
	switch {
	case u.Admin && u.Tenant != "":
		return fmt.Errorf("user %s: an admin reads every tenant and belongs to none (drop --tenant)", u.Name)
	case u.Admin && len(u.Facilities) > 0:
		return fmt.Errorf("user %s: an admin reads every facility; facility grants apply to tenant users", u.Name)
	case !u.Admin && u.Tenant == "":
		return fmt.Errorf("user %s: a user needs a tenant, or must be an admin", u.Name)
	case u.Verifier == "":
		return fmt.Errorf("user %s: no password verifier", u.Name)
	}
	for _, f := range u.Facilities {
		if err := checkName("facility", f); err != nil {
			return err
		}
	}
	now := time.Now().UnixMicro()
	return c.inTx(ctx, func(tx *sql.Tx) error {
		p := c.placeholder
		var tenant any // NULL for an admin: the foreign key then checks nothing
		if u.Tenant != "" {
			tenant = u.Tenant
			var n int64
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM medlake_tenants WHERE name = `+p(1), u.Tenant).Scan(&n); err != nil {
				return fmt.Errorf("adding user %s: looking up tenant %s: %w", u.Name, u.Tenant, err)
			}
			if n == 0 {
				return fmt.Errorf("adding user %s: tenant %s: %w (add it with 'medlake tenants add')", u.Name, u.Tenant, ErrNotFound)
			}
		}
		res, err := tx.ExecContext(ctx, `INSERT INTO medlake_users (name, tenant, admin, verifier, disabled, created_at, updated_at) VALUES (`+
			p(1)+`, `+p(2)+`, `+p(3)+`, `+p(4)+`, 0, `+p(5)+`, `+p(6)+`) ON CONFLICT DO NOTHING`,
			u.Name, tenant, boolInt(u.Admin), u.Verifier, now, now)
		if err != nil {
			return fmt.Errorf("adding user %s: %w", u.Name, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("user %s: %w", u.Name, ErrExists)
		}
		return c.grantLocked(ctx, tx, u.Name, u.Facilities)
	})
}

// grantLocked inserts facility grants inside tx.
func (c *Catalog) grantLocked(ctx context.Context, tx *sql.Tx, user string, facilities []string) error {
	p := c.placeholder
	for _, f := range facilities {
		if _, err := tx.ExecContext(ctx, `INSERT INTO medlake_grants (user_name, facility) VALUES (`+p(1)+`, `+p(2)+`) ON CONFLICT DO NOTHING`, user, f); err != nil {
			return fmt.Errorf("granting facility %s to user %s: %w", f, user, err)
		}
	}
	return nil
}

const userColumns = `name, tenant, admin, verifier, disabled, created_at, updated_at`

// User returns one user with its grants, or an error wrapping ErrNotFound.
func (c *Catalog) User(ctx context.Context, name string) (User, error) {
	us, err := c.queryUsers(ctx, `SELECT `+userColumns+` FROM medlake_users WHERE name = `+c.placeholder(1), name)
	if err != nil {
		return User{}, err
	}
	if len(us) == 0 {
		return User{}, fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	u := us[0]
	rows, err := c.db.QueryContext(ctx, `SELECT facility FROM medlake_grants WHERE user_name = `+c.placeholder(1)+` ORDER BY facility`, name)
	if err != nil {
		return User{}, fmt.Errorf("reading grants of user %s: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var f string
		if err := rows.Scan(&f); err != nil {
			return User{}, fmt.Errorf("reading grants of user %s: %w", name, err)
		}
		u.Facilities = append(u.Facilities, f)
	}
	if err := rows.Err(); err != nil {
		return User{}, fmt.Errorf("reading grants of user %s: %w", name, err)
	}
	return u, nil
}

// Users returns every user by name, with grants.
func (c *Catalog) Users(ctx context.Context) ([]User, error) {
	us, err := c.queryUsers(ctx, `SELECT `+userColumns+` FROM medlake_users ORDER BY name`)
	if err != nil {
		return nil, err
	}
	rows, err := c.db.QueryContext(ctx, `SELECT user_name, facility FROM medlake_grants ORDER BY user_name, facility`)
	if err != nil {
		return nil, fmt.Errorf("reading grants: %w", err)
	}
	defer rows.Close()
	grants := map[string][]string{}
	for rows.Next() {
		var u, f string
		if err := rows.Scan(&u, &f); err != nil {
			return nil, fmt.Errorf("reading grants: %w", err)
		}
		grants[u] = append(grants[u], f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading grants: %w", err)
	}
	for i := range us {
		us[i].Facilities = grants[us[i].Name]
	}
	return us, nil
}

func (c *Catalog) queryUsers(ctx context.Context, q string, args ...any) ([]User, error) {
	rows, err := c.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		var u User
		var tenant sql.NullString
		var admin, disabled, created, updated int64
		if err := rows.Scan(&u.Name, &tenant, &admin, &u.Verifier, &disabled, &created, &updated); err != nil {
			return nil, fmt.Errorf("reading users: %w", err)
		}
		u.Tenant, u.Admin, u.Disabled = tenant.String, admin != 0, disabled != 0
		u.CreatedAt, u.UpdatedAt = time.UnixMicro(created).UTC(), time.UnixMicro(updated).UTC()
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading users: %w", err)
	}
	return out, nil
}

// SetUserVerifier replaces a user's password verifier.
func (c *Catalog) SetUserVerifier(ctx context.Context, name, verifier string) error {
	if verifier == "" {
		return fmt.Errorf("user %s: no password verifier", name)
	}
	return c.updateUser(ctx, name, "setting the password of", `verifier`, verifier)
}

// SetUserDisabled disables or enables a user's login.
func (c *Catalog) SetUserDisabled(ctx context.Context, name string, disabled bool) error {
	return c.updateUser(ctx, name, "disabling or enabling", `disabled`, boolInt(disabled))
}

// updateUser sets one column of a user. column is a constant of the callers, never input.
func (c *Catalog) updateUser(ctx context.Context, name, what, column string, arg any) error {
	p := c.placeholder
	// SQLite binds ? in text order, so the arguments follow the text.
	res, err := c.db.ExecContext(ctx, `UPDATE medlake_users SET `+column+` = `+p(1)+`, updated_at = `+p(2)+` WHERE name = `+p(3),
		arg, time.Now().UnixMicro(), name)
	if err != nil {
		return fmt.Errorf("%s user %s: %w", what, name, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	return nil
}

// Grant narrows a tenant user's rows to the given facilities (added to those granted).
func (c *Catalog) Grant(ctx context.Context, name string, facilities ...string) error {
	if len(facilities) == 0 {
		return fmt.Errorf("granting user %s: no facilities given", name)
	}
	for _, f := range facilities {
		if err := checkName("facility", f); err != nil {
			return err
		}
	}
	return c.inTx(ctx, func(tx *sql.Tx) error {
		u, err := c.lockUser(ctx, tx, name)
		if err != nil {
			return err
		}
		if u.Admin {
			return fmt.Errorf("user %s is an admin and reads every facility; facility grants apply to tenant users", name)
		}
		return c.grantLocked(ctx, tx, name, facilities)
	})
}

// Revoke removes facility grants. A user left with none reads every facility of its
// tenant again, so revoking the last grant widens what the user reads: the caller
// confirms that (see RevokeWouldWiden).
func (c *Catalog) Revoke(ctx context.Context, name string, facilities ...string) error {
	if len(facilities) == 0 {
		return fmt.Errorf("revoking from user %s: no facilities given", name)
	}
	return c.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := c.lockUser(ctx, tx, name); err != nil {
			return err
		}
		p := c.placeholder
		for _, f := range facilities {
			if _, err := tx.ExecContext(ctx, `DELETE FROM medlake_grants WHERE user_name = `+p(1)+` AND facility = `+p(2), name, f); err != nil {
				return fmt.Errorf("revoking facility %s from user %s: %w", f, name, err)
			}
		}
		return nil
	})
}

// RevokeWouldWiden reports whether revoking facilities would leave the user with no
// grant, and so with every facility of its tenant.
func RevokeWouldWiden(u User, facilities []string) bool {
	if len(u.Facilities) == 0 {
		return false
	}
	for _, f := range u.Facilities {
		if !slices.Contains(facilities, f) {
			return false
		}
	}
	return true
}

// lockUser reads a user inside tx (touching its row, so concurrent changes to the same
// user serialize).
func (c *Catalog) lockUser(ctx context.Context, tx *sql.Tx, name string) (User, error) {
	p := c.placeholder
	res, err := tx.ExecContext(ctx, `UPDATE medlake_users SET updated_at = `+p(1)+` WHERE name = `+p(2), time.Now().UnixMicro(), name)
	if err != nil {
		return User{}, fmt.Errorf("updating user %s: %w", name, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return User{}, fmt.Errorf("user %s: %w", name, ErrNotFound)
	}
	var admin int64
	if err := tx.QueryRowContext(ctx, `SELECT admin FROM medlake_users WHERE name = `+p(1), name).Scan(&admin); err != nil {
		return User{}, fmt.Errorf("reading user %s: %w", name, err)
	}
	return User{Name: name, Admin: admin != 0}, nil
}

// DeleteUser removes a user and its grants.
func (c *Catalog) DeleteUser(ctx context.Context, name string) error {
	return c.inTx(ctx, func(tx *sql.Tx) error {
		p := c.placeholder
		if _, err := tx.ExecContext(ctx, `DELETE FROM medlake_grants WHERE user_name = `+p(1), name); err != nil {
			return fmt.Errorf("deleting grants of user %s: %w", name, err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM medlake_users WHERE name = `+p(1), name)
		if err != nil {
			return fmt.Errorf("deleting user %s: %w", name, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("user %s: %w", name, ErrNotFound)
		}
		return nil
	})
}

// inTx runs fn in a transaction and commits it; any error rolls back. These are short
// administrative transactions on a few rows; a CockroachDB serialization failure
// (SQLSTATE 40001) is retried a few times, as cockroach-go's ExecuteTx does.
func (c *Catalog) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	const attempts = 5
	var err error
	for range attempts {
		err = c.tryTx(ctx, fn)
		if err == nil || !isRetryable(err) {
			return err
		}
	}
	return err
}

func (c *Catalog) tryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := c.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning %s transaction: %w", c.dialect, err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing %s transaction: %w", c.dialect, err)
	}
	return nil
}

// isRetryable reports a serialization failure, which CockroachDB returns for a
// transaction that lost a conflict and must run again.
func isRetryable(err error) bool {
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		return coded.SQLState() == "40001"
	}
	return strings.Contains(err.Error(), "SQLSTATE 40001")
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}
