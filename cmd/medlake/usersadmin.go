package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/medlake/medlake/catalog"
	"github.com/medlake/medlake/query/auth"
)

// The user and tenant commands manage who may query the lake, in the catalog named by
// the usual configuration (--catalog, MEDLAKE_CATALOG_URI, file). Passwords are read
// from a terminal prompt or a line on standard input, never from a flag, and only their
// SCRAM-SHA-256 verifier is stored.

const usersUsage = `Usage: medlake users <command> [flags] NAME [FACILITY...]

Flags come before the user name.

Commands:
  add --tenant T [--facility F]... NAME   add a user of tenant T (reads only T's rows;
                                          with --facility, only those facilities')
  add --admin NAME                        add an admin (reads every row and the audit log)
  list                                    every user, its tenant, grants and state
  show NAME                               one user
  set-password NAME                       replace a user's password
  grant NAME FACILITY...                  narrow a user's rows to these facilities (added
                                          to those already granted)
  revoke [--widen] NAME FACILITY...       remove facility grants; removing the last one
                                          gives the user every facility of its tenant
                                          again, which needs --widen
  disable NAME | enable NAME              refuse or allow the user's logins
  delete NAME                             remove the user and its grants

add and set-password prompt for the password on the terminal (twice), or read one line
from standard input with --password-stdin.
`

const tenantsUsage = `Usage: medlake tenants <command> [flags]

Commands:
  add [--description D] NAME   add a tenant (a customer); users of the tenant read only
                               rows whose _tenant is NAME
  list                         every tenant
`

func runUsers(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usersUsage)
		return errors.New("users: no command given")
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usersUsage)
		return nil
	case "add":
		return runUsersAdd(ctx, args, stdout)
	case "list":
		return runUsersList(ctx, args, stdout)
	case "show":
		return withUser(ctx, "show", args, nil, func(cat *catalog.Catalog, name string, _ []string) error {
			u, err := cat.User(ctx, name)
			if err != nil {
				return err
			}
			return printUsers(stdout, []catalog.User{u})
		})
	case "set-password":
		var fromStdin bool
		return withUser(ctx, "set-password", args, func(fs *flag.FlagSet) {
			fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
		}, func(cat *catalog.Catalog, name string, _ []string) error {
			if _, err := cat.User(ctx, name); err != nil {
				return err
			}
			v, err := readVerifier(fromStdin)
			if err != nil {
				return err
			}
			if err := cat.SetUserVerifier(ctx, name, v); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "user %s: password set\n", name)
			return nil
		})
	case "grant":
		return withUser(ctx, "grant", args, nil, func(cat *catalog.Catalog, name string, facilities []string) error {
			if err := cat.Grant(ctx, name, facilities...); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "user %s: granted %s\n", name, strings.Join(facilities, ", "))
			return nil
		})
	case "revoke":
		var widen bool
		return withUser(ctx, "revoke", args, func(fs *flag.FlagSet) {
			fs.BoolVar(&widen, "widen", false, "allow revoking the last grant, which gives the user every facility of its tenant")
		}, func(cat *catalog.Catalog, name string, facilities []string) error {
			u, err := cat.User(ctx, name)
			if err != nil {
				return err
			}
			if catalog.RevokeWouldWiden(u, facilities) && !widen {
				return fmt.Errorf("users revoke: that removes every grant of %s, who would then read every facility of tenant %s; add --widen if that is meant", name, u.Tenant)
			}
			if err := cat.Revoke(ctx, name, facilities...); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "user %s: revoked %s\n", name, strings.Join(facilities, ", "))
			return nil
		})
	case "disable", "enable":
		return withUser(ctx, cmd, args, nil, func(cat *catalog.Catalog, name string, _ []string) error {
			if err := cat.SetUserDisabled(ctx, name, cmd == "disable"); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "user %s: %sd\n", name, cmd)
			return nil
		})
	case "delete":
		return withUser(ctx, "delete", args, nil, func(cat *catalog.Catalog, name string, _ []string) error {
			if err := cat.DeleteUser(ctx, name); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "user %s: deleted\n", name)
			return nil
		})
	}
	fmt.Fprint(os.Stderr, usersUsage)
	return fmt.Errorf("users: unknown command %q", cmd)
}

// openCatalogCmd opens the catalog for an admin command with its own flags.
func openCatalogCmd(ctx context.Context, name, usage string, args []string, bind func(*flag.FlagSet)) (*catalog.Catalog, []string, error) {
	cfg, rest, err := loadConfig(name, usage, args, func(fs *flag.FlagSet, cfg *Config) {
		fs.StringVar(&cfg.Catalog.URI, "catalog", cfg.Catalog.URI, `metadata database: "" (SQLite under data-dir), sqlite:///path.db or postgres://...`)
		if bind != nil {
			bind(fs)
		}
	})
	if err != nil {
		return nil, nil, err
	}
	cat, err := catalog.Open(ctx, cfg.Catalog)
	if err != nil {
		return nil, nil, fmt.Errorf("opening catalog: %w", err)
	}
	return cat, rest, nil
}

// withUser runs a command that takes a user name and, for grant and revoke, facilities.
func withUser(ctx context.Context, cmd string, args []string, bind func(*flag.FlagSet), fn func(cat *catalog.Catalog, name string, facilities []string) error) error {
	cat, rest, err := openCatalogCmd(ctx, "users "+cmd, usersUsage, args, bind)
	if err != nil {
		return err
	}
	defer cat.Close()
	needFacilities := cmd == "grant" || cmd == "revoke"
	switch {
	case len(rest) == 0:
		return fmt.Errorf("users %s: need a user name (flags come before it)", cmd)
	case needFacilities && len(rest) < 2:
		return fmt.Errorf("users %s: need a user name and at least one facility", cmd)
	case !needFacilities && len(rest) > 1:
		return fmt.Errorf("users %s: unexpected arguments after the user name: %s (flags come before it)", cmd, strings.Join(rest[1:], " "))
	}
	return fn(cat, rest[0], rest[1:])
}

func runUsersAdd(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		u          catalog.User
		facilities multiFlag
		fromStdin  bool
	)
	cat, rest, err := openCatalogCmd(ctx, "users add", usersUsage, args, func(fs *flag.FlagSet) {
		fs.StringVar(&u.Tenant, "tenant", "", "the tenant whose rows the user reads")
		fs.BoolVar(&u.Admin, "admin", false, "the user reads every tenant's rows and the audit log")
		fs.Var(&facilities, "facility", "narrow the user's rows to this facility (repeatable)")
		fs.BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of standard input")
	})
	if err != nil {
		return err
	}
	defer cat.Close()
	if len(rest) != 1 {
		return errors.New("users add: need exactly one user name (flags come before it)")
	}
	u.Name, u.Facilities = rest[0], facilities
	if !u.Admin && u.Tenant == "" {
		return errors.New("users add: need --tenant T, or --admin")
	}
	if _, err := cat.User(ctx, u.Name); err == nil {
		return fmt.Errorf("user %s: %w", u.Name, catalog.ErrExists)
	}
	if u.Verifier, err = readVerifier(fromStdin); err != nil {
		return err
	}
	if err := cat.AddUser(ctx, u); err != nil {
		return err
	}
	role := "tenant " + u.Tenant
	if u.Admin {
		role = "admin"
	}
	fmt.Fprintf(stdout, "user %s added (%s)\n", u.Name, role)
	return nil
}

func runUsersList(ctx context.Context, args []string, stdout io.Writer) error {
	cat, rest, err := openCatalogCmd(ctx, "users list", usersUsage, args, nil)
	if err != nil {
		return err
	}
	defer cat.Close()
	if len(rest) > 0 {
		return errors.New("users list: takes no arguments")
	}
	us, err := cat.Users(ctx)
	if err != nil {
		return err
	}
	return printUsers(stdout, us)
}

func printUsers(w io.Writer, us []catalog.User) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tROLE\tTENANT\tFACILITIES\tSTATE\tUPDATED")
	for _, u := range us {
		role, tenant, facilities, state := "user", u.Tenant, "all", "enabled"
		if u.Admin {
			role, tenant = "admin", "*"
		}
		if len(u.Facilities) > 0 {
			facilities = strings.Join(u.Facilities, ",")
		}
		if u.Disabled {
			state = "disabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, role, tenant, facilities, state, u.UpdatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// minPasswordLen refuses trivially short passwords; length is what resists guessing.
const minPasswordLen = 12

// readVerifier reads a new password (a terminal prompt typed twice, or the first line of
// standard input) and returns its verifier. The password is never echoed or kept.
func readVerifier(fromStdin bool) (string, error) {
	var pw string
	switch {
	case fromStdin:
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && (!errors.Is(err, io.EOF) || line == "") {
			return "", fmt.Errorf("reading the password from standard input: %w", err)
		}
		pw = strings.TrimRight(line, "\r\n")
	case term.IsTerminal(int(os.Stdin.Fd())):
		first, err := prompt("Password: ")
		if err != nil {
			return "", err
		}
		again, err := prompt("Password again: ")
		if err != nil {
			return "", err
		}
		if first != again {
			return "", errors.New("the passwords differ")
		}
		pw = first
	default:
		return "", errors.New("standard input is not a terminal: give the password on it with --password-stdin")
	}
	if len([]rune(pw)) < minPasswordLen {
		return "", fmt.Errorf("the password is shorter than %d characters", minPasswordLen)
	}
	v, err := auth.NewVerifier(pw)
	if err != nil {
		return "", err
	}
	return v.String(), nil
}

func prompt(label string) (string, error) {
	fmt.Fprint(os.Stderr, label)
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	return string(b), nil
}

func runTenants(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, tenantsUsage)
		return errors.New("tenants: no command given")
	}
	switch args[0] {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, tenantsUsage)
		return nil
	case "add":
		var desc string
		cat, rest, err := openCatalogCmd(ctx, "tenants add", tenantsUsage, args[1:], func(fs *flag.FlagSet) {
			fs.StringVar(&desc, "description", "", "what the tenant is (customer name)")
		})
		if err != nil {
			return err
		}
		defer cat.Close()
		if len(rest) != 1 {
			return errors.New("tenants add: need exactly one tenant name (flags come before it)")
		}
		if err := cat.AddTenant(ctx, catalog.Tenant{Name: rest[0], Description: desc}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tenant %s added\n", rest[0])
		return nil
	case "list":
		cat, _, err := openCatalogCmd(ctx, "tenants list", tenantsUsage, args[1:], nil)
		if err != nil {
			return err
		}
		defer cat.Close()
		ts, err := cat.Tenants(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENANT\tDESCRIPTION\tCREATED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", t.Name, t.Description, t.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	}
	fmt.Fprint(os.Stderr, tenantsUsage)
	return fmt.Errorf("tenants: unknown command %q", args[0])
}
