package xdsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSFiles names the PEM files of a TLS connection to the control plane.
// The subscriber reads them again for every new stream, so a certificate
// rotated on disk is taken up at the next reconnection.
type TLSFiles struct {
	CA   string // CA certificates the server's certificate is verified with; required
	Cert string // client certificate chain (mTLS); with Key, or neither
	Key  string // its private key
	// ServerName is the name the server's certificate must carry; empty:
	// the host of the ADS address.
	ServerName string
}

// Check reports a TLSFiles that cannot make a connection: no CA, a
// certificate without its key or a key without its certificate.
func (f TLSFiles) Check() error {
	var errs []error
	if f.CA == "" {
		errs = append(errs, errors.New("a CA file is required for TLS"))
	}
	if (f.Cert == "") != (f.Key == "") {
		errs = append(errs, errors.New("the client certificate and its key go together: both or neither"))
	}
	return errors.Join(errs...)
}

// Config reads the files into a client configuration: TLS 1.2 or newer,
// the server verified against CA (and ServerName when set), the client
// certificate presented when the server asks for one.
func (f TLSFiles) Config() (*tls.Config, error) {
	if err := f.Check(); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("xds tls ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("xds tls ca %s: no PEM certificate in it", f.CA)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: f.ServerName}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("xds tls client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
