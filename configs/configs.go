// Package configs holds the example configuration files; the development config is embedded
// so the binary runs with no file at all.
package configs

import _ "embed"

// Default is dualgate.yaml, the embedded development configuration.
//
//go:embed dualgate.yaml
var Default []byte

// DemoUsers is users.yaml, the demo users file the development configuration names.
//
//go:embed users.yaml
var DemoUsers []byte
