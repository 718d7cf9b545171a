// Package static holds the browser portals, embedded in the binary. Each portal is one folder
// of plain HTML, CSS and JavaScript (no framework, no build step for their own code), written
// for the HTTP plane's Content-Security-Policy: no inline scripts, no inline styles, no
// third-party origins. The one library, JsSIP for the agent portal, is a generated bundle that
// is committed (agent/vendor/jssip.min.js; agent/build/README.md says how to rebuild it), so
// building the binary needs only Go.
//
// Files keeps the folder names, so a file's path in it is its URL path without the leading
// slash: admin/index.html is served at /admin/ and admin/admin.js at /admin/admin.js. A new
// portal is a new folder added to the embed lines below (and a route in web/server.go).
package static

import "embed"

// Files is every portal: admin/ (the operator console: dispatcher state, drain and enable,
// live calls) and agent/ (the agents' WebRTC softphone). agent/ is listed file by file so that
// its build/ folder (the npm setup that generates vendor/jssip.min.js, and its node_modules)
// stays out of the binary.
//
//go:embed admin
//go:embed agent/index.html agent/agent.js agent/agent.css agent/favicon.svg agent/vendor/jssip.min.js
var Files embed.FS
