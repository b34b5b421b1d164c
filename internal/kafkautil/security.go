package kafkautil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/clickrec/clickrec/internal/cli"
)

// SASL mechanisms clickrec speaks, as Kafka names them (sasl.enabled.mechanisms).
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Security is how clients authenticate to the brokers and encrypt the
// connection. The zero value is PLAINTEXT without authentication, the
// loopback default. SASL and TLS combine: a SASL mechanism without TLS is
// Kafka's SASL_PLAINTEXT, with TLS it is SASL_SSL.
type Security struct {
	SASLMechanism string // "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	SASLUser      string
	SASLPassword  string // best given through CLICKREC_KAFKA_SASL_PASSWORD: a flag shows in ps

	TLS           bool
	TLSCA         string // PEM file of the CAs that sign the brokers' certificates; empty: the system pool
	TLSCert       string // PEM client certificate for mutual TLS (with TLSKey)
	TLSKey        string
	TLSServerName string // expected name in the brokers' certificates; empty: the host dialled
	TLSSkipVerify bool   // accept any broker certificate (tests only: it defeats TLS)
}

// register adds the security flags.
func (s *Security) register(fs *cli.FlagSet) {
	fs.StringVar(&s.SASLMechanism, "kafka-sasl-mechanism", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no authentication); PLAIN sends the password as is, so use it with --kafka-tls")
	fs.Env("kafka-sasl-mechanism", "CLICKREC_KAFKA_SASL_MECHANISM")
	fs.StringVar(&s.SASLUser, "kafka-sasl-user", "", "SASL user name")
	fs.Env("kafka-sasl-user", "CLICKREC_KAFKA_SASL_USER")
	fs.StringVar(&s.SASLPassword, "kafka-sasl-password", "", "SASL password; prefer the environment variable, a command line is visible to every local user")
	fs.Env("kafka-sasl-password", "CLICKREC_KAFKA_SASL_PASSWORD")
	fs.BoolVar(&s.TLS, "kafka-tls", false, "connect to the brokers over TLS")
	fs.Env("kafka-tls", "CLICKREC_KAFKA_TLS")
	fs.StringVar(&s.TLSCA, "kafka-tls-ca", "", "PEM file with the CA certificates that sign the brokers' certificates (default: the system's CAs)")
	fs.Env("kafka-tls-ca", "CLICKREC_KAFKA_TLS_CA")
	fs.StringVar(&s.TLSCert, "kafka-tls-cert", "", "PEM client certificate for mutual TLS (needs --kafka-tls-key)")
	fs.Env("kafka-tls-cert", "CLICKREC_KAFKA_TLS_CERT")
	fs.StringVar(&s.TLSKey, "kafka-tls-key", "", "PEM private key of --kafka-tls-cert")
	fs.Env("kafka-tls-key", "CLICKREC_KAFKA_TLS_KEY")
	fs.StringVar(&s.TLSServerName, "kafka-tls-server-name", "", "name expected in the brokers' certificates (default: the host name dialled)")
	fs.Env("kafka-tls-server-name", "CLICKREC_KAFKA_TLS_SERVER_NAME")
	fs.BoolVar(&s.TLSSkipVerify, "kafka-tls-skip-verify", false, "do not verify the brokers' certificates (for tests only: anyone in the path can read and change the traffic)")
	fs.Env("kafka-tls-skip-verify", "CLICKREC_KAFKA_TLS_SKIP_VERIFY")
}

// validate checks the combination of settings and that the TLS files load.
func (s *Security) validate() error {
	switch strings.ToUpper(s.SASLMechanism) {
	case "":
		if s.SASLUser != "" || s.SASLPassword != "" {
			return cli.Usagef("--kafka-sasl-user or --kafka-sasl-password is set but --kafka-sasl-mechanism is empty: choose PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
		}
	case SASLPlain, SASLScramSHA256, SASLScramSHA512:
		if s.SASLUser == "" {
			return cli.Usagef("--kafka-sasl-mechanism %s needs --kafka-sasl-user (env CLICKREC_KAFKA_SASL_USER)", s.SASLMechanism)
		}
		if s.SASLPassword == "" {
			return cli.Usagef("--kafka-sasl-mechanism %s needs a password: set CLICKREC_KAFKA_SASL_PASSWORD", s.SASLMechanism)
		}
	default:
		return cli.Usagef("--kafka-sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", s.SASLMechanism)
	}
	if !s.TLS {
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"kafka-tls-ca", s.TLSCA != ""}, {"kafka-tls-cert", s.TLSCert != ""}, {"kafka-tls-key", s.TLSKey != ""},
			{"kafka-tls-server-name", s.TLSServerName != ""}, {"kafka-tls-skip-verify", s.TLSSkipVerify},
		} {
			if f.set {
				return cli.Usagef("--%s is set but --kafka-tls is not: add --kafka-tls (env CLICKREC_KAFKA_TLS=true)", f.name)
			}
		}
		return nil
	}
	if s.TLSSkipVerify && s.TLSCA != "" {
		return cli.Usagef("--kafka-tls-skip-verify and --kafka-tls-ca contradict each other: with a CA file, leave verification on")
	}
	_, err := s.tlsConfig()
	return err
}

// tlsConfig builds the TLS settings from the files named, with errors that
// name the flag whose file is wrong.
func (s *Security) tlsConfig() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         s.TLSServerName,
		InsecureSkipVerify: s.TLSSkipVerify, // opt-in, documented as for tests only
	}
	if s.TLSCA != "" {
		pem, err := os.ReadFile(s.TLSCA)
		if err != nil {
			return nil, cli.Usagef("--kafka-tls-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, cli.Usagef("--kafka-tls-ca %s: no PEM certificate in the file", s.TLSCA)
		}
		cfg.RootCAs = pool
	}
	switch {
	case s.TLSCert != "" && s.TLSKey != "":
		pair, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return nil, cli.Usagef("--kafka-tls-cert / --kafka-tls-key: %v", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case s.TLSCert != "":
		return nil, cli.Usagef("--kafka-tls-cert needs --kafka-tls-key")
	case s.TLSKey != "":
		return nil, cli.Usagef("--kafka-tls-key needs --kafka-tls-cert")
	}
	return cfg, nil
}

// mechanism returns the SASL mechanism, nil for none.
func (s *Security) mechanism() sasl.Mechanism {
	switch strings.ToUpper(s.SASLMechanism) {
	case SASLPlain:
		return plain.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsMechanism()
	case SASLScramSHA256:
		return scram.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsSha256Mechanism()
	case SASLScramSHA512:
		return scram.Auth{User: s.SASLUser, Pass: s.SASLPassword}.AsSha512Mechanism()
	}
	return nil
}

// opts are the client options for s. Validate has checked the settings; if a
// TLS file went bad since, every dial fails with the reason, so Ping reports it.
func (s *Security) opts() []kgo.Opt {
	var opts []kgo.Opt
	if m := s.mechanism(); m != nil {
		opts = append(opts, kgo.SASL(m))
	}
	if s.TLS {
		cfg, err := s.tlsConfig()
		if err != nil {
			return append(opts, kgo.Dialer(func(context.Context, string, string) (net.Conn, error) {
				return nil, fmt.Errorf("TLS settings: %w", err)
			}))
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	return opts
}

// describe names the security settings for error messages, e.g. "SASL
// SCRAM-SHA-256 as clickrec over TLS"; empty for plaintext.
func (s *Security) describe() string {
	var parts []string
	if s.SASLMechanism != "" {
		parts = append(parts, fmt.Sprintf("SASL %s as %s", strings.ToUpper(s.SASLMechanism), s.SASLUser))
	}
	if s.TLS {
		parts = append(parts, "over TLS")
	}
	return strings.Join(parts, " ")
}
