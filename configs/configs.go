// Package configs holds the example configuration files; the development config is embedded
// so the binary runs with no file at all.
package configs

import _ "embed"

// Default is dualgate.yaml, the embedded development configuration.
//
//go:embed dualgate.yaml
var Default []byte
