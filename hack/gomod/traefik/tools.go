//go:build tools

// Package tools keeps the Traefik main package in this wrapper module's build list, so
// `go mod tidy` keeps its requirements. The binary is built by hack/build-binaries.sh.
package tools

import _ "github.com/traefik/traefik/v3/cmd/traefik"
