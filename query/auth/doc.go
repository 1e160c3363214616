// Package auth says who a query client is: logins kept as SCRAM-SHA-256
// verifiers (never passwords) and the principal — tenant, facilities, role — a
// login becomes.
//
// It owns the types every query protocol (pgwire, Flight SQL, HTTP) checks a
// login against; where logins are stored (the catalog) and what a principal
// may read (the engine's scope) belong to other packages.
package auth
