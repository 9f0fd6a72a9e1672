//go:build tools

// Package tools keeps the Argo Rollouts controller main package in this wrapper module's build list, so
// `go mod tidy` keeps its requirements. The binary is built by hack/build-binaries.sh.
package tools

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
