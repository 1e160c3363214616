// Package stack starts real PostgreSQL, MinIO and Mosquitto servers on
// 127.0.0.1 for tests, through the deploy/local scripts, and stops them again.
//
// Mosquitto gives every call its own broker (a broker is cheap, and shared
// subscriptions must not be split between tests). Postgres and MinIO start one
// server per test binary on first use and hand every call its own fresh
// database or bucket, dropped at the test's cleanup.
//
// How servers get stopped: a per-call server is stopped in t.Cleanup. A shared
// server is stopped when the test binary exits: each script starts a detached
// watchdog that holds the read end of a pipe whose write end only the test
// process holds; when the process exits for any reason (normal end, panic,
// -timeout kill) the pipe reports EOF and the watchdog runs "<script> stop"
// and removes the server's directory. Packages that want the shared servers
// stopped before the binary exits call Main from TestMain.
//
// Every helper skips its test under go test -short.
package stack
