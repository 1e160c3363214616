package auth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/xdg-go/scram"
)

func TestVerifierRoundTrip(t *testing.T) {
	v, err := NewVerifier("s3cret pässword")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseVerifier(v.String())
	if err != nil {
		t.Fatalf("ParseVerifier(%q): %v", v.String(), err)
	}
	if got.String() != v.String() {
		t.Fatalf("round trip: %q != %q", got.String(), v.String())
	}
	if !got.Check("s3cret pässword") {
		t.Error("Check refused the right password")
	}
	for _, wrong := range []string{"", "s3cret", "s3cret pässword ", "S3CRET PÄSSWORD"} {
		if got.Check(wrong) {
			t.Errorf("Check accepted %q", wrong)
		}
	}
}

// The keys computed from RFC 5802's definitions with the standard library
// alone (PBKDF2, HMAC, SHA-256), as an oracle independent of the SCRAM
// library: SaltedPassword = PBKDF2(password, salt, i), ClientKey =
// HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey), ServerKey =
// HMAC(SaltedPassword, "Server Key"). Salt and count are RFC 7677's example.
func TestVerifierMatchesRFC5802(t *testing.T) {
	salt, err := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	if err != nil {
		t.Fatal(err)
	}
	v, err := deriveVerifier("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	salted, err := pbkdf2.Key(sha256.New, "pencil", salt, 4096, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, msg string) []byte {
		h := hmac.New(sha256.New, key)
		h.Write([]byte(msg))
		return h.Sum(nil)
	}
	stored := sha256.Sum256(mac(salted, "Client Key"))
	if !bytes.Equal(v.StoredKey, stored[:]) {
		t.Errorf("StoredKey %x, want %x", v.StoredKey, stored)
	}
	if want := mac(salted, "Server Key"); !bytes.Equal(v.ServerKey, want) {
		t.Errorf("ServerKey %x, want %x", v.ServerKey, want)
	}
	if !v.Check("pencil") {
		t.Error("Check refused pencil")
	}
}

func TestParseVerifierErrors(t *testing.T) {
	for _, in := range []string{
		"",
		"md5abc",
		"SCRAM-SHA-256$",
		"SCRAM-SHA-256$4096:c2FsdA==",
		"SCRAM-SHA-256$x:c2FsdA==$AA==:AA==",
		"SCRAM-SHA-256$4096:c2FsdA==$AA==:AA==",
		"SCRAM-SHA-256$4096:!!$" + strings.Repeat("A", 44) + ":" + strings.Repeat("A", 44),
	} {
		if _, err := ParseVerifier(in); err == nil {
			t.Errorf("ParseVerifier(%q) succeeded", in)
		}
	}
}

// A full SCRAM exchange against the library's server, looking the verifier
// up as pgwire does.
func TestVerifierServesSCRAM(t *testing.T) {
	v, err := NewVerifier("pencil")
	if err != nil {
		t.Fatal(err)
	}
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) { return v.Credentials(), nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		password string
		ok       bool
	}{{"pencil", true}, {"pen", false}} {
		client, err := scram.SHA256.NewClient("user", tc.password, "")
		if err != nil {
			t.Fatal(err)
		}
		cc, sc := client.NewConversation(), server.NewConversation()
		msg, err := cc.Step("")
		for err == nil && !cc.Done() {
			if msg, err = sc.Step(msg); err != nil {
				break
			}
			msg, err = cc.Step(msg)
		}
		if ok := err == nil && sc.Valid(); ok != tc.ok {
			t.Errorf("password %q: exchange ok=%v (err %v), want %v", tc.password, ok, err, tc.ok)
		}
	}
}

func TestStaticStore(t *testing.T) {
	l, err := PasswordLogin(Principal{User: "ana", Tenant: "t1"}, "pw")
	if err != nil {
		t.Fatal(err)
	}
	s := NewStaticStore(map[string]Login{"ana": l, "bob": {Disabled: true}})
	got, err := s.Login(context.Background(), "ana")
	if err != nil || got.Principal.Tenant != "t1" || !got.Verifier.Check("pw") || got.Verifier.Check("px") {
		t.Errorf("Login(ana) = %+v, %v", got, err)
	}
	if got, err := s.Login(context.Background(), "bob"); err != nil || got.Principal.User != "bob" || !got.Disabled {
		t.Errorf("Login(bob) = %+v, %v; want the name filled in and disabled", got, err)
	}
	if _, err := s.Login(context.Background(), "eve"); !errors.Is(err, ErrUnknownUser) {
		t.Errorf("Login(eve) err = %v, want ErrUnknownUser", err)
	}
	if _, err := PasswordLogin(Principal{User: "x"}, ""); err == nil {
		t.Error("empty password accepted")
	}
}
