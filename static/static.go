// Package static holds the browser portals, embedded in the binary. Each portal is one folder
// of plain HTML, CSS and JavaScript (no build step, no framework), written for the HTTP plane's
// Content-Security-Policy: no inline scripts, no inline styles, no third-party origins.
//
// Files keeps the folder names, so a file's path in it is its URL path without the leading
// slash: admin/index.html is served at /admin/ and admin/admin.js at /admin/admin.js. A new
// portal (agent/ is next) is a new folder added to the embed line below; the HTTP plane serves
// whatever Files holds.
package static

import "embed"

// Files is every portal: admin/ (the operator console: dispatcher state, drain and enable,
// live calls).
//
//go:embed admin
var Files embed.FS
