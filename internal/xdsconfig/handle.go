package xdsconfig

import (
	"fmt"
	"maps"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"gopkg.in/yaml.v3"

	"github.com/leakytokens/leaky/internal/policy"
	"github.com/leakytokens/leaky/internal/serve"
)

// handle answers one response: the ACK when its configuration was applied
// (or equals the one serving), else the NACK with the reason and the
// version of that type last applied, after a pause when the server sends
// a version again that was rejected for the same reason (see
// nackPauseMax). A response of a type not asked for is logged and not
// answered (nil).
func (s *Subscriber) handle(resp *discoveryv3.DiscoveryResponse) (*discoveryv3.DiscoveryRequest, time.Duration) {
	var sub *subscription
	for _, c := range s.subscriptions() {
		if c.typeURL == resp.GetTypeUrl() {
			sub = c
		}
	}
	if sub == nil {
		s.log.Warn("xds config: ignoring a response of a type not asked for", keyAddr, s.addr, keyType, resp.GetTypeUrl())
		return nil, 0
	}
	err := s.load(sub, resp)
	if err == nil {
		sub.rejectedVersion, sub.rejectedErr, sub.repeats = "", "", 0
		return s.request(sub, resp.GetVersionInfo(), resp.GetNonce(), nil), 0
	}
	var pause time.Duration
	if resp.GetVersionInfo() == sub.rejectedVersion && err.Error() == sub.rejectedErr {
		pause = backoff(nackPauseMin, nackPauseMax, sub.repeats)
		sub.repeats++
		s.log.Debug("xds configuration sent again after its rejection", keyAddr, s.addr, keyType, sub.typeURL, keyVersion, resp.GetVersionInfo())
	} else {
		sub.rejectedVersion, sub.rejectedErr, sub.repeats = resp.GetVersionInfo(), err.Error(), 0
		s.m.rejected.Inc()
		s.log.Error("xds configuration rejected; the last good configuration keeps serving",
			keyAddr, s.addr, keyType, sub.typeURL, keyVersion, resp.GetVersionInfo(), serve.KeyError, err.Error())
	}
	return s.request(sub, s.versionOf(sub), resp.GetNonce(), err), pause
}

// load decodes resp, composes the whole configuration with what the other
// subscription last applied, validates and applies it. The same
// configuration as the one applied last (by digest) is not applied again;
// its version is taken on.
func (s *Subscriber) load(sub *subscription, resp *discoveryv3.DiscoveryResponse) error {
	runtime, rls := s.runtimeFiles, s.rlsFiles
	var err error
	if sub == s.runtime {
		runtime, err = decodeFiles(resp)
	} else {
		rls, err = decodeRLS(resp)
	}
	if err != nil {
		return err
	}
	files, err := s.compose(runtime, rls)
	if err != nil {
		return err
	}
	snap, err := policy.FromContents(s.source, files)
	if err != nil {
		return err
	}
	v := resp.GetVersionInfo()
	if !s.applied || snap.Digest() != s.digest {
		if err := s.apply(snap); err != nil {
			return fmt.Errorf("refused by the service: %w", err)
		}
		s.digest, s.applied = snap.Digest(), true
		s.log.Info("xds configuration applied", keyAddr, s.addr, keyType, sub.typeURL, keyVersion, v, serve.KeyCount, len(files))
	} else {
		s.log.Debug("xds configuration unchanged", keyAddr, s.addr, keyType, sub.typeURL, keyVersion, v)
	}
	s.runtimeFiles, s.rlsFiles = runtime, rls
	s.setVersion(sub, v)
	s.m.applied.Inc()
	return nil
}

// compose is the configuration handed to the service: the Runtime's
// files, or the start configuration before any Runtime arrived, plus one
// rule file per RateLimitConfig. A RateLimitConfig whose domain a Runtime
// file holds is left out: a control plane that sends both (ours) sends
// that file's own translation, which the file's text says in full. A
// domain in both the start configuration and a RateLimitConfig stays
// twice, for the loader to refuse (or merge, with -merge-domain-config)
// like any two files.
func (s *Subscriber) compose(runtime map[string][]byte, rls []rlsFile) (map[string][]byte, error) {
	base := runtime
	if base == nil {
		base = s.start
	}
	if len(rls) == 0 {
		return base, nil
	}
	shadow := map[string]bool{}
	for _, data := range runtime {
		if d := domainOf(data); d != "" {
			shadow[d] = true
		}
	}
	files := maps.Clone(base)
	if files == nil {
		files = map[string][]byte{}
	}
	for _, f := range rls {
		if shadow[f.domain] {
			continue
		}
		if _, taken := files[f.name]; taken {
			return nil, fmt.Errorf("%s: a configuration file of that name exists already", f.name)
		}
		files[f.name] = f.yaml
	}
	return files, nil
}

// domainOf is a file's top-level domain, "" when it has none or is no
// YAML (the loader reports that).
func domainOf(data []byte) string {
	var head struct {
		Domain string `yaml:"domain"`
	}
	if yaml.Unmarshal(data, &head) != nil {
		return ""
	}
	return head.Domain
}
