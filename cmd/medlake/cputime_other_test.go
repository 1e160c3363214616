//go:build !unix

package main

import "time"

// processCPU is 0 where process CPU time is not read: rows/cpu-s is then not reported.
func processCPU() time.Duration { return 0 }
