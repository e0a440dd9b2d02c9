//go:build tools

// Package tools pins kube-apiserver in this module's go.mod and go.sum, so
// that `go build k8s.io/kubernetes/cmd/kube-apiserver` here builds the
// release go.mod names (see the comment there for why not go install).
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
