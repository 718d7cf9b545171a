package sip

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"

	gosip "github.com/emiago/sipgo/sip"
)

// Topology hiding (sip.topology_hiding, on by default). Nothing that reaches an outside party
// names a host inside the cluster:
//
//   - a backend's Contact is replaced by one of ours whose user part is the original Contact,
//     sealed with AES-GCM under a key only this process holds, so in-dialog requests from the
//     outside come to us and we alone can tell where they go next (no per-dialog state);
//   - the cluster's Vias are taken off requests we send out and put back on the answers;
//   - Server and User-Agent headers from the cluster are dropped.
//
// Message bodies are left alone: SDP names the media address, and media flows between the
// outside party and FreeSWITCH directly, by design.

const tokenPrefix = "dgt-"

type topology struct {
	aead cipher.AEAD
}

func newTopology() (*topology, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("topology hiding key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("topology hiding cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("topology hiding cipher: %w", err)
	}
	return &topology{aead: aead}, nil
}

func (t *topology) seal(uri string) string {
	nonce := make([]byte, t.aead.NonceSize(), t.aead.NonceSize()+len(uri)+t.aead.Overhead())
	_, _ = rand.Read(nonce)
	return tokenPrefix + base64.RawURLEncoding.EncodeToString(t.aead.Seal(nonce, nonce, []byte(uri), nil))
}

func (t *topology) open(user string) (string, bool) {
	enc, ok := strings.CutPrefix(user, tokenPrefix)
	if !ok || len(enc) > 2048 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(raw) < t.aead.NonceSize() {
		return "", false
	}
	plain, err := t.aead.Open(nil, raw[:t.aead.NonceSize()], raw[t.aead.NonceSize():], nil)
	if err != nil {
		return "", false
	}
	return string(plain), true
}

// hideContact replaces a cluster Contact with ours carrying the sealed original. transport is
// the one the outside party talks to us over: its in-dialog requests must come back on it.
func (r *Router) hideContact(m headerEditor, transport string) {
	c, ok := m.GetHeader("Contact").(*gosip.ContactHeader)
	if !ok || c.Address.Wildcard {
		return
	}
	tr := strings.ToLower(transport)
	u := gosip.Uri{Scheme: "sip", User: r.topo.seal(c.Address.String()), Host: r.viaHost, Port: r.ports[tr]}
	if tr != "udp" && tr != "" {
		u.UriParams = gosip.NewParams()
		u.UriParams.Add("transport", tr)
	}
	nc := &gosip.ContactHeader{DisplayName: c.DisplayName, Address: u, Params: c.Params.Clone()}
	m.ReplaceHeader(nc)
}

// revealTarget turns a Request-URI that is one of our sealed Contacts back into the cluster
// Contact it stands for.
func (r *Router) revealTarget(u *gosip.Uri) (*gosip.Uri, bool) {
	if r.topo == nil || !strings.HasPrefix(u.User, tokenPrefix) || !r.isSelf(u) {
		return nil, false
	}
	plain, ok := r.topo.open(u.User)
	if !ok {
		return nil, false
	}
	var out gosip.Uri
	if err := gosip.ParseUri(plain, &out); err != nil {
		return nil, false
	}
	return &out, true
}

// headersRemover is what requests and responses share for dropping headers.
type headersRemover interface {
	RemoveHeader(name string) bool
}

// hideServer drops the headers that name the cluster's software.
func hideServer(m headersRemover) {
	m.RemoveHeader("Server")
	m.RemoveHeader("User-Agent")
}

// edgeRewrite applies NAT and topology rules to a request we are about to send: an outside
// party's Contact gets its alias, and a request from the cluster to the outside loses the
// cluster's Vias, Contact and software names. Credentials we checked are not passed on.
func (r *Router) edgeRewrite(fwd, orig *gosip.Request, t target, initial bool) {
	if initial {
		for fwd.RemoveHeader("Proxy-Authorization") {
		}
	}
	from := r.classOf(orig)
	if outsideParty(from) {
		if fwd.Method != gosip.REGISTER {
			addAlias(fwd, orig.Source(), orig.Transport())
		}
		return
	}
	if r.topo == nil || from != sourceCluster || !r.isOutside(t) {
		return
	}
	for fwd.RemoveHeader("Via") {
	}
	r.hideContact(fwd, t.transport)
	r.hideAddressHeaders(fwd)
	hideServer(fwd)
}

// hideAddressHeaders replaces a cluster IP in the From and To URIs with ours (FreeSWITCH writes
// its own address there). Dialogs are matched by Call-ID and tags, so the far end's requests
// still match; answers going back to the cluster get the original headers again
// (restoreAddressHeaders).
func (r *Router) hideAddressHeaders(m interface {
	From() *gosip.FromHeader
	To() *gosip.ToHeader
	ReplaceHeader(gosip.Header)
}) {
	if f := m.From(); f != nil && r.isClusterHost(f.Address.Host) {
		nf := gosip.HeaderClone(f).(*gosip.FromHeader)
		nf.Address.Host, nf.Address.Port = r.viaHost, 0
		m.ReplaceHeader(nf)
	}
	if to := m.To(); to != nil && r.isClusterHost(to.Address.Host) {
		nt := gosip.HeaderClone(to).(*gosip.ToHeader)
		nt.Address.Host, nt.Address.Port = r.viaHost, 0
		m.ReplaceHeader(nt)
	}
}

// restoreAddressHeaders gives an answer from the outside the From and To the cluster sent
// (keeping the To tag the answering party added).
func restoreAddressHeaders(res *gosip.Response, req *gosip.Request) {
	if f := req.From(); f != nil {
		res.ReplaceHeader(f)
	}
	if to, rto := req.To(), res.To(); to != nil && rto != nil {
		nt := gosip.HeaderClone(to).(*gosip.ToHeader)
		if tag, ok := rto.Params.Get("tag"); ok {
			nt.Params = nt.Params.Clone()
			nt.Params.Add("tag", tag)
		}
		res.ReplaceHeader(nt)
	}
}

func (r *Router) isClusterHost(host string) bool {
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return false
	}
	c, _ := r.classify(ip)
	return c == sourceCluster
}

// edgeRewriteResponse is edgeRewrite for an answer we relay back to req's sender.
func (r *Router) edgeRewriteResponse(res *gosip.Response, req *gosip.Request) {
	from := r.classOf(res)
	if from != sourceCluster {
		if outsideParty(from) && res.StatusCode < 300 {
			addAlias(res, res.Source(), res.Transport())
		}
		if r.topo != nil && r.classOf(req) == sourceCluster {
			restoreAddressHeaders(res, req)
		}
		return
	}
	if r.topo == nil || from != sourceCluster {
		return
	}
	if r.classOf(req) == sourceCluster {
		return
	}
	r.hideContact(res, req.Transport())
	r.hideAddressHeaders(res)
	hideServer(res)
}

// isOutside reports whether a target is beyond the cluster: a phone, an agent or a trunk.
func (r *Router) isOutside(t target) bool {
	if t.outside {
		return true
	}
	if t.dst != nil {
		return false
	}
	ip, err := netip.ParseAddr(t.host)
	if err != nil {
		return true
	}
	c, _ := r.classify(ip)
	return c != sourceCluster
}
