//go:build tools

// Package tools pins the main packages that the benchmark builds: `go build` of these import
// paths from this module gives the binaries `controller` and `speaker`.
package tools

import (
	_ "go.universe.tf/metallb/controller"
	_ "go.universe.tf/metallb/speaker"
)
