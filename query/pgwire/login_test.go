package pgwire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/medlake/medlake/query/auth"
)

// principals returns the principal of every open connection.
func (s *Server) principals() []auth.Principal {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []auth.Principal
	for _, c := range s.conns {
		out = append(out, c.principal)
	}
	return out
}

func testStore(tb testing.TB) *auth.StaticStore {
	tb.Helper()
	ana, err := auth.PasswordLogin(auth.Principal{User: "ana", Tenant: "acme", Facilities: []string{"fac0001"}}, "ana-pw")
	if err != nil {
		tb.Fatal(err)
	}
	gone, err := auth.PasswordLogin(auth.Principal{User: "gone", Tenant: "acme"}, "gone-pw")
	if err != nil {
		tb.Fatal(err)
	}
	gone.Disabled = true
	return auth.NewStaticStore(map[string]auth.Login{"ana": ana, "gone": gone})
}

// TestSCRAMLogin logs in through SCRAM-SHA-256 (as a tenant user, so it
// reads no lake table: that is the isolation suite's business) with pgx (its SASL client is
// independent of the server's library) and checks that every refusal looks
// the same to the client and names its reason in the log.
func TestSCRAMLogin(t *testing.T) {
	addr, srv, logs := startServerLogged(t, Config{}, WithAuthStore(testStore(t)))
	ctx := context.Background()
	c := connect(t, dsn(addr, "ana", "ana-pw"), pgx.QueryExecModeCacheStatement)
	var n int64
	if err := c.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM range(%d)", labRows)).Scan(&n); err != nil || n != labRows {
		t.Fatalf("count = %d, %v", n, err)
	}
	ps := srv.principals()
	if len(ps) != 1 || ps[0].User != "ana" || ps[0].Tenant != "acme" || len(ps[0].Facilities) != 1 || ps[0].Admin {
		t.Errorf("principals = %+v, want ana of acme", ps)
	}
	for _, tc := range []struct{ user, password, reason string }{
		{"ana", "wrong", "wrong password"},
		{"ana", "", "wrong password"},
		{"nobody", "ana-pw", "unknown user"},
		{"gone", "gone-pw", "login is disabled"},
	} {
		t.Run(tc.user+"/"+tc.password, func(t *testing.T) {
			c, err := pgx.Connect(ctx, dsn(addr, tc.user, tc.password))
			if err == nil {
				c.Close(ctx)
				t.Fatal("login accepted")
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "28P01" || pe.Message != fmt.Sprintf("password authentication failed for user %q", tc.user) {
				t.Errorf("err = %v, want 28P01 password authentication failed", err)
			}
			var logged bool
			for line := range strings.Lines(logs.String()) {
				if strings.Contains(line, "pgwire authentication failed") && strings.Contains(line, `"user":"`+tc.user+`"`) && strings.Contains(line, tc.reason) {
					logged = true
				}
			}
			if !logged {
				t.Errorf("no log line with the reason %q:\n%s", tc.reason, logs.String())
			}
		})
	}
}

// TestConfigUsersUseSCRAM checks configured users log in with SCRAM (pgx
// refuses a server that asks for another method when told so) and become
// admins.
func TestConfigUsersUseSCRAM(t *testing.T) {
	addr, srv := startServer(t, Config{Users: []User{{Name: "analyst", Password: "s3cret"}}})
	// The server asks for SASL with SCRAM-SHA-256 (no TLS, so no -PLUS).
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fe := pgproto3.NewFrontend(nc, nc)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "analyst"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := fe.Receive()
	if sasl, ok := msg.(*pgproto3.AuthenticationSASL); err != nil || !ok || strings.Join(sasl.AuthMechanisms, ",") != "SCRAM-SHA-256" {
		t.Fatalf("first answer to startup: %#v, %v; want AuthenticationSASL SCRAM-SHA-256", msg, err)
	}
	c := connect(t, dsn(addr, "analyst", "s3cret"), pgx.QueryExecModeCacheStatement)
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ps := srv.principals(); len(ps) != 1 || ps[0].User != "analyst" || !ps[0].Admin {
		t.Errorf("principals = %+v", ps)
	}
	if _, err := New(Config{Users: []User{{Name: "a", Password: "b"}}}, nil, slog.New(slog.DiscardHandler), WithAuthStore(testStore(t))); err == nil {
		t.Error("users and a login store both accepted")
	}
}

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 and
// localhost and its key, and returns their paths.
func writeSelfSigned(tb testing.TB) (certFile, keyFile string) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()
	certFile, keyFile = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile
}

// nonLoopbackIP returns an address of this machine other than loopback.
func nonLoopbackIP(tb testing.TB) string {
	tb.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		tb.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String()
		}
	}
	tb.Skip("this machine has no non-loopback IPv4 address to connect from")
	return ""
}

func TestTLS(t *testing.T) {
	certFile, keyFile := writeSelfSigned(t)
	ip := nonLoopbackIP(t)
	addr, _ := startServer(t, Config{Listen: "0.0.0.0:0", TLSCertFile: certFile, TLSKeyFile: keyFile, RequireTLS: true},
		WithAuthStore(testStore(t)))
	_, port, _ := net.SplitHostPort(addr)
	ctx := context.Background()
	for _, tc := range []struct {
		name, host, params string
		ok                 bool
		tls                bool
	}{
		{"require over loopback", "127.0.0.1", "sslmode=require", true, true},
		{"verify-full with channel binding", "localhost", "sslmode=verify-full&sslrootcert=" + certFile + "&channel_binding=require", true, true},
		{"plain on loopback", "127.0.0.1", "sslmode=disable", true, false},
		{"plain from another host refused", ip, "sslmode=disable", false, false},
		{"tls from another host", ip, "sslmode=require", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := fmt.Sprintf("postgres://ana:ana-pw@%s/medlake?%s", net.JoinHostPort(tc.host, port), tc.params)
			c, err := pgx.Connect(ctx, url)
			if !tc.ok {
				if err == nil {
					c.Close(ctx)
					t.Fatal("connection accepted")
				}
				var pe *pgconn.PgError
				if !errors.As(err, &pe) || pe.Code != "28000" {
					t.Errorf("err = %v, want 28000", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			if _, isTLS := c.PgConn().Conn().(*tls.Conn); isTLS != tc.tls {
				t.Errorf("TLS = %v, want %v", isTLS, tc.tls)
			}
			var n int64
			if err := c.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM range(%d)", labRows)).Scan(&n); err != nil || n != labRows {
				t.Errorf("count = %d, %v", n, err)
			}
		})
	}
	// psql (libpq) with TLS and channel binding.
	if _, err := exec.LookPath("psql"); err != nil {
		t.Fatal("psql is not installed (apt-get install postgresql-client-15)")
	}
	cmd := exec.Command("psql", "-X", "-A", "-t", "-c", fmt.Sprintf("SELECT count(*) FROM range(%d)", labRows),
		fmt.Sprintf("host=localhost port=%s user=ana dbname=medlake sslmode=verify-full sslrootcert=%s channel_binding=require", port, certFile))
	cmd.Env = append(os.Environ(), "PGPASSWORD=ana-pw")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != fmt.Sprint(labRows) {
		t.Errorf("psql over TLS: %v\n%s", err, out)
	}
}

// TestTrustLoopback: with TrustLoopback, a user name the store does not know
// logs in on loopback with no password, as an admin; a known user still
// proves its password.
func TestTrustLoopback(t *testing.T) {
	addr, srv, _ := startServerLogged(t, Config{TrustLoopback: true}, WithAuthStore(testStore(t)))
	ctx := context.Background()
	c := connect(t, dsn(addr, "stranger", ""), pgx.QueryExecModeSimpleProtocol)
	var n int64
	if err := c.QueryRow(ctx, "SELECT count(*) FROM lab_results").Scan(&n); err != nil || n != labRows {
		t.Fatalf("trusted admin count = %d, %v", n, err)
	}
	if ps := srv.principals(); len(ps) != 1 || ps[0].User != "stranger" || !ps[0].Admin {
		t.Errorf("principals = %+v, want the admin stranger", ps)
	}
	cfg, err := pgx.ParseConfig(dsn(addr, "ana", "wrong"))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := pgx.ConnectConfig(ctx, cfg); err == nil {
		c.Close(ctx)
		t.Fatal("a known user logged in with a wrong password")
	}
}
