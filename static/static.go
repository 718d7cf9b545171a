// Package static holds the browser portals, embedded in the binary. Each portal is one folder
// of plain HTML, CSS and JavaScript (no framework, no build step for their own code), written
// for the HTTP plane's Content-Security-Policy: no inline scripts, no inline styles, no
// third-party origins. What both portals share is the folder common/: common.css (the palette,
// the header bar, the sign-in card, buttons) and common.js (window.dualgate: the JSON API
// client and the sign-in form), which each portal's index.html loads before its own files. The
// one library, JsSIP for the agent portal, is a generated bundle that is committed
// (agent/vendor/jssip.min.js; agent/build/README.md says how to rebuild it), so building the
// binary needs only Go.
//
// Files keeps the folder names, so a file's path in it is its URL path without the leading
// slash: admin/index.html is served at /admin/, admin/admin.js at /admin/admin.js and
// common/common.js at /common/common.js. A new portal is a new folder added to the embed lines
// below (and a route in web/server.go).
package static

import "embed"

// Files is every portal: admin/ (the operator console: dispatcher state, drain and enable,
// live calls), agent/ (the agents' WebRTC softphone) and common/ (what both load first).
// agent/ is listed file by file so that its build/ folder (the npm setup that generates
// vendor/jssip.min.js, and its node_modules) stays out of the binary.
//
//go:embed admin common
//go:embed agent/index.html agent/agent.js agent/agent.css agent/favicon.svg agent/vendor/jssip.min.js
var Files embed.FS
