package pgwire

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/xdg-go/scram"

	"github.com/medlake/medlake/query/auth"
)

// SASL mechanism names (RFC 7677, RFC 5802 channel binding).
const (
	mechSCRAM     = "SCRAM-SHA-256"
	mechSCRAMPlus = "SCRAM-SHA-256-PLUS"
)

// errLoginRefused is what every failed login looks like to the client, so
// that it cannot tell an unknown user from a wrong password or a disabled
// login. The reason is logged.
var errLoginRefused = errors.New("password authentication failed")

// authenticateSCRAM runs the SCRAM-SHA-256 exchange for user over SASL and
// returns the login's principal. An unknown user goes through the same
// exchange against a made-up verifier and fails at the proof, as in
// PostgreSQL, so that response contents do not reveal which names exist.
// It returns errLoginRefused (wrapped with the reason) when the client
// fails, and other errors for I/O.
func (c *conn) authenticateSCRAM(ctx context.Context, user string) (auth.Principal, error) {
	login, lookupErr := c.s.store.Login(ctx, user)
	creds := login.Verifier.Credentials()
	if lookupErr != nil || login.Verifier.Iterations <= 0 {
		creds = c.s.mockCredentials(user)
	}
	server, err := scram.SHA256.NewServer(func(string) (scram.StoredCredentials, error) {
		// PostgreSQL clients leave the SCRAM user name empty: the startup
		// message's user is the one that counts.
		return creds, nil
	})
	if err != nil {
		return auth.Principal{}, fmt.Errorf("starting scram: %w", err)
	}
	mechs := []string{mechSCRAM}
	var conv *scram.ServerConversation
	if cb, ok := c.channelBinding(); ok {
		mechs = []string{mechSCRAMPlus, mechSCRAM}
		conv = server.NewConversationWithChannelBinding(cb)
	} else {
		conv = server.NewConversation()
	}
	c.be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: mechs})
	if err := c.be.Flush(); err != nil {
		return auth.Principal{}, err
	}
	if err := c.be.SetAuthType(pgproto3.AuthTypeSASL); err != nil {
		return auth.Principal{}, err
	}
	msg, err := c.be.Receive()
	if err != nil {
		return auth.Principal{}, err
	}
	first, ok := msg.(*pgproto3.SASLInitialResponse)
	if !ok {
		return auth.Principal{}, fmt.Errorf("%w: expected SASLInitialResponse, got %T", errLoginRefused, msg)
	}
	if first.AuthMechanism != mechSCRAM && !(first.AuthMechanism == mechSCRAMPlus && len(mechs) == 2) {
		return auth.Principal{}, fmt.Errorf("%w: unsupported SASL mechanism %q", errLoginRefused, first.AuthMechanism)
	}
	serverFirst, err := conv.Step(string(first.Data))
	if err != nil {
		return auth.Principal{}, fmt.Errorf("%w: client-first message: %v", errLoginRefused, err)
	}
	c.be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})
	if err := c.be.Flush(); err != nil {
		return auth.Principal{}, err
	}
	if err := c.be.SetAuthType(pgproto3.AuthTypeSASLContinue); err != nil {
		return auth.Principal{}, err
	}
	if msg, err = c.be.Receive(); err != nil {
		return auth.Principal{}, err
	}
	final, ok := msg.(*pgproto3.SASLResponse)
	if !ok {
		return auth.Principal{}, fmt.Errorf("%w: expected SASLResponse, got %T", errLoginRefused, msg)
	}
	serverFinal, err := conv.Step(string(final.Data))
	switch {
	case lookupErr != nil:
		return auth.Principal{}, fmt.Errorf("%w: %v", errLoginRefused, lookupErr)
	case err != nil || !conv.Valid():
		return auth.Principal{}, fmt.Errorf("%w: wrong password (%v)", errLoginRefused, err)
	case login.Disabled:
		return auth.Principal{}, fmt.Errorf("%w: login is disabled", errLoginRefused)
	}
	c.be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte(serverFinal)})
	p := login.Principal
	if p.User == "" {
		p.User = user
	}
	return p, nil
}

// mockCredentials is a verifier for a user that does not exist: its salt is
// stable per name (so two attempts do not reveal the name is unknown) and
// no password matches it.
func (s *Server) mockCredentials(user string) scram.StoredCredentials {
	mac := hmac.New(sha256.New, s.mockKey)
	mac.Write([]byte(user))
	sum := mac.Sum(nil)
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(sum[:16]), Iters: auth.DefaultIterations},
		StoredKey:  sum, // a hash no client key produces
		ServerKey:  sum,
	}
}

// channelBinding returns the tls-server-end-point binding (RFC 5929) of a
// TLS connection: a hash of the server's certificate, which a client
// checks to know no one relayed the exchange.
func (c *conn) channelBinding() (scram.ChannelBinding, bool) {
	if _, ok := c.nc.(*tls.Conn); !ok || c.s.tls == nil || len(c.s.tls.Certificates) == 0 {
		return scram.ChannelBinding{}, false
	}
	cert := c.s.tls.Certificates[0]
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return scram.ChannelBinding{}, false
		}
	}
	var h hash.Hash
	switch leaf.SignatureAlgorithm {
	case x509.SHA384WithRSA, x509.SHA384WithRSAPSS, x509.ECDSAWithSHA384:
		h = sha512.New384()
	case x509.SHA512WithRSA, x509.SHA512WithRSAPSS, x509.ECDSAWithSHA512:
		h = sha512.New()
	case x509.PureEd25519:
		// RFC 5929 defines no hash for it; libpq refuses such bindings too.
		return scram.ChannelBinding{}, false
	default: // MD5, SHA-1 and SHA-256 signatures all use SHA-256
		h = sha256.New()
	}
	h.Write(leaf.Raw)
	return scram.ChannelBinding{Type: scram.ChannelBindingTLSServerEndpoint, Data: h.Sum(nil)}, true
}
