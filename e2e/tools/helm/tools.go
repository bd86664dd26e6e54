//go:build tools

// Package tools pins the helm CLI built by e2e/build-control-plane.sh.
package tools

import (
	_ "helm.sh/helm/v3/cmd/helm"
)
