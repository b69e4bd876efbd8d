package xdsconfig

import (
	"fmt"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// handle answers one response: the ACK when its configuration was applied
// (or equals the one serving), else the NACK with the reason and the
// version last applied, after a pause when the server sends a version
// again that was rejected for the same reason (see nackPauseMax). A
// response of a type not asked for is logged and not answered (nil).
func (s *Subscriber) handle(resp *discoveryv3.DiscoveryResponse) (*discoveryv3.DiscoveryRequest, time.Duration) {
	if resp.GetTypeUrl() != RuntimeType {
		s.log.Warn("xds config: ignoring a response of a type not asked for", keyAddr, s.addr, "type_url", resp.GetTypeUrl())
		return nil, 0
	}
	err := s.load(resp)
	if err == nil {
		s.rejectedVersion, s.rejectedErr, s.repeats = "", "", 0
		return s.request(resp.GetVersionInfo(), resp.GetNonce(), nil), 0
	}
	var pause time.Duration
	if resp.GetVersionInfo() == s.rejectedVersion && err.Error() == s.rejectedErr {
		pause = backoff(nackPauseMin, nackPauseMax, s.repeats)
		s.repeats++
		s.log.Debug("xds configuration sent again after its rejection", keyAddr, s.addr, keyVersion, resp.GetVersionInfo())
	} else {
		s.rejectedVersion, s.rejectedErr, s.repeats = resp.GetVersionInfo(), err.Error(), 0
		s.m.rejected.Inc()
		s.log.Error("xds configuration rejected; the last good configuration keeps serving",
			keyAddr, s.addr, keyVersion, resp.GetVersionInfo(), serve.KeyError, err.Error())
	}
	return s.request(s.Version(), resp.GetNonce(), err), pause
}

// load decodes, validates and applies the configuration of resp. The
// same configuration as the one applied last (by digest) is not applied
// again; its version is taken on.
func (s *Subscriber) load(resp *discoveryv3.DiscoveryResponse) error {
	files, err := decodeFiles(resp)
	if err != nil {
		return err
	}
	snap, err := policy.FromContents(s.source, files)
	if err != nil {
		return err
	}
	v := resp.GetVersionInfo()
	if s.applied && snap.Digest() == s.digest {
		s.setVersion(v)
		s.m.applied.Inc()
		s.log.Debug("xds configuration unchanged", keyAddr, s.addr, keyVersion, v)
		return nil
	}
	if err := s.apply(snap); err != nil {
		return fmt.Errorf("refused by the service: %w", err)
	}
	s.digest, s.applied = snap.Digest(), true
	s.setVersion(v)
	s.m.applied.Inc()
	s.log.Info("xds configuration applied", keyAddr, s.addr, keyVersion, v, serve.KeyCount, len(files))
	return nil
}
