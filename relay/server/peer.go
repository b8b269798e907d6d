package server

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// peerUID returns the uid that owns the client end of a loopback TCP
// connection, read from /proc/net/tcp: the line whose local address is the
// request's remote address and whose remote address is the server's.
func peerUID(r *http.Request) (int, error) {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote, err := net.ResolveTCPAddr("tcp", r.RemoteAddr)
	if err != nil || local == nil {
		return 0, fmt.Errorf("peer address unknown")
	}
	server, ok := local.(*net.TCPAddr)
	if !ok || remote.IP.To4() == nil || server.IP.To4() == nil {
		return 0, fmt.Errorf("peer uid: only IPv4 loopback peers are looked up")
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return 0, fmt.Errorf("peer uid: %w", err)
	}
	defer f.Close()
	want := [2]string{procAddr(remote), procAddr(server)}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 8 || fields[1] != want[0] || fields[2] != want[1] {
			continue
		}
		return strconv.Atoi(fields[7])
	}
	return 0, fmt.Errorf("peer uid: connection %s not found", r.RemoteAddr)
}

// procAddr formats an address as /proc/net/tcp does: the IPv4 address as
// a little-endian hex word, then the port in hex.
func procAddr(a *net.TCPAddr) string {
	ip := a.IP.To4()
	word := make([]byte, 4)
	binary.LittleEndian.PutUint32(word, binary.BigEndian.Uint32(ip))
	return strings.ToUpper(hex.EncodeToString(word)) + fmt.Sprintf(":%04X", a.Port)
}

// refusePeer reports whether the request comes from a process whose uid
// DenyPeerUID refuses (an agent of one machine's users), answering 403.
func (s *Server) refusePeer(w http.ResponseWriter, r *http.Request) bool {
	if s.o.DenyPeerUID == nil {
		return false
	}
	uid, err := peerUID(r)
	if err != nil || !s.o.DenyPeerUID(uid) {
		return false
	}
	s.log.WarnContext(r.Context(), "sign-in from an agent refused", "event", "agent_signin_refused",
		"peerUid", uid, "path", r.URL.Path)
	writeAPIError(w, http.StatusForbidden, "FORBIDDEN",
		"agents may not sign in: the request comes from a user's agent (uid "+strconv.Itoa(uid)+")")
	return true
}

// hostAllowed reports whether the Host header names this server by an
// allowed name, which defeats DNS rebinding: a page on another site that
// resolves its name to 127.0.0.1 still sends its own name as the Host.
func (s *Server) hostAllowed(host string) bool {
	if len(s.o.AllowedHosts) == 0 {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	for _, a := range s.o.AllowedHosts {
		if strings.EqualFold(h, a) {
			return true
		}
	}
	return false
}
